package control

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/proxy"
)

func TestProxyHintNewTypes(t *testing.T) {
	tests := []struct{ err, want string }{
		{"probe 149.154.167.51:443: the answer did not come from the health target: answer starts \"HTTP\", not an MTProto packet", "fallback web site"},
		{"probe 149.154.167.51:443: read answer: the connection was closed without an answer: EOF", "closed the connection at once"},
		{"vless+reality 198.51.100.6:443: REALITY handshake failed: server did not prove the key — wrong public_key or short_id?", "public_key (pbk) and short_id (sid)"},
		{"vless+reality 198.51.100.6:443: REALITY handshake: remote error: tls: handshake failure", "check sni"},
		{"vless 198.51.100.6:443: TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority", "pinned_sha256"},
		{"vless 198.51.100.6:443: TLS handshake: TLS certificate is signed by an unknown authority (issuer \"CN=x\", SHA-256 ab): self-signed? pin it (pinned_sha256) or trust its CA (ca_file)", "not signed by a CA the router trusts"},
		{"trojan 198.51.100.6:443: TLS handshake: TLS certificate matches no pinned_sha256: the server's is ab (a new certificate, or someone in between)", "not the pinned one"},
		{"trojan 198.51.100.6:443: TLS handshake: TLS certificate is not valid for \"a.test\" (x509: certificate is valid for b.test, not a.test)", "set sni to the name"},
		{"trojan 198.51.100.6:443: TLS handshake: TLS certificate has expired or is not yet valid (valid a to b; the router's clock says c)", "router's clock"},
		{"connection to 203.0.113.10:7 closed right after it opened", "vless: uuid and flow; trojan: password"},
		{"read from proxy: server closed the connection without answering: wrong uuid or flow? (EOF)", "vless: uuid and flow"},
		{"socks5 198.51.100.6:1080: authentication failed", "username or password"},
		{"interface wg0: device wg0 is down (state down)", "VPN interface is down or missing"},
		{"interface vpn: no such device, and no netifd interface of that name is up (x)", "VPN interface is down or missing"},
		{"interface wg0: dial tcp 203.0.113.10:7: i/o timeout", "latest handshake"},
		{"shadowsocks 198.51.100.6:8388: server clock differs by more than 30s (check the router's time)", "NTP"},
		{"vless+ws+tls 198.51.100.6:443: ws: HTTP 404 from the server: no such endpoint: wrong path or host?", "check path (ws, httpupgrade, xhttp)"},
		{"read response: xhttp: HTTP 404 from the server: no such endpoint: wrong path, host or mode?", "check path"},
		{"vless+httpupgrade+tls 198.51.100.6:443: httpupgrade: the server closed the connection instead of answering the upgrade: wrong path or host?", "check path"},
		{"read response: grpc: status 12 (unimplemented: wrong service_name?): unknown service x", "service_name (serviceName in links)"},
		{"vless+xhttp+reality 198.51.100.6:443: send request: xhttp: HTTP 400 from the server: the server refused the request", "mode, padding_bytes"},
		{"vless+grpc+tls 198.51.100.6:443: grpc: the server chose http/1.1 (ALPN); grpc needs HTTP/2: is h2 in the server's alpn?", "HTTP/1.1 only"},
		{"vless+ws+tls 198.51.100.6:443: ws: the server chose HTTP/2 (ALPN h2); WebSocket needs http/1.1: remove h2 from alpn", "remove h2 from option alpn"},
	}
	for _, tt := range tests {
		if got := proxyHint(tt.err); !strings.Contains(got, tt.want) {
			t.Errorf("proxyHint(%q) = %q, want it to contain %q", tt.err, got, tt.want)
		}
	}
}

func TestWithHints(t *testing.T) {
	ms := withHints([]proxy.MemberStatus{
		{Name: "ok", Healthy: true},
		{Name: "bad", LastError: "vless+reality 198.51.100.6:443: REALITY handshake failed: server did not prove the key — wrong public_key or short_id?"},
	})
	if ms[0].Hint != "" || !strings.Contains(ms[1].Hint, "public_key") {
		t.Fatalf("hints %q, %q", ms[0].Hint, ms[1].Hint)
	}
}

// health_check 'auto' is an MTProto exchange for a target in Telegram's ranges, and a
// connect elsewhere, which status then warns about when a VLESS or Trojan proxy is
// configured.
func TestHealthCheckAuto(t *testing.T) {
	cfg := config.Default()
	if got := healthCheck(cfg.Main); got.Kind != proxy.CheckMTProto {
		t.Errorf("default health target: check %q, want mtproto", got.Kind)
	}
	cfg.Main.HealthTarget = netip.MustParseAddrPort("203.0.113.5:443")
	if got := healthCheck(cfg.Main); got.Kind != proxy.CheckConnect {
		t.Errorf("a target outside Telegram's ranges: check %q, want connect", got.Kind)
	}
	if w := probeWarning(cfg); w != "" {
		t.Errorf("warning without a VLESS or Trojan proxy: %q", w)
	}
	cfg.Proxies = []config.Proxy{{Name: "v", Type: config.TypeVLESS}}
	if w := probeWarning(cfg); !strings.Contains(w, "fallback web site") {
		t.Errorf("warning %q", w)
	}
	cfg.Main.HealthCheck, cfg.Main.HealthName = config.HealthTLS, "web.example"
	if got := healthCheck(cfg.Main); got.Kind != proxy.CheckTLS || got.Name != "web.example" || probeWarning(cfg) != "" {
		t.Errorf("tls: check %+v, warning %q", got, probeWarning(cfg))
	}
}
