package config

import (
	"slices"
	"strings"
	"testing"
)

func TestProxyCerts(t *testing.T) {
	const (
		pin   = "5870bf1355c3b4ef09ad3daf8e1efe58cc01b4ec8141febe6f408e40339f17b8"
		pinSS = "58:70:BF:13:55:C3:B4:EF:09:AD:3D:AF:8E:1E:FE:58:CC:01:B4:EC:81:41:FE:BE:6F:40:8E:40:33:9F:17:B8"
		pin2  = "0000000000000000000000000000000000000000000000000000000000000001"
		vless = "type 'vless'\nserver 'h'\nport '443'\nuuid 'u'"
	)
	tests := []struct {
		name     string
		body     string
		wantErr  string
		wantWarn string
		pins     []string
		caFile   string
	}{
		{name: "pin", body: vless + "\npinned_sha256 '" + pin + "'", pins: []string{pin}},
		{name: "openssl form, upper case", body: vless + "\npinned_sha256 '" + pinSS + "'", pins: []string{pin}},
		{name: "several, duplicates once", body: vless + "\npinned_sha256 '" + pin + " " + pin2 + " " + pinSS + "'", pins: []string{pin, pin2}},
		{name: "trojan ca_file", body: "type 'trojan'\nserver 'h'\nport '443'\npassword 'p'\nca_file '/etc/ssl/ca.pem'", caFile: "/etc/ssl/ca.pem"},
		{name: "pin and ca_file", body: vless + "\npinned_sha256 '" + pin + "'\nca_file '/etc/ssl/ca.pem'", pins: []string{pin}, caFile: "/etc/ssl/ca.pem"},
		{name: "empty ca_file is unset", body: vless + "\nca_file ''"},
		{name: "short pin", body: vless + "\npinned_sha256 'abcd'", wantErr: "pinned_sha256 'abcd' is not a SHA-256 in hex"},
		{name: "base64 pin", body: vless + "\npinned_sha256 'WHC/E1XDtO8JrT2vjh7+WMwBtOyBQf6+b0COQDOfF7g='", wantErr: "is not a SHA-256 in hex"},
		{name: "relative ca_file", body: vless + "\nca_file 'ca.pem'", wantErr: "ca_file 'ca.pem' is not an absolute file path"},
		{name: "with insecure", body: vless + "\ninsecure '1'\npinned_sha256 '" + pin + "'", wantErr: "not allowed with insecure '1'", wantWarn: "not checked"},
		{name: "with reality", body: "type 'vless'\nserver 'h'\nport '443'\nuuid 'u'\nsecurity 'reality'\nsni 'a.example'\npublic_key 'jNXHt1yRo0vDuchQlIP6Z0ZvjT3KtzVI-T4E7RoLJS0'\nca_file '/x.pem'",
			wantErr: "not allowed with security reality"},
		{name: "on socks5", body: "server 'h'\nport '1'\npinned_sha256 '" + pin + "'", wantWarn: "pinned_sha256 is only used by vless and trojan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "config proxy 'main'\n\toption " + strings.ReplaceAll(tt.body, "\n", "\n\toption ") + "\n"
			cfg, warns, errs := parse(t, in)
			expect(t, errs, warns, tt.wantErr, tt.wantWarn)
			if tt.wantErr != "" {
				return
			}
			p := cfg.Proxies[0]
			if !slices.Equal(p.PinnedSHA256, tt.pins) || p.CAFile != tt.caFile {
				t.Fatalf("pins %q ca_file %q, want %q %q", p.PinnedSHA256, p.CAFile, tt.pins, tt.caFile)
			}
		})
	}
}
