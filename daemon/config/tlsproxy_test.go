package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestVLESSTrojanProxy(t *testing.T) {
	const (
		id  = "b831381d-6324-4d53-ad4f-8cda48b30811"
		pbk = "jNXHt1yRo0vDuchQlIP6Z0ZvjT3KtzVI-T4E7RoLJS0"
	)
	reality := "type 'vless'\nserver 'h'\nport '443'\nuuid '" + id + "'\nsecurity 'reality'\nsni 'www.example.com'\npublic_key '" + pbk + "'\nshort_id '0123abcd'"
	tests := []struct {
		name     string
		body     string
		wantErr  string
		wantWarn string
		want     *Proxy
	}{
		{name: "vless tls defaults", body: "type 'vless'\nserver 'h.example'\nport '443'\nuuid '" + id + "'",
			want: &Proxy{Name: "main", Type: "vless", Server: "h.example", Port: 443, UDP: true, Priority: 10, Line: 1,
				UUID: id, Security: "tls", Fingerprint: "chrome"}},
		{name: "vless reality vision", body: reality + "\nflow 'xtls-rprx-vision'\nfingerprint 'firefox'\nalpn 'h2 http/1.1'",
			want: &Proxy{Name: "main", Type: "vless", Server: "h", Port: 443, UDP: true, Priority: 10, Line: 1,
				UUID: id, Flow: "xtls-rprx-vision", Security: "reality", SNI: "www.example.com", Fingerprint: "firefox",
				PublicKey: pbk, ShortID: "0123abcd", ALPN: []string{"h2", "http/1.1"}}},
		{name: "vless uuid as text", body: "type 'vless'\nserver 'h'\nport '1'\nuuid 'my-user'"},
		{name: "vless without uuid", body: "type 'vless'\nserver 'h'\nport '1'", wantErr: "uuid is missing"},
		{name: "vless bad uuid", body: "type 'vless'\nserver 'h'\nport '1'\nuuid '" + strings.Repeat("x", 31) + "'", wantErr: "uuid is not a UUID"},
		{name: "vless bad flow", body: "type 'vless'\nserver 'h'\nport '1'\nuuid 'u'\nflow 'xtls-rprx-direct'", wantErr: "flow 'xtls-rprx-direct' is not allowed"},
		{name: "vless bad security", body: "type 'vless'\nserver 'h'\nport '1'\nuuid 'u'\nsecurity 'none'", wantErr: "security 'none' is not allowed (allowed: tls, reality)"},
		{name: "vless bad fingerprint", body: "type 'vless'\nserver 'h'\nport '1'\nuuid 'u'\nfingerprint 'netscape'", wantErr: "fingerprint 'netscape' is not allowed"},
		{name: "vless bad sni", body: "type 'vless'\nserver 'h'\nport '1'\nuuid 'u'\nsni 'a b'", wantErr: "sni 'a b' is not a host name"},
		{name: "vless insecure warns", body: "type 'vless'\nserver 'h'\nport '1'\nuuid 'u'\ninsecure '1'", wantWarn: "the server's certificate is not checked"},
		{name: "reality without public_key", body: strings.Replace(reality, "\npublic_key '"+pbk+"'", "", 1), wantErr: "public_key is missing"},
		{name: "reality bad public_key", body: strings.Replace(reality, pbk, "abc", 1), wantErr: "public_key 'abc' is not a base64 X25519 public key"},
		{name: "reality without sni", body: strings.Replace(reality, "\nsni 'www.example.com'", "", 1), wantErr: "sni is missing"},
		{name: "reality odd short_id", body: strings.Replace(reality, "0123abcd", "123", 1), wantErr: "short_id '123' is not hex"},
		{name: "reality long short_id", body: strings.Replace(reality, "0123abcd", "0123456789abcdef01", 1), wantErr: "short_id '0123456789abcdef01' is not hex"},
		{name: "reality insecure", body: reality + "\ninsecure '1'", wantErr: "insecure '1' is not allowed with security reality"},
		{name: "public_key on tls warns", body: "type 'vless'\nserver 'h'\nport '1'\nuuid 'u'\npublic_key '" + pbk + "'", wantWarn: "public_key is only used with security reality"},

		{name: "trojan", body: "type 'trojan'\nserver 'h'\nport '443'\npassword 'pw'\nsni 'example.org'\nudp '0'",
			want: &Proxy{Name: "main", Type: "trojan", Server: "h", Port: 443, Password: "pw", Priority: 10, Line: 1,
				Security: "tls", SNI: "example.org", Fingerprint: "chrome"}},
		{name: "trojan without password", body: "type 'trojan'\nserver 'h'\nport '443'", wantErr: "password is missing (trojan"},
		{name: "trojan reality", body: "type 'trojan'\nserver 'h'\nport '443'\npassword 'p'\nsecurity 'reality'", wantErr: "security 'reality' is not allowed for trojan"},
		{name: "trojan uuid warns", body: "type 'trojan'\nserver 'h'\nport '443'\npassword 'p'\nuuid 'u'", wantWarn: "uuid is not used by trojan"},
		{name: "sni on socks5 warns", body: "server 'h'\nport '1'\nsni 'x'", wantWarn: "sni is only used by vless and trojan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "config proxy 'main'\n\toption " + strings.ReplaceAll(tt.body, "\n", "\n\toption ") + "\n"
			cfg, warns, errs := parse(t, in)
			expect(t, errs, warns, tt.wantErr, tt.wantWarn)
			if tt.wantErr != "" {
				return
			}
			if len(cfg.Proxies) != 1 {
				t.Fatalf("proxies = %v", cfg.Proxies)
			}
			if tt.want != nil && !reflect.DeepEqual(cfg.Proxies[0], *tt.want) {
				t.Fatalf("got %#v\nwant %#v", cfg.Proxies[0], *tt.want)
			}
		})
	}
}

// TestUUIDNeverShown: the vless uuid is a credential like a password.
func TestUUIDNeverShown(t *testing.T) {
	const id = "b831381d-6324-4d53-ad4f-8cda48b30811"
	p := Proxy{Name: "v", Type: TypeVLESS, Server: "h", Port: 1, UUID: id}
	js, err := p.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{p.String(), p.GoString(), string(js)} {
		if strings.Contains(s, id) {
			t.Errorf("uuid shown in %q", s)
		}
	}
}
