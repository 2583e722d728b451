package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSubscription(t *testing.T) {
	const url = "https://panel.example.org/sub/s3cr3t-token"
	tests := []struct {
		name     string
		body     string // options of config subscription 'prov'
		extra    string // more sections
		wantErr  string
		wantWarn string
		want     *Subscription
	}{
		{name: "defaults", body: "url '" + url + "'",
			want: &Subscription{Name: "prov", Line: 1, Enabled: true, URL: url, Priority: 10, UserAgent: DefaultUserAgent, DeviceHeaders: true}},
		{name: "every option", body: "url '" + url + "'\nvia 'direct'\ninterval '6h'\npriority '20'\ninclude 'NL'\ninclude 'DE'\nexclude 'Russia'\nuser_agent 'v2rayNG/1.8.5'\ndevice_headers '0'\nhwid 'abc123'\nenabled '0'",
			want: &Subscription{Name: "prov", Line: 1, Enabled: false, URL: url, Via: "direct", Interval: 6 * time.Hour, Priority: 20,
				Include: []string{"NL", "DE"}, Exclude: []string{"Russia"}, UserAgent: "v2rayNG/1.8.5", HWID: "abc123"}},
		{name: "via a proxy", body: "url '" + url + "'\nvia 'backup'", extra: proxyNamed("backup"),
			want: &Subscription{Name: "prov", Line: 1, Enabled: true, URL: url, Via: "backup", Priority: 10, UserAgent: DefaultUserAgent, DeviceHeaders: true}},
		{name: "url missing", body: "priority '5'", wantErr: "url is missing"},
		{name: "url not http, not echoed", body: "url 'ftp://panel.example.org/s3cr3t-token'", wantErr: "url is not an http:// or https:// URL"},
		{name: "via unknown proxy", body: "url '" + url + "'\nvia 'nope'", extra: proxyNamed("backup"), wantErr: "via 'nope' is not a proxy section of this file (proxies: backup; or 'direct')"},
		{name: "via without proxies", body: "url '" + url + "'\nvia 'nope'", wantErr: "it has none"},
		{name: "via bad name", body: "url '" + url + "'\nvia 'a b'", wantErr: "via 'a b' is not a proxy section name or 'direct'"},
		{name: "interval too short", body: "url '" + url + "'\ninterval '1m'", wantErr: "interval '1m' is out of range 10m-8760h"},
		{name: "priority", body: "url '" + url + "'\npriority '1001'", wantErr: "priority '1001' is out of range 0-1000"},
		{name: "user agent", body: "url '" + url + "'\nuser_agent 'Happ/1.0 ü'", wantErr: "user_agent 'Happ/1.0 ü' is not a User-Agent"},
		{name: "hwid", body: "url '" + url + "'\nhwid 'a b'", wantErr: "hwid 'a b' is not a device id"},
		{name: "unknown option", body: "url '" + url + "'\nintervall '1h'", wantWarn: "did you mean 'interval'?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "config subscription 'prov'\n\toption " + strings.ReplaceAll(tt.body, "\n", "\n\toption ") + "\n" + tt.extra
			in = strings.ReplaceAll(in, "option include", "list include")
			cfg, warns, errs := parse(t, in)
			expect(t, errs, warns, tt.wantErr, tt.wantWarn)
			for _, e := range errs {
				if strings.Contains(e.Error(), "s3cr3t") {
					t.Errorf("error shows the URL's token: %v", e)
				}
			}
			if tt.want == nil {
				return
			}
			if len(cfg.Subscriptions) != 1 || !reflect.DeepEqual(cfg.Subscriptions[0], *tt.want) {
				t.Fatalf("got %+v\nwant %+v", cfg.Subscriptions, *tt.want)
			}
		})
	}
}

func proxyNamed(name string) string {
	return "config proxy '" + name + "'\n\toption server '198.51.100.6'\n\toption port '1080'\n"
}

// TestSubscriptionEnables: a subscription is enough of a proxy source for enabled '1'.
func TestSubscriptionEnables(t *testing.T) {
	in := "config main 'main'\n\toption enabled '1'\nconfig subscription 's'\n\toption url 'https://panel.example.org/s'\n"
	if _, _, errs := parse(t, in); len(errs) > 0 {
		t.Fatal(errs)
	}
	off := strings.Replace(in, "option url", "option enabled '0'\n\toption url", 1)
	if _, _, errs := parse(t, off); len(errs) != 1 || !strings.Contains(errs[0].Error(), "no proxy has a server") {
		t.Fatalf("a disabled subscription: %v", errs)
	}
}

func TestSelect(t *testing.T) {
	cfg, _, errs := parse(t, "config main 'main'\n\toption select 'latency'\n")
	if len(errs) > 0 || cfg.Main.Select != SelectLatency {
		t.Fatalf("select latency: %v %v", errs, cfg)
	}
	_, _, errs = parse(t, "config main 'main'\n\toption select 'fastest'\n")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "select 'fastest' is not allowed (allowed: priority, latency)") {
		t.Fatalf("select fastest: %v", errs)
	}
}
