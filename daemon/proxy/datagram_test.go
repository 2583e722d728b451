package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// socksUDPServer answers UDP ASSOCIATE with relay as the relay address and
// keeps each control connection open until closeCtrl is closed.
func socksUDPServer(t *testing.T, relay netip.AddrPort, closeCtrl <-chan struct{}) Spec {
	spec := fakeServer(t, func(c net.Conn) {
		readGreeting(c)
		_, _ = c.Write([]byte{5, 0})
		if cmd, _ := readRequest(c); cmd != socksCmdUDP {
			return
		}
		_, _ = c.Write(appendSocksAddr([]byte{5, 0, 0}, relay))
		<-closeCtrl
	})
	spec.Type, spec.UDP = TypeSOCKS5, true
	return spec
}

// verbatimEcho sends every datagram back as it came: its header (SOCKS5) or
// sealed address (Shadowsocks) names the destination, so it reads as a reply.
func verbatimEcho(t *testing.T) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, maxDatagram)
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

func TestSOCKS5UDPRelayAddress(t *testing.T) {
	tests := []struct {
		relay   string
		wantErr bool
	}{
		{"127.0.0.1", false}, // the server's own address
		{"0.0.0.0", false},   // unspecified: the server's own
		{"198.51.100.7", false},
		{"2001:db8::7", false},
		{"127.0.0.2", true},
		{"10.0.0.1", true},
		{"192.168.1.1", true},
		{"172.16.0.1", true},
		{"169.254.1.1", true},
		{"100.64.0.1", true},
		{"fe80::1", true},
		{"fd00::1", true},
		{"::1", true},
		{"224.0.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.relay, func(t *testing.T) {
			closeCtrl := make(chan struct{})
			defer close(closeCtrl)
			spec := socksUDPServer(t, netip.AddrPortFrom(netip.MustParseAddr(tt.relay), 4000), closeCtrl)
			d, err := New(spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.DialUDP(testCtx(t), testDst)
			if err == nil {
				c.Close()
			}
			if tt.wantErr != (err != nil) {
				t.Fatalf("relay %s: DialUDP error %v, want error %v", tt.relay, err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "not the server's own address") {
				t.Errorf("error %q does not say why", err)
			}
		})
	}
}

// ReadNonblock never waits: EAGAIN when nothing is queued, the payload when
// it is, io.EOF once the SOCKS5 control connection has closed.
func TestUDPReadNonblock(t *testing.T) {
	echo := verbatimEcho(t)
	closeCtrl := make(chan struct{})
	socks := socksUDPServer(t, echo, closeCtrl)
	ss := Spec{Name: "ss", Type: TypeShadowsocks, Server: "127.0.0.1", Port: echo.Port(), Password: "pw", Cipher: "aes-128-gcm", UDP: true}
	type nonblocking interface {
		net.Conn
		ReadNonblock([]byte) (int, error)
		RawConns() ([]syscall.RawConn, error)
	}
	for _, spec := range []Spec{socks, ss} {
		t.Run(spec.Type, func(t *testing.T) {
			d, err := New(spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := d.DialUDP(testCtx(t), testDst)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c, ok := conn.(nonblocking)
			if !ok {
				t.Fatalf("%T cannot be read without blocking", conn)
			}
			buf := make([]byte, 100)
			if _, err := c.ReadNonblock(buf); !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("ReadNonblock with nothing queued = %v, want EAGAIN", err)
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(testTimeout)
			for {
				n, err := c.ReadNonblock(buf)
				if err == nil {
					if string(buf[:n]) != "ping" {
						t.Fatalf("ReadNonblock = %q", buf[:n])
					}
					break
				}
				if !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
					t.Fatalf("ReadNonblock = %v, want the echo", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if spec.Type == TypeSOCKS5 {
				close(closeCtrl)
				for {
					_, err := c.ReadNonblock(buf)
					if errors.Is(err, io.EOF) {
						break
					}
					if !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
						t.Fatalf("ReadNonblock after the control connection closed = %v, want io.EOF", err)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
}

// An idle UDP conn holds no read buffer: the old conns kept 64 KiB each from
// their first Read for their whole life.
func TestUDPConnsHoldNoBuffer(t *testing.T) {
	const conns = 50
	echo := verbatimEcho(t)
	closeCtrl := make(chan struct{})
	t.Cleanup(func() { close(closeCtrl) })
	socks := socksUDPServer(t, echo, closeCtrl)
	ss := Spec{Name: "ss", Type: TypeShadowsocks, Server: "127.0.0.1", Port: echo.Port(), Password: "pw", Cipher: "aes-128-gcm", UDP: true}
	for _, spec := range []Spec{socks, ss} {
		t.Run(spec.Type, func(t *testing.T) {
			d, err := New(spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			heapBefore := heapInUse()
			open := make([]net.Conn, 0, conns)
			defer func() {
				for _, c := range open {
					c.Close()
				}
			}()
			buf := make([]byte, 2048)
			for i := range conns {
				c, err := d.DialUDP(testCtx(t), testDst)
				if err != nil {
					t.Fatal(err)
				}
				open = append(open, c)
				msg := fmt.Sprintf("ping %d", i)
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(testTimeout))
				if n, err := c.Read(buf); err != nil || string(buf[:n]) != msg {
					t.Fatalf("Read = %q, %v; want %q", buf[:n], err, msg)
				}
			}
			perConn := (int64(heapInUse()) - int64(heapBefore)) / conns
			runtime.KeepAlive(open)
			if perConn > 16<<10 {
				t.Errorf("%s: %d bytes of heap per idle UDP conn, want under 16 KiB (no read buffer held)", spec.Type, perConn)
			}
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
