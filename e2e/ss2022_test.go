package e2e

// Issue 13 item 3: Shadowsocks 2022 against a real sing-box server.

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/proxy"
	"github.com/tgtun/tgtun/e2e/testnet"
)

func randomKey(t *testing.T, n int) string {
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// startSS2022 runs sing-box as a Shadowsocks 2022 server (TCP and UDP) on the proxy
// host's both addresses. With userKey set it is a multi-user server: key is the
// server's identity key, userKey the one user's.
func startSS2022(t *testing.T, n *testnet.Net, method, key, userKey string) netip.AddrPort {
	port, err := n.FreePort(n.Proxy, testnet.ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]any{"type": "shadowsocks", "tag": "ss", "listen": "::", "listen_port": port,
		"method": method, "password": key}
	if userKey != "" {
		in["users"] = []any{map[string]any{"name": "u", "password": userKey}}
	}
	conf := map[string]any{
		"log":       map[string]any{"level": "warn"},
		"inbounds":  []any{in},
		"outbounds": []any{map[string]any{"type": "direct", "tag": "direct"}},
	}
	addr := netip.AddrPortFrom(testnet.ProxyV4, port)
	if _, err := n.StartSingBox(testnet.SingBoxOptions{Config: conf,
		WaitTCP: []netip.AddrPort{addr, netip.AddrPortFrom(testnet.ProxyV6, port)}}); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestShadowsocks2022 runs TCP and UDP to IPv4 and IPv6 targets through sing-box with
// each 2022 cipher, and with a multi-user key (identity header).
func TestShadowsocks2022(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	type ssCase struct{ name, method, serverKey, userKey, password string }
	var cases []ssCase
	for _, m := range []string{"2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm", "2022-blake3-chacha20-poly1305"} {
		size := 32
		if strings.Contains(m, "128") {
			size = 16
		}
		k := randomKey(t, size)
		cases = append(cases, ssCase{m, m, k, "", k})
	}
	ik, uk := randomKey(t, 32), randomKey(t, 32)
	cases = append(cases, ssCase{"multi-user", "2022-blake3-aes-256-gcm", ik, uk, ik + ":" + uk})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ss := startSS2022(t, n, c.method, c.serverKey, c.userKey)
			d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{{
				name: "ss", typ: "shadowsocks", server: ss.Addr().String(), port: ss.Port(),
				pass: c.password, cipher: c.method, udp: true,
			}}})
			t.Cleanup(func() { _ = d.proc.Stop() })
			seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
			seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
			for _, dst := range []netip.Addr{testnet.MsgrV4, testnet.MsgrV6} {
				udpEchoThrough(t, n, netip.AddrPortFrom(dst, testnet.EchoPort))
			}
			st := d.status()
			if len(st.Proxies) != 1 || !st.Proxies[0].Healthy || st.Proxies[0].Flows < 2 || st.Flows.TotalUDP < 2 {
				t.Errorf("status proxies = %+v, flows = %+v; want one healthy proxy that carried both requests and 2 UDP flows", st.Proxies, st.Flows)
			}
			d.stop()
		})
	}

	t.Run("wrong key", func(t *testing.T) {
		ss := startSS2022(t, n, "2022-blake3-aes-256-gcm", randomKey(t, 32), "")
		wrong := randomKey(t, 32)
		d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{{
			name: "ss", typ: "shadowsocks", server: ss.Addr().String(), port: ss.Port(),
			pass: wrong, cipher: "2022-blake3-aes-256-gcm", udp: true,
		}}})
		t.Cleanup(func() { _ = d.proc.Stop() })
		// The server cannot read our header: it closes or stays silent; either way a
		// client request fails (within the first-reply timeout at most) and never hangs.
		assertFailsWithin(t, n, netip.AddrPortFrom(testnet.MsgrV4, testnet.HTTPPort), proxy.DefaultFirstReplyTimeout+15*time.Second)
		eventually(t, 30*time.Second, "Shadowsocks 2022 proxy with a wrong key reported unhealthy", func() error {
			if p := memberStatus(t, d.status(), "ss"); p.Healthy || p.LastError == "" {
				return fmt.Errorf("proxy status %+v, want unhealthy with a last_error", p)
			}
			return nil
		})
		if p := memberStatus(t, d.status(), "ss"); strings.Contains(p.LastError, wrong) {
			t.Errorf("last_error shows the key: %q", p.LastError)
		}
		if err := udpExchange(n, netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort), 2*time.Second); err == nil {
			t.Error("UDP through a server that does not know our key was answered")
		}
		d.stop()
	})
}
