package lists

import (
	"net/netip"
	"regexp"
	"slices"
	"testing"
	"time"
)

func TestCatalogue(t *testing.T) {
	entries := Catalogue()
	if len(entries) == 0 {
		t.Fatal("empty catalogue")
	}
	seen := map[string]bool{}
	name := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	for _, e := range entries {
		t.Run(e.Name, func(t *testing.T) {
			if !name.MatchString(e.Name) || seen[e.Name] {
				t.Fatalf("name %q is not a unique UCI section name", e.Name)
			}
			seen[e.Name] = true
			if e.Description == "" || e.Source == "" {
				t.Fatalf("entry %+v lacks a description or a source", e)
			}
			if _, err := time.Parse(time.DateOnly, e.Date); err != nil {
				t.Fatalf("date %q: %v", e.Date, err)
			}
			if len(e.Prefixes) == 0 && len(e.Domains) == 0 {
				t.Fatal("neither prefixes nor domains")
			}
			if len(e.Domains) == 0 {
				t.Fatal("no domains")
			}
			// The embedded list passes the rules a download must pass, untrusted.
			check := newChecker(ParseOptions{})
			for _, p := range e.Prefixes {
				if err := check.check(p); err != nil {
					t.Errorf("embedded prefix: %v", err)
				}
			}
			if !slices.Equal(Merge(e.Prefixes), e.Prefixes) {
				t.Errorf("prefixes are not merged")
			}
			got, ok := Lookup(e.Name)
			if !ok || !slices.Equal(got.Prefixes, e.Prefixes) || got.UpdateURL != e.UpdateURL {
				t.Errorf("Lookup(%q) = %+v, %v", e.Name, got, ok)
			}
		})
	}
	if _, ok := Lookup("nonexistent"); ok {
		t.Error("Lookup of an unknown name succeeded")
	}
}

// TestCatalogueKnownAddresses pins addresses each service is known to use, so an edit of
// the embedded files that loses them fails here.
func TestCatalogueKnownAddresses(t *testing.T) {
	tests := []struct {
		service string
		addrs   []string
	}{
		// health_target's default and the DC addresses the Telegram clients ship with.
		{"telegram", []string{"149.154.167.51", "149.154.175.50", "91.108.56.130", "2001:b28:f23d:f001::a", "2001:67c:4e8:f002::a"}},
		// Meta's edge (e.g. 157.240.x) and its IPv6 block.
		{"whatsapp", []string{"157.240.1.53", "31.13.72.52", "2a03:2880:f00c::1"}},
	}
	for _, tt := range tests {
		e, ok := Lookup(tt.service)
		if !ok {
			t.Fatalf("no catalogue entry %q", tt.service)
		}
		for _, s := range tt.addrs {
			a := netip.MustParseAddr(s)
			if !slices.ContainsFunc(e.Prefixes, func(p netip.Prefix) bool { return p.Contains(a) }) {
				t.Errorf("%s: %s is not covered by %v", tt.service, a, e.Prefixes)
			}
		}
	}
	if e, _ := Lookup("telegram"); e.UpdateURL != "https://core.telegram.org/resources/cidr.txt" {
		t.Errorf("telegram UpdateURL = %q", e.UpdateURL)
	}
}
