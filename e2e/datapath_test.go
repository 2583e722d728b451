package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// TestTCPThroughSOCKS5 sends messenger traffic through dante and microsocks, v4 and v6,
// without and with username/password auth, while ordinary traffic keeps the path and the
// source address it has without tgtun. The router runs with rp_filter=1 (strict) on every
// interface, the hard case for replies coming out of the TUN.
func TestTCPThroughSOCKS5(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartDirectServer(); err != nil {
		t.Fatal(err)
	}
	// Strict reverse-path filtering on the router: "all" applies to every interface,
	// including the TUN tgtun creates (the kernel uses the larger of all and the device's).
	routerExec(t, n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	if got := strings.TrimSpace(routerExec(t, n, "sysctl", "-n", "net.ipv4.conf.all.rp_filter")); got != "1" {
		t.Fatalf("router rp_filter = %s, the test needs strict (1)", got)
	}
	// What ordinary traffic looks like before tgtun: v4 masqueraded by the router, v6 routed.
	directV4, err := curl(t, n, directURL(false))
	if err != nil {
		t.Fatal(err)
	}
	directV6, err := curl(t, n, directURL(true))
	if err != nil {
		t.Fatal(err)
	}
	if directV6 != testnet.ClientV6.String() {
		t.Fatalf("before tgtun the direct server saw %s over IPv6, want the client's own %s", directV6, testnet.ClientV6)
	}

	dante, err := n.StartDante(testnet.DanteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	danteAuth, err := n.StartDante(testnet.DanteOptions{Auth: true, User: "tguser", Pass: "tg-secret"})
	if err != nil {
		t.Fatal(err)
	}
	micro, err := n.StartMicrosocks("", "")
	if err != nil {
		t.Fatal(err)
	}
	microAuth, err := n.StartMicrosocks("mu", "mp-secret")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		addr       netip.AddrPort
		user, pass string
	}{
		{"dante", dante, "", ""},
		{"dante-auth", danteAuth, "tguser", "tg-secret"},
		{"microsocks", micro, "", ""},
		{"microsocks-auth", microAuth, "mu", "mp-secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{{
				name: "p", typ: "socks5", server: c.addr.Addr().String(), port: c.addr.Port(),
				user: c.user, pass: c.pass, udp: true,
			}}})
			seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
			seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
			seesAs(t, n, directURL(false), directV4)
			seesAs(t, n, directURL(true), directV6)
			st := d.status()
			if st.Flows.TotalTCP < 2 || st.Flows.BytesDown == 0 || st.Flows.BytesUp == 0 {
				t.Errorf("status flows = %+v, want the two messenger requests counted with bytes", st.Flows)
			}
			if len(st.Proxies) != 1 || !st.Proxies[0].Healthy || st.Proxies[0].Flows < 2 {
				t.Errorf("status proxies = %+v, want one healthy proxy that carried the flows", st.Proxies)
			}
			d.stop()
		})
	}
}

// TestUDPThroughDante relays UDP to the messenger through dante's UDP ASSOCIATE.
func TestUDPThroughDante(t *testing.T) {
	n, dante := newNetWithDante(t)
	d := startTgtun(t, n, danteConf(dante))
	for _, dst := range []netip.Addr{testnet.MsgrV4, testnet.MsgrV6} {
		udpEchoThrough(t, n, netip.AddrPortFrom(dst, testnet.EchoPort))
	}
	st := d.status()
	if st.Flows.TotalUDP < 2 {
		t.Errorf("status flows = %+v, want 2 UDP flows", st.Flows)
	}
}

// echoConn is a long TCP flow from the client to the messenger's echo server.
type echoConn struct {
	net.Conn
	round int
}

func dialEcho(t *testing.T, n *testnet.Net, dst netip.Addr) *echoConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := n.Dial(ctx, n.Client, "tcp", netip.AddrPortFrom(dst, testnet.EchoPort).String())
	if err != nil {
		t.Fatalf("dial echo %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return &echoConn{Conn: c}
}

// roundTrip sends a line and expects it back.
func (e *echoConn) roundTrip() error {
	e.round++
	msg := []byte(fmt.Sprintf("round %d\n", e.round))
	_ = e.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := e.Write(msg); err != nil {
		return fmt.Errorf("round %d: write: %w", e.round, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(e, got); err != nil {
		return fmt.Errorf("round %d: read: %w", e.round, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("round %d: echo %q", e.round, got)
	}
	return nil
}

// TestReloadKeepsFlows reloads a changed configuration, then a broken one, while a TCP
// flow runs through the proxy: the flow survives both, and the broken file changes nothing.
func TestReloadKeepsFlows(t *testing.T) {
	n, dante := newNetWithDante(t)
	conf := danteConf(dante)
	d := startTgtun(t, n, conf)
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	flow := dialEcho(t, n, testnet.MsgrV4)
	if err := flow.roundTrip(); err != nil {
		t.Fatal(err)
	}

	// A changed list and proxy settings: sets and dialer are swapped, the flow stays.
	conf.extraSubnets = []string{"203.0.113.200/32"}
	conf.proxies[0].priority = 5
	d.writeConf(conf)
	if _, err := d.call("reload"); err != nil {
		t.Fatal(err)
	}
	if err := flow.roundTrip(); err != nil {
		t.Fatalf("flow after reload: %v", err)
	}

	// SIGHUP does the same.
	if err := d.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := flow.roundTrip(); err != nil {
		t.Fatalf("flow after SIGHUP: %v", err)
	}

	// A broken file: reload fails with the file's error, the running config stays.
	before := routerExec(t, n, "nft", "list", "table", "inet", "tgtun")
	bad := conf.render() + "\nconfig proxy 'broken'\n\toption server '198.51.100.9'\n\toption port '70000'\n"
	if err := os.WriteFile(d.conf, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := d.call("reload")
	if err == nil || !strings.Contains(err.Error(), "70000") || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("reload of a broken file: err = %v, want the port error", err)
	}
	st := d.status()
	if !strings.Contains(st.LastReloadError, "70000") {
		t.Errorf("status last_reload_error = %q, want the port error", st.LastReloadError)
	}
	if after := routerExec(t, n, "nft", "list", "table", "inet", "tgtun"); after != before {
		t.Errorf("a rejected reload changed the ruleset:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := flow.roundTrip(); err != nil {
		t.Fatalf("flow after a rejected reload: %v", err)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	if st.Flows.ActiveTCP < 1 {
		t.Errorf("status flows = %+v, want the long flow active", st.Flows)
	}

	// A change of the kernel side (here the TUN's MTU) rebuilds TUN and engine: new
	// connections work through the new ones.
	conf.tunMTU = 1400
	d.writeConf(conf)
	if _, err := d.call("reload"); err != nil {
		t.Fatal(err)
	}
	if out := routerExec(t, n, "ip", "link", "show", "tgtun0"); !strings.Contains(out, "mtu 1400") {
		t.Errorf("tgtun0 after an MTU reload:\n%s", out)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
}

// TestKill9AndRestart kills the daemon without a chance to clean up: ordinary traffic is
// unaffected, and the next start replaces the leftovers instead of adding a second copy.
func TestKill9AndRestart(t *testing.T) {
	n, dante := newNetWithDante(t)
	conf := danteConf(dante)
	d := startTgtun(t, n, conf)
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())

	d.proc.Kill()
	seesAs(t, n, directURL(false), testnet.WANV4.String())
	seesAs(t, n, directURL(true), testnet.ClientV6.String())

	d.start()
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
	if got := strings.Count(routerExec(t, n, "nft", "list", "tables"), "table inet tgtun"); got != 1 {
		t.Errorf("%d copies of table inet tgtun after a restart, want 1", got)
	}
	for _, fam := range []string{"-4", "-6"} {
		rules := routerExec(t, n, "ip", fam, "rule")
		if c := strings.Count(rules, "lookup 7470"); c != 1 {
			t.Errorf("ip %s rule: %d rules for table 7470, want 1:\n%s", fam, c, rules)
		}
		if c := strings.Count(rules, "iif tgtun0 lookup main"); c != 1 {
			t.Errorf("ip %s rule: %d iif rules, want 1:\n%s", fam, c, rules)
		}
	}
	d.stop()
}

// TestStopRemovesEverything stops the daemon with SIGTERM: no table, rule, route or device
// is left, and the network is as it was before tgtun.
func TestStopRemovesEverything(t *testing.T) {
	n, dante := newNetWithDante(t)
	rulesBefore := routerExec(t, n, "ip", "rule") + routerExec(t, n, "ip", "-6", "rule")
	linksBefore := linkNames(t, n)
	d := startTgtun(t, n, danteConf(dante))
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	if !strings.Contains(routerExec(t, n, "ip", "-o", "link", "show"), "tgtun0") {
		t.Fatal("tgtun0 missing while running")
	}
	d.stop()

	if out := routerExec(t, n, "nft", "list", "tables"); strings.Contains(out, "tgtun") {
		t.Errorf("nft table left after SIGTERM:\n%s", out)
	}
	if after := routerExec(t, n, "ip", "rule") + routerExec(t, n, "ip", "-6", "rule"); after != rulesBefore {
		t.Errorf("ip rules changed by a run:\nbefore:\n%s\nafter:\n%s", rulesBefore, after)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out := strings.TrimSpace(routerExec(t, n, "ip", fam, "route", "show", "table", "7470")); out != "" {
			t.Errorf("routes left in table 7470 (%s):\n%s", fam, out)
		}
	}
	if after := linkNames(t, n); after != linksBefore {
		t.Errorf("links changed by a run:\nbefore:\n%s\nafter:\n%s", linksBefore, after)
	}
	seesAs(t, n, directURL(false), testnet.WANV4.String())
	if _, err := curl(t, n, msgrURL(false)); err == nil {
		t.Error("the messenger is reachable after tgtun stopped: the censor should block it again")
	}
}

// linkNames lists the router's interfaces by name (their state may change on its own).
func linkNames(t *testing.T, n *testnet.Net) string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(routerExec(t, n, "ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " ")
}

// newNetWithDante builds the test network with its messenger and direct servers and a
// dante SOCKS5 server without auth on the proxy host.
func newNetWithDante(t *testing.T) (*testnet.Net, netip.AddrPort) {
	t.Helper()
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartDirectServer(); err != nil {
		t.Fatal(err)
	}
	dante, err := n.StartDante(testnet.DanteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n, dante
}

// danteConf is a configuration with dante as the only proxy.
func danteConf(dante netip.AddrPort) tgtunConf {
	return tgtunConf{proxies: []proxyConf{{name: "dante", typ: "socks5", server: dante.Addr().String(), port: dante.Port(), udp: true}}}
}
