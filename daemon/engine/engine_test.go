package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name    string
		in      Config
		want    Config
		wantErr bool
	}{
		{
			name: "zero takes defaults",
			want: Config{MTU: 1500, MaxFlows: 4096, MaxFlowsPerDevice: 1024, MaxHandshakes: 256, DialTimeout: 10 * time.Second,
				TCPIdleTimeout: 2 * time.Hour, UDPIdleTimeout: time.Minute, UDPDialBackoff: time.Second, BufferSize: 64 << 10, HeldBufferSize: 16 << 10},
		},
		{
			name: "explicit values kept",
			in:   Config{MTU: 1400, MaxFlows: 10, MaxFlowsPerDevice: 3, MaxHandshakes: 5, DialTimeout: time.Second, TCPIdleTimeout: time.Minute, UDPIdleTimeout: time.Second, UDPDialBackoff: time.Minute, BufferSize: 4096, HeldBufferSize: 2048},
			want: Config{MTU: 1400, MaxFlows: 10, MaxFlowsPerDevice: 3, MaxHandshakes: 5, DialTimeout: time.Second, TCPIdleTimeout: time.Minute, UDPIdleTimeout: time.Second, UDPDialBackoff: time.Minute, BufferSize: 4096, HeldBufferSize: 2048},
		},
		{name: "MTU too small for IPv6", in: Config{MTU: 1000}, wantErr: true},
		{name: "MTU too large", in: Config{MTU: 70000}, wantErr: true},
		{name: "negative flows", in: Config{MaxFlows: -1}, wantErr: true},
		{name: "per-device cap over max_flows", in: Config{MaxFlows: 10, MaxFlowsPerDevice: 11}, wantErr: true},
		{name: "tiny buffer", in: Config{BufferSize: 512}, wantErr: true},
		{name: "tiny held buffer", in: Config{HeldBufferSize: 512}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := New(tt.in, &testDialer{}, nil)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("New(%+v) succeeded, want error", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if e.cfg != tt.want {
				t.Errorf("config = %+v, want %+v", e.cfg, tt.want)
			}
		})
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Error("New with nil dialer succeeded")
	}
}

func TestTCPEchoAndHalfClose(t *testing.T) {
	tests := []struct {
		name string
		dst  string
	}{
		{"IPv4", "203.0.113.10:7"},
		{"IPv6", "[2001:db8:3::10]:7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := echoDialer(t)
			env := startEngine(t, Config{}, d)
			c := env.mustDial(t, "tcp", tt.dst)
			c.SetDeadline(time.Now().Add(2 * time.Minute))

			payload := make([]byte, 4<<20)
			rand.Read(payload)
			writeErr := make(chan error, 1)
			go func() {
				_, err := c.Write(payload)
				if err == nil {
					// Half-close: the echo server only sends its trailer
					// after it has seen our FIN through the proxy.
					err = c.(*net.TCPConn).CloseWrite()
				}
				writeErr <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read echo: %v (got %d bytes)", err, len(got))
			}
			if err := <-writeErr; err != nil {
				t.Fatalf("write payload: %v", err)
			}
			want := append(payload, halfCloseTrailer...)
			if !bytes.Equal(got, want) {
				t.Fatalf("echo: got %d bytes, want %d (payload + trailer); equal prefix: %v",
					len(got), len(want), bytes.HasPrefix(got, payload[:min(len(got), len(payload))]))
			}

			tcpDialed, _ := d.dialed()
			if wantDst := netip.MustParseAddrPort(tt.dst); len(tcpDialed) != 1 || tcpDialed[0] != wantDst {
				t.Errorf("dialer saw %v, want [%v]", tcpDialed, wantDst)
			}
			waitFor(t, 10*time.Second, "flow counted and closed", func() bool {
				s := env.eng.Stats()
				return s.TotalTCP == 1 && s.ActiveTCP == 0 &&
					s.BytesUp == uint64(len(payload)) && s.BytesDown == uint64(len(want))
			})
			if s := env.eng.Stats(); s.Rejected != 0 {
				t.Errorf("Rejected = %d, want 0", s.Rejected)
			}
		})
	}
}

// The proxy side closes first (its FIN reaches the client as EOF) while the
// client keeps sending, and the server still receives everything.
func TestTCPHalfCloseFromProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	received := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- -1
			return
		}
		defer c.Close()
		io.WriteString(c, "hello")
		c.(*net.TCPConn).CloseWrite()
		n, _ := io.Copy(io.Discard, c)
		received <- n
	}()
	d := tcpDialerTo(ln.Addr().String())
	env := startEngine(t, Config{}, d)
	c := env.mustDial(t, "tcp", "[2001:db8:3::11]:25")
	c.SetDeadline(time.Now().Add(time.Minute))
	greeting, err := io.ReadAll(c)
	if err != nil || string(greeting) != "hello" {
		t.Fatalf("read until proxy EOF: %q, %v; want \"hello\", EOF", greeting, err)
	}
	const size = 1 << 20
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatalf("write after receiving EOF: %v", err)
	}
	c.Close()
	select {
	case n := <-received:
		if n != size {
			t.Fatalf("server received %d bytes after its half-close, want %d", n, size)
		}
	case <-time.After(time.Minute):
		t.Fatal("server did not see the client's data and FIN")
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	d := echoDialer(t)
	env := startEngine(t, Config{TCPIdleTimeout: 500 * time.Millisecond}, d)
	c := env.mustDial(t, "tcp", "203.0.113.12:443")
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	// Silence: the engine resets the flow.
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read on an idle flow: %v, want ECONNRESET from the idle timeout", err)
	}
	waitFor(t, 10*time.Second, "idle flow gone from stats", func() bool {
		return env.eng.Stats().ActiveTCP == 0
	})
}

func TestUDPEcho(t *testing.T) {
	tests := []struct {
		name string
		dst  string
	}{
		{"IPv4", "203.0.113.20:53"},
		{"IPv6", "[2001:db8:3::20]:53"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := echoDialer(t)
			env := startEngine(t, Config{UDPIdleTimeout: 500 * time.Millisecond}, d)
			c := env.mustDial(t, "udp", tt.dst)

			var sent int
			buf := make([]byte, 2048)
			for i, size := range []int{1, 100, 512, 1200} {
				msg := bytes.Repeat([]byte{byte('a' + i)}, size)
				if _, err := c.Write(msg); err != nil {
					t.Fatalf("send datagram %d: %v", i, err)
				}
				sent += size
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("receive echo of datagram %d: %v", i, err)
				}
				if !bytes.Equal(buf[:n], msg) {
					t.Fatalf("datagram %d: echo of %d bytes differs from the %d sent", i, n, size)
				}
			}
			_, udpDialed := d.dialed()
			if wantDst := netip.MustParseAddrPort(tt.dst); len(udpDialed) != 1 || udpDialed[0] != wantDst {
				t.Errorf("dialer saw %v, want one flow to %v", udpDialed, wantDst)
			}
			if s := env.eng.Stats(); s.ActiveUDP != 1 || s.TotalUDP != 1 {
				t.Errorf("while in use: ActiveUDP=%d TotalUDP=%d, want 1 and 1", s.ActiveUDP, s.TotalUDP)
			}
			waitFor(t, 15*time.Second, "UDP flow closed by idle timeout", func() bool {
				s := env.eng.Stats()
				return s.ActiveUDP == 0 && s.BytesUp == uint64(sent) && s.BytesDown == uint64(sent)
			})
		})
	}
}

// A failed or timed-out proxy dial must reach the client as a RST: the kernel
// completed its handshake (tproxy), so the reset comes as soon as the dial fails.
func TestTCPDialFailureResets(t *testing.T) {
	tests := []struct {
		name string
		dial func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	}{
		{"proxy refuses", func(context.Context, netip.AddrPort) (net.Conn, error) {
			return nil, errTestRefused
		}},
		{"proxy hangs past DialTimeout", func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &testDialer{tcp: tt.dial}
			env := startEngine(t, Config{DialTimeout: 300 * time.Millisecond}, d)
			for _, dst := range []string{"203.0.113.30:443", "[2001:db8:3::30]:443"} {
				env.expectReset(t, dst, "request")
			}
			if s := env.eng.Stats(); s.Rejected != 2 || s.TotalTCP != 0 || s.ActiveTCP != 0 {
				t.Errorf("stats %+v, want Rejected=2 and no TCP flows", s)
			}
		})
	}
}

// A connection made to the listener's own address (a local program that found
// the port) is not one tproxy handed over: it is reset and nothing is dialled.
func TestListenerRefusesDirectConnections(t *testing.T) {
	d := echoDialer(t)
	env := startEngine(t, Config{}, d)
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", env.ln.Port()), fmt.Sprintf("[::1]:%d", env.ln.Port())}
	for _, addr := range addrs {
		env.expectReset(t, addr, "GET / HTTP/1.0\r\n\r\n")
	}
	if tcp, _ := d.dialed(); len(tcp) != 0 {
		t.Errorf("direct connections to the listener dialled %v through the proxy", tcp)
	}
	if s := env.eng.Stats(); s.TotalTCP != 0 || s.Rejected != 0 {
		t.Errorf("stats %+v: direct connections must not count as flows", s)
	}
}

// TestIdleTCPFlowsHoldNoGoroutine: once a flow is idle, nothing waits on it but the
// poller and the netstack's queue, and traffic in either direction still wakes it.
func TestIdleTCPFlowsHoldNoGoroutine(t *testing.T) {
	const flows = 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen upstream: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	// The upstream ends are kept in a channel, so no goroutine of the test waits on them.
	accepted := make(chan net.Conn, flows)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			accepted <- c
		}
	}()
	d := tcpDialerTo(ln.Addr().String())
	env := startEngine(t, Config{}, d)
	before := runtime.NumGoroutine()

	type pair struct{ client, upstream net.Conn }
	pairs := make([]pair, flows)
	exchange := func(from, to net.Conn, msg string) {
		t.Helper()
		to.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := from.Write([]byte(msg)); err != nil {
			t.Fatalf("write %q: %v", msg, err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(to, buf); err != nil || string(buf) != msg {
			t.Fatalf("read %q: got %q, %v", msg, buf, err)
		}
	}
	for i := range pairs {
		pairs[i].client = env.mustDial(t, "tcp", fmt.Sprintf("203.0.113.45:%d", 2000+i))
		select {
		case pairs[i].upstream = <-accepted:
		case <-time.After(20 * time.Second):
			t.Fatalf("flow %d never reached the upstream", i)
		}
		exchange(pairs[i].client, pairs[i].upstream, "ping")
		exchange(pairs[i].upstream, pairs[i].client, "pong")
	}
	// Two goroutines a flow was the old cost; allow some that are not the flows'.
	waitFor(t, 10*time.Second, "idle flows to hold no goroutine", func() bool {
		return runtime.NumGoroutine()-before < flows/2
	})
	for i, p := range pairs {
		exchange(p.upstream, p.client, fmt.Sprintf("push %d", i))
		exchange(p.client, p.upstream, fmt.Sprintf("ack %d", i))
	}
	if s := env.eng.Stats(); s.ActiveTCP != flows {
		t.Errorf("ActiveTCP = %d, want %d", s.ActiveTCP, flows)
	}
}

func TestMaxFlows(t *testing.T) {
	d := echoDialer(t)
	env := startEngine(t, Config{MaxFlows: 2, MaxFlowsPerDevice: 2}, d)
	roundTrip := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(c, buf)
		return err
	}
	var open []net.Conn
	for i := range 2 {
		c := env.mustDial(t, "tcp", fmt.Sprintf("203.0.113.40:%d", 1000+i))
		if err := roundTrip(c); err != nil {
			t.Fatalf("flow %d within the cap: %v", i, err)
		}
		open = append(open, c)
	}

	env.expectReset(t, "203.0.113.40:1002", "third flow over MaxFlows=2")
	u := env.mustDial(t, "udp", "203.0.113.40:53")
	if _, err := u.Write([]byte("over cap")); err != nil {
		t.Fatalf("send datagram: %v", err)
	}
	waitFor(t, 10*time.Second, "over-cap datagram dropped", func() bool {
		s := env.eng.Stats()
		return s.DroppedUDP == 1 && s.Rejected == 2
	})
	if s := env.eng.Stats(); s.ActiveTCP != 2 || s.TotalUDP != 0 {
		t.Errorf("stats %+v, want ActiveTCP=2 and no UDP flow", s)
	}

	open[0].Close()
	waitFor(t, 15*time.Second, "closed flow to free its slot", func() bool {
		return env.eng.Stats().ActiveTCP == 1
	})
	c := env.mustDial(t, "tcp", "203.0.113.40:1003")
	if err := roundTrip(c); err != nil {
		t.Fatalf("flow after a slot was freed: %v", err)
	}
}

// One device cannot take every slot: beyond MaxFlowsPerDevice its flows are
// refused while another device still gets its own.
func TestMaxFlowsPerDevice(t *testing.T) {
	d := echoDialer(t)
	env := startEngine(t, Config{MaxFlows: 8, MaxFlowsPerDevice: 2}, d)
	runCmd(t, "ip", "-n", env.ns, "addr", "add", secondClientV4+"/32", "dev", tunName)
	roundTrip := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 4))
		return err
	}
	for i := range 2 {
		c := env.mustDial(t, "tcp", fmt.Sprintf("203.0.113.41:%d", 1000+i))
		if err := roundTrip(c); err != nil {
			t.Fatalf("flow %d within the device's cap: %v", i, err)
		}
	}
	env.expectReset(t, "203.0.113.41:1002", "third flow of one device over MaxFlowsPerDevice=2")
	u := env.mustDial(t, "udp", "203.0.113.41:53")
	if _, err := u.Write([]byte("over the device's cap")); err != nil {
		t.Fatalf("send datagram: %v", err)
	}
	waitFor(t, 10*time.Second, "over-cap datagram refused", func() bool {
		return env.eng.Stats().RefusedPerDevice == 2
	})
	other, err := env.dialFrom(secondClientV4, "tcp", "203.0.113.41:1003")
	if err != nil {
		t.Fatalf("flow of a second device: %v", err)
	}
	defer other.Close()
	if err := roundTrip(other); err != nil {
		t.Fatalf("flow of a second device: %v", err)
	}
	s := env.eng.Stats()
	want := []DeviceFlows{{Address: "192.0.2.1", Flows: 2}, {Address: secondClientV4, Flows: 1}}
	if s.PerDeviceLimit != 2 || !slices.Equal(s.TopDevices, want) || s.ActiveTCP != 3 {
		t.Errorf("stats %+v, want per_device_limit 2, top devices %v and 3 TCP flows", s, want)
	}
}

// One device's slow dials (a SYN flood at unreachable targets) may hold only a
// quarter of the dials in flight: its next connection waits for one of them to
// end (it is not reset: the kernel accepted it, as a held SYN once waited), while
// another device's dial goes out at once.
func TestDialsPerDevice(t *testing.T) {
	release := make(chan struct{})
	echo := startTCPEcho(t)
	var nd net.Dialer
	d := &testDialer{tcp: func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
		if dst.Port() < 1100 {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return nd.DialContext(ctx, "tcp", echo)
	}}
	env := startEngine(t, Config{MaxHandshakes: 8, DialTimeout: time.Minute}, d)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	runCmd(t, "ip", "-n", env.ns, "addr", "add", secondClientV4+"/32", "dev", tunName)
	var conns []net.Conn
	for i := range 3 {
		c := env.mustDial(t, "tcp", fmt.Sprintf("203.0.113.42:%d", 1000+i))
		conns = append(conns, c)
	}
	waitFor(t, 20*time.Second, "two slow dials in flight", func() bool {
		tcp, _ := d.dialed()
		return len(tcp) == 2
	})
	c, err := env.dialFrom(secondClientV4, "tcp", "203.0.113.42:1200")
	if err != nil {
		t.Fatalf("another device's connection while the first has its share in flight: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("another device's flow while the first has its share in flight: %v", err)
	}
	if tcp, _ := d.dialed(); len(tcp) != 3 || tcp[2].Port() != 1200 {
		t.Fatalf("dials %v: the first device's third connection must wait, the other device's go out", tcp)
	}
	close(release)
	released = true
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("flow %d of the first device after its dials ended: %v", i, err)
		}
	}
	if s := env.eng.Stats(); s.RefusedPerDevice != 0 || s.Rejected != 0 || s.ActiveTCP != 4 {
		t.Errorf("stats %+v, want every flow served, none refused", s)
	}
}

func TestUDPUnsupportedDropped(t *testing.T) {
	d := echoDialer(t)
	d.udp = func(context.Context, netip.AddrPort) (net.Conn, error) {
		return nil, fmt.Errorf("test proxy: UDP relay: %w", errors.ErrUnsupported)
	}
	env := startEngine(t, Config{}, d)
	for i, dst := range []string{"203.0.113.50:3478", "[2001:db8:3::50]:3478"} {
		c := env.mustDial(t, "udp", dst)
		if _, err := c.Write([]byte{0}); err != nil {
			t.Fatalf("send datagram to %s: %v", dst, err)
		}
		waitFor(t, 10*time.Second, "the dial refused", func() bool {
			return env.eng.Stats().Rejected == uint64(i+1)
		})
		for j := range 2 {
			if _, err := c.Write([]byte{byte(j + 1)}); err != nil {
				t.Fatalf("send datagram to %s: %v", dst, err)
			}
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(make([]byte, 16)); err == nil {
			t.Fatalf("got a %d-byte reply from %s through a proxy without UDP", n, dst)
		}
	}
	waitFor(t, 10*time.Second, "all 6 datagrams dropped and counted", func() bool {
		return env.eng.Stats().DroppedUDP == 6
	})
	_, udpDialed := d.dialed()
	if s := env.eng.Stats(); s.Rejected != 2 || len(udpDialed) != 2 || s.TotalUDP != 0 || s.BytesUp != 0 {
		t.Errorf("stats %+v after %d dials, want one rejected dial per flow and nothing relayed", s, len(udpDialed))
	}
}

// After a failed dial, the pair's next datagrams are dropped without a new
// dial for UDPDialBackoff (a call's 50 datagrams a second were 50 dials).
func TestUDPDialBackoff(t *testing.T) {
	d := &testDialer{udp: func(context.Context, netip.AddrPort) (net.Conn, error) {
		return nil, errTestRefused
	}}
	env := startEngine(t, Config{UDPDialBackoff: time.Hour}, d)
	c := env.mustDial(t, "udp", "203.0.113.51:5000")
	for i := range 20 {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("datagram %d handled", i), func() bool {
			return env.eng.Stats().DroppedUDP == uint64(i+1)
		})
	}
	if _, udpDialed := d.dialed(); len(udpDialed) != 1 {
		t.Errorf("%d dials for 20 datagrams of one pair, want 1", len(udpDialed))
	}
	// Another pair is not held back.
	other := env.mustDial(t, "udp", "203.0.113.52:5000")
	if _, err := other.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the other pair dialled", func() bool {
		_, udpDialed := d.dialed()
		return len(udpDialed) == 2
	})
}

// Idle UDP flows hold no goroutine (they held two and a 16 KiB buffer), and
// datagrams either way still wake them.
func TestIdleUDPFlowsHoldNoGoroutine(t *testing.T) {
	const flows = 20
	d := echoDialer(t)
	env := startEngine(t, Config{}, d)
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, flows)
	echo := func(c net.Conn, msg string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("send %q: %v", msg, err)
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, buf[:n], err)
		}
	}
	for i := range conns {
		conns[i] = env.mustDial(t, "udp", fmt.Sprintf("203.0.113.53:%d", 3000+i))
		echo(conns[i], fmt.Sprintf("hello %d", i))
	}
	waitFor(t, 10*time.Second, "idle UDP flows to hold no goroutine", func() bool {
		return runtime.NumGoroutine()-before < flows/2
	})
	for i, c := range conns {
		echo(c, fmt.Sprintf("again %d", i))
	}
	if s := env.eng.Stats(); s.ActiveUDP != flows {
		t.Errorf("ActiveUDP = %d, want %d", s.ActiveUDP, flows)
	}
}

// A poller-driven worker reads without waiting: after a burst that fills its
// buffer exactly it finds the socket drained and ends, instead of parking in
// Read with the buffer until the proxy sends again.
func TestTCPWorkerEndsAfterExactBurst(t *testing.T) {
	const flows = 20
	const bufSize = 4096
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen upstream: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, flows)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			accepted <- c
		}
	}()
	env := startEngine(t, Config{BufferSize: bufSize}, tcpDialerTo(ln.Addr().String()))
	before := runtime.NumGoroutine()
	burst := bytes.Repeat([]byte("x"), 2*bufSize)
	for i := range flows {
		c := env.mustDial(t, "tcp", fmt.Sprintf("203.0.113.46:%d", 2000+i))
		var up net.Conn
		select {
		case up = <-accepted:
		case <-time.After(20 * time.Second):
			t.Fatalf("flow %d never reached the upstream", i)
		}
		if _, err := up.Write(burst); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, len(burst))); err != nil {
			t.Fatalf("flow %d: read the burst: %v", i, err)
		}
	}
	waitFor(t, 10*time.Second, "no worker parked after exact bursts", func() bool {
		return runtime.NumGoroutine()-before < flows/2
	})
}

func TestSetDialerAffectsNewFlowsOnly(t *testing.T) {
	first := echoDialer(t)
	env := startEngine(t, Config{}, first)
	old := env.mustDial(t, "tcp", "203.0.113.60:80")

	second := echoDialer(t)
	env.eng.SetDialer(second)
	fresh := env.mustDial(t, "tcp", "203.0.113.61:80")
	for _, c := range []net.Conn{old, fresh} {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("flow %v after SetDialer: %v", c.RemoteAddr(), err)
		}
	}
	a, _ := first.dialed()
	b, _ := second.dialed()
	if len(a) != 1 || a[0].Port() != 80 || a[0].Addr() != netip.MustParseAddr("203.0.113.60") ||
		len(b) != 1 || b[0].Addr() != netip.MustParseAddr("203.0.113.61") {
		t.Errorf("first dialer saw %v, second %v; want one flow each", a, b)
	}
}

// After ctx is cancelled Run returns, open flows are reset and no goroutine
// of the engine is left.
func TestShutdownStopsEverything(t *testing.T) {
	requireRoot(t)
	d := echoDialer(t)
	baseline := runtime.NumGoroutine()
	env := startEngine(t, Config{}, d)
	c := env.mustDial(t, "tcp", "203.0.113.70:443")
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	u := env.mustDial(t, "udp", "203.0.113.70:53")
	u.Write([]byte("hi"))
	u.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := u.Read(make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	if s := env.eng.Stats(); s.ActiveTCP != 1 || s.ActiveUDP != 1 {
		t.Fatalf("before shutdown: %+v, want one TCP and one UDP flow", s)
	}

	env.cancel()
	if err := env.wait(30 * time.Second); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after shutdown: %v, want ECONNRESET", err)
	}
	if s := env.eng.Stats(); s.ActiveTCP != 0 || s.ActiveUDP != 0 {
		t.Errorf("after shutdown: %+v, want no active flows", s)
	}
	waitFor(t, 10*time.Second, "engine goroutines to end", func() bool {
		return len(leftoverGoroutines()) == 0 && runtime.NumGoroutine() <= baseline
	})
}

// leftoverGoroutines lists goroutines running engine code.
func leftoverGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "daemon/engine.(*") {
			left = append(left, g)
		}
	}
	return left
}

func TestRunTwice(t *testing.T) {
	e, err := New(Config{}, &testDialer{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.started.Store(true)
	if err := e.Run(context.Background(), -1, &Listener{}); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestRunBadFD(t *testing.T) {
	e, err := New(Config{}, &testDialer{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background(), -1, ln); err == nil {
		t.Fatal("Run on fd -1 succeeded")
	}
}

// BenchmarkTCPThroughput measures client → proxy (upload): the client's socket
// spliced to the proxy socket.
func BenchmarkTCPThroughput(b *testing.B) {
	requireRoot(b)
	sinkAddr := startTCPSink(b)
	d := tcpDialerTo(sinkAddr)
	env := startEngine(b, Config{}, d)
	c := env.mustDial(b, "tcp", "203.0.113.80:5201")
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(env.eng.Stats().BytesUp)/float64(b.N*len(chunk)), "relayed/written")
}

func startTCPSink(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen sink: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkTCPDownload measures proxy → client.
func BenchmarkTCPDownload(b *testing.B) {
	requireRoot(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatalf("listen source: %v", err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	d := tcpDialerTo(ln.Addr().String())
	env := startEngine(b, Config{}, d)
	c := env.mustDial(b, "tcp", "203.0.113.81:5201")
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleFlowMemory reports what one idle TCP flow costs the engine: heap and
// goroutine stacks after a GC, per flow. The proxy end is a listener that never accepts
// (the kernel completes the connections into its backlog), so no test goroutine is
// counted; the client sockets are, as a small constant part.
func BenchmarkIdleFlowMemory(b *testing.B) {
	const flows = 2000
	requireRoot(b)
	var upstream atomic.Pointer[net.Listener]
	var nd net.Dialer
	d := &testDialer{tcp: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
		return nd.DialContext(ctx, "tcp", (*upstream.Load()).Addr().String())
	}}
	env := startEngine(b, Config{MaxFlows: flows + 10, MaxFlowsPerDevice: flows + 10}, d)
	for b.Loop() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatalf("listen: %v", err)
		}
		upstream.Store(&ln)
		heap0, stack0 := memInUse()
		goroutines := runtime.NumGoroutine()
		conns := make([]net.Conn, 0, flows)
		for range flows {
			c, err := env.dial("tcp", "203.0.113.82:443")
			if err != nil {
				b.Fatalf("flow %d: %v", len(conns)+1, err)
			}
			conns = append(conns, c)
		}
		waitFor(b, 10*time.Second, "all flows active", func() bool { return env.eng.Stats().ActiveTCP == flows })
		heap1, stack1 := memInUse()
		// Signed: with no goroutine per flow, stacks can shrink meanwhile.
		b.ReportMetric(float64(int64(heap1)-int64(heap0))/flows, "heap-B/flow")
		b.ReportMetric(float64(int64(stack1)-int64(stack0))/flows, "stack-B/flow")
		b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/flows, "goroutines/flow")
		// Closing the listener resets the connections it never accepted.
		ln.Close()
		for _, c := range conns {
			c.Close()
		}
		waitFor(b, 10*time.Second, "all flows closed", func() bool { return env.eng.Stats().ActiveTCP == 0 })
	}
}

// memInUse is the heap and stack memory in use after a full GC.
func memInUse() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
}

// BenchmarkConnectFirstByte measures a new flow's set-up through the engine: the
// client's connect (the kernel completes it at once) and then one byte's round
// trip through the relay, which waits for the proxy dial.
func BenchmarkConnectFirstByte(b *testing.B) {
	env := startEngine(b, Config{}, echoDialer(b))
	var connect, roundTrip time.Duration
	one := make([]byte, 1)
	for b.Loop() {
		start := time.Now()
		c, err := env.dial("tcp", "203.0.113.50:7")
		if err != nil {
			b.Fatalf("dial: %v", err)
		}
		connected := time.Now()
		if _, err := c.Write(one); err != nil {
			b.Fatalf("write: %v", err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatalf("read: %v", err)
		}
		connect += connected.Sub(start)
		roundTrip += time.Since(connected)
		c.Close()
	}
	b.ReportMetric(float64(connect.Microseconds())/float64(b.N), "connect-µs")
	b.ReportMetric(float64(roundTrip.Microseconds())/float64(b.N), "roundtrip-µs")
}

// A device's own UDP flows do not lock its TCP out: at its cap, a new TCP flow
// takes the place of its least recently active UDP flow; a new UDP flow only of
// one silent for UDPEvictIdle; TCP is refused only when TCP alone fills the cap.
func TestTCPEvictsUDPAtDeviceCap(t *testing.T) {
	d := echoDialer(t)
	env := startEngine(t, Config{MaxFlows: 16, MaxFlowsPerDevice: 3}, d)
	echo := func(c net.Conn, msg string) error {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg)+len(halfCloseTrailer))
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) != msg {
			err = fmt.Errorf("echo %q, want %q", buf[:n], msg)
		}
		return err
	}
	var udp []net.Conn
	for i := range 3 {
		u := env.mustDial(t, "udp", fmt.Sprintf("203.0.113.90:%d", 4000+i))
		if err := echo(u, fmt.Sprintf("udp %d", i)); err != nil {
			t.Fatalf("UDP flow %d within the cap: %v", i, err)
		}
		udp = append(udp, u)
	}
	// A fourth UDP flow while the three are fresh: refused, not evicting.
	u4 := env.mustDial(t, "udp", "203.0.113.90:4003")
	u4.Write([]byte("over the cap"))
	waitFor(t, 10*time.Second, "the fourth UDP flow refused", func() bool {
		return env.eng.Stats().RefusedPerDevice == 1
	})
	// The oldest UDP flow was active first; touch the others so it stays the oldest.
	for i, u := range udp[1:] {
		if err := echo(u, fmt.Sprintf("again %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// TCP flows take the UDP flows' places, the least recently active first.
	var tcps []net.Conn
	for i := range 3 {
		c := env.mustDial(t, "tcp", fmt.Sprintf("203.0.113.91:%d", 5000+i))
		if err := echo(c, fmt.Sprintf("tcp %d", i)); err != nil {
			t.Fatalf("TCP flow %d at the device's cap, with UDP flows to evict: %v", i, err)
		}
		tcps = append(tcps, c)
		if i == 0 {
			waitFor(t, 10*time.Second, "the oldest UDP flow evicted", func() bool {
				s := env.eng.Stats()
				return s.Evicted == 1 && s.ActiveUDP == 2
			})
			if err := echo(udp[1], "still here"); err != nil {
				t.Fatalf("a younger UDP flow was evicted instead of the oldest: %v", err)
			}
		}
	}
	if s := env.eng.Stats(); s.Evicted != 3 || s.ActiveTCP != 3 || s.ActiveUDP != 0 {
		t.Errorf("stats %+v, want 3 UDP flows evicted for 3 TCP flows", s)
	}
	// TCP alone fills the cap: now a TCP flow is refused.
	env.expectReset(t, "203.0.113.91:5003", "a fourth TCP flow with only TCP at the cap")
	if s := env.eng.Stats(); s.RefusedPerDevice != 2 {
		t.Errorf("RefusedPerDevice = %d, want 2", s.RefusedPerDevice)
	}
}

// Over the memory budget new flows are refused, and far over it the least
// recently active flows are closed, once per collection.
func TestMemoryBudget(t *testing.T) {
	const limit = 100 << 20
	var used, cycle atomic.Uint64
	used.Store(10 << 20)
	env := startEngine(t, Config{MemoryLimit: limit}, echoDialer(t))
	env.eng.mem.read = func() (uint64, uint64) { return used.Load(), cycle.Load() }
	env.eng.mem.sampled = time.Time{}
	var conns []net.Conn
	for i := range 5 {
		c := env.mustDial(t, "tcp", fmt.Sprintf("203.0.113.95:%d", 6000+i))
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("flow %d within the budget: %v", i, err)
		}
		conns = append(conns, c)
	}
	// The last three are active again, so the first two are the least recently active.
	for _, c := range conns[2:] {
		if _, err := c.Write([]byte("a")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	// 58%: over memRefuse, under memShed: refused, nothing closed.
	used.Store(58 << 20)
	time.Sleep(memSampleEvery)
	env.expectReset(t, "203.0.113.95:6100", "a flow over the memory budget")
	if s := env.eng.Stats(); s.RefusedMemory == 0 || s.Shed != 0 || s.ActiveTCP != 5 {
		t.Fatalf("stats %+v, want the new flow refused and the five kept", s)
	}
	// 70% after a collection: the two least recently active flows (70 MiB over five
	// flows is 14 MiB each, and 20 MiB must go) are closed.
	used.Store(70 << 20)
	cycle.Add(1)
	time.Sleep(memSampleEvery)
	env.expectReset(t, "203.0.113.95:6101", "a flow far over the memory budget")
	waitFor(t, 10*time.Second, "two flows shed", func() bool {
		s := env.eng.Stats()
		return s.Shed == 2 && s.ActiveTCP == 3
	})
	for i, c := range conns {
		_, err := c.Write([]byte("z"))
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		if shed := i < 2; shed != (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
			t.Errorf("flow %d (opened %d of 5): read %v, want a reset only for the two oldest", i, i+1, err)
		}
	}
	// Back under the budget: flows come in again.
	used.Store(20 << 20)
	time.Sleep(memSampleEvery)
	c := env.mustDial(t, "tcp", "203.0.113.95:6102")
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("a flow back under the budget: %v", err)
	}
}
