package proxy

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSpecNeverShowsPassword(t *testing.T) {
	spec := Spec{Name: "main", Type: TypeSOCKS5, Server: "2001:db8:2::6", Port: 1080, Username: "u", Password: "hunter2-secret"}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "proxy", spec)
	for _, s := range []string{
		fmt.Sprintf("%v", spec), fmt.Sprintf("%+v", spec), fmt.Sprintf("%#v", spec),
		spec.String(), fmt.Sprint(&spec), logged.String(),
	} {
		if strings.Contains(s, spec.Password) {
			t.Errorf("password shown in %q", s)
		}
	}
	if got := spec.Address(); got != "[2001:db8:2::6]:1080" {
		t.Errorf("Address = %q", got)
	}
}

func TestNewErrors(t *testing.T) {
	long := strings.Repeat("x", 256)
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{Name: "p", Type: "vmess", Server: "198.51.100.6", Port: 1}, `proxy "p": unknown type "vmess"`},
		{Spec{Name: "p", Type: TypeSOCKS5, Port: 1}, `proxy "p": server and port are required`},
		{Spec{Name: "p", Type: TypeHTTP, Server: "198.51.100.6"}, `proxy "p": server and port are required`},
		{Spec{Name: "p", Type: TypeSOCKS5, Server: "198.51.100.6", Port: 1080, Username: long}, "socks5 198.51.100.6:1080: username and password must be at most 255 bytes each"},
		{Spec{Name: "p", Type: TypeShadowsocks, Server: "198.51.100.6", Port: 8388, Password: "pw", Cipher: "rc4-md5"}, `shadowsocks 198.51.100.6:8388: unknown cipher "rc4-md5"`},
	}
	for _, tt := range tests {
		_, err := New(tt.spec, Options{})
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("New(%v) = %v, want %q", tt.spec, err, tt.want)
		}
	}
	for _, typ := range []string{TypeSOCKS5, TypeHTTP, TypeShadowsocks, TypeDirect} {
		if _, err := New(Spec{Type: typ, Server: "198.51.100.6", Port: 1, Password: "pw", Cipher: "aes-128-gcm"}, Options{}); err != nil {
			t.Errorf("New(%s): %v", typ, err)
		}
	}
}

func socketMark(t *testing.T, c any) int {
	t.Helper()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T is not a syscall.Conn", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	if err := raw.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt SO_MARK: %v", gerr)
	}
	return mark
}

// Every socket towards a proxy server carries the bypass mark.
func TestBypassMark(t *testing.T) {
	const mark = 0x200000
	echo := tcpEcho(t, "127.0.0.1")
	uecho := udpEcho(t, "127.0.0.1")

	direct := NewDirect(Options{BypassMark: mark})
	tc, err := direct.DialTCP(testCtx(t), echo)
	if err != nil {
		t.Fatalf("direct DialTCP (needs CAP_NET_ADMIN for SO_MARK): %v", err)
	}
	defer tc.Close()
	uc, err := direct.DialUDP(testCtx(t), uecho)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	roundTripUDP(t, uc, []byte("direct udp"))

	ssSpec := Spec{Type: TypeShadowsocks, Server: "127.0.0.1", Port: uecho.Port(), Password: "pw", Cipher: "aes-128-gcm", UDP: true}
	ss, err := New(ssSpec, Options{BypassMark: mark})
	if err != nil {
		t.Fatal(err)
	}
	ssUDP, err := ss.DialUDP(testCtx(t), uecho)
	if err != nil {
		t.Fatal(err)
	}
	defer ssUDP.Close()

	unmarked, err := NewDirect(Options{}).DialTCP(testCtx(t), echo)
	if err != nil {
		t.Fatal(err)
	}
	defer unmarked.Close()

	for name, tt := range map[string]struct {
		conn any
		want int
	}{
		"direct tcp":      {tc, mark},
		"direct udp":      {uc, mark},
		"shadowsocks udp": {ssUDP.(*ssUDPConn).Conn, mark},
		"mark 0":          {unmarked, 0},
	} {
		if got := socketMark(t, tt.conn); got != tt.want {
			t.Errorf("%s: SO_MARK = %#x, want %#x", name, got, tt.want)
		}
	}
}

// The SOCKS5 control connection and its UDP relay socket are both marked.
func TestBypassMarkSOCKS5UDP(t *testing.T) {
	const mark = 0x1234
	relay, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	port := relay.LocalAddr().(*net.UDPAddr).Port
	spec := fakeServer(t, func(c net.Conn) {
		readGreeting(c)
		_, _ = c.Write([]byte{5, 0})
		readRequest(c)
		_, _ = c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, byte(port >> 8), byte(port)})
		_, _ = c.Read(make([]byte, 1))
	})
	spec.Type, spec.UDP = TypeSOCKS5, true
	d, err := New(spec, Options{BypassMark: mark})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.DialUDP(testCtx(t), testDst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc := c.(*socksUDPConn)
	if got := socketMark(t, uc.Conn); got != mark {
		t.Errorf("relay socket SO_MARK = %#x", got)
	}
	if got := socketMark(t, uc.ctrl); got != mark {
		t.Errorf("control socket SO_MARK = %#x", got)
	}
}

func TestSanitize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		max  int
		want string
	}{
		{"ok text", 10, "ok text"},
		{"a\x00b\nc\xff", 10, "a?b?c?"},
		{"abcdef", 3, "abc..."},
	} {
		if got := sanitize(tt.in, tt.max); got != tt.want {
			t.Errorf("sanitize(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}
