package subs

import (
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeBody(t *testing.T) {
	const (
		a = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@198.51.100.7:443?security=tls#%F0%9F%87%B3%F0%9F%87%B1%20Amsterdam"
		b = "ss://YWVzLTEyOC1nY206dGVzdA==@198.51.100.6:8388#b"
	)
	plain := a + "\n" + b + "\n"
	std := base64.StdEncoding.EncodeToString([]byte(plain))
	tests := []struct {
		name     string
		body     string
		want     []string
		wantMeta map[string]string
		wantErr  string
	}{
		{name: "plain", body: plain, want: []string{a, b}},
		{name: "plain CRLF, blank lines, BOM", body: "\xef\xbb\xbf\r\n" + a + "\r\n\r\n" + b + "\r\n", want: []string{a, b}},
		{name: "base64 padded", body: std, want: []string{a, b}},
		{name: "base64 raw", body: base64.RawStdEncoding.EncodeToString([]byte(plain)), want: []string{a, b}},
		{name: "base64 url alphabet", body: base64.RawURLEncoding.EncodeToString([]byte(plain + "?>?>")), want: []string{a, b, "?>?>"}},
		{name: "base64 wrapped at 76", body: wrap(std, 76), want: []string{a, b}},
		{name: "base64 with trailing newline", body: std + "\n", want: []string{a, b}},
		{name: "metadata lines", body: "#profile-update-interval: 1\n#subscription-userinfo: upload=1; download=2\n# just a comment\n" + a,
			want: []string{a}, wantMeta: map[string]string{"profile-update-interval": "1", "subscription-userinfo": "upload=1; download=2"}},
		{name: "empty", body: " \n\t", wantErr: "empty"},
		{name: "json", body: `[{"outbounds": []}]`, wantErr: "JSON configuration"},
		{name: "html", body: "<!doctype html><html>", wantErr: "HTML page"},
		{name: "garbage", body: "hello world!!", wantErr: "neither share links"},
		{name: "base64 of garbage", body: base64.StdEncoding.EncodeToString([]byte("just text")), wantErr: "holds no share links"},
		{name: "only comments", body: "# a://b\n", wantErr: "holds no share links"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeBody([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Links, tt.want) || !reflect.DeepEqual(got.Meta, tt.wantMeta) {
				t.Fatalf("got %q %v, want %q %v", got.Links, got.Meta, tt.want, tt.wantMeta)
			}
		})
	}
	if _, err := DecodeBody([]byte("{}")); !errors.Is(err, ErrJSON) {
		t.Errorf("a JSON body: %v, want ErrJSON", err)
	}
}

func wrap(s string, n int) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + "\n")
		s = s[n:]
	}
	return b.String() + s
}

func TestLabel(t *testing.T) {
	for link, want := range map[string]string{
		"vless://x@h:1?a=b#%F0%9F%87%B3%F0%9F%87%B1%20Amsterdam": "🇳🇱 Amsterdam",
		"trojan://p@h:1#Plain+Name":                              "Plain+Name",
		"socks5://h:1":                                           "",
		"socks5://h:1#bad%zzescape":                              "bad%zzescape",
		"socks5://h:1#a%0Ab%00c":                                 "abc",
		"socks5://h:1#" + strings.Repeat("я", 70):                strings.Repeat("я", 64) + "…",
	} {
		if got := label(link); got != want {
			t.Errorf("label(%q) = %q, want %q", link, got, want)
		}
	}
}

func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		"socks5://h:1#a\nss://x@h:2\n",
		base64.StdEncoding.EncodeToString([]byte("trojan://p@h:443#x\n")),
		"#profile-update-interval: 12\nvless://u@h:1",
		"[]", "<html>", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBody(data)
		if err != nil {
			return
		}
		if len(b.Links) == 0 {
			t.Fatal("no error and no links")
		}
		for _, l := range b.Links {
			if l == "" || strings.ContainsAny(l, "\n") || strings.HasPrefix(l, "#") || l != strings.TrimSpace(l) {
				t.Fatalf("bad link line %q", l)
			}
			_ = label(l)
		}
	})
}
