package control

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/lists"
)

// TestLoadConfigRules: what the daemon's other packages refuse, LoadConfig (and so
// `config check`, start and reload) refuses with the file and line.
func TestLoadConfigRules(t *testing.T) {
	const base = "config main 'main'\n\toption enabled '1'\n\nconfig proxy 'p'\n\toption server '198.51.100.6'\n\toption port '1080'\n"
	var known []string
	for _, e := range lists.Catalogue() {
		known = append(known, e.Name)
	}
	tests := []struct {
		name    string
		add     string
		wantErr string // "" = accepted
	}{
		{"known service", "\nconfig service 'telegram'\n", ""},
		{"every catalogue service", func() string {
			var b strings.Builder
			for _, n := range known {
				b.WriteString("\nconfig service '" + n + "'\n")
			}
			return b.String()
		}(), ""},
		{"unknown service lists the known ones", "\nconfig service 'wechat'\n",
			":8: service 'wechat': service 'wechat' is not in the catalogue (known: " + strings.Join(known, ", ") + ")"},
		{"misspelt service", "\nconfig service 'telegarm'\n", "did you mean 'telegram'?"},
		{"public subnet", "\nconfig custom 'c'\n\tlist subnet '203.0.113.0/24'\n\tlist subnet '2.0.0.0/7'\n", ""},
		{"private subnet", "\nconfig custom 'c'\n\tlist subnet '192.168.1.0/24'\n", ":9: custom 'c': subnet '192.168.1.0/24' is refused: 192.168.1.0/24 is a private range"},
		{"loopback subnet", "\nconfig custom 'c'\n\tlist subnet '127.0.0.1/32'\n", ":9: custom 'c': subnet '127.0.0.1/32' is refused"},
		{"ipv6 loopback", "\nconfig custom 'c'\n\tlist subnet '::1/128'\n", "subnet '::1/128' is refused"},
		{"default route", "\nconfig custom 'c'\n\tlist subnet '0.0.0.0/0'\n", ":9: custom 'c': subnet '0.0.0.0/0' is refused: 0.0.0.0/0 is a default route"},
		{"ipv6 default route", "\nconfig custom 'c'\n\tlist subnet '::/0'\n", "subnet '::/0' is refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tgtun")
			if err := os.WriteFile(path, []byte(base+tt.add), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadConfig(path)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("accepted, want %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q\nlacks %q", err, tt.wantErr)
			}
		})
	}
}

// TestLoadConfigBuildsProxies: a proxy the proxy package cannot build is a configuration
// error at its section, whatever the reason; one it can build is accepted.
func TestLoadConfigBuildsProxies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tgtun")
	conf := "config proxy 'p'\n\toption type 'shadowsocks'\n\toption server '198.51.100.6'\n\toption port '8388'\n\toption cipher 'aes-256-gcm'\n\toption password 'pw'\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Proxies[0]
	if err := (ConfigRules{}).CheckProxy(p); err != nil {
		t.Fatalf("buildable proxy refused: %v", err)
	}
	p.Cipher = "rc4-md5" // past config's own check: only the proxy package can refuse it
	if err := (ConfigRules{}).CheckProxy(p); err == nil {
		t.Fatal("CheckProxy accepted a cipher the proxy package does not know")
	}
}

// TestLoadConfigTransports: what the transports refuse (extra's fields, an ALPN
// without what they need) is reported at its option's line by LoadConfig.
func TestLoadConfigTransports(t *testing.T) {
	const vless = "config proxy 'v'\n\toption type 'vless'\n\toption server '198.51.100.6'\n\toption port '443'\n\toption uuid 'b831381d-6324-4d53-ad4f-8cda48b30811'\n"
	tests := []struct {
		name, add, wantErr string
	}{
		{"xhttp with extra", "\toption transport 'xhttp'\n\toption extra '{\"xPaddingBytes\":\"10-20\",\"noSSEHeader\":true}'\n", ""},
		{"extra field unknown", "\toption transport 'xhttp'\n\toption mode 'packet-up'\n\toption extra '{\"fancy\":1}'\n",
			":8: proxy 'v': the daemon cannot use this proxy: extra: fancy: unknown field, not supported"},
		{"extra needs another mode", "\toption transport 'xhttp'\n\toption mode 'stream-one'\n\toption extra '{\"uplinkDataPlacement\":\"header\"}'\n",
			":8: proxy 'v': the daemon cannot use this proxy: extra: uplinkDataPlacement header needs mode packet-up"},
		{"padding disagrees", "\toption transport 'xhttp'\n\toption padding_bytes '5-6'\n\toption extra '{\"xPaddingBytes\":\"7\"}'\n",
			":8: proxy 'v': the daemon cannot use this proxy: extra: xPaddingBytes: 7 differs from padding_bytes 5-6"},
		{"grpc without h2", "\toption transport 'grpc'\n\tlist alpn 'http/1.1'\n",
			":7: proxy 'v': the daemon cannot use this proxy: alpn: transport grpc needs h2 in the list"},
		{"ws without http/1.1", "\toption transport 'ws'\n\tlist alpn 'h2'\n",
			":7: proxy 'v': the daemon cannot use this proxy: alpn: transport ws needs http/1.1 in the list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tgtun")
			if err := os.WriteFile(path, []byte(vless+tt.add), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadConfig(path)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("accepted, want %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q\nlacks %q", err, tt.wantErr)
			}
		})
	}
}
