package lists

import (
	"slices"
	"strings"
	"testing"
)

func TestParseDomains(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
		err      string // substring; "" = success
	}{
		{name: "plain", in: "t.me\ntelegram.org\n", want: []string{"t.me", "telegram.org"}},
		{name: "normalised", in: "\xef\xbb\xbf  *.Telegram.ORG. # web\r\n.t.me ; links\n\nT.ME\n", want: []string{"t.me", "telegram.org"}},
		{name: "underscore and punycode", in: "_dmarc.example.org\nxn--d1acufc.xn--p1ai\n", want: []string{"_dmarc.example.org", "xn--d1acufc.xn--p1ai"}},
		{name: "wildcard all", in: "t.me\n*\n", err: "line 2: \"*\" matches every domain"},
		{name: "dot alone", in: ".\n", err: "matches every domain"},
		{name: "inner wildcard", in: "a.*.org\n", err: "only a leading"},
		{name: "tld only", in: "com\n", err: "top-level domain alone"},
		{name: "tld wildcard", in: "*.com\n", err: "top-level domain alone"},
		{name: "ip address", in: "192.0.2.1\n", err: "IP address"},
		{name: "unicode", in: "пример.рф\n", err: "punycode"},
		{name: "space inside", in: "exa mple.org\n", err: "not a host name"},
		{name: "empty label", in: "a..org\n", err: "empty label"},
		{name: "hyphen", in: "-a.org\n", err: "starting or ending"},
		{name: "long label", in: strings.Repeat("a", 64) + ".org\n", err: "longer than 63"},
		{name: "html", in: "<html><body>blocked</body></html>", err: "HTML"},
		{name: "empty", in: "# nothing\n\n", err: "no domains"},
		{name: "not utf8", in: "a.org\n\xff\n", err: "UTF-8"},
		{name: "cut last line", in: "a.org\nb.", err: "last line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDomains([]byte(tt.in), DomainOptions{})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q (got %q)", err, tt.err, got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseDomainsLimits(t *testing.T) {
	in := "a.org\nb.org\nc.org\n"
	if _, err := ParseDomains([]byte(in), DomainOptions{MaxEntries: 2}); err == nil || !strings.Contains(err.Error(), "more than 2 domains") {
		t.Errorf("entries cap: %v", err)
	}
	if _, err := ParseDomains([]byte(in), DomainOptions{MaxBytes: 10}); err == nil || !strings.Contains(err.Error(), "10-byte limit") {
		t.Errorf("size cap: %v", err)
	}
	if _, err := ParseDomains([]byte(in), DomainOptions{MaxEntries: 3, MaxBytes: int64(len(in))}); err != nil {
		t.Errorf("exactly at the caps: %v", err)
	}
}

func TestCoveredBy(t *testing.T) {
	for _, tt := range []struct {
		name, domain string
		want         bool
	}{
		{"t.me", "t.me", true},
		{"cdn.T.ME.", "t.me", true},
		{"at.me", "t.me", false},
		{"me", "t.me", false},
	} {
		if got := CoveredBy(tt.name, tt.domain); got != tt.want {
			t.Errorf("CoveredBy(%q, %q) = %v", tt.name, tt.domain, got)
		}
	}
}

func TestCatalogueDomains(t *testing.T) {
	want := map[string][]string{
		"telegram": {"t.me", "telegram.org", "telegram.me", "telesco.pe", "tdesktop.com", "telegra.ph", "cdn-telegram.org"},
		"whatsapp": {"whatsapp.com", "whatsapp.net", "wa.me"},
		"signal":   {"signal.org"},
		"discord":  {"discord.com", "discord.gg", "discordapp.com", "discordapp.net", "discord.media"},
		"viber":    {"viber.com"},
	}
	if got := ServiceNames(); !slices.Equal(got, []string{"telegram", "whatsapp", "signal", "discord", "viber"}) {
		t.Errorf("ServiceNames() = %q", got)
	}
	for name, domains := range want {
		e, ok := Lookup(name)
		if !ok {
			t.Errorf("%s is not in the catalogue", name)
			continue
		}
		for _, d := range domains {
			if !slices.Contains(e.Domains, d) {
				t.Errorf("%s lacks domain %s", name, d)
			}
		}
	}
}

func FuzzParseDomains(f *testing.F) {
	f.Add([]byte("t.me\n*.telegram.org. # c\r\n"))
	f.Add([]byte("*\n"))
	f.Add([]byte("com"))
	f.Add([]byte("<html>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseDomains(data, DomainOptions{MaxEntries: 100})
		if err != nil {
			return
		}
		if len(got) == 0 || len(got) > 100 || !slices.IsSorted(got) {
			t.Fatalf("bad result %q", got)
		}
		for _, d := range got {
			// Every result is canonical, and safe to put in dnsmasq's configuration.
			if n, err := NormalizeDomain(d); err != nil || n != d {
				t.Fatalf("%q is not canonical: %q, %v", d, n, err)
			}
			if strings.ContainsAny(d, "/#\n\r *") || !strings.Contains(d, ".") {
				t.Fatalf("unsafe domain %q", d)
			}
		}
	})
}
