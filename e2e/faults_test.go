package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// leakWatch counts, on the internet side, the packets from the router to the messenger
// subnets: with a proxy in between the messenger is only ever reached from the proxy host,
// so any packet counted here is messenger traffic that went direct.
const leakWatch = `
table inet leakwatch {
	counter direct { }
	chain forward {
		type filter hook forward priority -300; policy accept;
		iifname "r0" ip daddr 203.0.113.0/24 counter name direct
		iifname "r0" ip6 daddr 2001:db8:3::/64 counter name direct
	}
}
`

// routerNATScript is the router's masquerade of the test network, loaded again after a
// `nft flush ruleset` as fw4 would load its own ruleset again.
const routerNATScript = `
table ip testnet_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
}
`

func nftScript(t *testing.T, n *testnet.Net, ns, name, script string) {
	t.Helper()
	path := filepath.Join(n.Dir, name+".nft")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := n.Exec(ctx, ns, "nft", "-f", path); err != nil {
		t.Fatalf("nft -f %s in %s: %v\n%s", name, ns, err, out)
	}
}

var counterPackets = regexp.MustCompile(`packets (\d+)`)

// leaked is how many packets to the messenger left the router directly so far.
func leaked(t *testing.T, n *testnet.Net) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, n.Inet, "nft", "list", "counter", "inet", "leakwatch", "direct")
	if err != nil {
		t.Fatalf("read leak counter: %v\n%s", err, out)
	}
	m := counterPackets.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("leak counter: no packet count in\n%s", out)
	}
	k, _ := strconv.Atoi(m[1])
	return k
}

// resetLeak starts counting afresh, so that each fault is judged on its own.
func resetLeak(t *testing.T, n *testnet.Net) {
	t.Helper()
	routerless := []string{"nft", "reset", "counter", "inet", "leakwatch", "direct"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := n.Exec(ctx, n.Inet, routerless...); err != nil {
		t.Fatalf("reset leak counter: %v\n%s", err, out)
	}
}

func assertNoLeak(t *testing.T, n *testnet.Net) {
	t.Helper()
	if k := leaked(t, n); k != 0 {
		t.Fatalf("%d packets to the messenger went out directly, bypassing the proxy", k)
	}
}

// kernelCopies counts tgtun's kernel objects in the router: tables, rules and default
// routes of its table. One of each is the promise; a second is a leftover or a duplicate.
func kernelCopies(t *testing.T, n *testnet.Net) error {
	t.Helper()
	var errs []string
	if c := strings.Count(routerExec(t, n, "nft", "list", "tables"), "table inet tgtun"); c != 1 {
		errs = append(errs, fmt.Sprintf("%d tables inet tgtun", c))
	}
	for _, fam := range []string{"-4", "-6"} {
		rules := routerExec(t, n, "ip", fam, "rule")
		if c := strings.Count(rules, "lookup 7470"); c != 1 {
			errs = append(errs, fmt.Sprintf("ip %s rule: %d rules for table 7470", fam, c))
		}
		if c := strings.Count(rules, "iif tgtun0 lookup main"); c != 1 {
			errs = append(errs, fmt.Sprintf("ip %s rule: %d iif rules", fam, c))
		}
		routes := routerExec(t, n, "ip", fam, "route", "show", "table", "7470")
		if c := strings.Count(routes, "default dev tgtun0"); c != 1 {
			errs = append(errs, fmt.Sprintf("ip %s route table 7470: %d routes via tgtun0:\n%s", fam, c, routes))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// faultBound is how long the daemon may take to notice a fault and rebuild, with room
// for a loaded 2-core machine.
const faultBound = 30 * time.Second

// healthy waits until the promised state is back: messenger traffic through the proxy,
// ordinary traffic direct from its own addresses, one copy of each kernel object and no
// messenger packet ever sent directly.
func healthy(t *testing.T, n *testnet.Net) {
	t.Helper()
	eventually(t, faultBound, "messenger through the proxy", func() error {
		got, err := curl(t, n, msgrURL(false))
		if err != nil {
			return err
		}
		if got != testnet.ProxyV4.String() {
			return fmt.Errorf("messenger saw %s, want the proxy %s", got, testnet.ProxyV4)
		}
		return nil
	})
	seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
	seesAs(t, n, directURL(false), testnet.WANV4.String())
	seesAs(t, n, directURL(true), testnet.ClientV6.String())
	eventually(t, faultBound, "one copy of tgtun's kernel state", func() error { return kernelCopies(t, n) })
	assertNoLeak(t, n)
}

// waitRebuilt waits until status counts a data path rebuild after before, and shows why.
func waitRebuilt(t *testing.T, d *daemon, before int) {
	t.Helper()
	eventually(t, faultBound, "the daemon rebuilds the data path", func() error {
		st := d.status()
		if st.Rebuilds <= before || st.LastRebuild == "" {
			return fmt.Errorf("status rebuilds %d (before %d), last_rebuild %q", st.Rebuilds, before, st.LastRebuild)
		}
		return nil
	})
	t.Logf("status last_rebuild: %s", d.status().LastRebuild)
}

// TestFaults hurts a running daemon in the ways a router sees (issue 15) and checks after
// each that the data path comes back or stays as promised, that nothing is duplicated and
// that neither ordinary traffic is touched nor messenger traffic ever goes out directly
// (fail_mode block). The bus is OpenWrt's real ubusd in the router namespace.
func TestFaults(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartDirectServer(); err != nil {
		t.Fatal(err)
	}
	nftScript(t, n, n.Inet, "leakwatch", leakWatch)
	port, err := n.FreePort(n.Proxy, testnet.ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	proxyProc := startMicrosocksOn(t, n, port)
	ubusd := routerUbusd(t, n)

	conf := tgtunConf{failMode: "block", healthInterval: "1s", proxies: []proxyConf{
		{name: "only", typ: "socks5", server: testnet.ProxyV4.String(), port: port},
	}}
	d := startTgtun(t, n, conf, "--ubus-socket", ubusd.Sock)
	t.Cleanup(func() { _ = d.proc.Stop() })
	healthy(t, n)

	t.Run("proxy killed mid-transfer", func(t *testing.T) {
		resetLeak(t, n)
		flow := dialEchoFlow(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort))
		p := flow.pingEvery(20 * time.Millisecond)
		p.waitRounds(t, 5)
		proxyProc.Kill()
		eventually(t, faultBound, "the flow through the dead proxy ends", func() error {
			if p.failure() == nil {
				return fmt.Errorf("still %d round trips", p.ok.Load())
			}
			return nil
		})
		p.stop()
		eventually(t, faultBound, "proxy reported unhealthy", func() error {
			if m := memberStatus(t, d.status(), "only"); m.Healthy {
				return fmt.Errorf("proxy %+v", m)
			}
			return nil
		})
		if _, err := curl(t, n, msgrURL(false)); err == nil {
			t.Error("the messenger answered with the only proxy dead and fail_mode block")
		}
		assertNoLeak(t, n)
		proxyProc = startMicrosocksOn(t, n, port)
		healthy(t, n)
	})

	t.Run("ubusd restarted", func(t *testing.T) {
		resetLeak(t, n)
		ctx, cancel := context.WithTimeout(context.Background(), faultBound)
		defer cancel()
		waitForObject(ctx, t, ubusd)
		ubusd.Stop()
		if err := ubusd.Start(); err != nil {
			t.Fatal(err)
		}
		waitForObject(ctx, t, ubusd)
		if _, err := ubusCall(ctx, ubusd, "status"); err != nil {
			t.Errorf("status after a ubusd restart: %v", err)
		}
		healthy(t, n)
	})

	t.Run("second tgtun run", func(t *testing.T) {
		resetLeak(t, n)
		flow := dialEchoFlow(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort))
		p := flow.pingEvery(20 * time.Millisecond)
		defer p.stop()
		p.waitRounds(t, 3)
		before := routerExec(t, n, "nft", "list", "table", "inet", "tgtun")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := n.Exec(ctx, n.Router, "env", "TGTUN_ALLOW_DOCUMENTATION_RANGES=1", tgtunBin, "run",
			"-c", d.conf, "--socket", d.socket, "--list-cache", filepath.Join(n.Dir, "lists"))
		if err == nil {
			t.Fatalf("a second tgtun run succeeded:\n%s", out)
		}
		if !strings.Contains(out, "already running") {
			t.Errorf("the second copy's message does not say another tgtun is running:\n%s", out)
		}
		p.waitRounds(t, 3)
		if after := routerExec(t, n, "nft", "list", "table", "inet", "tgtun"); after != before {
			t.Errorf("the second copy changed the ruleset:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		healthy(t, n)
	})

	t.Run("SIGHUP storm", func(t *testing.T) {
		resetLeak(t, n)
		flow := dialEchoFlow(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort))
		p := flow.pingEvery(20 * time.Millisecond)
		defer p.stop()
		p.waitRounds(t, 3)
		tick := time.NewTicker(100 * time.Millisecond)
		for i := 0; i < 50; i++ {
			if err := d.proc.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			<-tick.C
		}
		tick.Stop()
		p.waitRounds(t, 3)
		if st := d.status(); st.LastReloadError != "" {
			t.Errorf("last_reload_error after the storm: %s", st.LastReloadError)
		}
		healthy(t, n)
	})

	t.Run("ip link del tgtun0", func(t *testing.T) {
		resetLeak(t, n)
		before := d.status().Rebuilds
		routerExec(t, n, "ip", "link", "del", "tgtun0")
		waitRebuilt(t, d, before)
		healthy(t, n)
		if exited, err := d.proc.Exited(); exited {
			t.Fatalf("the daemon exited: %v", err)
		}
	})

	t.Run("nft flush ruleset", func(t *testing.T) {
		before := d.status().Rebuilds
		routerExec(t, n, "nft", "flush", "ruleset")
		nftScript(t, n, n.Router, "nat", routerNATScript) // the firewall loads its own again
		// Until the daemon notices, nothing marks messenger traffic: the promise is a
		// rebuild within seconds, then the state of before.
		waitRebuilt(t, d, before)
		resetLeak(t, n)
		healthy(t, n)
	})

	t.Run("nft flush ruleset, then reload", func(t *testing.T) {
		routerExec(t, n, "nft", "flush", "ruleset")
		nftScript(t, n, n.Router, "nat", routerNATScript)
		// What `config check` suggests after `fw4 flush`: the reload rebuilds what is
		// missing (if the watchdog has not yet) instead of failing on the missing sets.
		if _, err := d.call("reload"); err != nil {
			t.Fatalf("reload after nft flush ruleset: %v", err)
		}
		resetLeak(t, n)
		healthy(t, n)
	})

	t.Run("reload applies max_flows", func(t *testing.T) {
		conf := conf
		raw := strings.Replace(conf.render(), "config main 'main'\n", "config main 'main'\n\toption max_flows '100'\n", 1)
		if err := os.WriteFile(d.conf, []byte(raw), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := d.call("reload"); err != nil {
			t.Fatal(err)
		}
		if st := d.status(); st.MaxFlows != 100 {
			t.Errorf("status max_flows = %d after a reload to 100", st.MaxFlows)
		}
		if !strings.Contains(d.proc.Output(), "max_flows=100") {
			t.Errorf("the engine did not take max_flows 100:\n%s", lastLines(d.proc.Output(), 20))
		}
		d.writeConf(conf)
		if _, err := d.call("reload"); err != nil {
			t.Fatal(err)
		}
		resetLeak(t, n)
		healthy(t, n)
	})

	t.Run("kill -9 with fail_mode block", func(t *testing.T) {
		resetLeak(t, n)
		d.proc.Kill()
		for i := 0; i < 3; i++ {
			if got, err := curl(t, n, msgrURL(false)); err == nil {
				t.Fatalf("the messenger answered (saw %s) with the daemon dead and fail_mode block", got)
			}
			if err := udpExchange(n, netip.AddrPortFrom(testnet.MsgrV6, testnet.EchoPort), 500*time.Millisecond); err == nil {
				t.Fatal("a UDP echo came back from the messenger with the daemon dead")
			}
		}
		assertNoLeak(t, n)
		seesAs(t, n, directURL(false), testnet.WANV4.String())
		seesAs(t, n, directURL(true), testnet.ClientV6.String())
		d.start("--ubus-socket", ubusd.Sock)
		healthy(t, n)
	})
	d.stop()
}

// fw4Mangle is what fw4 makes of a user's `option set_mark` rule: a chain at priority
// mangle that overwrites the packet mark. fw4 starts before tgtun at boot.
const fw4Mangle = `
table inet fw4 {
	chain mangle_prerouting {
		type filter hook prerouting priority mangle; policy accept;
		iifname "lan0" meta mark set 0x00000010 comment "!fw4: user set_mark rule"
	}
}
`

// TestFw4MarkRuleOrder: a fw4 `meta mark set` rule in a chain at priority mangle, loaded
// before tgtun as at boot, must not clear tgtun's bit: tgtun hooks just after (mangle +
// 1) and writes only its bits, so the messenger still goes through the proxy and the
// user's mark is kept alongside.
func TestFw4MarkRuleOrder(t *testing.T) {
	n, dante := newNetWithDante(t)
	nftScript(t, n, n.Inet, "leakwatch", leakWatch)
	nftScript(t, n, n.Router, "fw4", fw4Mangle)
	d := startTgtun(t, n, danteConf(dante))
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
	seesAs(t, n, directURL(false), testnet.WANV4.String())
	assertNoLeak(t, n)
	if out := routerExec(t, n, "nft", "list", "chain", "inet", "tgtun", "prerouting"); !strings.Contains(out, "priority mangle + 1") {
		t.Errorf("tgtun's prerouting chain does not hook at mangle + 1:\n%s", out)
	}
	d.stop()
}

// TestReloadToLowMTUWithoutIPv6: tun_mtu 576..1279 is valid with ipv6 '0'; a reload to
// it must give a working data path, not a torn-down one the engine then refuses. The
// lists keep their IPv6 ranges (as the catalogue's do): with IPv6 off they are left out.
func TestReloadToLowMTUWithoutIPv6(t *testing.T) {
	n, dante := newNetWithDante(t)
	d := startTgtun(t, n, danteConf(dante))
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	low := strings.Replace(danteConf(dante).render(), "option ipv6 '1'", "option ipv6 '0'", 1)
	low = strings.Replace(low, "option tun_mtu '1500'", "option tun_mtu '1000'", 1)
	if err := os.WriteFile(d.conf, []byte(low), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.call("reload"); err != nil {
		t.Fatalf("reload to tun_mtu 1000 with ipv6 '0': %v", err)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	if link := routerExec(t, n, "ip", "link", "show", "tgtun0"); !strings.Contains(link, "mtu 1000") {
		t.Errorf("tgtun0 after the reload:\n%s", link)
	}
	if st := d.status(); st.LastReloadError != "" || st.NetError != "" {
		t.Errorf("status after the reload: last_reload_error %q, net_error %q", st.LastReloadError, st.NetError)
	}
	d.stop()
}

// TestDescriptorLimit runs the daemon with a descriptor limit far below what max_flows
// (4096) needs and without the privilege to raise it, then opens more flows than the
// limit holds. max_flows is clamped with a warning, and running out of flow slots never
// costs the control socket, the health probe or the proxy's verdict: status answers,
// the proxy stays healthy, and a new flow works once the idle ones are gone.
func TestDescriptorLimit(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	port, err := n.FreePort(n.Proxy, testnet.ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	startMicrosocksOn(t, n, port)
	d := &daemon{t: t, n: n, conf: filepath.Join(n.Dir, "tgtun.conf"), socket: filepath.Join(n.Dir, "tgtun.sock")}
	d.writeConf(tgtunConf{healthInterval: "1s", proxies: []proxyConf{{name: "only", typ: "socks5", server: testnet.ProxyV4.String(), port: port}}})
	const limit = 300
	p, err := n.Start(n.Router, "prlimit", fmt.Sprintf("--nofile=%d:%d", limit, limit),
		"setpriv", "--bounding-set", "-sys_resource",
		"env", "TGTUN_ALLOW_DOCUMENTATION_RANGES=1", tgtunBin, "run", "-c", d.conf, "--socket", d.socket,
		"--list-cache", filepath.Join(n.Dir, "lists"))
	if err != nil {
		t.Fatal(err)
	}
	d.proc = p
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tgtun output:\n%s", lastLines(p.Output(), 60))
		}
		_ = p.Stop()
	})
	eventually(t, 60*time.Second, "tgtun answers", func() error {
		if exited, err := p.Exited(); exited {
			t.Fatalf("tgtun exited at start (%v):\n%s", err, p.Output())
		}
		_, err := d.call("status")
		return err
	})
	st := d.status()
	wantFlows := (limit - 256) / 2
	if st.MaxFlows != wantFlows {
		t.Errorf("status max_flows = %d, want %d (what %d descriptors carry)", st.MaxFlows, wantFlows, limit)
	}
	if !strings.Contains(strings.Join(st.Warnings, "\n"), "descriptor limit") {
		t.Errorf("no warning about the descriptor limit in status: %q", st.Warnings)
	}
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())

	// More idle flows than the limit could ever hold.
	var held int
	for i := 0; i < limit; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := n.Dial(ctx, n.Client, "tcp", netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort).String())
		cancel()
		if err != nil {
			continue // refused beyond max_flows: expected
		}
		t.Cleanup(func() { c.Close() })
		held++
	}
	t.Logf("%d of %d flows accepted by the netstack", held, limit)
	if _, err := d.call("status"); err != nil {
		t.Fatalf("status with the flows held: %v", err)
	}
	flood := time.Now()
	eventually(t, faultBound, "a health probe after the flood finds the proxy healthy", func() error {
		m := memberStatus(t, d.status(), "only")
		if !m.LastCheck.After(flood) || !m.Healthy {
			return fmt.Errorf("proxy %+v", m)
		}
		return nil
	})
	if exited, err := p.Exited(); exited {
		t.Fatalf("tgtun exited: %v", err)
	}
	st = d.status()
	if st.Flows.ActiveTCP > int64(wantFlows) {
		t.Errorf("%d TCP flows active, over max_flows %d", st.Flows.ActiveTCP, wantFlows)
	}
}
