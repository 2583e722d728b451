package control

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/lists"
)

func TestResolvedLog(t *testing.T) {
	var r resolvedLog
	a, b := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")
	r.record("web.telegram.org", []netip.Addr{a})
	r.record("discord.com", []netip.Addr{b, a}) // a now belongs to discord.com
	if got := r.lookup([]netip.Addr{a, b, netip.MustParseAddr("203.0.113.3")}); !slices.Equal(got, []string{"discord.com", "discord.com"}) {
		t.Errorf("lookup = %q", got)
	}
	for i := range maxResolved + 10 {
		r.record("x.org", []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})})
	}
	if len(r.names) != maxResolved || len(r.order) != maxResolved {
		t.Errorf("log holds %d/%d entries, cap %d", len(r.names), len(r.order), maxResolved)
	}
	if got := r.lookup([]netip.Addr{b}); len(got) != 0 {
		t.Errorf("oldest entry not dropped: %q", got)
	}
}

func TestListSourcesDomains(t *testing.T) {
	cfg := &config.Config{
		Services: []config.Service{{Name: "signal", Enabled: true}, {Name: "viber", Enabled: false}, {Name: "discord", Enabled: true, DomainURL: "https://example.org/discord.lst"}},
		Customs:  []config.Custom{{Name: "mine", Domains: []string{"example.org"}, DomainURLs: []string{"https://example.org/d.lst"}}},
	}
	srcs := listSources(cfg)
	sig, _ := lists.Lookup("signal")
	if len(srcs) != 5 || srcs[0].Name != "signal" || !slices.Equal(srcs[0].Domains, sig.Domains) || len(srcs[0].Embedded) != 0 {
		t.Fatalf("sources %+v", srcs)
	}
	if srcs[2].Name != "discord#domains" || srcs[2].URL != "https://example.org/discord.lst" || !srcs[2].DomainList {
		t.Errorf("service domain_url: %+v", srcs[2])
	}
	srcs = append(srcs[:1], srcs[3:]...)
	if srcs[1].Name != "mine" || !slices.Equal(srcs[1].Domains, []string{"example.org"}) {
		t.Errorf("custom domains: %+v", srcs[1])
	}
	if srcs[2].URL != "https://example.org/d.lst" || !srcs[2].DomainList {
		t.Errorf("domain list URL: %+v", srcs[2])
	}
}

func TestDevicesAndProbe(t *testing.T) {
	d := devices([]config.Device{{Prefix: netip.MustParsePrefix("192.0.2.0/28")}, {MAC: "aa:bb:cc:dd:ee:ff"}})
	if len(d.Prefixes) != 1 || len(d.MACs) != 1 || d.MACs[0].String() != "aa:bb:cc:dd:ee:ff" {
		t.Errorf("devices = %+v", d)
	}
	if got := probeDomain([]string{"a.org", "discord.com", "t.me", "telegram.org"}); got != "telegram.org" {
		t.Errorf("probeDomain = %q", got)
	}
	if got := probeDomain([]string{"b.org", "a.org"}); got != "b.org" {
		t.Errorf("probeDomain = %q", got)
	}
}
