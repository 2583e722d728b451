package e2e

// Issue 22 item 3: subscriptions served by a panel in the test network (HTTP and
// HTTPS; base64 and plain; with and without the provider's headers; one that breaks),
// fetched through a proxy and directly; their links become proxies of the pool.

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/subs"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// panelAnswer is what the panel sends for one path.
type panelAnswer struct {
	status  int
	body    string
	headers map[string]string
	hang    bool // never answer
}

// panelRequest is what the panel saw of one request.
type panelRequest struct {
	from   netip.Addr
	header http.Header
}

// subPanel is a subscription server on the internet host: HTTP and HTTPS (a
// self-signed certificate the daemon trusts through SSL_CERT_FILE), one answer per
// path, every request recorded.
type subPanel struct {
	httpURL, httpsURL string
	certPath          string
	mu                sync.Mutex
	answers           map[string]panelAnswer
	seen              map[string][]panelRequest
	release           chan struct{}
}

func startSubPanel(t *testing.T, n *testnet.Net) *subPanel {
	t.Helper()
	p := &subPanel{answers: map[string]panelAnswer{}, seen: map[string][]panelRequest{}, release: make(chan struct{})}
	t.Cleanup(func() { close(p.release) })
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		a, ok := p.answers[r.URL.Path]
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			p.seen[r.URL.Path] = append(p.seen[r.URL.Path], panelRequest{from: ap.Addr().Unmap(), header: r.Header.Clone()})
		}
		p.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		if a.hang {
			select {
			case <-p.release:
			case <-r.Context().Done():
			}
			return
		}
		for k, v := range a.headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(a.body))
	})
	certPath, keyPath, _, err := n.SelfSignedCert(testnet.DirectV4.String())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	p.certPath = certPath
	for _, secure := range []bool{false, true} {
		port, err := n.FreePort(n.Inet, testnet.DirectV4)
		if err != nil {
			t.Fatal(err)
		}
		l, err := n.Listen(n.Inet, "tcp", netip.AddrPortFrom(testnet.DirectV4, port).String())
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		if secure {
			l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}})
			p.httpsURL = fmt.Sprintf("https://%s:%d", testnet.DirectV4, port)
		} else {
			p.httpURL = fmt.Sprintf("http://%s:%d", testnet.DirectV4, port)
		}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	return p
}

func (p *subPanel) set(path string, a panelAnswer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.status == 0 {
		a.status = http.StatusOK
	}
	p.answers[path] = a
}

func (p *subPanel) requests(path string) []panelRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]panelRequest(nil), p.seen[path]...)
}

func subStatus(t *testing.T, d *daemon, name string) subs.Status {
	t.Helper()
	for _, s := range d.status().Subscriptions {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no subscription %s in status", name)
	return subs.Status{}
}

func memberNames(s subs.Status) string {
	var out []string
	for _, m := range s.Members {
		out = append(out, m.Name)
	}
	return strings.Join(out, ",")
}

// updateSubscription runs `tgtun subscription update NAME --json`.
func updateSubscription(t *testing.T, d *daemon, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, tgtunBin, "subscription", "update", "--json", "--socket", d.socket, name).CombinedOutput()
	return string(out)
}

// TestSubscriptions: a subscription's links become proxies that carry traffic; a
// refresh replaces them at once while a flow on a kept one goes on; a panel that
// breaks changes nothing but the status, which says why; a restart finds the last good
// set in the tmpfs cache.
func TestSubscriptions(t *testing.T) {
	n, dante := newNetWithDante(t)
	micro, err := n.StartMicrosocks("", "")
	if err != nil {
		t.Fatal(err)
	}
	ss, err := n.StartSSServer("aes-256-gcm", "sub-ss-password")
	if err != nil {
		t.Fatal(err)
	}
	p := startSubPanel(t, n)
	ssUser := base64.RawURLEncoding.EncodeToString([]byte("aes-256-gcm:sub-ss-password"))
	linkMicro := fmt.Sprintf("socks5://%s#%s", micro, url.PathEscape("🇳🇱 NL micro"))
	linkSS := fmt.Sprintf("ss://%s@%s#%s", ssUser, ss, url.PathEscape("🇩🇪 DE ss"))
	linkDante := fmt.Sprintf("socks5://%s#FR dante", dante)
	linkVMess := "vmess://eyJ2IjoiMiIsImFkZCI6IjE5OC41MS4xMDAuNiJ9"
	expire := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	// prov: HTTPS, base64, with the provider's headers; fetched through the pool.
	p.set("/sub/s3cr3t-prov", panelAnswer{
		body: base64.StdEncoding.EncodeToString([]byte(linkMicro + "\n" + linkSS + "\n" + linkVMess + "\nnot a link\n")),
		headers: map[string]string{"Profile-Update-Interval": "1", "Profile-Title": "base64:VGVzdA==",
			"Subscription-Userinfo": fmt.Sprintf("upload=1048576; download=3145728; total=10737418240; expire=%d", expire.Unix())},
	})
	// plain: HTTP, plain text without headers, fetched directly, device headers off,
	// one link included.
	p.set("/plain/s3cr3t-plain", panelAnswer{body: linkDante + "\n" + linkMicro + "\n"})
	// named: fetched through the proxy 'dante'.
	p.set("/named/s3cr3t-named", panelAnswer{body: linkDante})

	conf := danteConf(dante)
	conf.proxies[0].priority = 100 // the subscriptions' proxies come first
	conf.env = []string{"SSL_CERT_FILE=" + p.certPath}
	conf.sections = fmt.Sprintf(`
config subscription 'prov'
	option url '%s/sub/s3cr3t-prov'

config subscription 'plain'
	option url '%s/plain/s3cr3t-plain'
	option via 'direct'
	option device_headers '0'
	list include 'dante'
	option priority '200'

config subscription 'named'
	option url '%s/named/s3cr3t-named'
	option via 'dante'
	option priority '300'
`, p.httpsURL, p.httpURL, p.httpURL)
	d := startTgtun(t, n, conf, "--subscription-timeout", "3s")
	t.Cleanup(func() { _ = d.proc.Stop() })

	eventually(t, 30*time.Second, "every subscription fetched", func() error {
		for _, s := range d.status().Subscriptions {
			if s.Origin != subs.OriginDownload {
				return fmt.Errorf("subscription %+v", s)
			}
		}
		return nil
	})
	prov := subStatus(t, d, "prov")
	if got := memberNames(prov); got != "prov_nl_micro,prov_de_ss" || prov.Skipped != 2 || prov.Interval != "1h0m0s" || prov.LastError != "" ||
		prov.Userinfo == nil || prov.Userinfo.Upload+prov.Userinfo.Download != 4<<20 || prov.Userinfo.Total != 10<<30 || !prov.Userinfo.Expire.Equal(expire) ||
		prov.FetchedVia != "proxy" || prov.Members[0].Label != "🇳🇱 NL micro" {
		t.Fatalf("prov: %+v", prov)
	}
	if plain := subStatus(t, d, "plain"); memberNames(plain) != "plain_fr_dante" || plain.Filtered != 1 || plain.Userinfo != nil ||
		plain.Interval != "12h0m0s" || plain.FetchedVia != "direct" {
		t.Fatalf("plain: %+v", plain)
	}
	if named := subStatus(t, d, "named"); memberNames(named) != "named_fr_dante" || named.FetchedVia != "proxy 'dante'" {
		t.Fatalf("named: %+v", named)
	}
	for _, s := range d.status().Subscriptions {
		if strings.Contains(s.URL, "s3cr3t") {
			t.Errorf("status shows the token: %s", s.URL)
		}
	}
	// Who fetched, and as which client.
	hwid := regexp.MustCompile(`^[0-9a-f]{16}$`)
	provReq := p.requests("/sub/s3cr3t-prov")[0]
	if provReq.from != testnet.ProxyV4 || provReq.header.Get("User-Agent") != config.DefaultUserAgent ||
		!hwid.MatchString(provReq.header.Get("X-Hwid")) || provReq.header.Get("X-Device-Os") == "" ||
		provReq.header.Get("X-Ver-Os") == "" || provReq.header.Get("X-Device-Model") == "" {
		t.Errorf("prov's request: from %s, headers %v", provReq.from, provReq.header)
	}
	for _, mac := range routerMACs(t, n) {
		if h := provReq.header.Get("X-Hwid"); strings.Contains(h, mac[:6]) || strings.Contains(h, mac[6:]) {
			t.Errorf("X-HWID %q shows the router's MAC %s", h, mac)
		}
	}
	if r := p.requests("/plain/s3cr3t-plain")[0]; r.from != testnet.WANV4 || r.header.Get("X-Hwid") != "" {
		t.Errorf("plain's request: from %s (want the router's WAN %s, direct), headers %v", r.from, testnet.WANV4, r.header)
	}
	if r := p.requests("/named/s3cr3t-named")[0]; r.from != testnet.ProxyV4 {
		t.Errorf("named's request came from %s, want through dante (%s)", r.from, testnet.ProxyV4)
	}

	// The subscription's first proxy carries the traffic once probed: until then a new
	// member is used after the healthy ones (dante, probed before the subscription came).
	eventually(t, 20*time.Second, "prov_nl_micro probed and active", func() error {
		if m := memberStatus(t, d.status(), "prov_nl_micro"); !m.Active || !m.Healthy {
			return fmt.Errorf("%+v", m)
		}
		return nil
	})
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	if m := memberStatus(t, d.status(), "prov_nl_micro"); m.Flows == 0 {
		t.Fatalf("the request did not go through prov_nl_micro: %+v", m)
	}
	flow := dialEchoFlow(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort))
	pinger := flow.pingEvery(100 * time.Millisecond)
	t.Cleanup(pinger.stop)
	pinger.waitRounds(t, 3)
	if m := memberStatus(t, d.status(), "prov_nl_micro"); m.Flows < 2 {
		t.Fatalf("the flow did not go through prov_nl_micro: %+v", m)
	}
	var text strings.Builder
	if out, err := exec.Command(tgtunBin, "status", "--socket", d.socket).CombinedOutput(); err != nil {
		t.Fatalf("tgtun status: %v\n%s", err, out)
	} else {
		text.Write(out)
	}
	for _, want := range []string{"SUBSCRIPTION", "prov", "4.0 MiB of 10.0 GiB", expire.UTC().Format("2006-01-02"),
		"proxies of prov (" + p.httpsURL + "/<redacted>): prov_nl_micro (🇳🇱 NL micro), prov_de_ss (🇩🇪 DE ss)", "skipped in prov: link 3: vmess link"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("tgtun status lacks %q:\n%s", want, text.String())
		}
	}

	// A refresh keeps prov_nl_micro (and its flow), drops prov_de_ss, adds prov_fr_dante.
	p.set("/sub/s3cr3t-prov", panelAnswer{body: base64.RawURLEncoding.EncodeToString([]byte(linkMicro + "\n" + linkDante + "\n"))})
	updateSubscription(t, d, "prov")
	if got := memberNames(subStatus(t, d, "prov")); got != "prov_nl_micro,prov_fr_dante" {
		t.Fatalf("prov after the refresh: %s", got)
	}
	var proxies []string
	for _, m := range d.status().Proxies {
		proxies = append(proxies, m.Name)
	}
	if got := strings.Join(proxies, ","); got != "prov_nl_micro,prov_fr_dante,dante,plain_fr_dante,named_fr_dante" {
		t.Fatalf("pool after the refresh: %s", got)
	}
	pinger.waitRounds(t, 5)

	// A panel that breaks: the last good set stays, status says why, the flow goes on.
	for _, bad := range []struct {
		name string
		a    panelAnswer
		want string
	}{
		{"500", panelAnswer{status: 500, body: "oops"}, "HTTP 500 Internal Server Error"},
		{"garbage", panelAnswer{body: "%%% garbage %%%"}, "neither share links"},
		{"empty", panelAnswer{}, "the body is empty"},
		{"device limit", panelAnswer{headers: map[string]string{"X-Hwid-Max-Devices-Reached": "true", "X-Hwid-Limit": "true"}}, "device limit is reached"},
		{"only unusable links", panelAnswer{body: linkVMess + "\n"}, "none of its 1 links is usable"},
		{"timeout", panelAnswer{hang: true}, "no answer within 3s"},
	} {
		p.set("/sub/s3cr3t-prov", bad.a)
		out := updateSubscription(t, d, "prov")
		s := subStatus(t, d, "prov")
		if memberNames(s) != "prov_nl_micro,prov_fr_dante" || !strings.Contains(s.LastError, bad.want) || s.LastAttempt.Before(s.UpdatedAt) {
			t.Fatalf("%s: status %+v, want the last good members and %q\n%s", bad.name, s, bad.want, out)
		}
		if strings.Contains(out, "s3cr3t") {
			t.Fatalf("%s: the answer shows the token:\n%s", bad.name, out)
		}
		pinger.waitRounds(t, 2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	out, _ := exec.CommandContext(ctx, tgtunBin, "check", "--socket", d.socket).CombinedOutput()
	cancel()
	if !strings.Contains(string(out), "subscription 'prov'") || !strings.Contains(string(out), "no answer within 3s") {
		t.Errorf("tgtun check does not report the failing subscription:\n%s", out)
	}
	if err := pinger.failure(); err != nil {
		t.Fatalf("the flow through a kept proxy broke: %v", err)
	}

	// A subscription added by a reload is fetched at once; the others keep theirs.
	p.set("/late/s3cr3t-late", panelAnswer{body: linkSS})
	late := conf
	late.sections += fmt.Sprintf("\nconfig subscription 'late'\n\toption url '%s/late/s3cr3t-late'\n\toption via 'direct'\n\toption priority '400'\n", p.httpURL)
	d.writeConf(late)
	if _, err := d.call("reload"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the new subscription fetched", func() error {
		if s := subStatus(t, d, "late"); memberNames(s) != "late_de_ss" || s.Origin != subs.OriginDownload {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	if s := subStatus(t, d, "prov"); memberNames(s) != "prov_nl_micro,prov_fr_dante" {
		t.Fatalf("prov after the reload: %+v", s)
	}
	if m := memberStatus(t, d.status(), "late_de_ss"); m.Type != "shadowsocks" {
		t.Fatalf("late_de_ss in the pool: %+v", m)
	}
	pinger.waitRounds(t, 3)
	pinger.stop()
	d.stop()
	d.writeConf(conf)

	// The cache (on the test's tmpfs directory, 0600) brings the last good set back
	// while the panel still fails.
	files, _ := filepath.Glob(filepath.Join(n.Dir, "subscriptions", "prov-*.txt"))
	if len(files) != 1 {
		t.Fatalf("cache files %v", files)
	}
	if st, err := os.Stat(files[0]); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("cache file %v: %v", st, err)
	}
	p.set("/sub/s3cr3t-prov", panelAnswer{status: 503})
	d = startTgtun(t, n, conf, "--subscription-timeout", "3s")
	t.Cleanup(func() { _ = d.proc.Stop() })
	// The cached set is younger than the interval: no fetch at start.
	if s := subStatus(t, d, "prov"); memberNames(s) != "prov_nl_micro,prov_fr_dante" || s.Origin != subs.OriginCache || !s.LastAttempt.IsZero() {
		t.Fatalf("prov after the restart: %+v", s)
	}
	updateSubscription(t, d, "prov")
	if s := subStatus(t, d, "prov"); memberNames(s) != "prov_nl_micro,prov_fr_dante" || s.Origin != subs.OriginCache || !strings.Contains(s.LastError, "HTTP 503") {
		t.Fatalf("prov from the cache, refresh failed: %+v", s)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	if m := memberStatus(t, d.status(), "prov_nl_micro"); !m.Active || m.Flows == 0 {
		t.Fatalf("after the restart: %+v", m)
	}
	d.stop()
}

// routerMACs are the MAC addresses of the router's interfaces, as hex digits.
func routerMACs(t *testing.T, n *testnet.Net) []string {
	t.Helper()
	var out []string
	for _, iface := range []string{testnet.LANIface, testnet.WANIface} {
		hw, err := net.ParseMAC(strings.TrimSpace(routerExec(t, n, "cat", "/sys/class/net/"+iface+"/address")))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.ReplaceAll(hw.String(), ":", ""))
	}
	return out
}
