package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Interop tests against the real Debian proxy servers on loopback.

// fastFail is how quickly a refusal (wrong password, closed port) must be
// reported: far below any timeout, generous for a loaded host.
const fastFail = 5 * time.Second

func startMicrosocks(t *testing.T, host string, args ...string) (Spec, *server) {
	t.Helper()
	port := freePort(t, host)
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	srv := startServer(t, addr, "microsocks", append([]string{"-i", host, "-p", strconv.Itoa(int(port))}, args...)...)
	return Spec{Name: "ms", Type: TypeSOCKS5, Server: host, Port: port}, srv
}

func TestInteropMicrosocks(t *testing.T) {
	tests := []struct {
		name     string
		host     string
		args     []string
		user     string
		pass     string
		wantAuth bool // expect ErrAuthFailed
	}{
		{name: "ipv4 no auth", host: "127.0.0.1"},
		{name: "ipv6 no auth", host: "::1"},
		{name: "user pass", host: "127.0.0.1", args: []string{"-u", "alice", "-P", "s3cret-pw"}, user: "alice", pass: "s3cret-pw"},
		{name: "wrong pass", host: "127.0.0.1", args: []string{"-u", "alice", "-P", "s3cret-pw"}, user: "alice", pass: "wrong-pw", wantAuth: true},
		{name: "no credentials given", host: "127.0.0.1", args: []string{"-u", "alice", "-P", "s3cret-pw"}, wantAuth: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			echo := tcpEcho(t, tt.host)
			spec, _ := startMicrosocks(t, tt.host, tt.args...)
			spec.Username, spec.Password = tt.user, tt.pass
			d, err := New(spec, Options{BypassMark: 0x200000})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			c, err := d.DialTCP(testCtx(t), echo)
			if tt.wantAuth {
				if !errors.Is(err, ErrAuthFailed) {
					t.Fatalf("DialTCP error = %v, want authentication failed", err)
				}
				want := fmt.Sprintf("socks5 %s: ", spec.Address())
				if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "authentication failed") {
					t.Errorf("error %q, want prefix %q and 'authentication failed'", err, want)
				}
				if tt.pass != "" && strings.Contains(err.Error(), tt.pass) {
					t.Errorf("error %q contains the password", err)
				}
				if time.Since(start) > fastFail {
					t.Errorf("refusal took %v", time.Since(start))
				}
				return
			}
			if err != nil {
				t.Fatalf("DialTCP: %v", err)
			}
			defer c.Close()
			roundTripTCP(t, c, 200_000)
		})
	}
}

func TestInteropMicrosocksRefused(t *testing.T) {
	spec, _ := startMicrosocks(t, "127.0.0.1")
	// A port that was just free and is closed now: the proxy's connect
	// to it is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	d, err := New(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.DialTCP(testCtx(t), closed)
	want := fmt.Sprintf("socks5 %s: connect to %s: connection refused by proxy (reply 5)", spec.Address(), closed)
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %q", err, want)
	}
	var re *ReplyError
	if !errors.As(err, &re) {
		t.Errorf("error does not wrap *ReplyError")
	}
}

func startDante(t *testing.T) Spec {
	t.Helper()
	port := freePort(t, "127.0.0.1")
	dir := t.TempDir()
	conf := filepath.Join(dir, "danted.conf")
	text := fmt.Sprintf(`logoutput: stderr
internal: 127.0.0.1 port = %d
external: lo
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
	from: 127.0.0.0/8 to: 0.0.0.0/0
}
socks pass {
	from: 127.0.0.0/8 to: 0.0.0.0/0
	command: connect udpassociate
}
socks pass {
	from: 0.0.0.0/0 to: 127.0.0.0/8
	command: udpreply
}
`, port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	startServer(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))),
		"danted", "-f", conf, "-p", filepath.Join(dir, "danted.pid"), "-N", "1")
	return Spec{Name: "dante", Type: TypeSOCKS5, Server: "127.0.0.1", Port: port, UDP: true}
}

func TestInteropDante(t *testing.T) {
	spec := startDante(t)
	d, err := New(spec, Options{BypassMark: 0x200000})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("tcp", func(t *testing.T) {
		c, err := d.DialTCP(testCtx(t), tcpEcho(t, "127.0.0.1"))
		if err != nil {
			t.Fatalf("DialTCP: %v", err)
		}
		defer c.Close()
		roundTripTCP(t, c, 100_000)
	})
	t.Run("udp associate", func(t *testing.T) {
		echo := udpEcho(t, "127.0.0.1")
		c, err := d.DialUDP(testCtx(t), echo)
		if err != nil {
			t.Fatalf("DialUDP: %v", err)
		}
		defer c.Close()
		if got := c.RemoteAddr().String(); got != echo.String() {
			t.Errorf("RemoteAddr = %s, want %s", got, echo)
		}
		for i := range 5 {
			roundTripUDP(t, c, []byte(fmt.Sprintf("datagram %d", i)))
		}
		roundTripUDP(t, c, make([]byte, 1400))
	})
}

func TestInteropShadowsocks(t *testing.T) {
	for _, method := range []string{"aes-128-gcm", "aes-256-gcm", "chacha20-ietf-poly1305"} {
		t.Run(method, func(t *testing.T) {
			port := freePort(t, "127.0.0.1")
			const password = "ss-interop-pw"
			startServer(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))),
				"ss-server", "-s", "127.0.0.1", "-p", strconv.Itoa(int(port)), "-k", password, "-m", method, "-u")
			spec := Spec{Name: "ss", Type: TypeShadowsocks, Server: "127.0.0.1", Port: port, Password: password, Cipher: method, UDP: true}
			d, err := New(spec, Options{BypassMark: 0x200000})
			if err != nil {
				t.Fatal(err)
			}

			t.Run("tcp", func(t *testing.T) {
				c, err := d.DialTCP(testCtx(t), tcpEcho(t, "127.0.0.1"))
				if err != nil {
					t.Fatalf("DialTCP: %v", err)
				}
				defer c.Close()
				roundTripTCP(t, c, 300_000) // many full chunks
				roundTripTCP(t, c, 1)
			})
			t.Run("udp", func(t *testing.T) {
				c, err := d.DialUDP(testCtx(t), udpEcho(t, "127.0.0.1"))
				if err != nil {
					t.Fatalf("DialUDP: %v", err)
				}
				defer c.Close()
				for i := range 5 {
					roundTripUDP(t, c, []byte(fmt.Sprintf("ss datagram %d", i)))
				}
				roundTripUDP(t, c, make([]byte, 1400))
			})
			t.Run("wrong password", func(t *testing.T) {
				bad := spec
				bad.Password = "not-the-password"
				// ss-server reads on in silence after a bad key; the
				// first-reply timer turns that into an error.
				wd, err := New(bad, Options{FirstReplyTimeout: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				c, err := wd.DialTCP(testCtx(t), tcpEcho(t, "127.0.0.1"))
				if err != nil {
					t.Fatalf("DialTCP: %v", err) // no reply in Shadowsocks: the read fails
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				if _, err := c.Write([]byte("hello")); err != nil {
					t.Logf("write: %v", err)
				}
				_, err = c.Read(make([]byte, 100))
				if err == nil || isTimeout(err) || !strings.Contains(err.Error(), "wrong password or cipher") {
					t.Fatalf("Read error = %v, want 'wrong password or cipher'", err)
				}
				if strings.Contains(err.Error(), bad.Password) {
					t.Errorf("error %q contains the password", err)
				}
				if time.Since(start) > fastFail {
					t.Errorf("refusal took %v", time.Since(start))
				}
				t.Logf("wrong password: %v", err)
			})
		})
	}
}

func startTinyproxy(t *testing.T, connectPort uint16) Spec {
	t.Helper()
	port := freePort(t, "127.0.0.1")
	dir := t.TempDir()
	conf := filepath.Join(dir, "tinyproxy.conf")
	text := fmt.Sprintf(`User nobody
Group nogroup
Port %d
Listen 127.0.0.1
Timeout 60
LogLevel Info
MaxClients 20
Allow 127.0.0.1
ConnectPort %d
BasicAuth webuser web-pass
`, port, connectPort)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	startServer(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), "tinyproxy", "-d", "-c", conf)
	return Spec{Name: "tiny", Type: TypeHTTP, Server: "127.0.0.1", Port: port, Username: "webuser", Password: "web-pass"}
}

func TestInteropTinyproxy(t *testing.T) {
	echo := tcpEcho(t, "127.0.0.1")
	spec := startTinyproxy(t, echo.Port())

	t.Run("basic auth", func(t *testing.T) {
		d, err := New(spec, Options{BypassMark: 0x200000})
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.DialTCP(testCtx(t), echo)
		if err != nil {
			t.Fatalf("DialTCP: %v", err)
		}
		defer c.Close()
		roundTripTCP(t, c, 200_000)
	})
	for _, pass := range []string{"wrong-pass", ""} {
		t.Run("bad credentials "+pass, func(t *testing.T) {
			bad := spec
			bad.Password = pass
			if pass == "" {
				bad.Username = ""
			}
			d, err := New(bad, Options{})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = d.DialTCP(testCtx(t), echo)
			want := fmt.Sprintf("http %s: authentication failed", spec.Address())
			if !errors.Is(err, ErrAuthFailed) || err.Error() != want {
				t.Fatalf("error = %v, want %q", err, want)
			}
			if time.Since(start) > fastFail {
				t.Errorf("refusal took %v", time.Since(start))
			}
		})
	}
	t.Run("port not allowed", func(t *testing.T) {
		d, err := New(spec, Options{})
		if err != nil {
			t.Fatal(err)
		}
		other := tcpEcho(t, "127.0.0.1")
		_, err = d.DialTCP(testCtx(t), other)
		var re *ReplyError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), "403") {
			t.Fatalf("error = %v, want a 403 reply error", err)
		}
	})
	t.Run("udp unsupported", func(t *testing.T) {
		d, err := New(spec, Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.DialUDP(testCtx(t), udpEcho(t, "127.0.0.1"))
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("DialUDP error = %v, want ErrUnsupported", err)
		}
	})
}
