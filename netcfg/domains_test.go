package netcfg

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDomainSetsExpire: what dnsmasq adds to a domain set (as `nft add element`) is seen
// by DomainAddrs and leaves by itself after DomainTimeout.
func TestDomainSetsExpire(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		s.DomainTimeout = 2 * time.Second
		n := apply(t, s)
		tbl := listTable(t)
		for _, name := range []string{SetDst4DNS, SetDst6DNS} {
			if !slices.Contains(tbl.sets[name].Flags, "timeout") {
				t.Errorf("set %s flags %v, want timeout", name, tbl.sets[name].Flags)
			}
		}
		run(t, "nft", "add", "element", "inet", TableName, SetDst4DNS, "{ 203.0.113.7 }")
		run(t, "nft", "add", "element", "inet", TableName, SetDst6DNS, "{ 2001:db8:5::7 }")
		got, err := n.DomainAddrs()
		must(t, err)
		want := []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8:5::7")}
		if !slices.Equal(got, want) {
			t.Fatalf("DomainAddrs = %v, want %v", got, want)
		}
		deadline := time.Now().Add(20 * time.Second)
		for len(got) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("entries %v still there long after the 2s timeout", got)
			}
			time.Sleep(200 * time.Millisecond)
			got, err = n.DomainAddrs()
			must(t, err)
		}
	})
}

// TestRefreshDomainAddrs: a refresh restarts the timeout of an element that is there
// (dnsmasq's own add does not) and adds one that is not.
func TestRefreshDomainAddrs(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		s.DomainTimeout = time.Hour
		n := apply(t, s)
		a, b := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8:5::8")
		run(t, "nft", "add", "element", "inet", TableName, SetDst4DNS, "{ 203.0.113.7 }")
		left := func(addr netip.Addr) time.Duration {
			t.Helper()
			set := n.objs.dev.dst4DNS
			if addr.Is6() {
				set = n.objs.dev.dst6DNS
			}
			els, err := n.nft.GetSetElements(set)
			must(t, err)
			for _, e := range els {
				if got, _ := netip.AddrFromSlice(e.Key); got == addr {
					return e.Expires
				}
			}
			return -1
		}
		before := left(a)
		if before <= 0 || before > time.Hour {
			t.Fatalf("expires in %v after the add", before)
		}
		for left(a) > before-1500*time.Millisecond { // let a second or two of its life pass
			time.Sleep(100 * time.Millisecond)
		}
		must(t, n.RefreshDomainAddrs([]netip.Addr{a, b}))
		if after := left(a); after <= before-time.Second/2 {
			t.Errorf("after a refresh the element expires in %v, before it was %v: not restarted", after, before)
		}
		if left(b) <= 0 {
			t.Errorf("refresh did not add a missing element")
		}
	})
}

// TestSetDevices: the device sets get their contents and mark_new switches between
// "every device" and "only the included ones" without losing the marking state.
func TestSetDevices(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		s.Exclude = Devices{Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.30/32")}}
		n := apply(t, s)
		if got := listTable(t).rules[chainMarkNew]; got != 6 {
			t.Fatalf("mark_new has %d rules, want 6 (2 bypass, 3 exclude, 1 goto)", got)
		}
		mac, _ := net.ParseMAC("02:00:00:00:00:0a")
		must(t, n.SetDevices(Devices{
			Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28"), netip.MustParsePrefix("2001:db8:7::/64")},
			MACs:     []net.HardwareAddr{mac},
		}, Devices{}))
		out := run(t, "nft", "list", "table", "inet", TableName)
		for _, want := range []string{"192.0.2.0/28", "2001:db8:7::/64", "02:00:00:00:00:0a", "ether saddr @incl_mac goto mark_dst", "ip saddr @excl4 return"} {
			if !strings.Contains(out, want) {
				t.Errorf("table lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "192.0.2.30") {
			t.Errorf("old exclude still there:\n%s", out)
		}
		if got := listTable(t).rules[chainMarkNew]; got != 8 {
			t.Errorf("mark_new has %d rules with includes, want 8", got)
		}
		must(t, n.SetMarking(false))
		must(t, n.SetDevices(Devices{}, Devices{}))
		if got := listTable(t).rules[chainMarkNew]; got != 0 {
			t.Errorf("SetDevices turned marking back on: %d rules", got)
		}
		must(t, n.SetMarking(true))
		if got := listTable(t).rules[chainMarkNew]; got != 6 {
			t.Errorf("mark_new has %d rules without includes, want 6", got)
		}
	})
}
