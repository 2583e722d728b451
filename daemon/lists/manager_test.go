package lists

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// listServer serves one list whose answer the test changes between updates.
type listServer struct {
	*httptest.Server
	mu       sync.Mutex
	status   int
	body     string
	hang     bool
	requests int
}

func newListServer(t *testing.T) *listServer {
	t.Helper()
	s := &listServer{status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		status, body, hang := s.status, s.body, s.hang
		s.requests++
		s.mu.Unlock()
		if hang {
			// Send part of the list, then stall until the client gives up.
			w.Write([]byte("203.0.113.0/24\n"))
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *listServer) serve(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body, s.hang = status, body, false
}

func (s *listServer) requestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *listServer) stall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hang = true
}

// changes records OnChange calls.
type changes struct {
	mu    sync.Mutex
	calls [][]netip.Prefix
}

func (c *changes) record(v4, v6 []netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, append(slices.Clone(v4), v6...))
}

func (c *changes) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

var (
	embeddedList   = []string{"203.0.113.0/25", "2001:db8:3::/64"}
	goodList       = "# test list\n203.0.113.0/24\n198.51.100.64/26\n2001:db8:3::/48\n"
	goodV4, goodV6 = []string{"198.51.100.64/26", "203.0.113.0/24"}, []string{"2001:db8:3::/48"}
)

func newTestManager(t *testing.T, dir string, ch *changes) *Manager {
	t.Helper()
	opts := Options{CacheDir: dir, AllowDocumentation: true, Timeout: 5 * time.Second}
	if ch != nil {
		opts.OnChange = ch.record
	}
	return NewManager(opts)
}

func serviceSource(t *testing.T, url string) Source {
	return Source{Name: "telegram", Kind: KindService, URL: url, Embedded: prefixes(t, embeddedList...)}
}

func wantTargets(t *testing.T, m *Manager, v4, v6 []string) {
	t.Helper()
	got4, got6 := m.Targets()
	if !slices.Equal(got4, prefixes(t, v4...)) || !slices.Equal(got6, prefixes(t, v6...)) {
		t.Fatalf("Targets() = %v %v, want %v %v", got4, got6, v4, v6)
	}
}

func onlyStatus(t *testing.T, m *Manager) ListStatus {
	t.Helper()
	st := m.Status()
	if len(st) != 1 {
		t.Fatalf("Status() has %d entries, want 1: %+v", len(st), st)
	}
	return st[0]
}

func TestManagerNoCacheUsesEmbedded(t *testing.T) {
	m := newTestManager(t, t.TempDir(), nil)
	m.SetSources([]Source{serviceSource(t, "http://192.0.2.1/never-fetched")})
	m.Load()
	wantTargets(t, m, embeddedList[:1], embeddedList[1:])
	st := onlyStatus(t, m)
	if st.Origin != OriginEmbedded || st.Entries4 != 1 || st.Entries6 != 1 || st.LastError != "" || !st.UpdatedAt.IsZero() {
		t.Fatalf("status = %+v, want embedded, 1+1 entries, no error", st)
	}
}

func TestManagerUpdateAppliesAndCaches(t *testing.T) {
	dir := t.TempDir()
	srv := newListServer(t)
	srv.serve(http.StatusOK, goodList)
	var ch changes
	m := newTestManager(t, dir, &ch)
	m.SetSources([]Source{serviceSource(t, srv.URL+"/cidr.txt")})
	m.Load()

	if err := m.Update(context.Background()); err != nil {
		t.Fatalf("Update: %v", err)
	}
	wantTargets(t, m, goodV4, goodV6)
	st := onlyStatus(t, m)
	if st.Origin != OriginDownload || st.Entries4 != 2 || st.Entries6 != 1 || st.LastError != "" || st.UpdatedAt.IsZero() {
		t.Fatalf("status = %+v, want a download with 2+1 entries", st)
	}
	if ch.count() != 1 {
		t.Fatalf("OnChange called %d times, want 1", ch.count())
	}
	if got, want := ch.calls[0], prefixes(t, append(slices.Clone(goodV4), goodV6...)...); !slices.Equal(got, want) {
		t.Fatalf("OnChange got %v, want %v", got, want)
	}

	files, _ := filepath.Glob(filepath.Join(dir, "telegram-*.txt"))
	if len(files) != 1 {
		t.Fatalf("cache files %v, want one", files)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(leftovers) != 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"203.0.113.0/24", "198.51.100.64/26", "2001:db8:3::/48"} {
		if !strings.Contains(string(data), p+"\n") {
			t.Fatalf("cache %s lacks %s:\n%s", files[0], p, data)
		}
	}

	// The same list again changes nothing.
	if err := m.Update(context.Background()); err != nil {
		t.Fatalf("second Update: %v", err)
	}
	if ch.count() != 1 {
		t.Fatalf("OnChange called %d times after an identical update, want 1", ch.count())
	}
}

func TestManagerBadUpdateKeepsList(t *testing.T) {
	var big strings.Builder
	for big.Len() <= 4096 {
		big.WriteString("203.0.113.0/24\n")
	}
	tests := []struct {
		name    string
		status  int
		body    string
		stall   bool
		wantErr string
	}{
		{"private range", 200, "203.0.113.0/24\n10.0.0.0/8\n", false, "line 2: 10.0.0.0/8 is a private range"},
		{"default route", 200, "0.0.0.0/0\n", false, "default route"},
		{"HTML page", 200, "<!doctype html><html><body>Access denied</body></html>", false, "HTML page"},
		{"404", 404, "not found\n", false, "HTTP 404 Not Found"},
		{"500 with a list body", 500, goodList, false, "HTTP 500"},
		{"truncated", 200, "203.0.113.0/24\n198.51.1", false, "cut off"},
		{"empty answer", 200, "", false, "no entries"},
		{"too big", 200, big.String(), false, "larger than the 4096-byte limit"},
		{"untrusted /7", 200, "90.0.0.0/7\n", false, "shorter than /8"},
		{"stalled transfer", 0, "", true, "download"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			srv := newListServer(t)
			srv.serve(http.StatusOK, goodList)
			var ch changes
			m := NewManager(Options{CacheDir: dir, AllowDocumentation: true, MaxBytes: 4096,
				Timeout: time.Second, OnChange: ch.record})
			m.SetSources([]Source{serviceSource(t, srv.URL+"/cidr.txt")})
			m.Load()
			if err := m.Update(context.Background()); err != nil {
				t.Fatalf("first Update: %v", err)
			}
			before := onlyStatus(t, m)
			cacheFiles, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
			cacheBefore, err := os.ReadFile(cacheFiles[0])
			if err != nil {
				t.Fatal(err)
			}

			if tt.stall {
				srv.stall()
			} else {
				srv.serve(tt.status, tt.body)
			}
			err = m.Update(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "list telegram (") {
				t.Fatalf("Update error = %v, want one naming the list and containing %q", err, tt.wantErr)
			}
			wantTargets(t, m, goodV4, goodV6)
			after := onlyStatus(t, m)
			if !strings.Contains(after.LastError, tt.wantErr) {
				t.Fatalf("LastError = %q, want %q", after.LastError, tt.wantErr)
			}
			if after.Origin != OriginDownload || !after.UpdatedAt.Equal(before.UpdatedAt) ||
				after.Entries4 != before.Entries4 || after.Entries6 != before.Entries6 || !after.LastAttempt.After(before.UpdatedAt) {
				t.Fatalf("status after a refused update = %+v, before %+v", after, before)
			}
			if ch.count() != 1 {
				t.Fatalf("OnChange called %d times, want 1 (only the good update)", ch.count())
			}
			cacheAfter, err := os.ReadFile(cacheFiles[0])
			if err != nil || string(cacheAfter) != string(cacheBefore) {
				t.Fatalf("cache changed by a refused update (%v):\n%s", err, cacheAfter)
			}

			// The next good update clears the error.
			srv.serve(http.StatusOK, goodList)
			if err := m.Update(context.Background()); err != nil {
				t.Fatalf("recovering Update: %v", err)
			}
			if st := onlyStatus(t, m); st.LastError != "" {
				t.Fatalf("LastError after a good update = %q", st.LastError)
			}
		})
	}
}

func TestManagerCacheSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	srv := newListServer(t)
	srv.serve(http.StatusOK, goodList)
	src := serviceSource(t, srv.URL+"/cidr.txt")

	first := newTestManager(t, dir, nil)
	first.SetSources([]Source{src})
	first.Load()
	if err := first.Update(context.Background()); err != nil {
		t.Fatalf("Update: %v", err)
	}
	fetched := onlyStatus(t, first).UpdatedAt

	srv.Close() // the source is unreachable after the restart
	second := newTestManager(t, dir, nil)
	second.SetSources([]Source{src})
	second.Load()
	wantTargets(t, second, goodV4, goodV6)
	st := onlyStatus(t, second)
	if st.Origin != OriginCache || st.LastError != "" || st.UpdatedAt.Sub(fetched).Abs() > time.Second {
		t.Fatalf("status after restart = %+v, want from cache, fetched at %v", st, fetched)
	}
	if err := second.Update(context.Background()); err == nil {
		t.Fatalf("Update against a closed server succeeded")
	}
	wantTargets(t, second, goodV4, goodV6)

	// Another URL for the same service does not pick up this cache.
	third := newTestManager(t, dir, nil)
	third.SetSources([]Source{serviceSource(t, srv.URL+"/other.txt")})
	third.Load()
	wantTargets(t, third, embeddedList[:1], embeddedList[1:])
}

func TestManagerBadCacheFallsBack(t *testing.T) {
	dir := t.TempDir()
	src := serviceSource(t, "http://192.0.2.1/cidr.txt")
	m := newTestManager(t, dir, nil)
	if err := os.WriteFile(m.cachePath(src), []byte("203.0.113.0/24\n10.0.0.0/8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.SetSources([]Source{src})
	m.Load()
	wantTargets(t, m, embeddedList[:1], embeddedList[1:])
	st := onlyStatus(t, m)
	if st.Origin != OriginEmbedded || !strings.Contains(st.LastError, "line 2: 10.0.0.0/8 is a private range") {
		t.Fatalf("status = %+v, want embedded with the cache's error", st)
	}
}

func TestManagerSourcesMerge(t *testing.T) {
	dir := t.TempDir()
	srv := newListServer(t)
	srv.serve(http.StatusOK, "203.0.113.128/25\n")
	m := newTestManager(t, dir, nil)
	m.SetSources([]Source{
		serviceSource(t, ""), // a service with no update URL: its embedded list only
		{Name: "mine", Kind: KindCustom, Static: prefixes(t, "198.51.100.0/24", "10.0.0.0/8", "90.0.0.0/7"), Trusted: true},
		{Name: "mine#1", Kind: KindCustom, URL: srv.URL + "/mine.txt"},
	})
	m.Load()
	wantTargets(t, m, []string{"90.0.0.0/7", "198.51.100.0/24", "203.0.113.0/25"}, embeddedList[1:])
	if err := m.Update(context.Background()); err != nil {
		t.Fatalf("Update: %v", err)
	}
	// The two halves of 203.0.113.0/24 from two sources merge into one prefix.
	wantTargets(t, m, []string{"90.0.0.0/7", "198.51.100.0/24", "203.0.113.0/24"}, embeddedList[1:])

	st := m.Status()
	if len(st) != 3 {
		t.Fatalf("Status() = %+v", st)
	}
	if st[0].Origin != OriginEmbedded || st[1].Origin != OriginStatic || st[2].Origin != OriginDownload {
		t.Fatalf("origins %s %s %s, want embedded static download", st[0].Origin, st[1].Origin, st[2].Origin)
	}
	if st[1].Entries4 != 2 || !strings.Contains(st[1].LastError, "10.0.0.0/8 is a private range") {
		t.Fatalf("custom status = %+v, want 2 entries and the private subnet reported", st[1])
	}
	if n := srv.requestCount(); n != 1 {
		t.Fatalf("server got %d requests, want 1 (only the custom URL)", n)
	}

	// A reload with the same sources keeps the download without fetching again.
	m.SetSources([]Source{{Name: "mine#1", Kind: KindCustom, URL: srv.URL + "/mine.txt"}})
	m.Load()
	wantTargets(t, m, []string{"203.0.113.128/25"}, nil)
	if st := onlyStatus(t, m); st.Origin != OriginDownload {
		t.Fatalf("status after SetSources = %+v, want the download kept", st)
	}
}

func TestManagerRejectsOtherSchemes(t *testing.T) {
	m := newTestManager(t, t.TempDir(), nil)
	m.SetSources([]Source{serviceSource(t, "file:///etc/passwd")})
	m.Load()
	err := m.Update(context.Background())
	if err == nil || !strings.Contains(err.Error(), "only http:// and https://") {
		t.Fatalf("Update error = %v", err)
	}
	wantTargets(t, m, embeddedList[:1], embeddedList[1:])
}

// TestManagerConcurrent runs Update against readers and reloads; run with -race.
func TestManagerConcurrent(t *testing.T) {
	srv := newListServer(t)
	srv.serve(http.StatusOK, goodList)
	m := newTestManager(t, t.TempDir(), nil)
	src := serviceSource(t, srv.URL+"/cidr.txt")
	m.SetSources([]Source{src})
	m.Load()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if err := m.Update(context.Background()); err != nil {
					t.Errorf("Update: %v", err)
					return
				}
			}
		})
		wg.Go(func() {
			for range 50 {
				m.Targets()
				m.Status()
				m.SetSources([]Source{src})
				m.Load()
			}
		})
	}
	wg.Wait()
	wantTargets(t, m, goodV4, goodV6)
}

// TestDomainListSource: a domain list from a URL is validated like a range list; a bad
// download keeps the domains in use; the cache brings them back after a restart.
func TestDomainListSource(t *testing.T) {
	srv := newListServer(t)
	dir := t.TempDir()
	var got [][]string
	newM := func() *Manager {
		m := NewManager(Options{CacheDir: dir, OnDomainsChange: func(d []string) { got = append(got, d) }})
		m.SetSources([]Source{
			{Name: "telegram", Kind: KindService, Domains: []string{"t.me"}},
			{Name: "mine#d1", Kind: KindCustom, URL: srv.URL + "/d.lst", DomainList: true},
		})
		m.Load()
		return m
	}
	m := newM()
	if d := m.Domains(); !slices.Equal(d, []string{"t.me"}) {
		t.Fatalf("before any download: %q", d)
	}
	srv.serve(http.StatusOK, "# my list\nExample.org\n*.example.net\nt.me\n")
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"example.net", "example.org", "t.me"}
	if d := m.Domains(); !slices.Equal(d, want) || len(got) != 1 || !slices.Equal(got[0], want) {
		t.Fatalf("after download: %q, OnDomainsChange %q", d, got)
	}
	for _, bad := range []string{"example.org\n*\n", "example.org\ncom\n", "<html>blocked</html>", strings.Repeat("a.example.org\n", 1) + "x"} {
		srv.serve(http.StatusOK, bad)
		if err := m.Update(context.Background()); err == nil {
			t.Errorf("list %q accepted", bad)
		}
		if d := m.Domains(); !slices.Equal(d, want) {
			t.Errorf("after bad list %q: domains %q", bad, d)
		}
	}
	if len(got) != 1 {
		t.Errorf("OnDomainsChange called for refused lists: %q", got)
	}
	st := m.Status()
	if st[1].Domains != 3 || st[1].LastError == "" || st[0].Domains != 1 {
		t.Errorf("status %+v", st)
	}
	// A restart reads the cache.
	if d := newM().Domains(); !slices.Equal(d, want) {
		t.Errorf("from the cache: %q", d)
	}
	if sd := m.SourceDomains(); !slices.Equal(sd["telegram"], []string{"t.me"}) || len(sd["mine#d1"]) != 3 {
		t.Errorf("SourceDomains %q", sd)
	}
}
