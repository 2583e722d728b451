package e2e

// Issue "Proxies people actually have": every proxy type against the real Debian server,
// wrong credentials, priority failover and the two fail modes.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/control"
	"github.com/tgtun/tgtun/daemon/proxy"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// fastFail bounds how long a refused connection may take. A reset comes in milliseconds;
// the bound is generous for a loaded machine and still far below curl's 10 s timeout and
// the seconds a client would hang on a black-holed SYN.
const fastFail = 5 * time.Second

// TestProxyTypes runs TCP (IPv4 and IPv6) through every kind of proxy server users have,
// UDP through Shadowsocks, and checks that UDP through an HTTP proxy is dropped and counted.
func TestProxyTypes(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartDirectServer(); err != nil {
		t.Fatal(err)
	}
	type proxyCase struct {
		name string
		conf proxyConf
		udp  string // "relay": UDP echo works; "drop": dropped and counted; "": not tested
	}
	var cases []proxyCase

	tiny, err := n.StartTinyproxy("tpuser", "tp-secret")
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, proxyCase{"tinyproxy-basic-auth", proxyConf{
		name: "tiny", typ: "http", server: tiny.Addr().String(), port: tiny.Port(), user: "tpuser", pass: "tp-secret",
	}, "drop"})
	for _, cipher := range []string{"aes-128-gcm", "aes-256-gcm", "chacha20-ietf-poly1305"} {
		ss, err := n.StartSSServer(cipher, "ss-secret-"+cipher)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, proxyCase{"shadowsocks-" + cipher, proxyConf{
			name: "ss", typ: "shadowsocks", server: ss.Addr().String(), port: ss.Port(),
			pass: "ss-secret-" + cipher, cipher: cipher, udp: true,
		}, "relay"})
	}
	dante, err := n.StartDante(testnet.DanteOptions{Auth: true, User: "dnuser", Pass: "dn-secret"})
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, proxyCase{"dante-username", proxyConf{
		name: "dante", typ: "socks5", server: dante.Addr().String(), port: dante.Port(), user: "dnuser", pass: "dn-secret", udp: true,
	}, ""})
	micro, err := n.StartMicrosocks("msuser", "ms-secret")
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, proxyCase{"microsocks-auth", proxyConf{
		name: "micro", typ: "socks5", server: micro.Addr().String(), port: micro.Port(), user: "msuser", pass: "ms-secret",
	}, ""})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{c.conf}})
			t.Cleanup(func() { _ = d.proc.Stop() }) // a failed subtest must not leave it to the next one
			seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
			seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
			st := d.status()
			if len(st.Proxies) != 1 || !st.Proxies[0].Healthy || st.Proxies[0].Type != c.conf.typ || st.Proxies[0].Flows < 2 {
				t.Errorf("status proxies = %+v, want one healthy %s proxy that carried both requests", st.Proxies, c.conf.typ)
			}
			switch c.udp {
			case "relay":
				for _, dst := range []netip.Addr{testnet.MsgrV4, testnet.MsgrV6} {
					udpEchoThrough(t, n, netip.AddrPortFrom(dst, testnet.EchoPort))
				}
				if st := d.status(); st.Flows.TotalUDP < 2 {
					t.Errorf("status flows = %+v, want the 2 UDP flows counted", st.Flows)
				}
			case "drop":
				// HTTP CONNECT cannot carry UDP: the datagram must vanish, and status says so.
				dst := netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort)
				if err := udpExchange(n, dst, 2*time.Second); err == nil {
					t.Errorf("UDP to %s through an HTTP proxy was answered; it cannot be relayed", dst)
				}
				eventually(t, 10*time.Second, "status flows.dropped_udp", func() error {
					if st := d.status(); st.Flows.DroppedUDP == 0 {
						return fmt.Errorf("flows = %+v, want dropped_udp > 0", st.Flows)
					}
					return nil
				})
			}
			d.stop()
		})
	}
}

// TestWrongPassword configures proxies with the wrong secret: status says what is wrong,
// and clients fail at once instead of hanging.
func TestWrongPassword(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}

	t.Run("microsocks", func(t *testing.T) {
		micro, err := n.StartMicrosocks("msuser", "right-pass")
		if err != nil {
			t.Fatal(err)
		}
		d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{{
			name: "micro", typ: "socks5", server: micro.Addr().String(), port: micro.Port(), user: "msuser", pass: "wrong-pass",
		}}})
		t.Cleanup(func() { _ = d.proc.Stop() })
		// A few 1 s health intervals, plus slack for a loaded machine.
		eventually(t, 15*time.Second, "proxy reported unhealthy", func() error {
			p := memberStatus(t, d.status(), "micro")
			if p.Healthy || !strings.Contains(p.LastError, "authentication failed") {
				return fmt.Errorf("proxy status %+v, want unhealthy with last_error about the failed authentication", p)
			}
			return nil
		})
		if p := memberStatus(t, d.status(), "micro"); strings.Contains(p.LastError, "wrong-pass") {
			t.Errorf("last_error shows the password: %q", p.LastError)
		}
		assertRefusedFast(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.HTTPPort))
		assertCurlFailsFast(t, n, msgrURL(false))
		d.stop()
	})

	t.Run("shadowsocks", func(t *testing.T) {
		ss, err := n.StartSSServer("aes-256-gcm", "ss-right-pass")
		if err != nil {
			t.Fatal(err)
		}
		d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{{
			name: "ss", typ: "shadowsocks", server: ss.Addr().String(), port: ss.Port(), pass: "ss-wrong-pass", cipher: "aes-256-gcm", udp: true,
		}}})
		t.Cleanup(func() { _ = d.proc.Stop() })
		// Shadowsocks has no authentication reply, and ss-server (3.3.5) answers a wrong
		// key with silence until the client gives up (it resists active probing). The
		// daemon then fails the stream when no reply came within its first-reply timeout
		// (proxy.DefaultFirstReplyTimeout, 15 s): a client request must fail within that,
		// plus slack for a loaded machine, and never hang.
		assertFailsWithin(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.HTTPPort), proxy.DefaultFirstReplyTimeout+15*time.Second)
		// Status must say the proxy does not work (so that failover and fail_mode can act)
		// rather than call it healthy while every connection through it dies.
		eventually(t, 15*time.Second, "Shadowsocks proxy with a wrong key reported unhealthy", func() error {
			if p := memberStatus(t, d.status(), "ss"); p.Healthy || p.LastError == "" {
				return fmt.Errorf("proxy status %+v, want unhealthy with a last_error", p)
			}
			return nil
		})
		if p := memberStatus(t, d.status(), "ss"); strings.Contains(p.LastError, "ss-wrong-pass") {
			t.Errorf("last_error shows the password: %q", p.LastError)
		}
		assertRefusedFast(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.HTTPPort))
		d.stop()
	})
}

// TestFailover runs two proxies by priority: the primary carries the flows while it is
// up, the secondary takes over when it dies, and new flows go back when it returns, while
// a connection opened through the secondary stays up.
func TestFailover(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	primaryPort, err := n.FreePort(n.Proxy, testnet.ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	primary := startMicrosocksOn(t, n, primaryPort)
	secondaryPort, err := n.FreePort(n.Proxy, testnet.ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	startMicrosocksOn(t, n, secondaryPort)

	const interval = time.Second
	d := startTgtun(t, n, tgtunConf{
		healthInterval: "1s",
		proxies: []proxyConf{
			{name: "primary", typ: "socks5", server: testnet.ProxyV4.String(), port: primaryPort, priority: 10},
			{name: "secondary", typ: "socks5", server: testnet.ProxyV4.String(), port: secondaryPort, priority: 20},
		},
	})
	// How long a change of health may take to show: a proxy counts as down after three
	// failed probes in a row; the next probe starts within one interval, a probe takes at
	// most its timeout (here the interval), and a round that waited on a slow probe
	// delays the next tick by as much again; 5 s more for a loaded 2-core machine.
	healthBound := 7*interval + 5*time.Second

	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	st := d.status()
	p1, p2 := memberStatus(t, st, "primary"), memberStatus(t, st, "secondary")
	if !p1.Active || p2.Active || p1.Flows == 0 || p2.Flows != 0 {
		t.Fatalf("with both up: primary %+v, secondary %+v; want the primary active and carrying the flows", p1, p2)
	}

	primary.Kill()
	eventually(t, healthBound, "failover to the secondary", func() error {
		st := d.status()
		p1, p2 := memberStatus(t, st, "primary"), memberStatus(t, st, "secondary")
		if p1.Healthy || p1.Active || !p2.Active {
			return fmt.Errorf("primary %+v, secondary %+v; want the secondary active", p1, p2)
		}
		return nil
	})
	before := memberStatus(t, d.status(), "secondary").Flows
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	if got := memberStatus(t, d.status(), "secondary").Flows; got <= before {
		t.Fatalf("secondary flows %d → %d: the request did not go through it", before, got)
	}

	flow := dialEchoFlow(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort))
	if err := flow.roundTrip(); err != nil {
		t.Fatalf("flow through the secondary: %v", err)
	}

	startMicrosocksOn(t, n, primaryPort)
	eventually(t, healthBound, "the primary back in use", func() error {
		st := d.status()
		p1, p2 := memberStatus(t, st, "primary"), memberStatus(t, st, "secondary")
		if !p1.Healthy || !p1.Active || p2.Active {
			return fmt.Errorf("primary %+v, secondary %+v; want the primary active again", p1, p2)
		}
		return nil
	})
	if err := flow.roundTrip(); err != nil {
		t.Fatalf("flow through the secondary after the primary came back: %v", err)
	}
	st = d.status()
	p1Before, p2Before := memberStatus(t, st, "primary").Flows, memberStatus(t, st, "secondary").Flows
	seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	st = d.status()
	p1, p2 = memberStatus(t, st, "primary"), memberStatus(t, st, "secondary")
	if p1.Flows <= p1Before || p2.Flows != p2Before {
		t.Errorf("flows primary %d → %d, secondary %d → %d: new flows should go through the primary again",
			p1Before, p1.Flows, p2Before, p2.Flows)
	}
	if err := flow.roundTrip(); err != nil {
		t.Fatalf("flow through the secondary at the end: %v", err)
	}
	d.stop()
}

// TestFailModeDirect checks both fail modes with the direct server as a target: with
// 'direct', targets take the normal path while no proxy is healthy; with 'block', they are
// refused at once.
func TestFailModeDirect(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartDirectServer(); err != nil {
		t.Fatal(err)
	}
	port, err := n.FreePort(n.Proxy, testnet.ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	const interval = time.Second
	healthBound := 7*interval + 5*time.Second // as in TestFailover
	conf := func(mode string) tgtunConf {
		return tgtunConf{
			failMode:       mode,
			healthInterval: "1s",
			extraSubnets:   []string{netip.PrefixFrom(testnet.DirectV4, 32).String()},
			proxies:        []proxyConf{{name: "only", typ: "socks5", server: testnet.ProxyV4.String(), port: port}},
		}
	}
	marking := func(d *daemon, want bool) {
		t.Helper()
		eventually(t, healthBound, fmt.Sprintf("marking = %v", want), func() error {
			st := d.status()
			if st.Net.Marking != want || st.Marking != want {
				return fmt.Errorf("status marking %v, net.Marking %v, proxies %+v", st.Marking, st.Net.Marking, st.Proxies)
			}
			return nil
		})
	}

	t.Run("direct", func(t *testing.T) {
		proxyProc := startMicrosocksOn(t, n, port)
		d := startTgtun(t, n, conf("direct"))
		t.Cleanup(func() { _ = d.proc.Stop() })
		seesAs(t, n, directURL(false), testnet.ProxyV4.String())
		marking(d, true)

		proxyProc.Kill()
		marking(d, false)
		seesAs(t, n, directURL(false), testnet.WANV4.String())
		if st := d.status(); st.FailMode != "direct" {
			t.Errorf("status fail_mode = %q", st.FailMode)
		}

		proxyProc = startMicrosocksOn(t, n, port)
		marking(d, true)
		seesAs(t, n, directURL(false), testnet.ProxyV4.String())
		d.stop()
		proxyProc.Kill()
	})

	t.Run("block", func(t *testing.T) {
		proxyProc := startMicrosocksOn(t, n, port)
		d := startTgtun(t, n, conf("block"))
		t.Cleanup(func() { _ = d.proc.Stop() })
		seesAs(t, n, directURL(false), testnet.ProxyV4.String())

		proxyProc.Kill()
		eventually(t, healthBound, "proxy reported unhealthy", func() error {
			if p := memberStatus(t, d.status(), "only"); p.Healthy {
				return fmt.Errorf("proxy status %+v, want unhealthy", p)
			}
			return nil
		})
		if st := d.status(); !st.Net.Marking {
			t.Errorf("fail_mode block stopped marking targets: status %+v", st.Net)
		}
		assertRefusedFast(t, n, netip.AddrPortFrom(testnet.DirectV4, testnet.HTTPPort))
		assertCurlFailsFast(t, n, directURL(false))
		d.stop()
	})
}

// memberStatus finds a proxy in status by name.
func memberStatus(t *testing.T, st control.Status, name string) proxy.MemberStatus {
	t.Helper()
	for _, p := range st.Proxies {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("proxy %q not in status: %+v", name, st.Proxies)
	return proxy.MemberStatus{}
}

// startMicrosocksOn runs microsocks without auth on ProxyV4:port (a fixed port, so a test
// can kill it and start it again at the same address) and waits until it accepts.
func startMicrosocksOn(t *testing.T, n *testnet.Net, port uint16) *testnet.Proc {
	t.Helper()
	addr := netip.AddrPortFrom(testnet.ProxyV4, port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		p, err := n.Start(n.Proxy, "microsocks", "-i", testnet.ProxyV4.String(), "-p", strconv.Itoa(int(port)))
		if err != nil {
			t.Fatal(err)
		}
		for time.Now().Before(deadline) {
			if exited, _ := p.Exited(); exited {
				break // e.g. the port still held by the killed one's sockets: start again
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			c, err := n.Dial(ctx, n.Proxy, "tcp", addr.String())
			cancel()
			if err == nil {
				c.Close()
				return p
			}
			time.Sleep(50 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			p.Kill()
			t.Fatalf("microsocks not listening on %s within 20s: %s", addr, p.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// udpExchange sends one datagram from the client to an echo server and waits up to wait
// for the same bytes to come back.
func udpExchange(n *testnet.Net, dst netip.AddrPort, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.Dial(ctx, n.Client, "udp", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	msg := []byte("tgtun e2e datagram to " + dst.String())
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, 1500)
	k, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(buf[:k], msg) {
		return fmt.Errorf("echo %q, want %q", buf[:k], msg)
	}
	return nil
}

// udpEchoThrough retries a UDP echo (datagrams may be lost) until one comes back.
func udpEchoThrough(t *testing.T, n *testnet.Net, dst netip.AddrPort) {
	t.Helper()
	eventually(t, 20*time.Second, "UDP echo from "+dst.String(), func() error {
		return udpExchange(n, dst, 2*time.Second)
	})
}

// assertRefusedFast requires a TCP connection from the client to dst to be refused or
// reset within fastFail, not to time out.
func assertRefusedFast(t *testing.T, n *testnet.Net, dst netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	c, err := n.Dial(ctx, n.Client, "tcp", dst.String())
	elapsed := time.Since(start)
	if err == nil {
		// An accepted connection must at least be dropped at once.
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		buf := make([]byte, 512)
		k, rerr := c.Read(buf)
		c.Close()
		elapsed = time.Since(start)
		if rerr == nil {
			t.Fatalf("connection to %s succeeded and answered %q; want it refused", dst, buf[:k])
		}
		err = rerr
	}
	if errors.Is(err, context.DeadlineExceeded) || elapsed > fastFail {
		t.Fatalf("connection to %s failed only after %s (%v); want a refusal within %s", dst, elapsed.Round(time.Millisecond), err, fastFail)
	}
	t.Logf("connection to %s failed after %s: %v", dst, elapsed.Round(time.Millisecond), err)
}

// assertFailsWithin requires an HTTP request from the client to dst to fail (refused,
// reset or closed without an answer) within bound.
func assertFailsWithin(t *testing.T, n *testnet.Net, dst netip.AddrPort, bound time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*bound)
	defer cancel()
	start := time.Now()
	c, err := n.Dial(ctx, n.Client, "tcp", dst.String())
	if err == nil {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * bound))
		if _, err = c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err == nil {
			buf := make([]byte, 512)
			var k int
			k, err = c.Read(buf)
			if err == nil {
				t.Fatalf("request to %s was answered %q; want it to fail", dst, buf[:k])
			}
		}
	}
	elapsed := time.Since(start)
	if elapsed > bound || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request to %s failed only after %s (%v); want it to fail within %s", dst, elapsed.Round(time.Millisecond), err, bound)
	}
	t.Logf("request to %s failed after %s: %v", dst, elapsed.Round(time.Millisecond), err)
}

// assertCurlFailsFast requires a curl from the client to fail well before its 10 s timeout.
func assertCurlFailsFast(t *testing.T, n *testnet.Net, url string) {
	t.Helper()
	start := time.Now()
	got, err := curl(t, n, url)
	elapsed := time.Since(start)
	if err == nil {
		t.Fatalf("GET %s succeeded (server saw %s); want it refused", url, got)
	}
	if elapsed > fastFail {
		t.Fatalf("GET %s failed only after %s (%v); want a refusal within %s", url, elapsed.Round(time.Millisecond), err, fastFail)
	}
}
