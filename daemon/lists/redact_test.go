package lists

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"https://example.org/list.txt", "https://example.org/list.txt"},
		{"https://user:s3cret@example.org/list.txt", "https://<redacted>@example.org/list.txt"},
		{"https://tok3n@example.org/l", "https://<redacted>@example.org/l"},
		{"https://example.org/l?token=s3cret&x=1", "https://example.org/l?<redacted>"},
		{"https://example.org/l#s3cret", "https://example.org/l"},
		{"http://[2001:db8::1]:8080/a%20b", "http://[2001:db8::1]:8080/a%20b"},
		{"::not a url s3cret", "<redacted URL>"},
		{"mailto:s3cret@example.org", "<redacted URL>"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(RedactURL(tt.in), "s3cret") {
			t.Errorf("RedactURL(%q) shows the secret", tt.in)
		}
	}
}

// failingTransport fails every request the way net/http reports a dial error: the
// error text carries the request's URL.
type failingTransport struct{}

func (failingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, errors.New("dial " + r.URL.String() + ": connection refused")
}

// TestSecretsInListURLsStayHidden: a list URL with credentials reaches neither the
// log, the error, the status nor the cache file.
func TestSecretsInListURLsStayHidden(t *testing.T) {
	const secretURL = "https://alice:s3cret@lists.example.org/tg.txt?token=t0ken"
	var logBuf strings.Builder
	dir := t.TempDir()
	m := NewManager(Options{
		CacheDir:   dir,
		HTTPClient: &http.Client{Transport: failingTransport{}},
		Log:        slog.New(slog.NewTextHandler(&logBuf, nil)),
	})
	m.SetSources([]Source{{Name: "c#1", Kind: KindCustom, URL: secretURL}})
	m.Load()
	err := m.Update(context.Background())
	if err == nil {
		t.Fatal("Update with a failing transport succeeded")
	}
	leaks := func(where, s string) {
		t.Helper()
		if strings.Contains(s, "s3cret") || strings.Contains(s, "t0ken") || strings.Contains(s, "alice") {
			t.Errorf("%s shows the URL's credentials:\n%s", where, s)
		}
	}
	leaks("the error", err.Error())
	leaks("the log", logBuf.String())
	for _, st := range m.Status() {
		leaks("status url", st.URL)
		leaks("status last_error", st.LastError)
	}

	// The cache header, after a download that works.
	ok := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Status: "200 OK", Body: nopBody("203.0.113.0/24\n"), Header: http.Header{}}, nil
	})}
	m = NewManager(Options{CacheDir: dir, HTTPClient: ok, AllowDocumentation: true, Log: slog.New(slog.NewTextHandler(&logBuf, nil))})
	m.SetSources([]Source{{Name: "c#1", Kind: KindCustom, URL: secretURL}})
	if err := m.Update(context.Background()); err != nil {
		t.Fatalf("Update: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) == 0 {
		t.Fatal("no cache file written")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		leaks("cache file "+filepath.Base(f), string(b))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type stringBody struct{ *strings.Reader }

func (stringBody) Close() error { return nil }

func nopBody(s string) stringBody { return stringBody{strings.NewReader(s)} }

// FuzzRedactURL: whatever the input, the password and the query of a URL with them are
// not in the redacted form.
func FuzzRedactURL(f *testing.F) {
	f.Add("https://alice:s3cret@example.org/l?token=t0ken")
	f.Add("http://[2001:db8::1]:80/x")
	f.Add("::")
	f.Fuzz(func(t *testing.T, raw string) {
		got := RedactURL(raw)
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		// What may show: scheme, host, path and the markers.
		public := u.Scheme + "://<redacted>@" + u.Host + u.EscapedPath() + "?<redacted URL>"
		if p, ok := u.User.Password(); ok && len(p) >= 4 && strings.Contains(got, p) && !strings.Contains(public, p) {
			t.Errorf("RedactURL(%q) = %q shows the password", raw, got)
		}
		if len(u.RawQuery) >= 4 && strings.Contains(got, u.RawQuery) && !strings.Contains(public, u.RawQuery) {
			t.Errorf("RedactURL(%q) = %q shows the query", raw, got)
		}
	})
}
