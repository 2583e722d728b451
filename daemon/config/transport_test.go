package config

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestProxyTransport(t *testing.T) {
	const id = "b831381d-6324-4d53-ad4f-8cda48b30811"
	vless := "type 'vless'\nserver 'h'\nport '443'\nuuid '" + id + "'"
	base := Proxy{Name: "main", Type: "vless", Server: "h", Port: 443, UDP: true, Priority: 10, Line: 1,
		UUID: id, Security: "tls", Fingerprint: "chrome"}
	with := func(f func(p *Proxy)) *Proxy {
		p := base
		f(&p)
		return &p
	}
	tests := []struct {
		name     string
		body     string
		wantErr  string
		wantWarn string
		want     *Proxy
	}{
		{name: "tcp is no transport", body: vless + "\ntransport 'tcp'", want: &base},
		{name: "ws", body: vless + "\ntransport 'ws'\npath '/ws?x=1'\nhost 'cdn.example.org'\nearly_data '2048'",
			want: with(func(p *Proxy) { p.Transport, p.Path, p.Host, p.EarlyData = "ws", "/ws?x=1", "cdn.example.org", 2048 })},
		{name: "grpc", body: vless + "\ntransport 'grpc'\nservice_name 'svc.Tun'\nmode 'multi'\nhost 'a.example:8443'",
			want: with(func(p *Proxy) {
				p.Transport, p.ServiceName, p.Mode, p.Host = "grpc", "svc.Tun", "multi", "a.example:8443"
			})},
		{name: "xhttp", body: vless + "\ntransport 'xhttp'\npath '/x'\nmode 'packet-up'\npadding_bytes '100-1000'\nextra '{\"xmux\":{\"maxConcurrency\":4}}'",
			want: with(func(p *Proxy) {
				p.Transport, p.Path, p.Mode, p.PaddingBytes, p.Extra = "xhttp", "/x", "packet-up", "100-1000", `{"xmux":{"maxConcurrency":4}}`
			})},
		{name: "trojan httpupgrade", body: "type 'trojan'\nserver 'h'\nport '443'\npassword 'p'\ntransport 'httpupgrade'\npath '/u'"},
		{name: "unknown transport", body: vless + "\ntransport 'kcp'", wantErr: "transport 'kcp' is not allowed (allowed: tcp, ws, httpupgrade, grpc, xhttp)"},
		{name: "grpc mode of xhttp", body: vless + "\ntransport 'grpc'\nmode 'packet-up'", wantErr: "mode 'packet-up' is not a mode of transport 'grpc' (allowed: gun, multi)"},
		{name: "xhttp mode of grpc", body: vless + "\ntransport 'xhttp'\nmode 'gun'", wantErr: "mode 'gun' is not a mode of transport 'xhttp' (allowed: auto, packet-up, stream-up, stream-one)"},
		{name: "bad path", body: vless + "\ntransport 'ws'\npath '/a b'", wantErr: "path '/a b' is not a URL path"},
		{name: "bad host", body: vless + "\ntransport 'ws'\nhost 'a/b'", wantErr: "host 'a/b' is not a host name"},
		{name: "bad early_data", body: vless + "\ntransport 'ws'\nearly_data '9000'", wantErr: "early_data '9000' is out of range 0-8192"},
		{name: "bad padding", body: vless + "\ntransport 'xhttp'\npadding_bytes '0-10'", wantErr: "padding_bytes '0-10' is not a range"},
		{name: "bad extra", body: vless + "\ntransport 'xhttp'\nextra '[1,2]'", wantErr: "extra '[1,2]' is not a JSON object"},
		{name: "vision over ws", body: vless + "\nflow 'xtls-rprx-vision'\ntransport 'ws'", wantErr: "transport 'ws' is not allowed with flow xtls-rprx-vision"},
		{name: "path on grpc warns", body: vless + "\ntransport 'grpc'\npath '/x'", wantWarn: "path is not used by transport 'grpc' (it is for ws, httpupgrade, xhttp)"},
		{name: "extra on tcp warns", body: vless + "\nextra '{}'", wantWarn: "extra is not used by transport 'tcp'"},
		{name: "transport on socks5 warns", body: "server 'h'\nport '1'\ntransport 'ws'", wantWarn: "transport is only used by vless and trojan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "config proxy 'main'\n\toption " + strings.ReplaceAll(tt.body, "\n", "\n\toption ") + "\n"
			cfg, warns, errs := parse(t, in)
			expect(t, errs, warns, tt.wantErr, tt.wantWarn)
			if tt.wantErr != "" {
				return
			}
			if tt.want != nil && !reflect.DeepEqual(cfg.Proxies[0], *tt.want) {
				t.Fatalf("got %#v\nwant %#v", cfg.Proxies[0], *tt.want)
			}
		})
	}
}

// optionErr is an error that names its option, as the transports' do.
type optionErr struct{ name string }

func (e optionErr) Error() string      { return e.name + ": refused" }
func (e optionErr) OptionName() string { return e.name }

type refuseRules struct{ err error }

func (refuseRules) Services() []string             { return nil }
func (refuseRules) CheckSubnet(netip.Prefix) error { return nil }
func (r refuseRules) CheckProxy(Proxy) error       { return r.err }

// TestCheckProxyOptionLine: what the proxy package refuses about one option is
// reported at that option's line.
func TestCheckProxyOptionLine(t *testing.T) {
	in := "config proxy 'p'\n\toption type 'vless'\n\toption server 'h'\n\toption port '1'\n\toption uuid 'u'\n\toption transport 'xhttp'\n\toption extra '{}'\n"
	_, _, err := ParseWith("f", strings.NewReader(in), refuseRules{fmt.Errorf("wrapped: %w", optionErr{"extra"})})
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 {
		t.Fatalf("errors %v", err)
	}
	if e := errs[0]; e.Line != 7 || e.Option != "extra" || !strings.Contains(e.Msg, "the daemon cannot use this proxy: wrapped: extra: refused") {
		t.Fatalf("error %+v, want line 7, option extra", e)
	}
	_, _, err = ParseWith("f", strings.NewReader(in), refuseRules{errors.New("no option")})
	if !errors.As(err, &errs) || errs[0].Line != 1 {
		t.Fatalf("an error without option at %v, want the section's line", err)
	}
}
