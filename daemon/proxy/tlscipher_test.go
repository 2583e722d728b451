package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	utls "github.com/metacubex/utls"
)

func TestNoAESOrder(t *testing.T) {
	const grease = 0x0a0a
	chrome := []uint16{grease, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035}
	// BoringSSL without AES hardware: ChaCha20 first in both lists (ssl_write_client_cipher_list,
	// ssl_create_cipher_list); CBC and RSA key exchange keep their places.
	want := []uint16{grease, 0x1303, 0x1301, 0x1302, 0xcca9, 0xcca8, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035}
	if got := noAESOrder(chrome); !slices.Equal(got, want) {
		t.Errorf("chrome:\ngot  %04x\nwant %04x", got, want)
	}
	if got := noAESOrder(want); !slices.Equal(got, want) {
		t.Errorf("already in order: %04x", got)
	}
	// No TLS 1.3 suites (an old hello): only the TLS 1.2 group moves.
	old := []uint16{0xc02b, 0xc02f, 0xcca9, 0xcca8, 0x002f}
	if got := noAESOrder(old); !slices.Equal(got, []uint16{0xcca9, 0xcca8, 0xc02b, 0xc02f, 0x002f}) {
		t.Errorf("TLS 1.2 only: %04x", got)
	}
}

// negotiated makes tgtun's TLS handshake (fingerprint fp, AES instructions or
// not) with a Go TLS 1.3 server and returns the suite it settled.
func negotiated(t *testing.T, addr net.Addr, fp string, aesHW bool) uint16 {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr.String())
	var p uint16
	fmt.Sscan(port, &p)
	tc, err := newTLSClient(Spec{Server: host, Port: p, SNI: "proxy.test", Insecure: true, Fingerprint: fp})
	if err != nil {
		t.Fatal(err)
	}
	tc.aesHW = aesHW
	raw, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := tc.handshake(ctx, raw)
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	defer c.Close()
	return c.(*recordConn).ConnectionState().CipherSuite
}

// TestChaCha20WithoutAES: on a CPU without AES instructions (aesHW false stands in
// for one on this machine) a Go TLS server settles TLS_CHACHA20_POLY1305_SHA256
// with the Chromium-family hellos; with AES instructions it keeps AES-GCM. Firefox
// (NSS) keeps its own order everywhere.
func TestChaCha20WithoutAES(t *testing.T) {
	addr := goTLSServer(t, nil, func(c *tls.Conn) { _, _ = io.Copy(io.Discard, c) })
	for _, fp := range []string{"chrome", "edge", "qq"} {
		if got := negotiated(t, addr, fp, false); got != tls.TLS_CHACHA20_POLY1305_SHA256 {
			t.Errorf("%s without AES: %s, want TLS_CHACHA20_POLY1305_SHA256", fp, tls.CipherSuiteName(got))
		}
	}
	if !aesHardware() {
		t.Log("this CPU has no AES instructions: the Go server prefers ChaCha20 itself; the AES case is not checked")
		return
	}
	for _, fp := range []string{"chrome", "firefox"} {
		if got := negotiated(t, addr, fp, true); got != tls.TLS_AES_128_GCM_SHA256 {
			t.Errorf("%s with AES: %s, want TLS_AES_128_GCM_SHA256", fp, tls.CipherSuiteName(got))
		}
	}
	if got := negotiated(t, addr, "firefox", false); got != tls.TLS_AES_128_GCM_SHA256 {
		t.Errorf("firefox without AES: %s; Firefox's hello lists AES-128-GCM first on every CPU", tls.CipherSuiteName(got))
	}
}

// captureHello accepts one connection and returns its first TLS record, the
// ClientHello, then closes it (the client's handshake fails; its hello is what
// counts).
func captureHello(t *testing.T, dial func(net.Conn)) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	go dial(raw)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return body
}

// clientHello is a parsed ClientHello (RFC 8446 §4.1.2).
type clientHello struct {
	version     uint16
	sessionID   []byte
	suites      []uint16
	compression []byte
	extOrder    []uint16
	ext         map[uint16][]byte
}

func parseClientHello(t *testing.T, b []byte) clientHello {
	t.Helper()
	fail := func() { t.Helper(); t.Fatalf("malformed ClientHello % x", b) }
	if len(b) < 4 || b[0] != 1 {
		fail()
	}
	b = b[4:]
	var h clientHello
	h.version = binary.BigEndian.Uint16(b)
	b = b[2+32:]
	h.sessionID, b = b[1:1+b[0]], b[1+b[0]:]
	n := int(binary.BigEndian.Uint16(b))
	for i := 0; i < n; i += 2 {
		h.suites = append(h.suites, binary.BigEndian.Uint16(b[2+i:]))
	}
	b = b[2+n:]
	h.compression, b = b[1:1+b[0]], b[1+b[0]:]
	b = b[2:]
	h.ext = map[uint16][]byte{}
	for len(b) >= 4 {
		typ, l := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+l {
			fail()
		}
		h.extOrder = append(h.extOrder, typ)
		h.ext[typ] = b[4 : 4+l]
		b = b[4+l:]
	}
	return h
}

// isGREASE: RFC 8701 values, 0x?a?a.
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

func noGREASE(vs []uint16) []uint16 {
	return slices.DeleteFunc(slices.Clone(vs), isGREASE)
}

// u16s reads a list of 16-bit values with a length prefix of lenBytes bytes.
func u16s(b []byte, lenBytes int) []uint16 {
	var out []uint16
	for i := lenBytes; i+1 < len(b); i += 2 {
		out = append(out, binary.BigEndian.Uint16(b[i:]))
	}
	return out
}

// ja4 is the TLS part of FoxIO's JA4 fingerprint: version, SNI, counts and
// ALPN, then hashes of the sorted suites and of the sorted extensions with the
// signature algorithms. It does not depend on the order of either list.
func ja4(h clientHello) string {
	vers := noGREASE(u16s(h.ext[0x002b], 1))
	v := map[uint16]string{0x0304: "13", 0x0303: "12"}[slices.Max(vers)]
	sni := "i"
	if _, ok := h.ext[0x0000]; ok {
		sni = "d"
	}
	alpn := "00"
	if a := h.ext[0x0010]; len(a) > 3 {
		p := a[3 : 3+a[2]]
		alpn = string([]byte{p[0], p[len(p)-1]})
	}
	suites := noGREASE(h.suites)
	exts := noGREASE(h.extOrder)
	hexList := func(vs []uint16) string {
		var s []string
		for _, v := range vs {
			s = append(s, fmt.Sprintf("%04x", v))
		}
		return strings.Join(s, ",")
	}
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:])[:12] }
	sortedSuites := slices.Clone(suites)
	sort.Slice(sortedSuites, func(i, j int) bool { return sortedSuites[i] < sortedSuites[j] })
	var sortedExts []uint16
	for _, e := range exts {
		if e != 0x0000 && e != 0x0010 {
			sortedExts = append(sortedExts, e)
		}
	}
	sort.Slice(sortedExts, func(i, j int) bool { return sortedExts[i] < sortedExts[j] })
	sigs := u16s(h.ext[0x000d], 2)
	return fmt.Sprintf("t%s%s%02d%02d%s_%s_%s", v, sni, len(suites), len(exts), alpn, sum(hexList(sortedSuites)), sum(hexList(sortedExts)+"_"+hexList(sigs)))
}

// TestHelloWithoutAESIsTheBrowsers: the hello tgtun sends on a CPU without AES
// instructions is the fingerprint's own hello, uTLS's for the same browser,
// byte for byte but for the cipher order BoringSSL uses there and the AEAD its
// GREASE ECH extension names (and what is random in every hello: key shares,
// GREASE values, the ECH payload, the extension order Chrome shuffles). Its JA4,
// which sorts both lists, is the browser's.
func TestHelloWithoutAESIsTheBrowsers(t *testing.T) {
	for _, fp := range []string{"chrome", "edge", "qq"} {
		t.Run(fp, func(t *testing.T) {
			id, err := helloID(fp)
			if err != nil {
				t.Fatal(err)
			}
			stock := parseClientHello(t, captureHello(t, func(raw net.Conn) {
				defer raw.Close()
				_ = utls.UClient(raw, &utls.Config{ServerName: "proxy.test", InsecureSkipVerify: true}, id).Handshake()
			}))
			ours := parseClientHello(t, captureHello(t, func(raw net.Conn) {
				defer raw.Close()
				tc, err := newTLSClient(Spec{Server: "127.0.0.1", SNI: "proxy.test", Insecure: true, Fingerprint: fp})
				if err != nil {
					t.Error(err)
					return
				}
				tc.aesHW = false
				_, _ = tc.handshake(context.Background(), raw)
			}))
			if a, b := ja4(ours), ja4(stock); a != b {
				t.Errorf("JA4 %s, the browser's %s", a, b)
			}
			if ours.version != stock.version || !bytes.Equal(ours.compression, stock.compression) || len(ours.sessionID) != len(stock.sessionID) {
				t.Errorf("hello head differs: version %04x/%04x, compression %x/%x, session id %d/%d bytes",
					ours.version, stock.version, ours.compression, stock.compression, len(ours.sessionID), len(stock.sessionID))
			}
			if want := noGREASE(noAESOrder(stock.suites)); !slices.Equal(noGREASE(ours.suites), want) {
				t.Errorf("suites\n%04x, want\n%04x", ours.suites, want)
			}
			if isGREASE(stock.suites[0]) != isGREASE(ours.suites[0]) {
				t.Error("the GREASE suite moved")
			}
			if noGREASE(ours.suites)[0] != tls.TLS_CHACHA20_POLY1305_SHA256 {
				t.Errorf("first suite %04x, want ChaCha20-Poly1305", noGREASE(ours.suites)[0])
			}
			a, b := noGREASE(ours.extOrder), noGREASE(stock.extOrder)
			slices.Sort(a)
			slices.Sort(b)
			if !slices.Equal(a, b) {
				t.Fatalf("extensions %04x, the browser's %04x", a, b)
			}
			for _, typ := range a {
				o, s := ours.ext[typ], stock.ext[typ]
				switch typ {
				case 0x000a, 0x002b: // supported groups, versions: GREASE values vary
					lb := 2
					if typ == 0x002b {
						lb = 1
					}
					if !slices.Equal(noGREASE(u16s(o, lb)), noGREASE(u16s(s, lb))) {
						t.Errorf("extension %04x: %x, the browser's %x", typ, o, s)
					}
				case 0x0033: // key shares: fresh keys, the same groups and sizes
					if !sameShapeKeyShares(o, s) {
						t.Errorf("key shares %x..., the browser's %x...", o[:min(12, len(o))], s[:min(12, len(s))])
					}
				case 0xfe0d: // GREASE ECH: random payload; the AEAD follows the CPU
					if len(o) < 5 || len(s) < 5 || o[0] != s[0] || !bytes.Equal(o[1:3], s[1:3]) {
						t.Errorf("ECH %x..., the browser's %x...", o[:min(5, len(o))], s[:min(5, len(s))])
					}
					if aead := binary.BigEndian.Uint16(o[3:5]); aead != hpkeChaCha20Poly1305 {
						t.Errorf("GREASE ECH AEAD %04x, want ChaCha20-Poly1305 (%04x) as BoringSSL picks without AES", aead, hpkeChaCha20Poly1305)
					}
				default:
					if !bytes.Equal(o, s) {
						t.Errorf("extension %04x: %x, the browser's %x", typ, o, s)
					}
				}
			}
		})
	}
}

// sameShapeKeyShares compares two key_share extensions by their groups (GREASE
// aside) and key sizes.
func sameShapeKeyShares(a, b []byte) bool {
	shape := func(x []byte) []uint32 {
		var out []uint32
		for x = x[2:]; len(x) >= 4; {
			g, l := binary.BigEndian.Uint16(x), binary.BigEndian.Uint16(x[2:])
			if !isGREASE(g) {
				out = append(out, uint32(g)<<16|uint32(l))
			}
			x = x[4+int(l):]
		}
		return out
	}
	return slices.Equal(shape(a), shape(b))
}
