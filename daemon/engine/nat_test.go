//go:build engine_nat

package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/tgtun/tgtun/netcfg"
)

// The NAT's addresses in these tests: the daemon's (control/datapath_nat.go).
var (
	testNAT4 = netip.MustParsePrefix("169.254.74.70/31")
	testNAT6 = netip.MustParsePrefix("fdfe:7467:746e::1/126")
)

// startNATEngine runs an engine of the engine_nat build in its own namespace, on
// the kernel state netcfg installs for it: TCP into the TUN with offloads, the
// TUN's /31 and /126. The namespace's own connections to the targets are the
// clients (router_traffic), as in startEngine.
func startNATEngine(t *testing.T, cfg Config, d Dialer) *testEnv {
	t.Helper()
	requireRoot(t)
	ns := newNetns(t)
	runCmd(t, "ip", "-n", ns, "link", "set", "lo", "up")
	env := &testEnv{ns: ns}
	var n *netcfg.Net
	err := inNetns(ns, func() error {
		ln, err := ListenNAT(testNAT4.Addr(), testNAT4.Addr().Next(), testNAT6.Addr(), testNAT6.Addr().Next())
		if err != nil {
			return err
		}
		env.ln = ln
		spec := netcfg.Spec{TunName: tunName, MTU: cfg.MTU, RouterTraffic: true, IPv6: true,
			Mark: 0x100000, BypassMark: 0x200000, Table: 7470, RulePriority: 7470,
			TunAddr4: testNAT4, TunAddr6: testNAT6,
			Targets4: []netip.Prefix{netip.MustParsePrefix(targetNet4)},
			Targets6: []netip.Prefix{netip.MustParsePrefix(targetNet6)},
		}
		n, err = netcfg.Apply(context.Background(), spec)
		return err
	})
	if err != nil {
		t.Fatalf("set up %s: %v", ns, err)
	}
	env.tunFD = int(n.TUN().Fd())
	t.Cleanup(func() {
		if err := inNetns(ns, n.Close); err != nil {
			t.Errorf("netcfg close: %v", err)
		}
	})
	for _, args := range [][]string{
		{"addr", "add", clientV4, "dev", tunName},
		{"route", "add", targetNet4, "dev", tunName, "src", clientAddr4},
		{"-6", "addr", "add", clientV6, "dev", tunName, "nodad"},
		{"-6", "route", "add", targetNet6, "dev", tunName, "src", clientAddr6},
	} {
		runCmd(t, append([]string{"ip", "-n", ns}, args...)...)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	eng, err := New(cfg, d, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	env.eng, env.cancel, env.done = eng, cancel, make(chan error, 1)
	go func() { env.done <- eng.Run(ctx, env.tunFD, env.ln) }()
	t.Cleanup(func() {
		cancel()
		if err := env.wait(30 * time.Second); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return env
}

func (env *testEnv) nat() *natTable { return env.ln.nat.(*natTable) }

// mappings counts the NAT's open and closed mappings.
func (t *natTable) mappings() (open, closed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ent := range t.byPort {
		if ent.closed != 0 {
			closed++
		} else {
			open++
		}
	}
	return open, closed
}

// TestNATTCPEcho relays TCP through the NAT, IPv4 and IPv6, with a half-close,
// and sees each flow's mapping close with the connection and go.
func TestNATTCPEcho(t *testing.T) {
	env := startNATEngine(t, Config{}, echoDialer(t))
	nat := env.nat()
	for _, dst := range []string{"203.0.113.7:443", "[2001:db8:3::7]:443"} {
		c := env.mustDial(t, "tcp", dst)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		msg := make([]byte, 3<<20) // several 64 KiB segments each way
		for i := range msg {
			msg[i] = byte(i * 7)
		}
		go c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("%s: read echo: %v", dst, err)
		}
		for i := range got {
			if got[i] != msg[i] {
				t.Fatalf("%s: echo differs at byte %d", dst, i)
			}
		}
		if open, _ := nat.mappings(); open != 1 {
			t.Fatalf("%s: %d open mappings while the flow runs, want 1", dst, open)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(c)
		if err != nil || string(rest) != halfCloseTrailer {
			t.Fatalf("%s: after half-close read %q, %v; want %q", dst, rest, err, halfCloseTrailer)
		}
		c.Close()
		waitFor(t, 10*time.Second, "the mapping to close with the connection", func() bool {
			open, closed := nat.mappings()
			return open == 0 && closed == 1
		})
		// A closed mapping lingers for the last ACKs; the next new flow forgets it.
		nat.mu.Lock()
		nat.linger = 0
		nat.mu.Unlock()
	}
	if open, closed := nat.mappings(); open != 0 || closed != 1 {
		t.Errorf("after the second flow: %d open, %d closed mappings, want 0 and 1 (the first one forgotten)", open, closed)
	}
	if st := env.eng.Stats(); st.TotalTCP != 2 || st.BytesUp < 6<<20 || st.BytesDown < 6<<20 {
		t.Errorf("stats %+v, want 2 flows with 3 MiB each way", st)
	}
}

// TestNATTableFull: at MaxFlows mappings a new SYN is answered with a RST by
// the NAT itself (connection refused), before the relay's own cap could
// accept and then reset it.
func TestNATTableFull(t *testing.T) {
	env := startNATEngine(t, Config{MaxFlows: 2, MaxFlowsPerDevice: 2}, echoDialer(t))
	for i := range 2 {
		c := env.mustDial(t, "tcp", "203.0.113.7:443")
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
	}
	_, err := env.dial("tcp", "203.0.113.7:443")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("third flow: dial %v, want connection refused", err)
	}
	if open, _ := env.nat().mappings(); open != 2 {
		t.Errorf("%d open mappings, want 2", open)
	}
}

// TestNATDialFailureResets keeps tproxy's promise in the NAT build: a flow
// whose proxy dial fails is reset within milliseconds.
func TestNATDialFailureResets(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	env := startNATEngine(t, Config{}, tcpDialerTo(addr))
	start := time.Now()
	env.expectReset(t, "203.0.113.7:443", "refused by the proxy")
	env.expectReset(t, "[2001:db8:3::7]:443", "refused by the proxy")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("resets took %v", d)
	}
	waitFor(t, 10*time.Second, "the mappings to close with the resets", func() bool {
		open, _ := env.nat().mappings()
		return open == 0
	})
}

// TestNATListenerRefusesDirect: a connection made to the NAT's listener
// itself, not through the NAT, is reset: no open relay.
func TestNATListenerRefusesDirect(t *testing.T) {
	d := echoDialer(t)
	env := startNATEngine(t, Config{}, d)
	nat := env.nat()
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(nat.l4, nat.lp4), netip.AddrPortFrom(nat.l6, nat.lp6)} {
		env.expectReset(t, dst.String(), "to the listener itself")
	}
	if tcp, _ := d.dialed(); len(tcp) != 0 {
		t.Errorf("the proxy was dialled for %v", tcp)
	}
}
