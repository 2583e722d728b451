package testnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

func hostLinks(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("list host links: %v", err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// curl fetches url from namespace ns and returns the address the server saw.
func curl(ctx context.Context, n *Net, ns, url string, extra ...string) (netip.Addr, error) {
	args := []string{"curl", "-sS", "--max-time", "10"}
	if len(extra) == 0 {
		args = append(args, "--noproxy", "*") // no proxy from the environment
	}
	args = append(args, extra...)
	out, err := n.Exec(ctx, ns, append(args, url)...)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %s", err, out)
	}
	return ParseYouAre(out)
}

func TestTopology(t *testing.T) {
	before := hostLinks(t)
	n := New(t)
	if after := hostLinks(t); after != before {
		t.Errorf("host links changed:\nbefore %s\nafter  %s", before, after)
	}
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartDirectServer(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	reach := []struct {
		name, ns, url string
		want          netip.Addr
	}{
		{"client to direct v4 is masqueraded", n.Client, "http://198.51.100.80/", WANV4},
		{"client to direct v6 is routed", n.Client, "http://[2001:db8:2::80]/", ClientV6},
		{"router to direct v4", n.Router, "http://198.51.100.80/", WANV4},
		{"proxy to messenger v4", n.Proxy, "http://203.0.113.10/", ProxyV4},
		{"proxy to messenger v6", n.Proxy, "http://[2001:db8:3::10]/", ProxyV6},
		{"proxy to direct v4", n.Proxy, "http://198.51.100.80/", ProxyV4},
		{"proxy to direct v6", n.Proxy, "http://[2001:db8:2::80]/", ProxyV6},
	}
	for _, tc := range reach {
		got, err := curl(ctx, n, tc.ns, tc.url)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}

	censored := []struct{ ns, url string }{
		{n.Client, "http://203.0.113.10/"},
		{n.Client, "http://[2001:db8:3::10]/"},
		{n.Router, "http://203.0.113.10/"},
		{n.Router, "http://[2001:db8:3::10]/"},
		{n.Inet, "http://203.0.113.10/"}, // the proxy host does not forward
	}
	for _, tc := range censored {
		if got, err := curl(ctx, n, tc.ns, tc.url); err == nil {
			t.Errorf("%s reached censored %s (seen as %v)", tc.ns, tc.url, got)
		}
	}
	// The censor resets TCP, so a blocked client fails at once rather than timing out.
	start := time.Now()
	if _, err := n.Exec(ctx, n.Client, "curl", "-sS", "--max-time", "20", "http://203.0.113.10/"); err == nil ||
		time.Since(start) > 15*time.Second {
		t.Errorf("censored connect: err %v after %s, want a quick reset", err, time.Since(start))
	}

	for _, dst := range []netip.Addr{MsgrV4, MsgrV6} {
		if err := udpEcho(ctx, n, n.Client, netip.AddrPortFrom(dst, EchoPort)); err == nil {
			t.Errorf("client got a UDP echo from censored %s", dst)
		}
		if err := udpEcho(ctx, n, n.Proxy, netip.AddrPortFrom(dst, EchoPort)); err != nil {
			t.Errorf("proxy host UDP echo from %s: %v", dst, err)
		}
	}
	if err := udpEcho(ctx, n, n.Client, netip.AddrPortFrom(DirectV6, EchoPort)); err != nil {
		t.Errorf("client UDP echo from direct: %v", err)
	}
	if err := tcpEcho(ctx, n, n.Proxy, netip.AddrPortFrom(MsgrV4, EchoPort)); err != nil {
		t.Errorf("proxy host TCP echo: %v", err)
	}

	// The edge of the test network has nowhere to send anything else.
	for _, fam := range []string{"-4", "-6"} {
		out, err := n.Exec(ctx, n.Inet, "ip", fam, "route", "show", "default")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("inet has a default route (%s): %q %v", fam, out, err)
		}
	}
}

func udpEcho(ctx context.Context, n *Net, ns string, dst netip.AddrPort) error {
	c, err := n.Dial(ctx, ns, "udp", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	msg := []byte("ping " + dst.String())
	buf := make([]byte, 1500)
	for range 3 {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:k], msg) {
			return nil
		}
	}
	return fmt.Errorf("no UDP echo from %s", dst)
}

func tcpEcho(ctx context.Context, n *Net, ns string, dst netip.AddrPort) error {
	c, err := n.Dial(ctx, ns, "tcp", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("hello echo")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, msg) {
		return fmt.Errorf("tcp echo: %q %v", buf, err)
	}
	return nil
}

// TestProxies checks that each proxy server works from the router (where tgtun
// dials from) and relays to the censored messenger, with and without auth.
func TestProxies(t *testing.T) {
	n := New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dante, err := n.StartDante(DanteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	danteAuth, err := n.StartDante(DanteOptions{Auth: true, User: "alice", Pass: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	micro, err := n.StartMicrosocks("", "")
	if err != nil {
		t.Fatal(err)
	}
	microAuth, err := n.StartMicrosocks("bob", "pw-1")
	if err != nil {
		t.Fatal(err)
	}
	tiny, err := n.StartTinyproxy("", "")
	if err != nil {
		t.Fatal(err)
	}
	tinyAuth, err := n.StartTinyproxy("carol", "pw.2")
	if err != nil {
		t.Fatal(err)
	}
	ss, err := n.StartSSServer("chacha20-ietf-poly1305", "sspass")
	if err != nil {
		t.Fatal(err)
	}
	// ss-local in the router turns the Shadowsocks server into a local SOCKS5 port.
	ssLocalPort, err := n.FreePort(n.Router, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	ssLocalProc, err := n.Start(n.Router, "ss-local", "-s", ss.Addr().String(), "-p", fmt.Sprint(ss.Port()),
		"-l", fmt.Sprint(ssLocalPort), "-b", "127.0.0.1", "-k", "sspass", "-m", "chacha20-ietf-poly1305", "-u")
	if err != nil {
		t.Fatal(err)
	}
	ssLocal := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ssLocalPort)
	if err := n.waitListening(n.Router, ssLocal, ssLocalProc, listenTimeout); err != nil {
		t.Fatal(err)
	}

	v6 := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ProxyV6, a.Port()) }
	cases := []struct {
		name  string
		proxy string // curl -x
		want  netip.Addr
	}{
		{"dante v4", "socks5://" + dante.String(), ProxyV4},
		{"dante over v6", "socks5://" + v6(dante).String(), ProxyV4},
		{"dante auth", "socks5://alice:s3cret@" + danteAuth.String(), ProxyV4},
		{"microsocks", "socks5://" + micro.String(), ProxyV4},
		{"microsocks over v6", "socks5://" + v6(micro).String(), ProxyV4},
		{"microsocks auth", "socks5://bob:pw-1@" + microAuth.String(), ProxyV4},
		{"tinyproxy", "http://" + tiny.String(), ProxyV4},
		{"tinyproxy auth", "http://carol:pw.2@" + tinyAuth.String(), ProxyV4},
		{"shadowsocks", "socks5://" + ssLocal.String(), ProxyV4},
	}
	for _, tc := range cases {
		for _, target := range []string{"http://203.0.113.10/", "http://[2001:db8:3::10]/"} {
			want := tc.want
			if strings.Contains(target, "[") {
				want = ProxyV6
			}
			// -p: tunnel through CONNECT for HTTP proxies, which is what tgtun uses.
			got, err := curl(ctx, n, n.Router, target, "-p", "-x", tc.proxy)
			if err != nil || got != want {
				t.Errorf("%s → %s: got %v, %v; want %v", tc.name, target, got, err, want)
			}
		}
	}
	wrong := []struct{ name, proxy string }{
		{"dante wrong password", "socks5://alice:nope@" + danteAuth.String()},
		{"dante no credentials", "socks5://" + danteAuth.String()},
		{"microsocks wrong password", "socks5://bob:nope@" + microAuth.String()},
		{"tinyproxy wrong password", "http://carol:nope@" + tinyAuth.String()},
	}
	for _, tc := range wrong {
		if got, err := curl(ctx, n, n.Router, "http://203.0.113.10/", "-p", "-x", tc.proxy); err == nil {
			t.Errorf("%s: request passed (seen as %v)", tc.name, got)
		}
	}

	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(MsgrV4, EchoPort), netip.AddrPortFrom(MsgrV6, EchoPort),
	} {
		if err := socks5UDPEcho(ctx, n, n.Router, dante, dst); err != nil {
			t.Errorf("dante UDP ASSOCIATE to %s: %v", dst, err)
		}
		if err := socks5UDPEcho(ctx, n, n.Router, ssLocal, dst); err != nil {
			t.Errorf("shadowsocks UDP (via ss-local) to %s: %v", dst, err)
		}
	}
}

// socks5UDPEcho does a UDP round trip through a SOCKS5 server (RFC 1928 UDP
// ASSOCIATE, no auth) from namespace ns.
func socks5UDPEcho(ctx context.Context, n *Net, ns string, server, dst netip.AddrPort) error {
	ctrl, err := n.Dial(ctx, ns, "tcp", server.String())
	if err != nil {
		return err
	}
	defer ctrl.Close()
	_ = ctrl.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ctrl.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	var hello [2]byte
	if _, err := io.ReadFull(ctrl, hello[:]); err != nil || hello != [2]byte{5, 0} {
		return fmt.Errorf("greeting: %v %v", hello, err)
	}
	if _, err := ctrl.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		return err
	}
	relay, err := readSocksReply(ctrl)
	if err != nil {
		return fmt.Errorf("udp associate: %w", err)
	}
	if relay.Addr().IsUnspecified() {
		relay = netip.AddrPortFrom(server.Addr(), relay.Port())
	}
	uc, err := n.Dial(ctx, ns, "udp", relay.String())
	if err != nil {
		return err
	}
	defer uc.Close()
	payload := []byte("udp via socks " + dst.String())
	pkt := append([]byte{0, 0, 0}, socksAddr(dst)...)
	pkt = append(pkt, payload...)
	buf := make([]byte, 2048)
	for range 3 {
		if _, err := uc.Write(pkt); err != nil {
			return err
		}
		_ = uc.SetReadDeadline(time.Now().Add(3 * time.Second))
		k, err := uc.Read(buf)
		if err != nil {
			continue
		}
		if k > 3 && bytes.HasSuffix(buf[:k], payload) {
			return nil
		}
	}
	return fmt.Errorf("no echo through relay %s", relay)
}

func socksAddr(a netip.AddrPort) []byte {
	var b []byte
	if a.Addr().Is4() {
		ip := a.Addr().As4()
		b = append([]byte{1}, ip[:]...)
	} else {
		ip := a.Addr().As16()
		b = append([]byte{4}, ip[:]...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port())
}

func readSocksReply(r io.Reader) (netip.AddrPort, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return netip.AddrPort{}, err
	}
	if head[1] != 0 {
		return netip.AddrPort{}, fmt.Errorf("reply code %d", head[1])
	}
	var ip []byte
	switch head[3] {
	case 1:
		ip = make([]byte, 4)
	case 4:
		ip = make([]byte, 16)
	default:
		return netip.AddrPort{}, fmt.Errorf("address type %d", head[3])
	}
	if _, err := io.ReadFull(r, ip); err != nil {
		return netip.AddrPort{}, err
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return netip.AddrPort{}, err
	}
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(port[:])), nil
}

// TestCleanup checks that cleanup removes the namespaces and stops processes.
func TestCleanup(t *testing.T) {
	n, cleanup, err := NewCtx(context.Background(), t.Logf)
	if cleanup != nil {
		defer cleanup()
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := n.Start(n.Router, "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	if err := cleanup(); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	if exited, _ := p.Exited(); !exited {
		t.Error("process still running after cleanup")
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range n.namespaces() {
		if strings.Contains(string(out), ns) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	if _, err := n.Start(n.Router, "true"); err == nil {
		t.Error("Start after cleanup succeeded")
	}
}

func TestParseYouAre(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"you are 198.51.100.6\n", "198.51.100.6", false},
		{"you are 2001:db8:2::6\nzzzz", "2001:db8:2::6", false},
		{"you are ::ffff:1.2.3.4", "::ffff:1.2.3.4", false},
		{"you are \n", "", true},
		{"hello", "", true},
		{"", "", true},
		{"you are 300.1.1.1", "", true},
	}
	for _, tc := range tests {
		got, err := ParseYouAre(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got.String() != tc.want) {
			t.Errorf("ParseYouAre(%q) = %v, %v; want %s, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzParseYouAre(f *testing.F) {
	for _, s := range []string{"you are 198.51.100.6\n", "you are 2001:db8::1", "x", "you are fe80::1%eth0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseYouAre(s)
		if err == nil && !a.IsValid() {
			t.Fatalf("no error but invalid address for %q", s)
		}
	})
}
