package links

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

const (
	key16 = "AAECAwQFBgcICQoLDA0ODw=="                     // 16 bytes
	key32 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // 32 bytes
	uuid  = "b831381d-6324-4d53-ad4f-8cda48b30811"
)

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name, link string
		want       string // rendered options (after the config line), name "x"
		wantName   string
	}{
		{name: "socks5 plain", link: "socks5://198.51.100.6:1080",
			want: "type 'socks5'|server '198.51.100.6'|port '1080'"},
		{name: "socks5 auth and name", link: "socks5://u%40x:p%3Aw@proxy.example.org:1080#My Proxy",
			want: "type 'socks5'|server 'proxy.example.org'|port '1080'|username 'u@x'|password 'p:w'", wantName: "my_proxy"},
		{name: "socks base64 userinfo", link: "socks://" + base64.StdEncoding.EncodeToString([]byte("user:pa ss")) + "@[2001:db8::6]:1080",
			want: "type 'socks5'|server '2001:db8::6'|port '1080'|username 'user'|password 'pa ss'"},
		{name: "http", link: "http://u:p@198.51.100.6:3128/",
			want: "type 'http'|server '198.51.100.6'|port '3128'|username 'u'|password 'p'"},
		{name: "ss SIP002 base64url", link: "ss://" + b64url("chacha20-ietf-poly1305:pw'x") + "@198.51.100.6:8388/#ss-1",
			want: "type 'shadowsocks'|server '198.51.100.6'|port '8388'|cipher 'chacha20-ietf-poly1305'|password 'pw'\\''x'", wantName: "ss_1"},
		{name: "ss SIP002 padded std base64", link: "ss://" + base64.StdEncoding.EncodeToString([]byte("aes-128-gcm:test")) + "@198.51.100.6:8388",
			want: "type 'shadowsocks'|server '198.51.100.6'|port '8388'|cipher 'aes-128-gcm'|password 'test'"},
		{name: "ss 2022 plain userinfo", link: "ss://2022-blake3-aes-128-gcm:" + strings.ReplaceAll(key16, "=", "%3D") + "@198.51.100.6:8388#x",
			want: "type 'shadowsocks'|server '198.51.100.6'|port '8388'|cipher '2022-blake3-aes-128-gcm'|password '" + key16 + "'", wantName: "x"},
		{name: "ss 2022 multi-key", link: "ss://2022-blake3-aes-256-gcm:" + key32 + "%3A" + key32 + "@198.51.100.6:8388",
			want: "type 'shadowsocks'|server '198.51.100.6'|port '8388'|cipher '2022-blake3-aes-256-gcm'|password '" + key32 + ":" + key32 + "'"},
		{name: "ss legacy all base64", link: "ss://" + base64.StdEncoding.EncodeToString([]byte("aes-256-gcm:p@ss@198.51.100.6:8388")) + "#old",
			want: "type 'shadowsocks'|server '198.51.100.6'|port '8388'|cipher 'aes-256-gcm'|password 'p@ss'", wantName: "old"},
		{name: "vless reality vision", link: "vless://" + uuid + "@203.0.113.9:443?encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.example.com&fp=chrome&pbk=abcDEF_-123&sid=6ba85179e30d4fc2&type=tcp&headerType=none#R",
			want: "type 'vless'|server '203.0.113.9'|port '443'|uuid '" + uuid + "'|security 'reality'|flow 'xtls-rprx-vision'|sni 'www.example.com'|fingerprint 'chrome'|public_key 'abcDEF_-123'|short_id '6ba85179e30d4fc2'", wantName: "r"},
		{name: "vless tls alpn insecure", link: "vless://" + strings.ToUpper(uuid) + "@vpn.example.org:8443?security=tls&alpn=h2%2Chttp%2F1.1&allowInsecure=1&type=raw",
			want: "type 'vless'|server 'vpn.example.org'|port '8443'|uuid '" + uuid + "'|security 'tls'|alpn 'h2' (list)|alpn 'http/1.1' (list)|insecure '1'"},
		{name: "trojan", link: "trojan://pass:word@198.51.100.7:443?security=tls&sni=t.example.org&type=tcp#T",
			want: "type 'trojan'|server '198.51.100.7'|port '443'|password 'pass:word'|sni 't.example.org'", wantName: "t"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.link)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var got []string
			for _, o := range p.Options {
				for _, v := range o.Values {
					s := o.Name + " " + quote(v)
					if o.List {
						s += " (list)"
					}
					got = append(got, s)
				}
			}
			if g := strings.Join(got, "|"); g != tt.want {
				t.Errorf("options\n got %s\nwant %s", g, tt.want)
			}
			if p.Name != tt.wantName {
				t.Errorf("name = %q, want %q", p.Name, tt.wantName)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct{ link, want string }{
		{"198.51.100.6:1080", "not a share link"},
		{"vmess://eyJ2IjoiMiJ9", "vmess link: not supported"},
		{"https://u:secret@198.51.100.6:443", "https link: TLS to an HTTP proxy is not supported"},
		{"socks5://198.51.100.6", "socks5 link: the port is missing"},
		{"socks5://198.51.100.6:99999", "socks5 link: port \"99999\" is not 1-65535"},
		{"http://198.51.100.6:80/path", "http link: a path is not part of a proxy address"},
		{"ss://" + b64url("aes-256-gcm:secret") + "@198.51.100.6:8388/?plugin=obfs-local%3Bobfs%3Dhttp", "ss link: plugin=obfs-local is not supported"},
		{"ss://" + b64url("rc4-md5:secret") + "@198.51.100.6:8388", "ss link: method rc4-md5 is not supported"},
		{"ss://!!!", "ss link: neither SIP002"},
		{"ss://" + b64url("aes-256-gcm:") + "@198.51.100.6:8388", "ss link: the password is empty"},
		{"vless://" + uuid + "@203.0.113.9:443?type=kcp&security=tls&seed=secret", "vless link: type=kcp is not supported; tcp, ws, httpupgrade, grpc and xhttp are"},
		{"vless://" + uuid + "@203.0.113.9:443?type=h2&security=tls", "vless link: type=h2 is not supported"},
		{"vless://" + uuid + "@203.0.113.9:443?type=ws&security=tls&flow=xtls-rprx-vision", "vless link: flow=xtls-rprx-vision needs type=tcp"},
		{"vless://" + uuid + "@203.0.113.9:443?type=grpc&security=tls&mode=turbo", "vless link: mode=turbo is not a gRPC mode"},
		{"vless://" + uuid + "@203.0.113.9:443?type=xhttp&security=tls&mode=gun", "vless link: mode=gun is not an XHTTP mode"},
		{"vless://" + uuid + "@203.0.113.9:443?type=xhttp&security=tls&extra=%7B%22downloadSettings%22%3A%7B%7D%7D", "vless link: extra: downloadSettings: a separate download server is not supported"},
		{"vless://" + uuid + "@203.0.113.9:443?type=xhttp&security=tls&extra=%7Bsecret", "vless link: extra: not a JSON object"},
		{"vless://" + uuid + "@203.0.113.9:443?type=ws&security=tls&path=%2Fws%3Fed%3Dlots", "vless link: ed=lots is not an early data size"},
		{"vless://" + uuid + "@203.0.113.9:443?security=tls&fm=%7B%7D", "vless link: finalmask (fm=)"},
		{"vless://" + uuid + "@203.0.113.9:443?security=tls&ech=AEX", "vless link: Encrypted Client Hello (ech=)"},
		{"vless://" + uuid + "@203.0.113.9:443?security=tls&vcn=cdn.example.org", "vless link: verifyPeerCertByName (vcn=) is not supported"},
		{"hysteria2://secret@198.51.100.7:443", "hysteria2 link: not supported: Hysteria runs over QUIC"},
		{"hy2://secret@198.51.100.7:443", "hy2 link: not supported: Hysteria runs over QUIC"},
		{"tuic://secret@198.51.100.7:443", "tuic link: not supported: TUIC runs over QUIC"},
		{"vless://" + uuid + "@203.0.113.9:443?type=tcp", "vless link: security=(none) is not supported; tls or reality is"},
		{"vless://" + uuid + "@203.0.113.9:443?security=reality", "vless link: security=reality needs pbk"},
		{"vless://" + uuid + "@203.0.113.9:443?security=tls&flow=xtls-rprx-direct", "vless link: flow=xtls-rprx-direct is not supported"},
		{"vless://secret-id@203.0.113.9:443?security=tls", "vless link: the id before '@' is not a UUID"},
		{"vless://" + uuid + "@203.0.113.9:443?security=tls&headerType=http", "vless link: headerType=http is not supported"},
		{"trojan://@198.51.100.7:443", "trojan link: the password (before '@') is missing"},
		{"trojan://secret@198.51.100.7:443?type=quic", "trojan link: type=quic is not supported"},
		{"trojan://secret@198.51.100.7:443?security=reality", "trojan link: security=reality is not supported; tls is"},
		{"trojan://sec%zzret@198.51.100.7:443", "trojan link: not a valid URL"},
	} {
		_, err := Parse(tt.link)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want %q", tt.link, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q): error shows the secret: %v", tt.link, err)
		}
	}
}

// TestIgnored: what a link carries and tgtun does not use is reported, with why.
func TestIgnored(t *testing.T) {
	for _, tt := range []struct {
		link string
		want []string // param: the start of the reason
	}{
		{"vless://" + uuid + "@h:443?security=reality&pbk=k&sni=s&spx=%2F&pqv=abc&alpn=h2", []string{"alpn: with security=reality", "pqv: REALITY's ML-DSA-65", "spx: REALITY's spiderX"}},
		{"vless://" + uuid + "@h:443?security=tls&type=ws&path=%2Fp&heartbeatPeriod=30&serviceName=x&fragment=1,40-60,30-50", []string{"fragment: TLS ClientHello", "heartbeatPeriod: WebSocket pings", "serviceName: not used by type=ws"}},
		{"vless://" + uuid + "@h:443?security=tls&type=xhttp&extra=%7B%22noSSEHeader%22%3Atrue%2C%22xmux%22%3A%7B%22hKeepAlivePeriod%22%3A5%7D%7D", []string{"extra.noSSEHeader: a server setting", "extra.xmux.hKeepAlivePeriod: HTTP/2 keep-alive"}},
		{"trojan://pw@h:443?security=tls&flow=xtls-rprx-vision&brandNew=1&allowInsecure=1", []string{"brandNew: unknown to tgtun", "flow: not a trojan parameter"}},
		// pcs is used (pinned_sha256), over a transport too, and supersedes allowInsecure.
		{"trojan://pw@h:443?security=tls&type=ws&path=%2Fws&allowInsecure=1&pcs=AB:CD&spx=%2F", []string{"spx: REALITY's spiderX"}},
		{"vless://" + uuid + "@h:443?security=tls&type=tcp&headerType=&host=&path=%2F", []string{"path: not used by type=tcp"}},
	} {
		p, err := Parse(tt.link)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.link, err)
			continue
		}
		var got []string
		for _, ig := range p.Ignored {
			got = append(got, ig.Param+": "+ig.Reason)
		}
		slices.Sort(got)
		if len(got) != len(tt.want) {
			t.Errorf("Parse(%q) ignored %q, want %q", tt.link, got, tt.want)
			continue
		}
		for i := range got {
			if !strings.HasPrefix(got[i], tt.want[i]) {
				t.Errorf("Parse(%q) ignored %q, want %q", tt.link, got, tt.want)
				break
			}
		}
	}
}

func TestUCI(t *testing.T) {
	p, err := Parse("vless://" + uuid + "@203.0.113.9:443?security=tls&alpn=h2,http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	want := "config proxy 'v'\n\toption type 'vless'\n\toption server '203.0.113.9'\n\toption port '443'\n\toption uuid '" + uuid +
		"'\n\toption security 'tls'\n\tlist alpn 'h2'\n\tlist alpn 'http/1.1'\n"
	if got := p.UCI("v"); got != want {
		t.Errorf("UCI:\n%s\nwant:\n%s", got, want)
	}
}

func TestSectionName(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "",
		"My VPN - NL":           "my_vpn_nl",
		"🇳🇱 Amsterdam":          "amsterdam",
		"1st":                   "p_1st",
		strings.Repeat("0", 40): "p_" + strings.Repeat("0", 30),
		"Под Прокси":            "",
		"a.b.c":                 "a_b_c",
		strings.Repeat("x", 50): strings.Repeat("x", 32),
	} {
		if got := SectionName(in); got != want {
			t.Errorf("SectionName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"socks5://u:p@198.51.100.6:1080#n",
		"ss://" + b64url("aes-128-gcm:pw") + "@[2001:db8::1]:8388/?plugin=x#n",
		"ss://2022-blake3-aes-128-gcm:" + key16 + "@h:1",
		"vless://" + uuid + "@h:443?security=reality&pbk=k&sid=01&alpn=h2,h3&fp=chrome",
		"trojan://pw@h:443?sni=s&allowInsecure=1",
		"vless://" + uuid + "@h:443?security=tls&pcs=AB:cd,ef01&allowInsecure=1",
		"http://h:8080",
		"vless://" + uuid + "@h:443?security=tls&type=xhttp&path=%2Fx&mode=packet-up&extra=%7B%22xmux%22%3A%7B%22hKeepAlivePeriod%22%3A1%7D%2C%22noSSEHeader%22%3Atrue%7D",
		"vless://" + uuid + "@h:443?security=tls&type=ws&path=%2Fws%3Fa%3D1%26ed%3D2048&host=c&heartbeatPeriod=3",
		"trojan://pw@h:443?type=grpc&serviceName=s&mode=multi&authority=a&spx=%2F&zz=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, link string) {
		p, err := Parse(link)
		if err != nil {
			return
		}
		if p.Get("type") == "" || p.Get("server") == "" || p.Get("port") == "" {
			t.Fatalf("Parse(%q) gave no type/server/port: %+v", link, p.Options)
		}
		if n := p.Name; n != "" && SectionName(n) != n {
			t.Fatalf("name %q is not a section name", n)
		}
		// The rendered section holds each value as written, however quoted.
		out := p.UCI("x")
		if strings.Count(out, "\n") != 1+countValues(p) {
			t.Fatalf("UCI of %q has a value spanning lines:\n%s", link, out)
		}
	})
}

func countValues(p *Proxy) int {
	n := 0
	for _, o := range p.Options {
		n += len(o.Values)
	}
	return n
}
