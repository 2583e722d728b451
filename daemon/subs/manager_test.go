package subs

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
)

// panel is a subscription server whose answer the test sets, recording requests.
type panel struct {
	srv *httptest.Server
	mu  sync.Mutex
	// next answer
	status  int
	body    string
	headers map[string]string
	hang    chan struct{} // when set, requests wait on it
	reqs    []*http.Request
}

func newPanel(t *testing.T) *panel {
	p := &panel{status: 200}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, r)
		status, body, headers, hang := p.status, p.body, p.headers, p.hang
		p.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *panel) answer(status int, body string, headers map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.body, p.headers, p.hang = status, body, headers, nil
}

func (p *panel) lastRequest(t *testing.T) *http.Request {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reqs) == 0 {
		t.Fatal("the panel got no request")
	}
	return p.reqs[len(p.reqs)-1]
}

func testManager(t *testing.T, dir string, now *time.Time) *Manager {
	var d net.Dialer
	return NewManager(Options{
		CacheDir: dir,
		Dial: func(ctx context.Context, via, addr string) (net.Conn, string, error) {
			c, err := d.DialContext(ctx, "tcp", addr)
			return c, "test " + via, err
		},
		Device: func(host string) Device {
			return Device{HWID: "0123456789abcdef", OS: "OpenWrt", OSVersion: "24.10.2", Model: "Test"}
		},
		Timeout: 2 * time.Second,
		Now:     func() time.Time { return *now },
	})
}

func names(ms []Member) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return strings.Join(out, ",")
}

func TestManagerRefresh(t *testing.T) {
	p := newPanel(t)
	dir := filepath.Join(t.TempDir(), "subs")
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	m := testManager(t, dir, &now)
	url := p.srv.URL + "/sub/s3cr3t-token?key=alsosecret"
	sub := config.Subscription{Name: "prov", Enabled: true, URL: url, Priority: 10, UserAgent: config.DefaultUserAgent, DeviceHeaders: true}
	m.SetSubscriptions([]config.Subscription{sub}, []string{"main", "prov_russia"})
	m.Load()
	if due := m.Due(); !due.Equal(now) {
		t.Fatalf("a subscription without cache is due %s, want now", due)
	}

	// A base64 body with the provider's headers.
	body := base64.StdEncoding.EncodeToString([]byte(linkNL + "\n" + linkRU + "\n" + linkVMess + "\n"))
	p.answer(200, body, map[string]string{"Profile-Update-Interval": "6",
		"Subscription-Userinfo": "upload=100; download=200; total=1000; expire=1798761600"})
	changed, err := m.RefreshDue(context.Background())
	if err != nil || !changed {
		t.Fatalf("first refresh: changed %v, err %v", changed, err)
	}
	if got := names(m.Members()); got != "prov_nl_amsterdam,prov_russia_2" {
		t.Fatalf("members %s", got)
	}
	r := p.lastRequest(t)
	for h, want := range map[string]string{"User-Agent": config.DefaultUserAgent, "X-Hwid": "0123456789abcdef",
		"X-Device-Os": "OpenWrt", "X-Ver-Os": "24.10.2", "X-Device-Model": "Test", "Accept": "*/*"} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("request header %s = %q, want %q", h, got, want)
		}
	}
	st := m.Status()[0]
	if st.Origin != OriginDownload || st.Skipped != 1 || st.Links != 3 || st.Interval != "6h0m0s" || !st.NextRefresh.Equal(now.Add(6*time.Hour)) ||
		st.Userinfo == nil || st.Userinfo.Total != 1000 || st.Userinfo.Download != 200 || st.FetchedVia != "test " || st.LastError != "" {
		t.Fatalf("status %+v", st)
	}
	if strings.Contains(st.URL, "s3cr3t") || strings.Contains(st.URL, "alsosecret") {
		t.Fatalf("status shows the token: %s", st.URL)
	}
	info, err := os.Stat(cachePath(dir, sub))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v", info, err)
	}
	if dirInfo, _ := os.Stat(dir); dirInfo.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory mode %v", dirInfo.Mode())
	}

	// The same answer again changes nothing; a plain one without headers replaces the
	// members and falls back to the default interval.
	now = now.Add(7 * time.Hour)
	if changed, err := m.RefreshDue(context.Background()); err != nil || changed {
		t.Fatalf("same body: changed %v, err %v", changed, err)
	}
	p.answer(200, linkDE+"\n"+linkNL+"\n", nil)
	if changed, err := m.Refresh(context.Background(), ""); err != nil || !changed {
		t.Fatalf("plain body: changed %v, err %v", changed, err)
	}
	if got, st := names(m.Members()), m.Status()[0]; got != "prov_de_frankfurt,prov_nl_amsterdam" || st.Userinfo != nil || st.Interval != "12h0m0s" {
		t.Fatalf("members %s, status %+v", got, st)
	}

	// Broken answers keep the last good set and say why.
	hang := make(chan struct{})
	defer close(hang)
	for _, bad := range []struct {
		name    string
		set     func()
		wantErr string
	}{
		{"500", func() { p.answer(500, "oops", nil) }, "HTTP 500 Internal Server Error"},
		{"garbage", func() { p.answer(200, "hello world!", nil) }, "neither share links"},
		{"empty", func() { p.answer(200, "", nil) }, "the body is empty"},
		{"json", func() { p.answer(200, `{"outbounds":[]}`, nil) }, "JSON configuration"},
		{"only unusable links", func() { p.answer(200, linkVMess+"\n"+linkBad, nil) }, "none of its 2 links is usable (link 1: vmess link: not supported"},
		{"device limit", func() { p.answer(200, "", map[string]string{"X-Hwid-Max-Devices-Reached": "true"}) }, "device limit is reached"},
		{"timeout", func() { p.mu.Lock(); p.hang = hang; p.mu.Unlock() }, "no answer within 2s"},
	} {
		bad.set()
		now = now.Add(time.Minute)
		changed, err := m.Refresh(context.Background(), "prov")
		if changed || err == nil || !strings.Contains(err.Error(), bad.wantErr) {
			t.Fatalf("%s: changed %v, err %v; want %q", bad.name, changed, err, bad.wantErr)
		}
		if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "alsosecret") {
			t.Fatalf("%s: the error shows the token: %v", bad.name, err)
		}
		st := m.Status()[0]
		if got := names(m.Members()); got != "prov_de_frankfurt,prov_nl_amsterdam" || !strings.Contains(st.LastError, bad.wantErr) || st.Origin != OriginDownload {
			t.Fatalf("%s: members %s, status %+v", bad.name, got, st)
		}
	}
	if st := m.Status()[0]; !st.NextRefresh.Equal(now.Add(12*time.Hour)) && st.NextRefresh.Sub(now) > 64*time.Minute {
		t.Fatalf("retry after failures at %s, now %s", st.NextRefresh, now)
	}

	// A restart finds the last good set in the cache; a changed URL does not.
	m2 := testManager(t, dir, &now)
	m2.SetSubscriptions([]config.Subscription{sub}, nil)
	m2.Load()
	if got, st := names(m2.Members()), m2.Status()[0]; got != "prov_de_frankfurt,prov_nl_amsterdam" || st.Origin != OriginCache || st.UpdatedAt.IsZero() {
		t.Fatalf("from the cache: %s %+v", got, st)
	}
	other := sub
	other.URL += "&other"
	m3 := testManager(t, dir, &now)
	m3.SetSubscriptions([]config.Subscription{other}, nil)
	m3.Load()
	if got := m3.Members(); len(got) != 0 {
		t.Fatalf("another URL took the cache: %v", names(got))
	}
}

func TestManagerSetSubscriptions(t *testing.T) {
	p := newPanel(t)
	now := time.Now()
	m := testManager(t, t.TempDir(), &now)
	a := config.Subscription{Name: "a", Enabled: true, URL: p.srv.URL + "/a", Priority: 10, UserAgent: "x"}
	b := config.Subscription{Name: "b", Enabled: true, URL: p.srv.URL + "/b", Priority: 10, UserAgent: "x"}
	m.SetSubscriptions([]config.Subscription{a, b}, nil)
	p.answer(200, linkNL+"\n"+linkRU, nil)
	if _, err := m.Refresh(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	// Both have the same links: each names its own.
	if got := names(m.Members()); got != "a_nl_amsterdam,a_russia,b_nl_amsterdam,b_russia" {
		t.Fatalf("members %s", got)
	}
	// Changed filters and priority apply to the links kept, without a fetch.
	a.Exclude, b.Priority = []string{"russia"}, 50
	b.Enabled = true
	m.SetSubscriptions([]config.Subscription{a, b}, []string{"a_nl_amsterdam"})
	ms := m.Members()
	if got := names(ms); got != "a_nl_amsterdam_2,b_nl_amsterdam,b_russia" || ms[2].Proxy.Priority != 50 {
		t.Fatalf("after the reload: %s %+v", got, ms)
	}
	// A disabled one has no members and is never due.
	a.Enabled, b.Enabled = false, false
	m.SetSubscriptions([]config.Subscription{a, b}, nil)
	if len(m.Members()) != 0 || !m.Due().IsZero() {
		t.Fatalf("disabled: %v due %v", names(m.Members()), m.Due())
	}
	if _, err := m.Refresh(context.Background(), "nope"); err == nil {
		t.Fatal("refreshing an unknown subscription")
	}
}

func TestManagerDeviceHeadersOff(t *testing.T) {
	p := newPanel(t)
	now := time.Now()
	m := testManager(t, t.TempDir(), &now)
	sub := config.Subscription{Name: "s", Enabled: true, URL: p.srv.URL, UserAgent: "v2rayNG/1.8.5", DeviceHeaders: false}
	m.SetSubscriptions([]config.Subscription{sub}, nil)
	p.answer(200, "", map[string]string{"X-Hwid-Not-Supported": "true", "X-Hwid-Limit": "true"})
	if _, err := m.Refresh(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "set device_headers '1'") {
		t.Fatalf("err %v", err)
	}
	r := p.lastRequest(t)
	if r.Header.Get("X-Hwid") != "" || r.Header.Get("User-Agent") != "v2rayNG/1.8.5" {
		t.Fatalf("headers %v", r.Header)
	}
	// An hwid option replaces the derived one.
	sub.DeviceHeaders, sub.HWID = true, "phone-1234"
	m.SetSubscriptions([]config.Subscription{sub}, nil)
	_, _ = m.Refresh(context.Background(), "")
	if got := p.lastRequest(t).Header.Get("X-Hwid"); got != "phone-1234" {
		t.Fatalf("X-HWID %q", got)
	}
}
