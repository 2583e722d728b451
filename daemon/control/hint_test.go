package control

import (
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/proxy"
)

func TestProxyHintNewTypes(t *testing.T) {
	tests := []struct{ err, want string }{
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
