package netcfg

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func prefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func rangeStrings(rs []addrRange) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.first.String()+"-"+r.last.String())
	}
	return out
}

func TestMergeRanges(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, nil},
		{"one", []string{"203.0.113.0/24"}, []string{"203.0.113.0-203.0.113.255"}},
		{"unmasked input", []string{"203.0.113.7/24"}, []string{"203.0.113.0-203.0.113.255"}},
		{"adjacent halves", []string{"203.0.113.128/25", "203.0.113.0/25"}, []string{"203.0.113.0-203.0.113.255"}},
		{"contained", []string{"198.51.100.0/24", "198.51.100.5/32", "198.51.100.0/24"}, []string{"198.51.100.0-198.51.100.255"}},
		{"adjacent hosts", []string{"192.0.2.2/32", "192.0.2.1/32"}, []string{"192.0.2.1-192.0.2.2"}},
		{"gap kept", []string{"192.0.2.1/32", "192.0.2.3/32"}, []string{"192.0.2.1-192.0.2.1", "192.0.2.3-192.0.2.3"}},
		{"whole space", []string{"0.0.0.0/0", "203.0.113.0/24"}, []string{"0.0.0.0-255.255.255.255"}},
		{"top", []string{"255.255.255.255/32", "255.255.255.254/32"}, []string{"255.255.255.254-255.255.255.255"}},
		{"ipv6", []string{"2001:db8:3::/64", "2001:db8:3::/48", "2001:db8:4::/48"}, []string{"2001:db8:3::-2001:db8:4:ffff:ffff:ffff:ffff:ffff"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := rangeStrings(mergeRanges(prefixes(t, tc.in...))); !slices.Equal(got, tc.want) {
				t.Errorf("mergeRanges(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestSetElements(t *testing.T) {
	els := setElements(mergeRanges(prefixes(t, "192.0.2.0/24", "255.255.255.255/32")))
	var got []string
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		s := a.String()
		if e.IntervalEnd {
			s = "end " + s
		}
		got = append(got, s)
	}
	want := []string{"192.0.2.0", "end 192.0.3.0", "255.255.255.255"} // no end past the top
	if !slices.Equal(got, want) {
		t.Errorf("setElements = %v, want %v", got, want)
	}
}

func TestSplitFamily(t *testing.T) {
	if _, err := splitFamily(prefixes(t, "2001:db8::/32"), true); err == nil {
		t.Error("IPv6 prefix accepted as IPv4")
	}
	if _, err := splitFamily([]netip.Prefix{{}}, true); err == nil {
		t.Error("zero prefix accepted")
	}
	got, err := splitFamily(prefixes(t, "::ffff:203.0.113.0/120"), true)
	if err != nil || len(got) != 1 || got[0] != netip.MustParsePrefix("203.0.113.0/24") {
		t.Errorf("mapped prefix: %v, %v", got, err)
	}
}

// FuzzMergeRanges checks that merging keeps exactly the addresses covered and
// yields sorted, disjoint, non-adjacent ranges.
func FuzzMergeRanges(f *testing.F) {
	f.Add("203.0.113.0/25 203.0.113.128/25 198.51.100.5/32")
	f.Add("0.0.0.0/0 255.255.255.255/32")
	f.Add("2001:db8:3::/64 2001:db8:3::1/128 ::/0")
	f.Add("192.0.2.1/32 192.0.2.3/32 192.0.2.2/31")
	f.Fuzz(func(t *testing.T, list string) {
		var v4, v6 []netip.Prefix
		for _, field := range strings.Fields(list) {
			p, err := netip.ParsePrefix(field)
			if err != nil || p.Addr().Zone() != "" {
				continue
			}
			if p.Addr().Is4() {
				v4 = append(v4, p)
			} else {
				v6 = append(v6, p)
			}
		}
		for _, ps := range [][]netip.Prefix{v4, v6} {
			rs := mergeRanges(ps)
			for i, r := range rs {
				if r.first.Compare(r.last) > 0 {
					t.Fatalf("range %v reversed", r)
				}
				if i > 0 {
					next := rs[i-1].last.Next()
					if !next.IsValid() || next.Compare(r.first) >= 0 {
						t.Fatalf("ranges %v and %v overlap or touch", rs[i-1], r)
					}
				}
			}
			covered := func(a netip.Addr) bool {
				for _, r := range rs {
					if r.first.Compare(a) <= 0 && a.Compare(r.last) <= 0 {
						return true
					}
				}
				return false
			}
			for _, p := range ps {
				for _, a := range []netip.Addr{p.Masked().Addr(), lastAddr(p)} {
					if !covered(a) {
						t.Fatalf("%s of %s not covered by %v", a, p, rangeStrings(rs))
					}
				}
			}
			for _, r := range rs {
				for _, a := range []netip.Addr{r.first, r.last} {
					in := false
					for _, p := range ps {
						in = in || p.Contains(a)
					}
					if !in {
						t.Fatalf("%s in %v but in no prefix", a, r)
					}
				}
			}
		}
	})
}

func TestSpecValidation(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Spec)
		wantErr string
	}{
		{"valid", func(*Spec) {}, ""},
		{"no tun name", func(s *Spec) { s.TunName = "" }, "tun name"},
		{"long tun name", func(s *Spec) { s.TunName = "a-very-long-name0" }, "tun name"},
		{"zero mark", func(s *Spec) { s.Mark = 0 }, "mark: must not be 0"},
		{"mark outside mask", func(s *Spec) { s.Mask = 0xff }, "outside mask"},
		{"bypass matches mark", func(s *Spec) { s.BypassMark = 0x300000 }, "bypass mark"},
		{"main table", func(s *Spec) { s.Table = 254 }, "reserved"},
		{"priority 1", func(s *Spec) { s.RulePriority = 1 }, "rule priority"},
		{"ipv6 target with ipv6 off", func(s *Spec) { s.IPv6 = false }, "IPv6 off"},
		{"v4 list holds v6", func(s *Spec) { s.Targets4 = append(s.Targets4, s.Targets6...) }, "targets4"},
		{"small mtu for ipv6", func(s *Spec) { s.MTU = 1000 }, "1280"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testSpec()
			tc.change(&s)
			got, err := s.withDefaults()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if err == nil && (got.MTU != DefaultMTU || got.TxQueueLen != DefaultTxQueueLen || got.TunAddr4 != DefaultTunAddr4 || got.Mask != got.Mark) {
				t.Errorf("defaults not applied: %+v", got)
			}
		})
	}
}
