package e2e

// Issue "Service lists": lists downloaded from a server in the test network, swapped
// without touching established flows, bad downloads refused, the cache used on restart.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/control"
	"github.com/tgtun/tgtun/daemon/lists"
	"github.com/tgtun/tgtun/e2e/testnet"
)

const messengerList = "203.0.113.0/24\n2001:db8:3::/64\n"

// TestListUpdateKeepsFlow swaps the target set under a running flow: the flow keeps its
// path, new connections follow the new list, and bad downloads change nothing.
func TestListUpdateKeepsFlow(t *testing.T) {
	n, ls, conf := newListNet(t)
	d := startTgtun(t, n, conf)
	res := updateLists(t, d)
	if res.Error != "" {
		t.Fatalf("update-lists with a good list: %s", res.Error)
	}
	if st := listStatus(t, d.status(), ls.url); st.Origin != lists.OriginDownload || st.Entries4 != 1 || st.Entries6 != 1 || st.LastError != "" {
		t.Fatalf("list status after the first download: %+v", st)
	}
	// Downloads go through the active proxy: the list host may be blocked too.
	if from, ok := ls.lastFetchFrom(); !ok || from != testnet.ProxyV4 {
		t.Errorf("the list was fetched from %v (fetched: %v), want through the proxy (%s)", from, ok, testnet.ProxyV4)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())

	flow := dialEchoFlow(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort))
	pinger := flow.pingEvery(100 * time.Millisecond)
	t.Cleanup(pinger.stop)
	pinger.waitRounds(t, 3)

	setBefore := targetSets(t, n)
	ls.set("203.0.113.128/25\n")
	if res := updateLists(t, d); res.Error != "" {
		t.Fatalf("update-lists with a smaller list: %s", res.Error)
	}
	setAfter := targetSets(t, n)
	if setAfter == setBefore {
		t.Fatalf("target sets unchanged by the update:\n%s", setAfter)
	}
	dst4 := routerExec(t, n, "nft", "-j", "list", "set", "inet", "tgtun", "dst4")
	if !strings.Contains(dst4, `"203.0.113.128"`) || strings.Contains(dst4, `"203.0.113.0"`) {
		t.Fatalf("set dst4 after the update does not hold just 203.0.113.128/25:\n%s", dst4)
	}
	pinger.waitRounds(t, 10) // the established flow keeps its path through the proxy
	if _, err := curl(t, n, msgrURL(false)); err == nil {
		t.Fatalf("a new connection to %s still reached the messenger after it left the list", testnet.MsgrV4)
	}
	assertRefusedFast(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort)) // the censor's reset
	pinger.waitRounds(t, 3)

	goodSets := targetSets(t, n)
	for _, bad := range []struct {
		name, body, reason string
	}{
		{"an HTML page", "<html><head><title>Captive portal</title></head><body>Log in</body></html>\n", "HTML"},
		{"an empty body", "", "no entries"},
		{"a default route", "0.0.0.0/0\n", "default route"},
	} {
		ls.set(bad.body)
		res := updateLists(t, d)
		if res.Error == "" {
			t.Errorf("update-lists with %s: no error in the result", bad.name)
		}
		st := listStatus(t, d.status(), ls.url)
		t.Logf("%s: last_error %q", bad.name, st.LastError)
		if !strings.Contains(st.LastError, bad.reason) {
			t.Errorf("list status after %s: last_error %q, want it to say %q", bad.name, st.LastError, bad.reason)
		}
		if st.Origin != lists.OriginDownload || st.Entries4 != 1 || st.Entries6 != 0 {
			t.Errorf("list status after %s: %+v, want the previous download still in use", bad.name, st)
		}
		if got := targetSets(t, n); got != goodSets {
			t.Errorf("%s changed the target sets:\nbefore:\n%s\nafter:\n%s", bad.name, goodSets, got)
		}
		pinger.waitRounds(t, 2)
	}
	pinger.stop()
	if err := pinger.failure(); err != nil {
		t.Fatalf("the long flow broke: %v", err)
	}
	d.stop()
}

// TestListCacheFallback restarts the daemon while the list server is down: the list
// downloaded before comes from the cache and targets are tunnelled at once.
func TestListCacheFallback(t *testing.T) {
	n, ls, conf := newListNet(t)
	d := startTgtun(t, n, conf)
	waitProxiesProbedHealthy(t, d)
	if st := listStatus(t, d.status(), ls.url); st.Origin != lists.OriginNone || st.Entries4 != 0 {
		t.Fatalf("list status before any download: %+v, want origin none", st)
	}
	if res := updateLists(t, d); res.Error != "" {
		t.Fatalf("update-lists: %s", res.Error)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	d.stop()

	ls.close(t)
	d.start()
	waitProxiesProbedHealthy(t, d)
	st := listStatus(t, d.status(), ls.url)
	if st.Origin != lists.OriginCache || st.Entries4 != 1 || st.Entries6 != 1 {
		t.Fatalf("list status after a restart: %+v, want the cached download", st)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())

	// With the server still down an update fails and the cached list stays.
	res := updateLists(t, d)
	if res.Error == "" {
		t.Error("update-lists with the list server down: no error in the result")
	}
	if st := listStatus(t, d.status(), ls.url); st.Origin != lists.OriginCache || st.Entries4 != 1 || st.LastError == "" {
		t.Errorf("list status after a failed update: %+v, want the cache kept and the error shown", st)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	d.stop()
}

// waitProxiesProbedHealthy waits until every proxy has been probed and found healthy,
// so that what follows does not race the daemon's first probes on a loaded machine.
func waitProxiesProbedHealthy(t *testing.T, d *daemon) {
	t.Helper()
	eventually(t, 60*time.Second, "every proxy probed and healthy", func() error {
		st := d.status()
		if len(st.Proxies) == 0 {
			return fmt.Errorf("no proxy in status")
		}
		for _, p := range st.Proxies {
			if !p.Healthy || p.LastCheck.IsZero() {
				return fmt.Errorf("proxy %+v not yet probed healthy", p)
			}
		}
		return nil
	})
}

// listServer serves one list over HTTP from the direct server's address; its body can be
// changed while it runs.
type listServer struct {
	url  string
	body atomic.Pointer[string]
	srv  *http.Server

	mu   sync.Mutex
	from []netip.Addr // who fetched the list, in order
}

func startListServer(t *testing.T, n *testnet.Net, body string) *listServer {
	t.Helper()
	port, err := n.FreePort(n.Inet, testnet.DirectV4)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(testnet.DirectV4, port)
	l, err := n.Listen(n.Inet, "tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	ls := &listServer{url: fmt.Sprintf("http://%s/list.txt", addr)}
	ls.set(body)
	ls.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
				ls.mu.Lock()
				ls.from = append(ls.from, ap.Addr().Unmap())
				ls.mu.Unlock()
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, *ls.body.Load())
		}),
	}
	go func() { _ = ls.srv.Serve(l) }()
	t.Cleanup(func() { _ = ls.srv.Close() })
	return ls
}

func (ls *listServer) set(body string) { ls.body.Store(&body) }

// newListNet builds the test network with dante and a list server in it serving the
// messenger's subnets, and a configuration whose only targets come from that list.
func newListNet(t *testing.T) (*testnet.Net, *listServer, tgtunConf) {
	t.Helper()
	n, dante := newNetWithDante(t)
	ls := startListServer(t, n, messengerList)
	conf := danteConf(dante)
	conf.noStaticTarget, conf.listURLs = true, []string{ls.url}
	return n, ls, conf
}

// lastFetchFrom is the address the last download came from.
func (ls *listServer) lastFetchFrom() (netip.Addr, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if len(ls.from) == 0 {
		return netip.Addr{}, false
	}
	return ls.from[len(ls.from)-1], true
}

func (ls *listServer) close(t *testing.T) {
	t.Helper()
	if err := ls.srv.Close(); err != nil {
		t.Fatalf("stop the list server: %v", err)
	}
}

// listUpdate is the result of update_lists.
type listUpdate struct {
	Lists []lists.ListStatus `json:"lists"`
	Error string             `json:"error"`
}

func updateLists(t *testing.T, d *daemon) listUpdate {
	t.Helper()
	raw, err := d.call("update-lists")
	if err != nil {
		t.Fatal(err)
	}
	var res listUpdate
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("decode update-lists: %v\n%s", err, raw)
	}
	return res
}

// listStatus finds the list downloaded from url in status.
func listStatus(t *testing.T, st control.Status, url string) lists.ListStatus {
	t.Helper()
	for _, l := range st.Lists {
		if l.URL == url {
			return l
		}
	}
	t.Fatalf("no list from %s in status: %+v", url, st.Lists)
	return lists.ListStatus{}
}

// targetSets is the router's listing of both target sets, for byte-for-byte comparison.
func targetSets(t *testing.T, n *testnet.Net) string {
	t.Helper()
	return routerExec(t, n, "nft", "-j", "list", "set", "inet", "tgtun", "dst4") +
		routerExec(t, n, "nft", "-j", "list", "set", "inet", "tgtun", "dst6")
}

// echoFlow is a long TCP connection from the client to an echo server.
type echoFlow struct {
	c     net.Conn
	round int
}

func dialEchoFlow(t *testing.T, n *testnet.Net, dst netip.AddrPort) *echoFlow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := n.Dial(ctx, n.Client, "tcp", dst.String())
	if err != nil {
		t.Fatalf("dial echo %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return &echoFlow{c: c}
}

// roundTrip sends a line and expects it back. Not safe for concurrent use.
func (f *echoFlow) roundTrip() error {
	f.round++
	msg := []byte(fmt.Sprintf("round %d\n", f.round))
	_ = f.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := f.c.Write(msg); err != nil {
		return fmt.Errorf("round %d: write: %w", f.round, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(f.c, got); err != nil {
		return fmt.Errorf("round %d: read: %w", f.round, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("round %d: echo %q, want %q", f.round, got, msg)
	}
	return nil
}

// flowPinger runs round trips on a flow in the background until the first failure.
type flowPinger struct {
	ok      atomic.Int64
	done    chan struct{}
	stopped chan struct{}
	once    sync.Once

	mu  sync.Mutex
	err error
}

func (f *echoFlow) pingEvery(every time.Duration) *flowPinger {
	p := &flowPinger{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(p.stopped)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if err := f.roundTrip(); err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
				return
			}
			p.ok.Add(1)
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *flowPinger) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// stop ends the pinger and waits for its last round trip (bounded by its 5 s deadline).
func (p *flowPinger) stop() {
	p.once.Do(func() { close(p.done) })
	<-p.stopped
}

// waitRounds waits for k more successful round trips; a failure of the flow fails t.
func (p *flowPinger) waitRounds(t *testing.T, k int64) {
	t.Helper()
	want := p.ok.Load() + k
	deadline := time.Now().Add(20 * time.Second)
	for p.ok.Load() < want {
		if err := p.failure(); err != nil {
			t.Fatalf("the long flow broke after %d round trips: %v", p.ok.Load(), err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the long flow made %d of %d round trips in 20s", p.ok.Load(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
