package enginegv

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
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test network: a namespace whose kernel is the "LAN client". Its TUN
// routes the messenger ranges into the engine; the engine's test dialer
// reaches echo servers on the host's loopback.
const (
	tunName    = "tgtun0"
	clientV4   = "192.0.2.1/24"
	clientV6   = "2001:db8:1::1/64"
	targetNet4 = "203.0.113.0/24"
	targetNet6 = "2001:db8:3::/64"
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

// tunMode is how a test opens its TUN device.
type tunMode int

const (
	// tunVnet: IFF_VNET_HDR with checksum and TCP segmentation offload,
	// as netcfg opens it unless Spec.NoOffload (the daemon sets it with TGTUN_TUN_OFFLOAD=0).
	tunVnet tunMode = iota
	// tunPlain: raw IP packets, one per read or write.
	tunPlain
)

func (m tunMode) String() string {
	if m == tunPlain {
		return "plain"
	}
	return "vnet"
}

// openTUN creates TUN device tunName inside ns and returns its fd.
func openTUN(t testing.TB, ns string, mode tunMode) int {
	t.Helper()
	fd := -1
	err := inNetns(ns, func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(tunName)
		if err != nil {
			return err
		}
		flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if mode == tunVnet {
			flags |= unix.IFF_VNET_HDR
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		if mode == tunVnet {
			offload := unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
			if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offload); err != nil {
				unix.Close(fd)
				return fmt.Errorf("TUNSETOFFLOAD: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("create TUN in %s: %v", ns, err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", clientV4, "dev", tunName},
		{"-6", "addr", "add", clientV6, "dev", tunName, "nodad"},
		{"link", "set", tunName, "up"},
		{"route", "add", targetNet4, "dev", tunName},
		{"-6", "route", "add", targetNet6, "dev", tunName},
	} {
		runCmd(t, append([]string{"ip", "-n", ns}, args...)...)
	}
	return fd
}

// testEnv is one engine running on a TUN in its own namespace.
type testEnv struct {
	ns     string
	eng    *Engine
	cancel context.CancelFunc
	done   chan error
}

// startEngine runs an engine on a TUN opened as the daemon opens it by default.
func startEngine(t testing.TB, cfg Config, d Dialer) *testEnv {
	t.Helper()
	return startEngineOn(t, tunVnet, cfg, d)
}

func startEngineOn(t testing.TB, mode tunMode, cfg Config, d Dialer) *testEnv {
	t.Helper()
	requireRoot(t)
	ns := newNetns(t)
	fd := openTUN(t, ns, mode)
	t.Cleanup(func() { unix.Close(fd) })
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	eng, err := New(cfg, d, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	env := &testEnv{ns: ns, eng: eng, cancel: cancel, done: make(chan error, 1)}
	go func() { env.done <- eng.Run(ctx, fd) }()
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
