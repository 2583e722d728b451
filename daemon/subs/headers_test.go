package subs

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseUserinfo(t *testing.T) {
	tests := []struct {
		in   string
		want Userinfo
		ok   bool
	}{
		{"upload=1024; download=2048; total=10737418240; expire=1767225600",
			Userinfo{Upload: 1024, Download: 2048, Total: 10737418240, Expire: time.Unix(1767225600, 0).UTC()}, true},
		{"upload=0;download=5;total=0;expire=0", Userinfo{Download: 5}, true},
		{" Upload = 1.5e3 ; DOWNLOAD=7 ", Userinfo{Upload: 1500, Download: 7}, true},
		{"upload=-1; download=x; total=; expire=99999999999999", Userinfo{}, false},
		{"", Userinfo{}, false},
		{"foo=1; bar", Userinfo{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseUserinfo(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseUserinfo(%q) = %+v %v, want %+v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	u, _ := ParseUserinfo("upload=1; download=2; total=3; expire=1767225600")
	if back, _ := ParseUserinfo(u.String()); back != u {
		t.Errorf("String() does not read back: %q", u.String())
	}
}

func TestParseInterval(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"12": 12 * time.Hour, "1": time.Hour, "0.5": 30 * time.Minute, "0.01": 10 * time.Minute,
		"0": 0, "-3": 0, "x": 0, "": 0, "NaN": 0, "100000": 0,
	} {
		if got := ParseInterval(in); got != want {
			t.Errorf("ParseInterval(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestParseText(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                   "plain",
		"base64:0J/RgNC40LLQtdGC": "Привет",
		"base64:!!!":              "base64:!!!",
		"a\x1b[31mred":            "a[31mred",
		strings.Repeat("x", 300):  strings.Repeat("x", 200) + "…",
	} {
		if got := ParseText(in, 200); got != want {
			t.Errorf("ParseText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRefusal(t *testing.T) {
	tests := []struct {
		headers map[string]string
		sent    bool
		want    string
	}{
		{map[string]string{}, true, ""},
		{map[string]string{"X-Hwid-Max-Devices-Reached": "true", "X-Hwid-Limit": "true"}, true, "device limit is reached"},
		{map[string]string{"X-Hwid-Not-Supported": "true"}, false, "set device_headers '1'"},
		{map[string]string{"X-Hwid-Not-Supported": "true"}, true, "refused this client's device headers"},
		{map[string]string{"X-Hwid-Limit": "true"}, true, "x-hwid-limit"},
		{map[string]string{"X-Hwid-Active": "true"}, true, ""},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.headers {
			h.Set(k, v)
		}
		got := refusal(h.Get, tt.sent)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("refusal(%v, %v) = %q, want %q", tt.headers, tt.sent, got, tt.want)
		}
	}
}

func FuzzParseUserinfo(f *testing.F) {
	f.Add("upload=1; download=2; total=3; expire=4")
	f.Add("upload=1e308;expire=-0")
	f.Fuzz(func(t *testing.T, s string) {
		u, ok := ParseUserinfo(s)
		if u.Upload < 0 || u.Download < 0 || u.Total < 0 {
			t.Fatalf("negative: %+v", u)
		}
		if ok {
			if back, _ := ParseUserinfo(u.String()); back != u {
				t.Fatalf("%q: %+v reads back as %+v", s, u, back)
			}
		}
		_ = ParseInterval(s)
		_ = ParseText(s, 50)
	})
}
