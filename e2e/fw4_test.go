package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/openwrt"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// fw4Changes turns OpenWrt's default /etc/config/firewall (lan and wan zones, masquerade
// on wan, lan may forward to wan, the default rules), which firewall4 ships, into the
// firewall of the test's router, with OpenWrt's uci, as an admin would. Two things a real
// router may have are added:
//   - a lan zone with input REJECT (the router's own services closed to the LAN; ICMPv6 is
//     let in, or neighbour discovery and so IPv6 stop): on the tproxy data path, LAN
//     connections to the messengers are delivered to tgtun's local transparent listener
//     and meet chain input, where tgtun's fw4 include must let them in;
//   - a user's MARK rule on LAN traffic (QoS, multi-WAN), which fw4 renders as `meta mark
//     set` in chain mangle_prerouting at priority mangle: tgtun's marking must come after
//     it, or the user's rule wipes tgtun's mark.
const fw4Changes = `
uci batch <<EOF
set firewall.@zone[0].input='REJECT'
add firewall rule
set firewall.@rule[-1].name='Allow-ICMPv6-LAN'
set firewall.@rule[-1].src='lan'
set firewall.@rule[-1].proto='icmp'
set firewall.@rule[-1].family='ipv6'
set firewall.@rule[-1].target='ACCEPT'
add firewall rule
set firewall.@rule[-1].name='Mark-LAN-for-QoS'
set firewall.@rule[-1].src='lan'
set firewall.@rule[-1].dest='*'
set firewall.@rule[-1].set_mark='0x10'
set firewall.@rule[-1].target='MARK'
commit firewall
EOF
[ "$(uci get firewall.@zone[0].name)" = lan ] && [ "$(uci get firewall.@zone[1].masq)" = 1 ]
`

// fw4Router is the router namespace's firewall run by OpenWrt's fw4: a router root with
// firewall4, tgtun's /usr/share/nftables.d includes and fw4Changes, and on the real ubusd
// the answers fw4 asks for: netifd's interface dump (lan = lan0, wan/wan6 = wan0 with the
// test network's addresses) and procd's service data.
type fw4Router struct {
	root  *openwrt.Root
	ubusd *openwrt.Ubusd
}

func newFw4Router(t *testing.T, n *testnet.Net) *fw4Router {
	t.Helper()
	h := openwrt.NeedHost(t)
	r := openwrt.NewRoot(t, h)
	r.NetNS = n.Router
	if err := r.AddFirewall4(); err != nil {
		t.Fatal(err)
	}
	incl := "../openwrt/files/usr/share/nftables.d"
	err := filepath.Walk(incl, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(incl, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return r.WriteFile(filepath.Join("usr/share/nftables.d", rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("tgtun's fw4 includes: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := r.Sh(ctx, fw4Changes); err != nil {
		t.Fatalf("uci on /etc/config/firewall: %v\n%s", err, out)
	}
	u := openwrt.StartUbusd(t, h, n.Router, r.Path("var/run/ubus/ubus.sock"))
	openwrt.ServeProcd(t, u.Sock)
	p := netip.MustParsePrefix
	openwrt.ServeNetifd(t, u.Sock,
		openwrt.Iface{Name: "lan", Device: testnet.LANIface, Addrs: []netip.Prefix{p("192.0.2.1/24"), p("2001:db8:1::1/64")}},
		openwrt.Iface{Name: "wan", Device: testnet.WANIface, Addrs: []netip.Prefix{p("198.51.100.1/24")}},
		openwrt.Iface{Name: "wan6", Device: testnet.WANIface, Addrs: []netip.Prefix{p("2001:db8:2::1/64")}})
	return &fw4Router{root: r, ubusd: u}
}

// fw4 runs `fw4 ARGS...` in the router root, in the router namespace.
func (f *fw4Router) fw4(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := f.root.Run(ctx, append([]string{"fw4"}, args...)...)
	if err != nil {
		t.Fatalf("fw4 %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if strings.Contains(out, "Error") {
		t.Fatalf("fw4 %s: %s", strings.Join(args, " "), out)
	}
	// fw4 start and reload exit 0 even when nft refused the ruleset: look for the table.
	if args[0] != "flush" {
		if out, err := f.root.Run(ctx, "nft", "list", "table", "inet", "fw4"); err != nil {
			t.Fatalf("after fw4 %s, no fw4 table: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// besideFw4 is what must hold on a router with fw4 and tgtun: a messenger TCP connection
// and a UDP echo from the LAN client go through the proxy (the censor refuses anything
// else to the messenger), while an ordinary connection goes direct, masqueraded by fw4 to
// the WAN address (IPv6 routed, as the client's own address).
func besideFw4(n *testnet.Net) error {
	got, err := curlOnce(n, msgrURL(false))
	if err != nil {
		return fmt.Errorf("messenger over TCP: %w", err)
	}
	if got != testnet.ProxyV4.String() {
		return fmt.Errorf("the messenger saw %s, want the proxy %s", got, testnet.ProxyV4)
	}
	if err := udpExchange(n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort), 2*time.Second); err != nil {
		return fmt.Errorf("UDP echo from the messenger: %w", err)
	}
	if got, err := curlOnce(n, directURL(false)); err != nil || got != testnet.WANV4.String() {
		return fmt.Errorf("direct IPv4: saw %q (%v), want fw4's masquerade to %s", got, err, testnet.WANV4)
	}
	if got, err := curlOnce(n, directURL(true)); err != nil || got != testnet.ClientV6.String() {
		return fmt.Errorf("direct IPv6: saw %q (%v), want the client's own %s", got, err, testnet.ClientV6)
	}
	return nil
}

// curlOnce fetches url from the client once and returns the address the server saw.
func curlOnce(n *testnet.Net, url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, n.Client, "curl", "-sS", "--noproxy", "*", "--max-time", "5", url)
	if err != nil {
		return "", fmt.Errorf("curl %s: %w: %s", url, err, strings.TrimSpace(out))
	}
	a, err := testnet.ParseYouAre(out)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

// fw4Bound is how long the data path may take to be whole again after a firewall
// operation (the daemon notices a flushed table within seconds).
const fw4Bound = 30 * time.Second

// TestBesideFw4 runs tgtun on a router whose firewall is OpenWrt's real fw4 (ucode and
// firewall4 from ../shared/openwrt), loaded with nft in the router namespace: the default
// firewall (zones, masquerade, rules) with a lan zone set to input REJECT and a user's MARK
// rule added, and tgtun's
// fw4 includes. Messenger traffic must be tunnelled and the rest masqueraded direct, and
// stay so, with no manual step, after `fw4 reload`, `fw4 restart` and `fw4 flush` + `fw4
// start`; no messenger packet may leave directly once the path is whole. It checks
// behaviour, not the shape of tgtun's rules, so it holds for any data path tgtun uses.
func TestBesideFw4(t *testing.T) {
	n, dante := newNetWithDante(t)
	nftScript(t, n, n.Inet, "leakwatch", leakWatch)
	// From here the router's firewall, masquerade included, is fw4's.
	routerExec(t, n, "nft", "delete", "table", "ip", "testnet_nat")
	fw := newFw4Router(t, n)
	fw.fw4(t, "start")
	if list := routerExec(t, n, "nft", "list", "ruleset"); !strings.Contains(list, "table inet fw4") {
		t.Fatalf("fw4 start loaded no fw4 table:\n%s", list)
	}
	seesAs(t, n, directURL(false), testnet.WANV4.String())

	d := startTgtun(t, n, danteConf(dante), "--ubus-socket", fw.ubusd.Sock)
	holds := func(t *testing.T, what string) {
		t.Helper()
		eventually(t, fw4Bound, what, func() error { return besideFw4(n) })
		// Whole again: from now on not one messenger packet may leave directly.
		resetLeak(t, n)
		if err := besideFw4(n); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		assertNoLeak(t, n)
	}
	holds(t, "tgtun started after fw4")
	for _, op := range [][]string{{"reload"}, {"restart"}, {"flush"}} {
		name := "fw4 " + strings.Join(op, " ")
		if op[0] == "flush" {
			name = "fw4 flush + fw4 start"
		}
		t.Run(name, func(t *testing.T) {
			fw.fw4(t, op...)
			if op[0] == "flush" {
				fw.fw4(t, "start")
			}
			holds(t, "after "+name)
			if exited, err := d.proc.Exited(); exited {
				t.Fatalf("tgtun exited: %v", err)
			}
		})
	}
	d.stop()
	// tgtun stopped: the firewall is fw4's alone again and ordinary traffic still flows.
	seesAs(t, n, directURL(false), testnet.WANV4.String())
}
