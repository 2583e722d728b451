package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeServer accepts TCP connections on loopback and runs handle on each.
func fakeServer(t *testing.T, handle func(c net.Conn)) Spec {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
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
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				handle(c)
			}()
		}
	}()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	return Spec{Name: "fake", Server: ap.Addr().String(), Port: ap.Port()}
}

// readGreeting reads a SOCKS5 greeting and returns the offered methods.
func readGreeting(c net.Conn) []byte {
	var h [2]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return nil
	}
	m := make([]byte, h[1])
	_, _ = io.ReadFull(c, m)
	return m
}

// readRequest reads a SOCKS5 request and returns its command and address.
func readRequest(c net.Conn) (byte, socksAddr) {
	var h [4]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, socksAddr{}
	}
	n, _ := socksAddrLen(h[3:])
	b := make([]byte, n)
	b[0] = h[3]
	_, _ = io.ReadFull(c, b[1:])
	a, _, _ := parseSocksAddr(b)
	return h[1], a
}

var testDst = netip.MustParseAddrPort("203.0.113.10:443")

func TestSOCKS5Handshake(t *testing.T) {
	okReply := []byte{5, 0, 0, 1, 198, 51, 100, 6, 0x12, 0x34}
	tests := []struct {
		name      string
		user      string
		pass      string
		server    func(c net.Conn)
		wantErr   string // exact message after the "socks5 host:port: " prefix; "" = success
		wantIs    error
		wantReply bool
	}{
		{
			name: "success then data",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 0})
				if cmd, a := readRequest(c); cmd != 1 || a.IP != testDst {
					return
				}
				// The reply and the first tunnelled bytes in one segment.
				_, _ = c.Write(append(append([]byte{}, okReply...), "hello"...))
				time.Sleep(time.Second)
			},
		},
		{
			name: "domain bound address",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 0})
				readRequest(c)
				_, _ = c.Write(append([]byte{5, 0, 0, 3, 7}, "proxy.x\x01\xbbhello"...))
				time.Sleep(time.Second)
			},
		},
		{
			name: "password ok",
			user: "alice", pass: "pw-123",
			server: func(c net.Conn) {
				if !bytes.Contains(readGreeting(c), []byte{2}) {
					return
				}
				_, _ = c.Write([]byte{5, 2})
				want := append(append([]byte{1, 5}, "alice"...), append([]byte{6}, "pw-123"...)...)
				got := make([]byte, len(want))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
					return
				}
				_, _ = c.Write([]byte{1, 0})
				readRequest(c)
				_, _ = c.Write(append(append([]byte{}, okReply...), "hello"...))
				time.Sleep(time.Second)
			},
		},
		{
			name: "password refused",
			user: "alice", pass: "pw-123",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 2})
				_, _ = io.ReadFull(c, make([]byte, 3+5+6))
				_, _ = c.Write([]byte{1, 1})
			},
			wantErr: "authentication failed", wantIs: ErrAuthFailed,
		},
		{
			name: "auth required none configured",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 0xFF})
			},
			wantErr: "server requires authentication, none configured: authentication failed", wantIs: ErrAuthFailed,
		},
		{
			name: "password chosen but not offered",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 2})
			},
			wantErr: "server chose username/password authentication that was not offered",
		},
		{
			name: "unknown method",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 9})
			},
			wantErr: "server chose authentication method 9 that was not offered",
		},
		{
			name: "not socks5",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			},
			wantErr: "not a SOCKS5 server (version 72 in reply)",
		},
		{
			name: "closed after greeting",
			server: func(c net.Conn) {
				readGreeting(c)
			},
			wantErr: "read method choice: EOF",
		},
		{
			name: "short method reply",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5})
			},
			wantErr: "read method choice: unexpected EOF",
		},
		{
			name: "short reply",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 0})
				readRequest(c)
				_, _ = c.Write([]byte{5, 0, 0, 1, 1, 2})
			},
			wantErr: "read reply: unexpected EOF",
		},
		{
			name: "reply bad version",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 0})
				readRequest(c)
				_, _ = c.Write([]byte{4, 0x5a, 0, 1, 1, 2, 3, 4, 0, 80})
			},
			wantErr: "read reply: bad version 4 in reply",
		},
		{
			name: "reply unknown address type",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 0})
				readRequest(c)
				_, _ = c.Write([]byte{5, 0, 0, 9, 1, 2, 3, 4, 0, 80})
			},
			wantErr: "read reply: unknown address type 9",
		},
		{
			name: "refused",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 0})
				readRequest(c)
				_, _ = c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
			},
			wantErr: "connect to 203.0.113.10:443: connection refused by proxy (reply 5)", wantReply: true,
		},
		{
			name: "unknown reply code",
			server: func(c net.Conn) {
				readGreeting(c)
				_, _ = c.Write([]byte{5, 0})
				readRequest(c)
				_, _ = c.Write([]byte{5, 0x42, 0, 1, 0, 0, 0, 0, 0, 0})
			},
			wantErr: "connect to 203.0.113.10:443: refused by proxy (reply 66)", wantReply: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := fakeServer(t, tt.server)
			spec.Type, spec.Username, spec.Password = TypeSOCKS5, tt.user, tt.pass
			d, err := New(spec, Options{DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.DialTCP(testCtx(t), testDst)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("DialTCP: %v", err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				got := make([]byte, 5)
				if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
					t.Fatalf("first bytes after the reply: %q, %v", got, err)
				}
				return
			}
			want := "socks5 " + spec.Address() + ": " + tt.wantErr
			if err == nil || err.Error() != want {
				t.Fatalf("error = %v\nwant    %s", err, want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error does not wrap %v", tt.wantIs)
			}
			var re *ReplyError
			if errors.As(err, &re) != tt.wantReply {
				t.Errorf("errors.As ReplyError = %v, want %v", !tt.wantReply, tt.wantReply)
			}
			if tt.pass != "" && strings.Contains(err.Error(), tt.pass) {
				t.Errorf("error contains the password")
			}
		})
	}
}

// A server that accepts and never answers must not hang the dial.
func TestSilentServersTimeOut(t *testing.T) {
	for _, typ := range []string{TypeSOCKS5, TypeHTTP} {
		t.Run(typ, func(t *testing.T) {
			spec := fakeServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
			spec.Type = typ
			d, err := New(spec, Options{DialTimeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = d.DialTCP(testCtx(t), testDst)
			if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
				t.Fatalf("error = %v, want deadline exceeded", err)
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("dial took %v", el)
			}
		})
	}
}

func TestSOCKS5UDPAssociate(t *testing.T) {
	relay, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	relayPort := relay.LocalAddr().(*net.UDPAddr).Port
	closeCtrl := make(chan struct{})
	spec := fakeServer(t, func(c net.Conn) {
		readGreeting(c)
		_, _ = c.Write([]byte{5, 0})
		if cmd, _ := readRequest(c); cmd != socksCmdUDP {
			return
		}
		// Unspecified relay address: use the server's.
		_, _ = c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, byte(relayPort >> 8), byte(relayPort)})
		<-closeCtrl
	})
	spec.Type, spec.UDP = TypeSOCKS5, true
	d, err := New(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("[2001:db8:3::5]:3478")
	c, err := d.DialUDP(testCtx(t), dst)
	if err != nil {
		t.Fatalf("DialUDP: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 1500)
	n, client, err := relay.ReadFrom(buf)
	if err != nil {
		t.Fatalf("relay read: %v", err)
	}
	wantHdr := appendSocksAddr([]byte{0, 0, 0}, dst)
	if !bytes.Equal(buf[:n], append(wantHdr, "ping"...)) {
		t.Fatalf("relay got % x", buf[:n])
	}
	other := appendSocksAddr([]byte{0, 0, 0}, netip.MustParseAddrPort("[2001:db8:3::6]:3478"))
	frag := appendSocksAddr([]byte{0, 0, 1}, dst)
	for _, pkt := range [][]byte{
		append(other, "from another host"...),
		append(frag, "fragment"...),
		{0, 0},
		{0, 0, 0, 3, 200},
		append(wantHdr, "pong"...),
	} {
		if _, err := relay.WriteTo(pkt, client); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	n, err = c.Read(buf)
	if err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("Read = %q, %v; want pong (others dropped)", buf[:n], err)
	}

	// The end of the control connection ends the flow.
	close(closeCtrl)
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after control closed = %v, want net.ErrClosed", err)
	}
}

func TestSOCKS5UDPDisabled(t *testing.T) {
	d, err := New(Spec{Type: TypeSOCKS5, Server: "198.51.100.6", Port: 1080}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.DialUDP(testCtx(t), testDst)
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("error = %v, want ErrUnsupported", err)
	}
}

func FuzzReadSocksReply(f *testing.F) {
	for _, seed := range [][]byte{
		{5, 0, 0, 1, 127, 0, 0, 1, 0, 80},
		{5, 5, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187},
		append([]byte{5, 0, 0, 3, 11}, "example.org\x00\x50"...),
		{5, 0, 0, 3, 0, 0, 0},
		{5, 0, 0, 9},
		{5},
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		_, bound, err := readSocksReply(r)
		if err != nil {
			return
		}
		used := len(data) - r.Len()
		if used > 4+1+255+2 {
			t.Fatalf("consumed %d bytes", used)
		}
		_ = fmt.Sprint(bound)
	})
}

func FuzzParseSocksUDP(f *testing.F) {
	f.Add(append(appendSocksAddr([]byte{0, 0, 0}, testDst), "payload"...))
	f.Add(append(appendSocksAddr([]byte{0, 0, 1}, netip.MustParseAddrPort("[2001:db8:3::1]:53")), "x"...))
	f.Add(append([]byte{0, 0, 0, 3, 3}, "a.b\x00\x35q"...))
	f.Add([]byte{0, 0, 0, 4, 1})
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		frag, src, payload, err := parseSocksUDP(data)
		if err != nil {
			return
		}
		if !bytes.HasSuffix(data, payload) {
			t.Fatalf("payload is not the datagram's tail")
		}
		if src.Host == "" && !src.IP.Addr().Is4In6() {
			again := append(appendSocksAddr([]byte{data[0], data[1], frag}, src.IP), payload...)
			if !bytes.Equal(again, data) {
				t.Fatalf("re-encoding differs: % x vs % x", again, data)
			}
		}
	})
}
