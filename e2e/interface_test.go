package e2e

// Issue 13 item 4: an existing interface (WireGuard) as a proxy: kernel routing into it,
// health from the device and the probe, failover with a SOCKS proxy, fail_mode.

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// routeDev is the device a marked packet to dst leaves the router by.
func routeDev(t *testing.T, n *testnet.Net, dst netip.Addr) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, n.Router, "ip", "route", "get", dst.String(), "mark", "0x100000")
	if err != nil {
		t.Fatalf("ip route get: %v: %s", err, out)
	}
	f := strings.Fields(out)
	for i := range len(f) - 1 {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	t.Fatalf("ip route get %s: no dev in %q", dst, out)
	return ""
}

// TestInterfaceProxy routes the messenger into a real WireGuard link (wireguard-go, wg)
// while it is up, TCP and UDP over IPv4 and IPv6; fails over to a SOCKS proxy when the
// link goes down and back when it returns; and blocks when neither works.
func TestInterfaceProxy(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	wg, err := n.StartWireGuard()
	if err != nil {
		t.Fatal(err)
	}
	socksPort, err := n.FreePort(n.Proxy, testnet.ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	socks := startMicrosocksOn(t, n, socksPort)

	d := startTgtun(t, n, tgtunConf{
		healthInterval: "1s",
		proxies: []proxyConf{
			{name: "wg", typ: "interface", priority: 1, udp: true, extra: map[string]string{"interface": wg.RouterDev}},
			{name: "socks", typ: "socks5", server: testnet.ProxyV4.String(), port: socksPort, priority: 2},
		},
	})
	t.Cleanup(func() { _ = d.proc.Stop() })
	healthBound := 3*time.Second + 10*time.Second // see TestFailover, plus the route switch

	ifaceActive := func() error {
		p := memberStatus(t, d.status(), "wg")
		if !p.Healthy || !p.Active || p.Type != "interface" || p.Server != wg.RouterDev {
			return fmt.Errorf("wg member %+v, want healthy, active, type interface, server %s", p, wg.RouterDev)
		}
		if dev := routeDev(t, n, testnet.MsgrV4); dev != wg.RouterDev {
			return fmt.Errorf("marked traffic leaves by %s, want %s", dev, wg.RouterDev)
		}
		return nil
	}
	eventually(t, healthBound, "the interface active and routed to", ifaceActive)
	// The messenger sees the WireGuard exit, not the proxy host's SOCKS address.
	seesAs(t, n, msgrURL(false), testnet.WGExitV4.String())
	seesAs(t, n, msgrURL(true), testnet.WGExitV6.String())
	for _, dst := range []netip.Addr{testnet.MsgrV4, testnet.MsgrV6} {
		udpEchoThrough(t, n, netip.AddrPortFrom(dst, testnet.EchoPort))
	}
	if st := d.status(); st.Flows.TotalTCP != 0 || st.Flows.TotalUDP != 0 {
		t.Errorf("flows = %+v: traffic went through the netstack, want the kernel route into %s", st.Flows, wg.RouterDev)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := n.Exec(ctx, n.Router, "ip", "link", "set", wg.RouterDev, "down"); err != nil {
		t.Fatalf("link down: %v: %s", err, out)
	}
	eventually(t, healthBound, "failover from the interface to the SOCKS proxy", func() error {
		st := d.status()
		w, s := memberStatus(t, st, "wg"), memberStatus(t, st, "socks")
		if w.Healthy || w.Active || !s.Active || !strings.Contains(w.LastError, "down") {
			return fmt.Errorf("wg %+v, socks %+v; want wg unhealthy (device down) and socks active", w, s)
		}
		if dev := routeDev(t, n, testnet.MsgrV4); dev != "tgtun0" {
			return fmt.Errorf("marked traffic leaves by %s, want tgtun0", dev)
		}
		return nil
	})
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())

	if out, err := n.Exec(ctx, n.Router, "ip", "link", "set", wg.RouterDev, "up"); err != nil {
		t.Fatalf("link up: %v: %s", err, out)
	}
	eventually(t, healthBound, "the interface back in use", ifaceActive)
	seesAs(t, n, msgrURL(false), testnet.WGExitV4.String())

	// fail_mode block applies when the interface is down and no other proxy works.
	socks.Kill()
	if out, err := n.Exec(ctx, n.Router, "ip", "link", "set", wg.RouterDev, "down"); err != nil {
		t.Fatalf("link down: %v: %s", err, out)
	}
	eventually(t, healthBound, "no proxy healthy", func() error {
		for _, p := range d.status().Proxies {
			if p.Healthy {
				return fmt.Errorf("%s still healthy", p.Name)
			}
		}
		if dev := routeDev(t, n, testnet.MsgrV4); dev != "tgtun0" {
			return fmt.Errorf("marked traffic leaves by %s, want tgtun0 (where fail_mode block refuses it)", dev)
		}
		return nil
	})
	assertRefusedFast(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.HTTPPort))
	d.stop()
}

// sysctlOf reads one of a router device's IPv4 settings.
func sysctlOf(t *testing.T, n *testnet.Net, dev, key string) string {
	t.Helper()
	return strings.TrimSpace(routerExec(t, n, "cat", "/proc/sys/net/ipv4/conf/"+dev+"/"+key))
}

// TestInterfaceDeviceRecreated: netifd restarting a tunnel deletes its device and creates
// it again. With probes every 10 minutes, the kernel's link notifications alone must
// take the interface proxy out when its device goes (marked traffic then goes to the
// next proxy, never to a route that is gone) and bring it back, routed into the new
// device, when it returns. The device's rp_filter and src_valid_mark, changed while
// tgtun used it, are what they were after tgtun stops.
func TestInterfaceDeviceRecreated(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	wg, err := n.StartWireGuard()
	if err != nil {
		t.Fatal(err)
	}
	socksPort, err := n.FreePort(n.Proxy, testnet.ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	startMicrosocksOn(t, n, socksPort)
	rp, svm := sysctlOf(t, n, wg.RouterDev, "rp_filter"), sysctlOf(t, n, wg.RouterDev, "src_valid_mark")
	if rp != "1" || svm != "0" {
		t.Fatalf("the test network's WireGuard device starts with rp_filter %s, src_valid_mark %s; want 1 and 0", rp, svm)
	}
	d := startTgtun(t, n, tgtunConf{
		healthInterval: "10m",
		proxies: []proxyConf{
			{name: "wg", typ: "interface", priority: 1, udp: true, extra: map[string]string{"interface": wg.RouterDev}},
			{name: "socks", typ: "socks5", server: testnet.ProxyV4.String(), port: socksPort, priority: 2},
		},
	})
	t.Cleanup(func() { _ = d.proc.Stop() })
	ifaceRouted := func() error {
		p := memberStatus(t, d.status(), "wg")
		if !p.Healthy || !p.Active {
			return fmt.Errorf("wg member %+v, want healthy and active", p)
		}
		if dev := routeDev(t, n, testnet.MsgrV4); dev != wg.RouterDev {
			return fmt.Errorf("marked traffic leaves by %s, want %s", dev, wg.RouterDev)
		}
		return nil
	}
	eventually(t, 30*time.Second, "the interface routed to after the first probe", ifaceRouted)
	if rp, svm := sysctlOf(t, n, wg.RouterDev, "rp_filter"), sysctlOf(t, n, wg.RouterDev, "src_valid_mark"); rp != "2" || svm != "1" {
		t.Errorf("while in use: rp_filter %s, src_valid_mark %s; want 2 and 1", rp, svm)
	}
	seesAs(t, n, msgrURL(false), testnet.WGExitV4.String())

	start := time.Now()
	if err := wg.DeleteRouterDev(n); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	eventually(t, failoverBound, "the deleted device noticed", func() error {
		st := d.status()
		w, s := memberStatus(t, st, "wg"), memberStatus(t, st, "socks")
		if w.Healthy || !s.Active {
			return fmt.Errorf("wg %+v, socks %+v", w, s)
		}
		if dev := routeDev(t, n, testnet.MsgrV4); dev != "tgtun0" {
			return fmt.Errorf("marked traffic leaves by %s, want tgtun0", dev)
		}
		took = time.Since(start)
		return nil
	})
	t.Logf("device deleted: the socks proxy took over %v later (ip link del and wireguard-go's exit included)", took.Round(time.Millisecond))
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())

	start = time.Now()
	if err := wg.CreateRouterDev(n); err != nil {
		t.Fatal(err)
	}
	created := time.Since(start)
	eventually(t, failoverBound, "the new device routed to", ifaceRouted)
	t.Logf("device created again: routed into it %v after its handshake completed (%v to create it)", (time.Since(start) - created).Round(time.Millisecond), created.Round(time.Millisecond))
	seesAs(t, n, msgrURL(false), testnet.WGExitV4.String())
	if rp, svm := sysctlOf(t, n, wg.RouterDev, "rp_filter"), sysctlOf(t, n, wg.RouterDev, "src_valid_mark"); rp != "2" || svm != "1" {
		t.Errorf("the new device while in use: rp_filter %s, src_valid_mark %s; want 2 and 1", rp, svm)
	}

	d.stop()
	if rp, svm := sysctlOf(t, n, wg.RouterDev, "rp_filter"), sysctlOf(t, n, wg.RouterDev, "src_valid_mark"); rp != "1" || svm != "0" {
		t.Errorf("after tgtun stopped: rp_filter %s, src_valid_mark %s; want them back at 1 and 0", rp, svm)
	}
}
