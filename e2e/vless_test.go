package e2e

// Issue 13: VLESS (TLS, REALITY, Vision) and Trojan against real sing-box servers.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// realitySNI is the site the REALITY server imitates; the "real" site is a TLS 1.3
// server started by the test on the ordinary internet host (DirectV4:443).
const realitySNI = "www.example.com"

// textUUID is a VLESS user id given as text rather than a UUID.
const textUUID = "tgtun-text-user"

// singBoxServers is one sing-box process with every inbound the tests use.
type singBoxServers struct {
	realityPort, visionPort, tlsPort, trojanPort uint16
	uuid, visionUUID, trojanPass                 string
	publicKey, shortID                           string
	// camouflage counts what the imitated site received: TLS handshakes and the
	// application bytes after them.
	camouflage *testnet.TLSSite
}

func startSingBoxServers(t *testing.T, n *testnet.Net) *singBoxServers {
	t.Helper()
	s := &singBoxServers{
		uuid:       "b831381d-6324-4d53-ad4f-8cda48b30811",
		visionUUID: "6f2a1c1e-8f0b-4d54-9a43-0c5d2e7b9f10",
		trojanPass: "trojan-secret",
		shortID:    "0123abcd",
	}
	var err error
	if s.camouflage, err = n.StartTLSSite(n.Inet, netip.AddrPortFrom(testnet.DirectV4, 443), realitySNI); err != nil {
		t.Fatal(err)
	}
	priv, pub, err := testnet.RealityKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	s.publicKey = pub
	certPath, keyPath, _, err := n.SelfSignedCert("proxy.test", testnet.ProxyV4.String(), testnet.ProxyV6.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*uint16{&s.realityPort, &s.visionPort, &s.tlsPort, &s.trojanPort} {
		if *p, err = n.FreePort(n.Proxy, testnet.ProxyV4); err != nil {
			t.Fatal(err)
		}
	}
	reality := func() map[string]any {
		return map[string]any{
			"enabled": true, "server_name": realitySNI,
			"reality": map[string]any{
				"enabled":     true,
				"handshake":   map[string]any{"server": testnet.DirectV4.String(), "server_port": 443},
				"private_key": priv,
				"short_id":    []string{s.shortID},
			},
		}
	}
	certTLS := map[string]any{"enabled": true, "server_name": "proxy.test", "certificate_path": certPath, "key_path": keyPath}
	conf := map[string]any{
		"log": map[string]any{"level": "info"},
		"inbounds": []any{
			map[string]any{"type": "vless", "tag": "reality", "listen": "::", "listen_port": s.realityPort,
				"users": []any{map[string]any{"uuid": s.uuid}}, "tls": reality()},
			map[string]any{"type": "vless", "tag": "vision", "listen": "::", "listen_port": s.visionPort,
				"users": []any{map[string]any{"uuid": s.visionUUID, "flow": "xtls-rprx-vision"}}, "tls": reality()},
			// The second user's id is a text (servers map it to a name-based UUID).
			map[string]any{"type": "vless", "tag": "tls", "listen": "::", "listen_port": s.tlsPort,
				"users": []any{map[string]any{"uuid": s.uuid}, map[string]any{"uuid": textUUID},
					map[string]any{"uuid": s.visionUUID, "flow": "xtls-rprx-vision"}}, "tls": certTLS},
			map[string]any{"type": "trojan", "tag": "trojan", "listen": "::", "listen_port": s.trojanPort,
				"users": []any{map[string]any{"name": "u", "password": s.trojanPass}}, "tls": certTLS},
		},
		"outbounds": []any{map[string]any{"type": "direct", "tag": "direct"}},
	}
	var wait []netip.AddrPort
	for _, p := range []uint16{s.realityPort, s.visionPort, s.tlsPort, s.trojanPort} {
		wait = append(wait, netip.AddrPortFrom(testnet.ProxyV4, p), netip.AddrPortFrom(testnet.ProxyV6, p))
	}
	if _, err := n.StartSingBox(testnet.SingBoxOptions{Config: conf, WaitTCP: wait}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *singBoxServers) realityConf(name, uuid, flow string, port uint16) proxyConf {
	extra := map[string]string{"uuid": uuid, "security": "reality", "sni": realitySNI,
		"public_key": s.publicKey, "short_id": s.shortID}
	if flow != "" {
		extra["flow"] = flow
	}
	return proxyConf{name: name, typ: "vless", server: testnet.ProxyV4.String(), port: port, udp: true, extra: extra}
}

// TestVLESSTrojan runs TCP (IPv4 and IPv6 targets) and UDP through every VLESS and
// Trojan variant, with the server reached over IPv4 and IPv6.
func TestVLESSTrojan(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	s := startSingBoxServers(t, n)
	tlsEcho := startTLSEcho(t, n)
	cases := []struct {
		name string
		conf proxyConf
	}{
		{"vless-reality", s.realityConf("vr", s.uuid, "", s.realityPort)},
		{"vless-reality-vision", s.realityConf("vv", s.visionUUID, "xtls-rprx-vision", s.visionPort)},
		{"vless-tls", proxyConf{name: "vt", typ: "vless", server: testnet.ProxyV4.String(), port: s.tlsPort, udp: true,
			extra: map[string]string{"uuid": s.uuid, "sni": "proxy.test", "insecure": "1", "fingerprint": "firefox"}}},
		{"vless-tls-vision", proxyConf{name: "vtv", typ: "vless", server: testnet.ProxyV4.String(), port: s.tlsPort, udp: true,
			extra: map[string]string{"uuid": s.visionUUID, "flow": "xtls-rprx-vision", "sni": "proxy.test", "insecure": "1"}}},
		{"vless-tls-server-v6", proxyConf{name: "vt6", typ: "vless", server: testnet.ProxyV6.String(), port: s.tlsPort, udp: true,
			extra: map[string]string{"uuid": textUUID, "insecure": "1"}}},
		{"trojan", proxyConf{name: "tr", typ: "trojan", server: testnet.ProxyV4.String(), port: s.trojanPort, udp: true,
			pass: s.trojanPass, extra: map[string]string{"sni": "proxy.test", "insecure": "1"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{c.conf}})
			t.Cleanup(func() { _ = d.proc.Stop() })
			seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
			seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
			// A stream that carries more than one TLS record each way.
			e := dialEcho(t, n, testnet.MsgrV4)
			for range 20 {
				if err := e.roundTrip(); err != nil {
					t.Fatal(err)
				}
			}
			// An inner TLS 1.3 stream (what Vision moves to the raw connection), 1 MiB each
			// way, both address families.
			for _, dst := range tlsEcho {
				if err := tlsEchoRoundTrip(n, dst, 1<<20); err != nil {
					t.Errorf("TLS echo %s: %v", dst, err)
				}
			}
			for _, dst := range []netip.Addr{testnet.MsgrV4, testnet.MsgrV6} {
				udpEchoThrough(t, n, netip.AddrPortFrom(dst, testnet.EchoPort))
			}
			st := d.status()
			if len(st.Proxies) != 1 || !st.Proxies[0].Healthy || st.Proxies[0].Type != c.conf.typ || st.Proxies[0].Flows < 2 {
				t.Errorf("status proxies = %+v, want one healthy %s proxy that carried the requests", st.Proxies, c.conf.typ)
			}
			if st.Flows.TotalUDP < 2 {
				t.Errorf("status flows = %+v, want the 2 UDP flows counted", st.Flows)
			}
			d.stop()
		})
	}
}

// TestVLESSTrojanWrongSecrets: a wrong uuid, password or REALITY key makes the proxy
// unhealthy with a hint, and clients fail at once. A REALITY server that does not prove
// the key never receives anything of the client's data, nor does the target.
func TestVLESSTrojanWrongSecrets(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	s := startSingBoxServers(t, n)
	_, otherPub, err := testnet.RealityKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := s.realityConf("vr", s.uuid, "", s.realityPort)
	wrongKey.extra["public_key"] = otherPub
	wrongSID := s.realityConf("vr", s.uuid, "", s.realityPort)
	wrongSID.extra["short_id"] = "ffff"
	cases := []struct {
		name    string
		conf    proxyConf
		wantErr string // in the member's last_error
		reality bool
	}{
		{"vless wrong uuid", s.realityConf("vr", "00000000-0000-4000-8000-000000000000", "", s.realityPort), "closed", false},
		{"vless-tls wrong uuid", proxyConf{name: "vt", typ: "vless", server: testnet.ProxyV4.String(), port: s.tlsPort,
			extra: map[string]string{"uuid": "someone-else", "insecure": "1"}}, "closed", false},
		{"vless-tls unverified certificate", proxyConf{name: "vt", typ: "vless", server: testnet.ProxyV4.String(), port: s.tlsPort,
			extra: map[string]string{"uuid": s.uuid, "sni": "proxy.test"}}, "certificate", false},
		{"trojan wrong password", proxyConf{name: "tr", typ: "trojan", server: testnet.ProxyV4.String(), port: s.trojanPort,
			pass: "not-the-password", extra: map[string]string{"insecure": "1"}}, "closed", false},
		{"reality wrong public_key", wrongKey, "REALITY handshake failed: server did not prove the key", true},
		{"reality wrong short_id", wrongSID, "REALITY handshake failed: server did not prove the key", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A target only this subtest's client connects to: it must see no connection.
			target, err := n.Listen(n.Messenger, "tcp", netip.AddrPortFrom(testnet.MsgrV4, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			var accepted atomic.Int64
			go func() {
				for {
					c, err := target.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					c.Close()
				}
			}()
			siteBytes := s.camouflage.AppBytes.Load()

			d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{c.conf}})
			t.Cleanup(func() { _ = d.proc.Stop() })
			eventually(t, 20*time.Second, "proxy reported unhealthy", func() error {
				p := memberStatus(t, d.status(), c.conf.name)
				if p.Healthy || !strings.Contains(p.LastError, c.wantErr) {
					return fmt.Errorf("proxy status %+v, want unhealthy with last_error containing %q", p, c.wantErr)
				}
				return nil
			})
			p := memberStatus(t, d.status(), c.conf.name)
			for _, secret := range []string{s.uuid, "someone-else", "not-the-password"} {
				if strings.Contains(p.LastError, secret) {
					t.Errorf("last_error shows a secret: %q", p.LastError)
				}
			}
			assertRefusedFast(t, n, target.Addr().(*net.TCPAddr).AddrPort())
			if c.reality {
				// A client that insists (the pool also dials while it is unhealthy).
				for range 3 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					conn, err := n.Dial(ctx, n.Client, "tcp", target.Addr().String())
					cancel()
					if err == nil {
						_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
						_, _ = conn.Write([]byte("secret client data"))
						_, _ = conn.Read(make([]byte, 16))
						conn.Close()
					}
				}
				if !strings.Contains(p.Hint, "public_key (pbk)") {
					t.Errorf("status hint %q does not point at public_key", p.Hint)
				}
				if got := accepted.Load(); got != 0 {
					t.Errorf("the target accepted %d connections through a REALITY server that did not prove the key", got)
				}
				if got := s.camouflage.AppBytes.Load() - siteBytes; got != 0 {
					t.Errorf("the imitated site received %d bytes of application data from the client", got)
				}
				if s.camouflage.Handshakes.Load() != 0 {
					t.Errorf("a TLS handshake through the REALITY server to the imitated site completed: the client accepted a certificate it should not have")
				}
				// The check command shows the hint.
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				out, _ := exec.CommandContext(ctx, tgtunBin, "check", "--socket", d.socket).CombinedOutput()
				cancel()
				if !strings.Contains(string(out), "public_key") {
					t.Errorf("tgtun check output has no hint about the public_key:\n%s", out)
				}
			}
			d.stop()
		})
	}
}

// startTLSEcho runs a TLS 1.3 echo server on the messenger host (IPv4 and IPv6).
func startTLSEcho(t *testing.T, n *testnet.Net) []netip.AddrPort {
	t.Helper()
	certPath, keyPath, _, err := n.SelfSignedCert("messenger.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []netip.AddrPort
	for _, a := range []netip.Addr{testnet.MsgrV4, testnet.MsgrV6} {
		l, err := n.Listen(n.Messenger, "tcp", netip.AddrPortFrom(a, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().(*net.TCPAddr).AddrPort())
		tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
		go func() {
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_, _ = io.Copy(c, c)
				}()
			}
		}()
	}
	return addrs
}

// tlsEchoRoundTrip sends size random bytes over TLS from the client to dst and checks
// that the same bytes come back.
func tlsEchoRoundTrip(n *testnet.Net, dst netip.AddrPort, size int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := n.Dial(ctx, n.Client, "tcp", dst.String())
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	data := make([]byte, size)
	_, _ = rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("the echo differs from what was sent")
	}
	return nil
}
