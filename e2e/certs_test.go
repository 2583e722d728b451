package e2e

// Issue 22 item 2: pinned certificates (pinned_sha256, pcs in links) and ca_file for
// VLESS+TLS and Trojan, against Xray-core and sing-box servers with a self-signed
// certificate.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// certServers is one Xray-core and one sing-box process on the proxy host, each with a
// VLESS+TLS and a Trojan inbound, all with the same self-signed certificate.
type certServers struct {
	certPath string
	certHash string // hex SHA-256 of the certificate (DER): Xray's pcs
	uuid     string
	pass     string
	ports    map[string]uint16 // "xray/vless", "xray/trojan", "sing-box/vless", "sing-box/trojan"
}

func startCertServers(t *testing.T, n *testnet.Net) *certServers {
	t.Helper()
	certPath, keyPath, certPEM, err := n.SelfSignedCert("proxy.test", testnet.ProxyV4.String(), testnet.ProxyV6.String())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	sum := sha256.Sum256(block.Bytes)
	s := &certServers{certPath: certPath, certHash: hex.EncodeToString(sum[:]), uuid: "3c1d6f0e-8a5b-4c2d-9e7f-0a1b2c3d4e5f",
		pass: "cert-test-password", ports: map[string]uint16{}}
	for _, k := range []string{"xray/vless", "xray/trojan", "sing-box/vless", "sing-box/trojan"} {
		if s.ports[k], err = n.FreePort(n.Proxy, testnet.ProxyV4); err != nil {
			t.Fatal(err)
		}
	}

	xtls := map[string]any{"security": "tls", "tlsSettings": map[string]any{
		"certificates": []any{map[string]any{"certificateFile": certPath, "keyFile": keyPath}}}}
	xconf := map[string]any{
		"log": map[string]any{"loglevel": "warning"},
		"inbounds": []any{
			map[string]any{"listen": "0.0.0.0", "port": s.ports["xray/vless"], "protocol": "vless",
				"settings": map[string]any{"clients": []any{map[string]any{"id": s.uuid}}, "decryption": "none"}, "streamSettings": xtls},
			map[string]any{"listen": "0.0.0.0", "port": s.ports["xray/trojan"], "protocol": "trojan",
				"settings": map[string]any{"clients": []any{map[string]any{"password": s.pass}}}, "streamSettings": xtls},
		},
		"outbounds": []any{map[string]any{"protocol": "freedom"}},
	}
	if _, err := n.StartXray(testnet.XrayOptions{Config: xconf, WaitTCP: []netip.AddrPort{
		netip.AddrPortFrom(testnet.ProxyV4, s.ports["xray/vless"]), netip.AddrPortFrom(testnet.ProxyV4, s.ports["xray/trojan"]),
	}}); err != nil {
		t.Fatal(err)
	}

	stls := map[string]any{"enabled": true, "server_name": "proxy.test", "certificate_path": certPath, "key_path": keyPath}
	sconf := map[string]any{
		"log": map[string]any{"level": "warn"},
		"inbounds": []any{
			map[string]any{"type": "vless", "listen": "0.0.0.0", "listen_port": s.ports["sing-box/vless"],
				"users": []any{map[string]any{"uuid": s.uuid}}, "tls": stls},
			map[string]any{"type": "trojan", "listen": "0.0.0.0", "listen_port": s.ports["sing-box/trojan"],
				"users": []any{map[string]any{"name": "u", "password": s.pass}}, "tls": stls},
		},
		"outbounds": []any{map[string]any{"type": "direct"}},
	}
	if _, err := n.StartSingBox(testnet.SingBoxOptions{Config: sconf, WaitTCP: []netip.AddrPort{
		netip.AddrPortFrom(testnet.ProxyV4, s.ports["sing-box/vless"]), netip.AddrPortFrom(testnet.ProxyV4, s.ports["sing-box/trojan"]),
	}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// conf is a proxy section for server ("xray" or "sing-box") and protocol, with extra
// certificate options.
func (s *certServers) conf(name, server, proto string, prio int, extra map[string]string) proxyConf {
	c := proxyConf{name: name, typ: proto, server: testnet.ProxyV4.String(), port: s.ports[server+"/"+proto], udp: true, priority: prio,
		extra: map[string]string{"sni": "proxy.test"}}
	if proto == "vless" {
		c.extra["uuid"] = s.uuid
	} else {
		c.pass = s.pass
	}
	for k, v := range extra {
		c.extra[k] = v
	}
	return c
}

// TestPinnedCertificates: a pinned certificate (pinned_sha256, as pcs gives it in
// OpenSSL's form too) and a CA file make self-signed VLESS+TLS and Trojan servers of
// Xray-core and sing-box usable; a wrong pin is refused before any of the client's data
// leaves the router, with a hint naming the pin; no option at all names the unknown
// authority.
func TestPinnedCertificates(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	s := startCertServers(t, n)
	opensslForm := strings.ToUpper(colonHex(s.certHash))
	wrongPin := strings.Repeat("ab", 32)

	for _, server := range []string{"xray", "sing-box"} {
		t.Run(server+" pinned and ca_file work", func(t *testing.T) {
			// The active proxy carries the client's traffic; the others prove their
			// handshakes through the health probe (a connection to the messenger's echo).
			active := s.conf("pinned", server, "vless", 5, map[string]string{"pinned_sha256": s.certHash})
			if server == "sing-box" {
				active = s.conf("cafile", server, "trojan", 5, map[string]string{"ca_file": s.certPath})
			}
			proxies := []proxyConf{active,
				s.conf("vless_ca", server, "vless", 10, map[string]string{"ca_file": s.certPath}),
				s.conf("trojan_pin", server, "trojan", 10, map[string]string{"pinned_sha256": opensslForm}),
				s.conf("vless_pin", server, "vless", 10, map[string]string{"pinned_sha256": opensslForm}),
			}
			d := startTgtun(t, n, tgtunConf{proxies: proxies})
			t.Cleanup(func() { _ = d.proc.Stop() })
			seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
			e := dialEcho(t, n, testnet.MsgrV4)
			for range 5 {
				if err := e.roundTrip(); err != nil {
					t.Fatal(err)
				}
			}
			udpEchoThrough(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort))
			eventually(t, 20*time.Second, "every proxy probed healthy", func() error {
				for _, p := range d.status().Proxies {
					if !p.Healthy || p.LastCheck.IsZero() || p.LastError != "" {
						return fmt.Errorf("proxy %+v", p)
					}
				}
				return nil
			})
			if p := memberStatus(t, d.status(), active.name); !p.Active || p.Flows < 2 {
				t.Errorf("%s: %+v, want it active and carrying the client's flows", active.name, p)
			}
			d.stop()
		})

		t.Run(server+" wrong pin and no pin", func(t *testing.T) {
			// A target only this subtest's client connects to: it must see no connection.
			target, err := n.Listen(n.Messenger, "tcp", netip.AddrPortFrom(testnet.MsgrV4, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			var accepted, received atomic.Int64
			go func() {
				for {
					c, err := target.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					go func() {
						defer c.Close()
						_ = c.SetDeadline(time.Now().Add(10 * time.Second))
						buf := make([]byte, 4096)
						for {
							k, err := c.Read(buf)
							received.Add(int64(k))
							if err != nil {
								return
							}
						}
					}()
				}
			}()
			t.Cleanup(func() { target.Close() })
			proxies := []proxyConf{
				s.conf("vless_wrong", server, "vless", 5, map[string]string{"pinned_sha256": wrongPin}),
				s.conf("trojan_wrong", server, "trojan", 6, map[string]string{"pinned_sha256": wrongPin}),
				s.conf("unpinned", server, "vless", 7, nil),
			}
			d := startTgtun(t, n, tgtunConf{proxies: proxies})
			t.Cleanup(func() { _ = d.proc.Stop() })
			want := map[string]struct{ err, hint string }{
				"vless_wrong":  {"TLS certificate matches no pinned_sha256: the server's is " + s.certHash, "not the pinned one"},
				"trojan_wrong": {"TLS certificate matches no pinned_sha256: the server's is " + s.certHash, "not the pinned one"},
				"unpinned":     {"TLS certificate is signed by an unknown authority", "not signed by a CA the router trusts"},
			}
			eventually(t, 30*time.Second, "every proxy unhealthy with its cause", func() error {
				for _, p := range d.status().Proxies {
					w := want[p.Name]
					if p.Healthy || !strings.Contains(p.LastError, w.err) || !strings.Contains(p.Hint, w.hint) {
						return fmt.Errorf("proxy %+v, want unhealthy with %q and hint %q", p, w.err, w.hint)
					}
				}
				return nil
			})
			// A client that insists: the pool still tries the best proxy while none is
			// healthy; each try ends in the TLS handshake.
			dst := target.Addr().(*net.TCPAddr).AddrPort()
			for range 3 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				conn, err := n.Dial(ctx, n.Client, "tcp", dst.String())
				cancel()
				if err == nil {
					_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
					_, _ = conn.Write([]byte("secret client data"))
					_, _ = conn.Read(make([]byte, 16))
					conn.Close()
				}
			}
			assertRefusedFast(t, n, dst)
			if a, b := accepted.Load(), received.Load(); a != 0 || b != 0 {
				t.Errorf("the target accepted %d connections and received %d bytes through servers whose certificate was refused", a, b)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out, _ := exec.CommandContext(ctx, tgtunBin, "check", "--socket", d.socket).CombinedOutput()
			cancel()
			if !strings.Contains(string(out), "pinned_sha256") || !strings.Contains(string(out), "unknown authority") {
				t.Errorf("tgtun check does not name the causes:\n%s", out)
			}
			d.stop()
		})
	}
}

func colonHex(h string) string {
	var parts []string
	for i := 0; i+1 < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}
