package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// testTimeout bounds every wait in these tests; generous for a loaded host.
const testTimeout = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// tcpEcho starts a TCP echo server on host (e.g. "127.0.0.1", "::1").
func tcpEcho(t *testing.T, host string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("echo listen: %v", err)
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
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// udpEcho starts a UDP echo server on host.
func udpEcho(t *testing.T, host string) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("udp echo listen: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// freePort finds a port free for both TCP and UDP on host.
func freePort(t *testing.T, host string) uint16 {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatalf("find free port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return uint16(port)
	}
	t.Fatalf("no port free for both TCP and UDP on %s", host)
	return 0
}

const installHint = "install dante-server microsocks shadowsocks-libev tinyproxy"

// server is a real proxy server running as a child process.
type server struct {
	t    *testing.T
	name string
	args []string
	cmd  *exec.Cmd
	out  *syncBuffer
	// waitExit closes when the current process has exited.
	waitExit chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs bin with args, waits until it accepts TCP on addr and
// stops it when the test ends.
func startServer(t *testing.T, addr string, bin string, args ...string) *server {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("%s not found (%v): %s", bin, err, installHint)
	}
	s := &server{t: t, name: bin, args: args, out: &syncBuffer{}}
	s.start(addr)
	t.Cleanup(s.stop)
	return s
}

func (s *server) start(addr string) {
	s.t.Helper()
	s.cmd = exec.Command(s.name, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(exited) }()
	s.waitExit = exited
	deadline := time.Now().Add(testTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			s.t.Fatalf("%s %v exited before listening on %s: %s", s.name, s.args, addr, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			s.stopProcess()
			s.t.Fatalf("%s did not listen on %s within %v: %s", s.name, addr, testTimeout, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) stopProcess() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.waitExit:
	case <-time.After(testTimeout):
		s.t.Errorf("%s did not exit after kill", s.name)
	}
	s.cmd = nil
}

func (s *server) stop() {
	if s.t.Failed() {
		s.t.Logf("%s output:\n%s", s.name, s.out.String())
	}
	s.stopProcess()
}

// roundTripTCP writes a message through c and expects it echoed.
func roundTripTCP(t *testing.T, c net.Conn, size int) {
	t.Helper()
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i*7 + 3)
	}
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo differs from what was sent")
	}
}

// roundTripUDP sends datagrams through c until one comes back (UDP may
// drop the first while a relay sets up) and checks it.
func roundTripUDP(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	buf := make([]byte, 65535)
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("udp write: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if isTimeout(err) {
			continue
		}
		if err != nil {
			t.Fatalf("udp read: %v", err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("udp echo %q, want %q", buf[:n], msg)
		}
		return
	}
	t.Fatalf("no udp echo within %v", testTimeout)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
