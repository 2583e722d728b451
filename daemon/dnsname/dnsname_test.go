package dnsname

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{in: "T.Me", want: "t.me"},
		{in: "*.telegram.org.", want: "telegram.org"},
		{in: ".example.org", want: "example.org"},
		{in: "*", err: "every domain"},
		{in: "", err: "every domain"},
		{in: "org", err: "top-level domain alone"},
		{in: "*.org", err: "top-level domain alone"},
		{in: "a.*.org", err: "only a leading"},
		{in: "203.0.113.1", err: "IP address"},
		{in: "a/b.org", err: "not a host name"},
		{in: "a#b.org", err: "not a host name"},
		{in: strings.Repeat("a.", 127) + "org", err: "longer than 253"},
	} {
		got, err := Normalize(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Normalize(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestCoveredBy(t *testing.T) {
	if !CoveredBy("cdn.T.me.", "t.me") || !CoveredBy("t.me", "t.me") || CoveredBy("at.me", "t.me") || CoveredBy("me", "t.me") {
		t.Error("CoveredBy does not follow dnsmasq's subdomain rule")
	}
}
