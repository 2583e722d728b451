package lists

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func TestMerge(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, nil},
		{"one", []string{"91.108.4.0/22"}, []string{"91.108.4.0/22"}},
		{"duplicates", []string{"91.108.4.0/22", "91.108.4.0/22"}, []string{"91.108.4.0/22"}},
		{"contained", []string{"91.108.4.0/22", "91.108.0.0/16", "91.108.5.7/32"}, []string{"91.108.0.0/16"}},
		{"adjacent siblings join", []string{"91.108.8.0/22", "91.108.12.0/22"}, []string{"91.108.8.0/21"}},
		{"adjacent non-siblings stay two", []string{"91.108.4.0/22", "91.108.8.0/22"}, []string{"91.108.4.0/22", "91.108.8.0/22"}},
		{"a run of four joins", []string{"91.108.16.0/22", "91.108.8.0/22", "91.108.20.0/22", "91.108.12.0/22"},
			[]string{"91.108.8.0/21", "91.108.16.0/21"}},
		{"overlap then adjacency", []string{"10.0.0.0/25", "10.0.0.64/26", "10.0.0.128/25"}, []string{"10.0.0.0/24"}},
		{"host bits ignored", []string{"91.108.4.9/22"}, []string{"91.108.4.0/22"}},
		{"sorted IPv4 then IPv6", []string{"2001:b28:f23d::/48", "149.154.160.0/20", "2001:67c:4e8::/48", "91.108.4.0/22"},
			[]string{"91.108.4.0/22", "149.154.160.0/20", "2001:67c:4e8::/48", "2001:b28:f23d::/48"}},
		{"IPv6 siblings", []string{"2001:b28:f23c::/48", "2001:b28:f23d::/48", "2001:b28:f23f::/48"},
			[]string{"2001:b28:f23c::/47", "2001:b28:f23f::/48"}},
		{"families never mix", []string{"0.0.0.0/1", "::/1"}, []string{"0.0.0.0/1", "::/1"}},
		{"whole IPv4 space", []string{"0.0.0.0/1", "128.0.0.0/1"}, []string{"0.0.0.0/0"}},
		{"top of the IPv4 space", []string{"255.255.255.255/32", "255.255.255.254/32"}, []string{"255.255.255.254/31"}},
		{"top of the IPv6 space", []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/128"},
			[]string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"}},
		{"odd range needs several prefixes", []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/30"},
			[]string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/30"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := make([]netip.Prefix, 0, len(tt.in))
			for _, s := range tt.in {
				in = append(in, netip.MustParsePrefix(s)) // not masked on purpose
			}
			got := Merge(in)
			if want := prefixes(t, tt.want...); !slices.Equal(got, want) {
				t.Fatalf("Merge(%v) = %v, want %v", tt.in, got, want)
			}
			// Any order of the input gives the same result.
			slices.Reverse(in)
			if again := Merge(in); !slices.Equal(again, got) {
				t.Fatalf("Merge of the reversed input = %v, want %v", again, got)
			}
		})
	}
}

// TestMergeRandom checks Merge against the addresses themselves: within 10.0.0.0/22,
// every address is covered by the output exactly when it was covered by the input, the
// output prefixes neither overlap nor could be joined, and they come sorted.
func TestMergeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := netip.MustParseAddr("10.0.0.0").As4()
	addrAt := func(i int) netip.Addr {
		b := base
		b[2], b[3] = byte(i>>8), byte(i)
		return netip.AddrFrom4(b)
	}
	for round := range 300 {
		var in []netip.Prefix
		for range 1 + rng.IntN(12) {
			in = append(in, netip.PrefixFrom(addrAt(rng.IntN(1024)), 22+rng.IntN(11)).Masked())
		}
		out := Merge(in)
		for i := range 1024 {
			a := addrAt(i)
			inIn := slices.ContainsFunc(in, func(p netip.Prefix) bool { return p.Contains(a) })
			inOut := slices.ContainsFunc(out, func(p netip.Prefix) bool { return p.Contains(a) })
			if inIn != inOut {
				t.Fatalf("round %d: %v in input %v, in Merge output %v: %v vs %v", round, a, inIn, inOut, in, out)
			}
		}
		for i := 1; i < len(out); i++ {
			prev, cur := out[i-1], out[i]
			if prev.Overlaps(cur) || prev.Addr().Compare(cur.Addr()) >= 0 {
				t.Fatalf("round %d: Merge output %v not sorted or overlapping", round, out)
			}
			if prev.Bits() == cur.Bits() && lastAddr(prev).Next() == cur.Addr() &&
				netip.PrefixFrom(prev.Addr(), prev.Bits()-1).Masked().Addr() == prev.Addr() {
				t.Fatalf("round %d: Merge output %v has joinable siblings %v and %v", round, out, prev, cur)
			}
		}
	}
}

func TestSplit(t *testing.T) {
	v4, v6 := Split(prefixes(t, "2001:db8::/32", "91.108.4.0/22", "::ffff:149.154.160.0/116"))
	if want := prefixes(t, "91.108.4.0/22", "149.154.160.0/20"); !slices.Equal(v4, want) {
		t.Errorf("v4 = %v, want %v", v4, want)
	}
	if want := prefixes(t, "2001:db8::/32"); !slices.Equal(v6, want) {
		t.Errorf("v6 = %v, want %v", v6, want)
	}
}
