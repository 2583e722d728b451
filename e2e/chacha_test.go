package e2e

// Issue 25 item 2: on a CPU without AES instructions tgtun's hello lists
// ChaCha20-Poly1305 first, and real Xray-core and sing-box servers then settle it.
// GODEBUG=cpu.aes=off stands in for such a CPU: Go's own AES code and tgtun's check
// (golang.org/x/sys/cpu) both read it.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// wiretap relays TCP from its own port to a server in the proxy namespace and
// notes the cipher suite of every ServerHello the server sends back, and the
// length of each connection's first application-data record from the client
// (the second encrypted one: the first carries the client's Finished).
type wiretap struct {
	addr  netip.AddrPort
	mu    sync.Mutex
	seen  []uint16
	first []int
}

func startWiretap(t *testing.T, n *testnet.Net, server netip.AddrPort) *wiretap {
	t.Helper()
	l, err := n.Listen(n.Proxy, "tcp", netip.AddrPortFrom(testnet.ProxyV4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	w := &wiretap{addr: l.Addr().(*net.TCPAddr).AddrPort()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go w.relay(n, c, server)
		}
	}()
	return w
}

func (w *wiretap) relay(n *testnet.Net, c net.Conn, server netip.AddrPort) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, err := n.Dial(ctx, n.Proxy, "tcp", server.String())
	cancel()
	if err != nil {
		return
	}
	defer s.Close()
	go func() {
		w.clientRecords(s, c)
		_ = s.(*net.TCPConn).CloseWrite()
	}()
	r := bufio.NewReader(s)
	// The ServerHello: record header, handshake header, version, random, session
	// id, then the suite.
	if hdr, err := r.Peek(5 + 4 + 2 + 32 + 1); err == nil && hdr[0] == 22 && hdr[5] == 2 {
		sid := int(hdr[5+4+2+32])
		if b, err := r.Peek(5 + 4 + 2 + 32 + 1 + sid + 2); err == nil {
			w.mu.Lock()
			w.seen = append(w.seen, binary.BigEndian.Uint16(b[len(b)-2:]))
			w.mu.Unlock()
		}
	}
	_, _ = io.Copy(c, r)
}

// clientRecords copies the client's side record by record until its first
// application-data record, then the rest as it comes.
func (w *wiretap) clientRecords(dst io.Writer, src net.Conn) {
	r := bufio.NewReader(src)
	for encrypted := 0; encrypted < 2; {
		hdr, err := r.Peek(5)
		if err != nil {
			return
		}
		n := 5 + int(binary.BigEndian.Uint16(hdr[3:]))
		if hdr[0] == 23 {
			if encrypted++; encrypted == 2 {
				w.mu.Lock()
				w.first = append(w.first, n-5)
				w.mu.Unlock()
			}
		}
		if _, err := io.CopyN(dst, r, int64(n)); err != nil {
			return
		}
	}
	_, _ = io.Copy(dst, r)
}

func (w *wiretap) firstRecords() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int(nil), w.first...)
}

func (w *wiretap) suites() []uint16 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]uint16(nil), w.seen...)
}

// TestChaCha20WithoutAES: through real VLESS servers (Xray-core and sing-box, REALITY
// and TLS) tgtun without AES instructions settles TLS_CHACHA20_POLY1305_SHA256 on every
// connection, data and health probes alike; with AES instructions it keeps AES-GCM.
// The VLESS header travels in the record of the client's first bytes (issue 22 item 4).
// A REALITY server answers with what the site it imitates picks: here a Go TLS site
// (the camouflage on DirectV4:443), which follows the client's order as Go servers do.
func TestChaCha20WithoutAES(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	sb := startSingBoxServers(t, n)
	xr := startXrayServers(t, n)
	cases := []struct {
		name   string
		server uint16
		conf   func(port uint16) proxyConf
		aesToo bool // also check that with AES instructions AES-GCM is kept
	}{
		{"xray-reality", xr.realityPort, func(p uint16) proxyConf { return xr.realityConf(p) }, true},
		{"xray-tls", xr.tlsPort, func(p uint16) proxyConf { return tlsConf(xr.uuid, p) }, false},
		{"sing-box-reality", sb.realityPort, func(p uint16) proxyConf { return sb.realityConf("vr", sb.uuid, "", p) }, false},
		{"sing-box-tls", sb.tlsPort, func(p uint16) proxyConf { return tlsConf(sb.uuid, p) }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runs := []struct {
				env  []string
				want uint16
			}{{[]string{"GODEBUG=cpu.aes=off"}, tls.TLS_CHACHA20_POLY1305_SHA256}}
			if c.aesToo {
				runs = append(runs, struct {
					env  []string
					want uint16
				}{nil, tls.TLS_AES_128_GCM_SHA256})
			}
			for _, run := range runs {
				tap := startWiretap(t, n, netip.AddrPortFrom(testnet.ProxyV4, c.server))
				d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{c.conf(tap.addr.Port())}, env: run.env})
				e := dialEcho(t, n, testnet.MsgrV4)
				for range 5 {
					if err := e.roundTrip(); err != nil {
						t.Fatal(err)
					}
				}
				e.Close()
				d.stop()
				// The header (26 bytes to an IPv4 target) and "round 1\n" in one record,
				// with its content type and tag; health probes send the header alone.
				if want := 26 + len("round 1\n") + 1 + 16; !slices.Contains(tap.firstRecords(), want) {
					t.Errorf("%v: first data records %v, none of %d bytes (header and payload in one)", run.env, tap.firstRecords(), want)
				}
				t.Logf("%v: suites %04x, first data records %v", run.env, tap.suites(), tap.firstRecords())
				seen := tap.suites()
				if len(seen) == 0 {
					t.Fatalf("%v: no ServerHello went through the wiretap", run.env)
				}
				for _, s := range seen {
					if s != run.want {
						t.Errorf("%v: the server settled %s (all: %04x), want %s", run.env, tls.CipherSuiteName(s), seen, tls.CipherSuiteName(run.want))
						break
					}
				}
			}
		})
	}
}

func tlsConf(uuid string, port uint16) proxyConf {
	return proxyConf{name: "vt", typ: "vless", server: testnet.ProxyV4.String(), port: port,
		extra: map[string]string{"uuid": uuid, "sni": "proxy.test", "insecure": "1"}}
}

// xrayServers is one Xray-core process with a VLESS+REALITY inbound (imitating the
// same Go TLS site as the sing-box servers) and a VLESS+TLS one.
type xrayServers struct {
	realityPort, tlsPort uint16
	uuid                 string
	publicKey, shortID   string
}

func startXrayServers(t *testing.T, n *testnet.Net) *xrayServers {
	t.Helper()
	x := &xrayServers{uuid: "5b3f8e2a-1c4d-4e6f-8a9b-0c1d2e3f4a5b", shortID: "89abcdef"}
	priv, pub, err := testnet.RealityKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	x.publicKey = pub
	certPath, keyPath, _, err := n.SelfSignedCert("proxy.test", testnet.ProxyV4.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*uint16{&x.realityPort, &x.tlsPort} {
		if *p, err = n.FreePort(n.Proxy, testnet.ProxyV4); err != nil {
			t.Fatal(err)
		}
	}
	vless := func(port uint16, stream map[string]any) map[string]any {
		return map[string]any{
			"listen": testnet.ProxyV4.String(), "port": port, "protocol": "vless",
			"settings":       map[string]any{"clients": []any{map[string]any{"id": x.uuid}}, "decryption": "none"},
			"streamSettings": stream,
		}
	}
	conf := map[string]any{
		"log": map[string]any{"loglevel": "warning"},
		"inbounds": []any{
			vless(x.realityPort, map[string]any{"network": "raw", "security": "reality", "realitySettings": map[string]any{
				"target": fmt.Sprintf("%s:443", testnet.DirectV4), "serverNames": []string{realitySNI},
				"privateKey": priv, "shortIds": []string{x.shortID},
			}}),
			vless(x.tlsPort, map[string]any{"network": "raw", "security": "tls", "tlsSettings": map[string]any{
				"certificates": []any{map[string]any{"certificateFile": certPath, "keyFile": keyPath}},
			}}),
		},
		"outbounds": []any{map[string]any{"protocol": "freedom"}},
	}
	if _, err := n.StartXray(testnet.XrayOptions{Config: conf, WaitTCP: []netip.AddrPort{
		netip.AddrPortFrom(testnet.ProxyV4, x.realityPort), netip.AddrPortFrom(testnet.ProxyV4, x.tlsPort)}}); err != nil {
		t.Fatal(err)
	}
	return x
}

func (x *xrayServers) realityConf(port uint16) proxyConf {
	return proxyConf{name: "xr", typ: "vless", server: testnet.ProxyV4.String(), port: port, extra: map[string]string{
		"uuid": x.uuid, "security": "reality", "sni": realitySNI, "public_key": x.publicKey, "short_id": x.shortID}}
}
