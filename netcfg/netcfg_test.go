package netcfg

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
)

func testSpec() Spec {
	return Spec{
		TunName:      "tgt0",
		LANIfaces:    []string{"lan0", "lan1"},
		IPv6:         true,
		Mark:         0x100000,
		BypassMark:   0x200000,
		Table:        7470,
		RulePriority: 7470,
		TProxyPort:   7477, // netcfg only points at it: no listener needed
		Targets4:     []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		Targets6:     []netip.Prefix{netip.MustParsePrefix("2001:db8:3::/64")},
		Bypass:       []netip.Prefix{netip.MustParsePrefix("198.51.100.6/32"), netip.MustParsePrefix("2001:db8:2::6/128")},
	}
}

func runHelper(role string) int {
	switch role {
	case "apply-and-hang", "apply-block-and-hang":
		s := testSpec()
		s.Block = role == "apply-block-and-hang"
		if _, err := Apply(context.Background(), s); err != nil {
			fmt.Fprintln(os.Stderr, "apply:", err)
			return 1
		}
		fmt.Println("READY")
		time.Sleep(3 * time.Minute) // killed long before
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 2
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nftState is table inet tgtun as `nft -j` lists it.
type nftState struct {
	present bool
	chains  map[string]nftChain
	sets    map[string]nftSet
	rules   map[string]int // per chain
}

type nftChain struct {
	Type, Hook string
	Prio       int
}

type nftSet struct {
	Type  string
	Flags []string
	Elem  []json.RawMessage
}

func listTable(t *testing.T) nftState {
	t.Helper()
	out, err := exec.Command("nft", "-j", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file") {
			return nftState{}
		}
		t.Fatalf("nft -j list table inet %s: %v\n%s", TableName, err, out)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("parse nft json: %v\n%s", err, out)
	}
	st := nftState{present: true, chains: map[string]nftChain{}, sets: map[string]nftSet{}, rules: map[string]int{}}
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			var named struct{ Name, Chain string }
			_ = json.Unmarshal(raw, &named)
			switch kind {
			case "chain":
				var c nftChain
				must(t, json.Unmarshal(raw, &c))
				if _, dup := st.chains[named.Name]; dup {
					t.Errorf("chain %s listed twice", named.Name)
				}
				st.chains[named.Name] = c
			case "set":
				var s nftSet
				must(t, json.Unmarshal(raw, &s))
				st.sets[named.Name] = s
			case "rule":
				st.rules[named.Chain]++
			}
		}
	}
	return st
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// elements renders a set's elements as nft prints them: "a.b.c.d/n" or "a-b".
func (s nftSet) elements(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, raw := range s.Elem {
		var v struct {
			Prefix *struct {
				Addr string
				Len  int
			}
			Range []string
		}
		var plain string
		switch {
		case json.Unmarshal(raw, &plain) == nil:
			out = append(out, plain)
		case json.Unmarshal(raw, &v) == nil && v.Prefix != nil:
			out = append(out, fmt.Sprintf("%s/%d", v.Prefix.Addr, v.Prefix.Len))
		case v.Range != nil:
			out = append(out, strings.Join(v.Range, "-"))
		default:
			t.Fatalf("unknown set element %s", raw)
		}
	}
	return out
}

// ourRules lists `ip rule` lines at priorities P-2 to P.
func ourRules(t *testing.T, family string, s Spec) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(run(t, "ip", family, "rule", "show"), "\n") {
		prio, _, _ := strings.Cut(line, ":")
		if p, err := strconv.Atoi(prio); err == nil && p >= s.RulePriority-2 && p <= s.RulePriority {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
	}
	return out
}

func tableRoutes(t *testing.T, family string, s Spec) []string {
	t.Helper()
	return routesOf(t, family, s.Table)
}

func routesOf(t *testing.T, family string, table int) []string {
	t.Helper()
	var out []string
	list, err := exec.Command("ip", family, "route", "show", "table", fmt.Sprint(table)).CombinedOutput()
	if err != nil {
		if strings.Contains(string(list), "FIB table does not exist") {
			return nil
		}
		t.Fatalf("ip %s route show table %d: %v\n%s", family, table, err, list)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		if line != "" {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
	}
	return out
}

func linkExists(t *testing.T, name string) bool {
	t.Helper()
	return exec.Command("ip", "link", "show", "dev", name).Run() == nil
}

func wantRules(s Spec) []string {
	out := []string{fmt.Sprintf("%d: from all iif %s lookup main proto %d", s.RulePriority-2, s.TunName, RouteProtocol)}
	if s.TProxyPort != 0 {
		out = append(out, fmt.Sprintf("%d: from all fwmark %#x/%#x ipproto tcp lookup %d proto %d", s.RulePriority-1, s.Mark, s.Mark, s.Table+1, RouteProtocol))
	}
	return append(out, fmt.Sprintf("%d: from all fwmark %#x/%#x lookup %d proto %d", s.RulePriority, s.Mark, s.Mark, s.Table, RouteProtocol))
}

// wantTCPRoutes is table T+1 with TCP on the kernel's stack.
func wantTCPRoutes(s Spec, family string) []string {
	if s.TProxyPort == 0 || (family == "-6" && !s.IPv6) {
		return nil
	}
	if family == "-6" {
		return []string{"local default dev lo proto 116 metric 1024 pref medium"}
	}
	return []string{"local default dev lo proto 116 scope host"}
}

// assertInstalledOnce checks one copy of everything Apply makes for s.
func assertInstalledOnce(t *testing.T, s Spec) {
	t.Helper()
	st := listTable(t)
	if !st.present {
		t.Fatalf("table inet %s missing", TableName)
	}
	wantSets := []string{setLANIfaces, setDst4, setBypass4, SetDst4DNS, setIncl4, setExcl4, setInclMAC, setExclMAC}
	wantMarkNew := 4 // bypass4, excl4, excl_mac, goto mark_dst
	if s.IPv6 {
		wantSets = append(wantSets, setDst6, setBypass6, SetDst6DNS, setIncl6, setExcl6)
		wantMarkNew = 6
	}
	var gotSets []string
	for name := range st.sets {
		gotSets = append(gotSets, name)
	}
	slices.Sort(gotSets)
	slices.Sort(wantSets)
	if !slices.Equal(gotSets, wantSets) {
		t.Errorf("sets = %v, want %v", gotSets, wantSets)
	}
	for _, name := range []string{setDst4, setDst6, setBypass4, setBypass6} {
		if set, ok := st.sets[name]; ok && !slices.Contains(set.Flags, "interval") {
			t.Errorf("set %s flags %v, want interval", name, set.Flags)
		}
	}
	if got := st.sets[setLANIfaces].elements(t); !slices.Equal(got, s.LANIfaces) {
		t.Errorf("lan_ifaces = %q, want %q", got, s.LANIfaces)
	}
	if got := st.chains[chainPrerouting]; got != (nftChain{Type: "filter", Hook: "prerouting", Prio: -149}) {
		t.Errorf("chain prerouting = %+v, want filter hook prerouting priority mangle + 1", got)
	}
	wantPre := 2 // restore the mark, jump to mark_new from the LAN
	if s.RouterTraffic && s.TProxyPort != 0 {
		wantPre += len(families(s.IPv6)) // the router's own TCP, from lo, to the listener
	}
	if st.rules[chainPrerouting] != wantPre || st.rules[chainMarkNew] != wantMarkNew {
		t.Errorf("rules per chain = %v, want prerouting %d, mark_new %d", st.rules, wantPre, wantMarkNew)
	}
	if got, ok := st.chains[chainOutput]; ok != s.RouterTraffic {
		t.Errorf("output chain present = %t, want %t", ok, s.RouterTraffic)
	} else if ok {
		if got != (nftChain{Type: "route", Hook: "output", Prio: -149}) {
			t.Errorf("chain output = %+v, want route hook output priority mangle + 1", got)
		}
		if st.rules[chainOutput] != 3 {
			t.Errorf("output chain has %d rules, want 3", st.rules[chainOutput])
		}
	}

	if got := ourRules(t, "-4", s); !slices.Equal(got, wantRules(s)) {
		t.Errorf("ip -4 rules = %q, want %q", got, wantRules(s))
	}
	want4Routes := []string{"default dev " + s.TunName + " proto 116"}
	if s.Block {
		want4Routes = append(want4Routes, "unreachable default proto 116 metric 2147483647")
	}
	if got := tableRoutes(t, "-4", s); !slices.Equal(got, want4Routes) {
		t.Errorf("ip -4 route table %d = %q, want %q", s.Table, got, want4Routes)
	}
	var want6Rules, want6Routes []string
	if s.IPv6 {
		want6Rules = wantRules(s)
		want6Routes = []string{"default dev " + s.TunName + " proto 116 metric 1024 pref medium"}
		if s.Block {
			want6Routes = append(want6Routes, "unreachable default dev lo proto 116 metric 2147483647 pref medium")
		}
	}
	if got := ourRules(t, "-6", s); !slices.Equal(got, want6Rules) {
		t.Errorf("ip -6 rules = %q, want %q", got, want6Rules)
	}
	if got := tableRoutes(t, "-6", s); !slices.Equal(got, want6Routes) {
		t.Errorf("ip -6 route table %d = %q, want %q", s.Table, got, want6Routes)
	}
	for _, fam := range []string{"-4", "-6"} {
		if got, want := routesOf(t, fam, s.Table+1), wantTCPRoutes(s, fam); !slices.Equal(got, want) {
			t.Errorf("ip %s route table %d = %q, want %q", fam, s.Table+1, got, want)
		}
	}

	link := run(t, "ip", "-d", "link", "show", "dev", s.TunName)
	for _, want := range []string{"mtu 1500", "qlen 1000", "state UNKNOWN", "tun type tun", ",UP"} {
		if !strings.Contains(link, want) {
			t.Errorf("ip link show %s lacks %q:\n%s", s.TunName, want, link)
		}
	}
	if addrs := run(t, "ip", "-4", "addr", "show", "dev", s.TunName); strings.Count(addrs, "inet ") != 1 || !strings.Contains(addrs, "inet 169.254.74.70/32") {
		t.Errorf("tun addresses:\n%s", addrs)
	}
	if v, err := readSysctl("/proc/sys/net/ipv4/conf/" + s.TunName + "/src_valid_mark"); err != nil || v != 1 {
		t.Errorf("src_valid_mark on %s = %d, %v; want 1", s.TunName, v, err)
	}
}

// assertNothingLeft checks that no table, rule, route or device remains.
func assertNothingLeft(t *testing.T, s Spec) {
	t.Helper()
	if listTable(t).present {
		t.Errorf("table inet %s left", TableName)
	}
	for _, fam := range []string{"-4", "-6"} {
		if got := ourRules(t, fam, s); len(got) != 0 {
			t.Errorf("ip %s rules left: %q", fam, got)
		}
		if got := tableRoutes(t, fam, s); len(got) != 0 {
			t.Errorf("ip %s routes left in table %d: %q", fam, s.Table, got)
		}
		if got := routesOf(t, fam, s.Table+1); len(got) != 0 {
			t.Errorf("ip %s routes left in table %d: %q", fam, s.Table+1, got)
		}
	}
	if linkExists(t, s.TunName) {
		t.Errorf("device %s left", s.TunName)
	}
}

func apply(t *testing.T, s Spec) *Net {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Apply(ctx, s)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func TestApplyAndClose(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		n := apply(t, s)
		assertInstalledOnce(t, s)
		st, err := n.Status()
		must(t, err)
		want := Status{TUNPresent: true, TUNUp: true, Table: true, Marking: true, Rules4: true, Rules6: true,
			Route4: true, Route6: true, Targets4: 1, Targets6: 1, Bypass4: 1, Bypass6: 1}
		if st != want {
			t.Errorf("Status = %+v\nwant %+v", st, want)
		}
		if f := n.TUN(); f == nil {
			t.Fatal("TUN() is nil")
		}
		must(t, n.Close())
		assertNothingLeft(t, s)
		st, err = ReadStatus(s)
		must(t, err)
		if st != (Status{}) {
			t.Errorf("Status after Close = %+v, want zero", st)
		}
		if err := n.SetTargets(nil, nil); err == nil {
			t.Error("SetTargets after Close succeeded")
		}
		must(t, n.Close()) // twice is fine
	})
}

func TestApplyTwiceLeavesOneCopy(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		s.RouterTraffic = true
		first := apply(t, s)
		second := apply(t, s)
		assertInstalledOnce(t, s)
		must(t, second.Close())
		assertNothingLeft(t, s)
		must(t, first.Close()) // superseded: nothing of it is left to remove
		assertNothingLeft(t, s)
	})
}

func TestCleanupAfterKill(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		kill := func() {
			cmd := helperProcess(t, "apply-and-hang")
			must(t, cmd.Process.Signal(syscall.SIGKILL))
			_ = cmd.Wait()
			st := listTable(t)
			if !st.present || len(ourRules(t, "-4", s)) != len(wantRules(s)) {
				t.Fatalf("the killed run left no state to clean up (table %t, rules %q)", st.present, ourRules(t, "-4", s))
			}
		}

		kill()
		must(t, Cleanup(context.Background(), s))
		assertNothingLeft(t, s)
		must(t, Cleanup(context.Background(), s)) // nothing there: no error

		kill()
		n := apply(t, s)
		assertInstalledOnce(t, s)
		must(t, n.Close())
		assertNothingLeft(t, s)
	})
}

func TestIPv6Off(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		s.IPv6 = false
		s.Targets6 = nil
		n := apply(t, s)
		assertInstalledOnce(t, s)
		if v, err := readSysctl("/proc/sys/net/ipv6/conf/" + s.TunName + "/disable_ipv6"); err != nil || v != 1 {
			t.Errorf("disable_ipv6 on %s = %d, %v; want 1", s.TunName, v, err)
		}
		if err := n.SetTargets(nil, []netip.Prefix{netip.MustParsePrefix("2001:db8:3::/64")}); err == nil {
			t.Error("SetTargets with IPv6 prefixes and IPv6 off succeeded")
		}
		st, err := n.Status()
		must(t, err)
		if st.Rules6 || st.Route6 || st.Targets6 != 0 || !st.Rules4 || !st.Route4 {
			t.Errorf("Status = %+v", st)
		}
	})
}

func TestRouterTrafficChain(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		for _, on := range []bool{true, false} {
			s := testSpec()
			s.RouterTraffic = on
			n := apply(t, s)
			assertInstalledOnce(t, s)
			st, err := n.Status()
			must(t, err)
			if st.RouterTraffic != on {
				t.Errorf("RouterTraffic %t: Status says %t", on, st.RouterTraffic)
			}
			must(t, n.Close())
		}
	})
}

func TestSetMarking(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		n := apply(t, s)
		for _, on := range []bool{false, false, true, true, false, true} {
			must(t, n.SetMarking(on))
			st, err := n.Status()
			must(t, err)
			want := 0
			if on {
				want = 6
			}
			tbl := listTable(t)
			if st.Marking != on || tbl.rules[chainMarkNew] != want {
				t.Errorf("SetMarking(%t): Status.Marking %t, %d rules in mark_new, want %d", on, st.Marking, tbl.rules[chainMarkNew], want)
			}
			// Restoring the conntrack mark never stops: established flows stay.
			if tbl.rules[chainPrerouting] != 2 {
				t.Errorf("SetMarking(%t): prerouting has %d rules, want 2", on, tbl.rules[chainPrerouting])
			}
		}
	})
}

func TestSetTargets(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		n := apply(t, s)
		pfx := func(ss ...string) []netip.Prefix {
			var out []netip.Prefix
			for _, s := range ss {
				out = append(out, netip.MustParsePrefix(s))
			}
			return out
		}
		tests := []struct {
			name         string
			v4, v6       []netip.Prefix
			want4, want6 []string
		}{
			{"overlapping and adjacent",
				pfx("203.0.113.0/25", "203.0.113.128/25", "203.0.113.64/26", "198.51.100.5/32", "198.51.100.0/24", "192.0.2.1/32", "192.0.2.2/32"),
				pfx("2001:db8:3::/64", "2001:db8:3::/48", "2001:db8:4::/48"),
				[]string{"192.0.2.1-192.0.2.2", "198.51.100.0/24", "203.0.113.0/24"},
				[]string{"2001:db8:3::-2001:db8:4:ffff:ffff:ffff:ffff:ffff"}},
			{"top of the address space", pfx("255.255.255.255/32", "240.0.0.0/4"), pfx("ff00::/8"),
				[]string{"240.0.0.0/4"}, []string{"ff00::/8"}},
			{"empty", nil, nil, nil, nil},
			{"replaced", pfx("203.0.113.10/32"), pfx("2001:db8:3::10/128"),
				[]string{"203.0.113.10"}, []string{"2001:db8:3::10"}},
		}
		for _, tc := range tests {
			must(t, n.SetTargets(tc.v4, tc.v6))
			tbl := listTable(t)
			if got := tbl.sets[setDst4].elements(t); !slices.Equal(got, tc.want4) {
				t.Errorf("%s: dst4 = %q, want %q", tc.name, got, tc.want4)
			}
			if got := tbl.sets[setDst6].elements(t); !slices.Equal(got, tc.want6) {
				t.Errorf("%s: dst6 = %q, want %q", tc.name, got, tc.want6)
			}
			st, err := n.Status()
			must(t, err)
			if st.Targets4 != len(tc.want4) || st.Targets6 != len(tc.want6) {
				t.Errorf("%s: Status counts %d/%d, want %d/%d", tc.name, st.Targets4, st.Targets6, len(tc.want4), len(tc.want6))
			}
		}

		// A rejected update leaves the previous contents whole.
		if err := n.SetTargets(append(pfx("203.0.113.0/24"), netip.Prefix{}), nil); err == nil {
			t.Error("SetTargets with an invalid prefix succeeded")
		}
		if got := listTable(t).sets[setDst4].elements(t); !slices.Equal(got, []string{"203.0.113.10"}) {
			t.Errorf("after a failed SetTargets dst4 = %q", got)
		}
		// The kernel rejects a batch as a whole: flush + add + a bad element.
		n.mu.Lock()
		n.nft.FlushSet(n.objs.dst4)
		must(t, queueElements(n.nft, n.objs.dst4, mergeRanges(pfx("192.0.2.0/24"))))
		must(t, n.nft.SetAddElements(n.objs.dst4, []nftables.SetElement{{Key: []byte{1, 2}}})) // wrong key length
		err := n.nft.Flush()
		n.mu.Unlock()
		if err == nil {
			t.Error("batch with a bad element succeeded")
		}
		if got := listTable(t).sets[setDst4].elements(t); !slices.Equal(got, []string{"203.0.113.10"}) {
			t.Errorf("after a failed batch dst4 = %q, want the old contents", got)
		}

		// Large lists fit in one batch.
		var big4 []netip.Prefix
		for i := range 30000 {
			big4 = append(big4, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), 32))
		}
		must(t, n.SetTargets(big4, pfx("2001:db8:3::/64")))
		st, err := n.Status()
		must(t, err)
		if st.Targets4 != 30000 || st.Targets6 != 1 {
			t.Errorf("large list: Status counts %d/%d, want 30000/1", st.Targets4, st.Targets6)
		}

		must(t, n.SetBypass(pfx("198.51.100.7/32", "198.51.100.6/32", "2001:db8:2::7/128")))
		tbl := listTable(t)
		if got := tbl.sets[setBypass4].elements(t); !slices.Equal(got, []string{"198.51.100.6/31"}) {
			t.Errorf("bypass4 = %q", got)
		}
		if got := tbl.sets[setBypass6].elements(t); !slices.Equal(got, []string{"2001:db8:2::7"}) {
			t.Errorf("bypass6 = %q", got)
		}
	})
}

func readSysctl(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(trimNewline(b)))
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// withUplink gives the test namespace a default route in the main table, so that a
// packet falling through tgtun's table would visibly leave by it.
func withUplink(t *testing.T) {
	t.Helper()
	run(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	run(t, "ip", "link", "set", "up1", "up")
	run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "up0")
	run(t, "ip", "-6", "addr", "add", "2001:db8:2::1/64", "dev", "up0", "nodad")
	run(t, "ip", "link", "set", "up0", "up")
	run(t, "ip", "route", "add", "default", "via", "198.51.100.254")
	run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:2::fe")
}

// refused tells an `ip route get` answer of an unreachable route (EHOSTUNREACH).
func refused(got string) bool { return strings.Contains(got, "No route to host") }

// routeOfMarked is `ip route get DST mark M`: where a marked packet goes, or the error.
func routeOfMarked(dst string, s Spec) string {
	out, err := exec.Command("ip", "route", "get", dst, "mark", fmt.Sprintf("%#x", s.Mark)).CombinedOutput()
	if err != nil {
		return "error: " + strings.TrimSpace(string(out))
	}
	return strings.TrimSpace(string(out))
}

// TestBlockSurvivesDeath: with Block, a killed run leaves marked traffic refused
// (unreachable), not routed by the main table; SetBlock(false) and Close remove it.
func TestBlockSurvivesDeath(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		withUplink(t)
		s := testSpec()
		s.Block = true
		cmd := helperProcess(t, "apply-block-and-hang")
		if got := routeOfMarked("203.0.113.10", s); !strings.Contains(got, "dev tgt0") {
			t.Fatalf("while running, a marked packet goes %q, want dev tgt0", got)
		}
		must(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		for _, dst := range []string{"203.0.113.10", "2001:db8:3::10"} {
			if got := routeOfMarked(dst, s); !refused(got) {
				t.Errorf("after kill -9 with Block, a marked packet to %s goes %q, want unreachable", dst, got)
			}
		}
		n := apply(t, s)
		assertInstalledOnce(t, s)
		st, err := n.Status()
		must(t, err)
		if !st.Block {
			t.Errorf("Status.Block = false with Block")
		}
		if m, err := n.Missing(); err != nil || len(m) != 0 {
			t.Errorf("Missing = %q, %v; want nothing", m, err)
		}
		// A rebuild: detach (as a crash would), marked traffic stays refused, apply again.
		must(t, n.Detach())
		if got := routeOfMarked("203.0.113.10", s); !refused(got) {
			t.Errorf("detached with Block, a marked packet goes %q, want unreachable", got)
		}
		n = apply(t, s)
		assertInstalledOnce(t, s)
		must(t, n.SetBlock(false))
		if m, err := n.Missing(); err != nil || len(m) != 0 {
			t.Errorf("Missing after SetBlock(false) = %q, %v; want nothing", m, err)
		}
		s.Block = false
		assertInstalledOnce(t, s)
		must(t, n.SetBlock(true))
		s.Block = true
		assertInstalledOnce(t, s)
		must(t, n.Close())
		assertNothingLeft(t, s)
		if got := routeOfMarked("203.0.113.10", s); !strings.Contains(got, "dev up0") {
			t.Errorf("after a clean stop a marked packet goes %q, want the main table's dev up0", got)
		}
	})
}

// TestMissing: what another program deletes is reported.
func TestMissing(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		n := apply(t, s)
		run(t, "nft", "flush", "ruleset")
		m, err := n.Missing()
		must(t, err)
		if !slices.Contains(m, "nft table inet tgtun") {
			t.Errorf("after nft flush ruleset Missing = %q", m)
		}
		run(t, "ip", "link", "del", s.TunName)
		m, err = n.Missing()
		must(t, err)
		if !slices.Contains(m, "tun tgt0") || !slices.Contains(m, "ipv4 route") {
			t.Errorf("after ip link del Missing = %q", m)
		}
	})
}

// TestCleanupKeepsOthersRules: another tool's rule at tgtun's priority and its route in
// tgtun's table number are not tgtun's to remove.
func TestCleanupKeepsOthersRules(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		withUplink(t)
		s := testSpec()
		run(t, "ip", "rule", "add", "pref", fmt.Sprint(s.RulePriority), "fwmark", "0x4/0x4", "lookup", fmt.Sprint(s.Table))
		run(t, "ip", "route", "add", "192.0.2.0/24", "dev", "up0", "table", fmt.Sprint(s.Table))
		otherRule := fmt.Sprintf("%d: from all fwmark 0x4/0x4 lookup %d", s.RulePriority, s.Table)
		n := apply(t, s)
		must(t, n.Close())
		must(t, Cleanup(context.Background(), s))
		if got := ourRules(t, "-4", s); !slices.Equal(got, []string{otherRule}) {
			t.Errorf("rules after Close = %q, want only the other tool's %q", got, otherRule)
		}
		if got := tableRoutes(t, "-4", s); !slices.Equal(got, []string{"192.0.2.0/24 dev up0 scope link"}) {
			t.Errorf("routes of table %d after Close = %q, want only the other tool's", s.Table, got)
		}
	})
}

// TestLowMTUWithoutIPv6: with IPv6 off the MTU may be 576..1279, where the kernel has no
// IPv6 settings for the device at all.
func TestLowMTUWithoutIPv6(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		s.IPv6 = false
		s.Targets6 = nil
		s.MTU = 576
		n := apply(t, s)
		if link := run(t, "ip", "link", "show", "dev", s.TunName); !strings.Contains(link, "mtu 576") {
			t.Errorf("ip link show %s:\n%s", s.TunName, link)
		}
		if m, err := n.Missing(); err != nil || len(m) != 0 {
			t.Errorf("Missing = %q, %v", m, err)
		}
		must(t, n.Close())
		assertNothingLeft(t, s)
	})
}

// TestWatchTable: a flushed ruleset is reported at once, without polling.
func TestWatchTable(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		apply(t, s)
		ctx, cancel := context.WithCancel(context.Background())
		deleted := make(chan struct{}, 10)
		watched := make(chan error, 1)
		go func() { watched <- WatchTable(ctx, func() { deleted <- struct{}{} }) }()
		// The monitor subscribes asynchronously: flush until a notification comes.
		deadline := time.Now().Add(20 * time.Second)
		for got := false; !got; {
			n := apply(t, s)
			run(t, "nft", "flush", "ruleset")
			select {
			case <-deleted:
				got = true
			case <-time.After(500 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatal("no notification of the deleted table within 20s")
				}
			}
			must(t, n.Close())
		}
		cancel()
		select {
		case err := <-watched:
			if err != nil {
				t.Errorf("WatchTable after cancel: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("WatchTable did not return after cancel")
		}
	})
}

// FuzzIsOurTable: any notification payload is judged without a panic.
func FuzzIsOurTable(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 10, 0, 1, 0, 't', 'g', 't', 'u', 'n', 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) { _ = isOurTable(b) })
}

// TestSetRouteDevice points table T at an interface proxy's device and back at the TUN:
// one default route per family, the device's "iif lookup main" rule only while it is
// routed to, strict rp_filter made loose on that device only, and Close removes all.
func TestSetRouteDevice(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		s := testSpec()
		run(t, "ip", "link", "add", "wgt0", "type", "veth", "peer", "name", "wgt1") // no dummy module everywhere
		run(t, "ip", "link", "set", "wgt0", "up")
		run(t, "ip", "link", "set", "wgt1", "up")
		run(t, "sysctl", "-qw", "net.ipv4.conf.wgt0.rp_filter=1", "net.ipv4.conf.lo.rp_filter=1")
		n := apply(t, s)
		devRule := fmt.Sprintf("%d: from all iif wgt0 lookup main proto %d", s.RulePriority-2, RouteProtocol)
		for _, dev := range []string{"wgt0", "wgt0", "", "wgt0", ""} {
			must(t, PrepareRouteDevice("wgt0"))
			must(t, n.SetRouteDevice(dev))
			want := dev
			if want == "" {
				want = s.TunName
			}
			for _, fam := range []string{"-4", "-6"} {
				routes := tableRoutes(t, fam, s)
				if len(routes) != 1 || !strings.HasPrefix(routes[0]+" ", "default dev "+want+" ") {
					t.Errorf("SetRouteDevice(%q): ip %s table routes %q, want one default dev %s", dev, fam, routes, want)
				}
				// TCP follows: into the device, or back to the listener (local via lo).
				tcpRoutes, wantTCP := routesOf(t, fam, s.Table+1), "local default dev lo "
				if dev != "" {
					wantTCP = "default dev " + dev + " "
				}
				if len(tcpRoutes) != 1 || !strings.HasPrefix(tcpRoutes[0]+" ", wantTCP) {
					t.Errorf("SetRouteDevice(%q): ip %s table %d routes %q, want one %q", dev, fam, s.Table+1, tcpRoutes, wantTCP)
				}
				if tproxied := strings.Contains(run(t, "nft", "list", "chain", "inet", TableName, chainMarkDst), "tproxy"); tproxied != (dev == "") {
					t.Errorf("SetRouteDevice(%q): mark_dst hands TCP to the listener: %t, want %t", dev, tproxied, dev == "")
				}
				rules := ourRules(t, fam, s)
				wantRules := wantRules(s)
				if dev != "" {
					wantRules = append(wantRules, devRule)
				}
				slices.Sort(rules)
				slices.Sort(wantRules)
				if !slices.Equal(rules, wantRules) {
					t.Errorf("SetRouteDevice(%q): ip %s rules %q, want %q", dev, fam, rules, wantRules)
				}
			}
			st, err := n.Status()
			must(t, err)
			if !st.Route4 || !st.Route6 || !st.Rules4 || !st.Rules6 {
				t.Errorf("SetRouteDevice(%q): status %+v, want routes and rules reported", dev, st)
			}
		}
		for path, want := range map[string]int{
			"/proc/sys/net/ipv4/conf/wgt0/rp_filter":      2,
			"/proc/sys/net/ipv4/conf/wgt0/src_valid_mark": 1,
			"/proc/sys/net/ipv4/conf/lo/rp_filter":        1,
		} {
			if got, err := readSysctl(path); err != nil || got != want {
				t.Errorf("%s = %d (%v), want %d", path, got, err, want)
			}
		}
		must(t, n.SetRouteDevice("wgt0"))
		must(t, n.Close())
		assertNothingLeft(t, s)
		if err := n.SetRouteDevice(""); err == nil {
			t.Error("SetRouteDevice after Close succeeded")
		}
	})
}

// TestDeviceSysctls: an interface proxy's device gets src_valid_mark 1 and a loose
// rp_filter while tgtun uses it, and its own values back when tgtun stops; a value
// the admin changed meanwhile stays, a device created again is another device, and
// nothing is changed after the restore.
func TestDeviceSysctls(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		addDev := func() {
			run(t, "ip", "link", "add", "wgt0", "type", "veth", "peer", "name", "wgt1")
			run(t, "sysctl", "-qw", "net.ipv4.conf.wgt0.rp_filter=1", "net.ipv4.conf.wgt0.src_valid_mark=0",
				"net.ipv4.conf.wgt1.rp_filter=1", "net.ipv4.conf.wgt1.src_valid_mark=0")
		}
		want := func(dev string, rp, svm int) {
			t.Helper()
			for path, w := range map[string]int{"/proc/sys/net/ipv4/conf/" + dev + "/rp_filter": rp, "/proc/sys/net/ipv4/conf/" + dev + "/src_valid_mark": svm} {
				if got, err := readSysctl(path); err != nil || got != w {
					t.Errorf("%s = %d (%v), want %d", path, got, err, w)
				}
			}
		}
		addDev()
		var d DeviceSysctls
		must(t, d.Prepare("wgt0"))
		must(t, d.Prepare("wgt0"))
		must(t, d.Prepare("wgt1"))
		want("wgt0", 2, 1)
		run(t, "sysctl", "-qw", "net.ipv4.conf.wgt1.rp_filter=0") // the admin's
		must(t, d.Restore())
		want("wgt0", 1, 0)
		want("wgt1", 0, 0)
		must(t, d.Prepare("wgt0"))
		want("wgt0", 1, 0) // after the restore: left alone

		var e DeviceSysctls
		must(t, e.Prepare("wgt0"))
		run(t, "ip", "link", "del", "wgt0")
		addDev()
		run(t, "sysctl", "-qw", "net.ipv4.conf.wgt0.rp_filter=2") // the new device's own
		must(t, e.Restore())
		want("wgt0", 2, 0)
		if err := e.Prepare("nosuchdev0"); err == nil {
			t.Error("Prepare of a missing device succeeded")
		}
	})
}

// TestWatchLinks: a device deleted and created again, and one going down and up, are
// reported by name as it happens, without polling.
func TestWatchLinks(t *testing.T) {
	inNetns(t, 0, func(t *testing.T, _ []string) {
		ctx, cancel := context.WithCancel(context.Background())
		names := make(chan string, 100)
		watched := make(chan error, 1)
		go func() { watched <- WatchLinks(ctx, func(name string) { names <- name }) }()
		// The subscription is asynchronous: change the device until a notification comes.
		expect := func(what string, change func()) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for {
				change()
				timeout := time.After(500 * time.Millisecond)
			wait:
				for {
					select {
					case n := <-names:
						if n == "wgt0" {
							return
						}
					case <-timeout:
						break wait
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("no notification for wgt0 (%s) within 20s", what)
				}
			}
		}
		expect("created", func() {
			_ = exec.Command("ip", "link", "del", "wgt0").Run()
			run(t, "ip", "link", "add", "wgt0", "type", "veth", "peer", "name", "wgt1")
		})
		expect("deleted", func() {
			_ = exec.Command("ip", "link", "add", "wgt0", "type", "veth", "peer", "name", "wgt1").Run()
			run(t, "ip", "link", "del", "wgt0")
		})
		run(t, "ip", "link", "add", "wgt0", "type", "veth", "peer", "name", "wgt1")
		expect("up", func() { run(t, "ip", "link", "set", "wgt0", "up") })
		expect("down", func() { run(t, "ip", "link", "set", "wgt0", "down") })
		cancel()
		select {
		case err := <-watched:
			if err != nil {
				t.Errorf("WatchLinks after cancel: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("WatchLinks did not return after cancel")
		}
	})
}
