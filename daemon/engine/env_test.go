package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tgtun/tgtun/netcfg"
	"golang.org/x/sys/unix"
)

// The test network: a namespace whose kernel is the "client" and the router. Its
// connections to the messenger ranges reach the engine as tgtun's kernel state
// hands them over (netcfg); the engine's test dialer reaches echo servers on the
// host's loopback.
const (
	tunName  = "tgtun0"
	clientV4 = "192.0.2.1/24"
	clientV6 = "2001:db8:1::1/64"
	// clientAddr4 and clientAddr6 are the client's source addresses (the TUN also
	// has netcfg's own address, which the kernel would pick otherwise).
	clientAddr4 = "192.0.2.1"
	clientAddr6 = "2001:db8:1::1"
	targetNet4  = "203.0.113.0/24"
	targetNet6  = "2001:db8:3::/64"
	// secondClientV4 is a second device's address, added by tests that need one.
	secondClientV4 = "192.0.2.2"
	// halfCloseTrailer is what the TCP echo server sends after the client's
	// FIN: receiving it proves data still flows after a half-close.
	halfCloseTrailer = "after-client-eof"
)

var nsCounter atomic.Int64

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("engine tests need root (network namespaces, /dev/net/tun); run them as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("engine tests need iproute2's ip: %v", err)
	}
}

func runCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

func newNetns(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("tgteng-%d-%d", os.Getpid(), nsCounter.Add(1))
	runCmd(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("remove netns %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// inNetns runs fn on an OS thread switched into namespace ns. Sockets and
// devices fn creates belong to ns and stay usable from any goroutine.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread exits with this goroutine instead of
			// running other goroutines in the wrong namespace.
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// testEnv is one engine running in its own namespace, on the kernel state netcfg
// installs as the daemon does (tproxy for TCP, the TUN for UDP). The test process is
// the "client": its connections from the namespace are the router's own traffic
// (router_traffic), which takes the same listener and TUN as a LAN device's.
type testEnv struct {
	ns     string
	eng    *Engine
	ln     *Listener
	tunFD  int
	cancel context.CancelFunc
	done   chan error
}

// setupNet creates the namespace with tgtun's kernel state for cfg and a listener.
func setupNet(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	requireRoot(t)
	ns := newNetns(t)
	runCmd(t, "ip", "-n", ns, "link", "set", "lo", "up")
	env := &testEnv{ns: ns}
	var n *netcfg.Net
	err := inNetns(ns, func() error {
		ln, err := Listen(!cfg.IPv4Only)
		if err != nil {
			return err
		}
		env.ln = ln
		spec := netcfg.Spec{TunName: tunName, MTU: cfg.MTU, RouterTraffic: true, IPv6: !cfg.IPv4Only,
			Mark: 0x100000, BypassMark: 0x200000, Table: 7470, RulePriority: 7470,
			TProxyPort: ln.Port(),
			Targets4:   []netip.Prefix{netip.MustParsePrefix(targetNet4)},
		}
		if !cfg.IPv4Only {
			spec.Targets6 = []netip.Prefix{netip.MustParsePrefix(targetNet6)}
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
	cmds := [][]string{
		{"addr", "add", clientV4, "dev", tunName},
		{"route", "add", targetNet4, "dev", tunName, "src", clientAddr4},
	}
	if !cfg.IPv4Only {
		cmds = append(cmds, []string{"-6", "addr", "add", clientV6, "dev", tunName, "nodad"},
			[]string{"-6", "route", "add", targetNet6, "dev", tunName, "src", clientAddr6})
	}
	for _, args := range cmds {
		runCmd(t, append([]string{"ip", "-n", ns}, args...)...)
	}
	return env
}

// startEngine runs an engine as the daemon does.
func startEngine(t testing.TB, cfg Config, d Dialer) *testEnv {
	t.Helper()
	env := setupNet(t, cfg)
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

// wait returns Run's result, failing if it does not return in time.
func (env *testEnv) wait(timeout time.Duration) error {
	select {
	case err := <-env.done:
		env.done <- err // later callers (cleanup) see it too
		return err
	case <-time.After(timeout):
		stacks := make([]byte, 1<<20)
		stacks = stacks[:runtime.Stack(stacks, true)]
		return fmt.Errorf("Run did not return within %v of cancel; goroutines:\n%s", timeout, stacks)
	}
}

// dial connects from the namespace's kernel stack, the "client".
func (env *testEnv) dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(env.ns, func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 30*time.Second)
		return err
	})
	return c, err
}

// dialFrom connects from local, an address of the namespace.
func (env *testEnv) dialFrom(local, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(env.ns, func() error {
		la, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(local, "0"))
		if err != nil {
			return err
		}
		var laddr net.Addr = la
		if network == "udp" {
			laddr = &net.UDPAddr{IP: la.IP}
		}
		d := net.Dialer{Timeout: 30 * time.Second, LocalAddr: laddr}
		c, err = d.Dial(network, addr)
		return err
	})
	return c, err
}

func (env *testEnv) mustDial(t testing.TB, network, addr string) net.Conn {
	t.Helper()
	c, err := env.dial(network, addr)
	if err != nil {
		t.Fatalf("dial %s %s from client namespace: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectReset connects to dst from the client namespace and expects the engine to
// reset the connection: the kernel completes the handshake (tproxy), then the first
// read returns ECONNRESET, not data, EOF or a timeout.
func (env *testEnv) expectReset(t testing.TB, dst, what string) {
	t.Helper()
	c, err := env.dial("tcp", dst)
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return // reset before connect returned (a loopback is that fast): as good
	}
	if err != nil {
		t.Fatalf("%s: dial %s: %v, want a connection the engine resets", what, dst, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// A write after the RST arrived returns its error (and takes it: the read
	// after that sees EOF).
	if _, err := c.Write([]byte(what)); errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return
	}
	n, err := c.Read(make([]byte, 64))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%q: read from %s: %d bytes, %v; want ECONNRESET", what, dst, n, err)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// waitFor polls cond for up to timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testDialer stands in for a proxy: it records destinations and by default
// connects every flow to the loopback echo servers.
type testDialer struct {
	tcp func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	udp func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)

	mu        sync.Mutex
	tcpDialed []netip.AddrPort
	udpDialed []netip.AddrPort
}

func (d *testDialer) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	d.mu.Lock()
	d.tcpDialed = append(d.tcpDialed, dst)
	d.mu.Unlock()
	return d.tcp(ctx, dst)
}

func (d *testDialer) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	d.mu.Lock()
	d.udpDialed = append(d.udpDialed, dst)
	d.mu.Unlock()
	return d.udp(ctx, dst)
}

func (d *testDialer) dialed() (tcp, udp []netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]netip.AddrPort(nil), d.tcpDialed...), append([]netip.AddrPort(nil), d.udpDialed...)
}

// tcpDialerTo stands in for a proxy that connects every TCP flow to addr.
func tcpDialerTo(addr string) *testDialer {
	var nd net.Dialer
	return &testDialer{tcp: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
		return nd.DialContext(ctx, "tcp", addr)
	}}
}

// echoDialer relays to loopback TCP and UDP echo servers.
func echoDialer(t testing.TB) *testDialer {
	tcpAddr := startTCPEcho(t)
	udpAddr := startUDPEcho(t)
	var nd net.Dialer
	return &testDialer{
		tcp: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
			return nd.DialContext(ctx, "tcp", tcpAddr)
		},
		udp: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
			return nd.DialContext(ctx, "udp", udpAddr)
		},
	}
}

// startTCPEcho echoes each connection until its EOF, then sends
// halfCloseTrailer and closes.
func startTCPEcho(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen TCP echo: %v", err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if _, err := io.Copy(c, c); err != nil {
					return
				}
				io.WriteString(c, halfCloseTrailer)
			})
		}
	})
	return ln.Addr().String()
}

func startUDPEcho(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen UDP echo: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

var errTestRefused = errors.New("test proxy: connection refused by upstream")
