package netcfg

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const mainTable = unix.RT_TABLE_MAIN

func families(ipv6 bool) []int {
	if ipv6 {
		return []int{netlink.FAMILY_V4, netlink.FAMILY_V6}
	}
	return []int{netlink.FAMILY_V4}
}

func familyName(f int) string {
	if f == netlink.FAMILY_V6 {
		return "ipv6"
	}
	return "ipv4"
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func defaultDst(family int) *net.IPNet {
	if family == netlink.FAMILY_V6 {
		return prefixToIPNet(netip.MustParsePrefix("::/0"))
	}
	return prefixToIPNet(netip.MustParsePrefix("0.0.0.0/0"))
}

// RouteProtocol marks the rules and routes tgtun installs (`proto 116` in `ip rule` and
// `ip route`): Cleanup removes what carries it, never another tool's rule or route that
// happens to share the table number or priority.
const RouteProtocol = 116

// blockMetric is the preference of the unreachable default of fail_mode block: the
// lowest a 32-bit router's int carries through netlink, so the TUN's default route
// (metric 0, 1024 for IPv6) always wins while it exists.
const blockMetric = math.MaxInt32

// wantedRules are "priority P-2 iif <tun> lookup main" (replies coming out of
// the TUN carry the mark but must be forwarded by the main table, not looped
// back into the TUN), with TCP on the kernel's stack "priority P-1 fwmark M/Mask
// ipproto tcp lookup T+1" (tproxy.go), and "priority P fwmark M/Mask lookup T".
func wantedRules(s Spec, family int) []*netlink.Rule {
	fromTUN := netlink.NewRule()
	fromTUN.Family = family
	fromTUN.Priority = iifPriority(s)
	fromTUN.IifName = s.TunName
	fromTUN.Table = mainTable
	fromTUN.Protocol = RouteProtocol

	marked := netlink.NewRule()
	marked.Family = family
	marked.Priority = s.RulePriority
	mask := s.Mask
	marked.Mark = s.Mark
	marked.Mask = &mask
	marked.Table = s.Table
	marked.Protocol = RouteProtocol
	if s.TProxyPort != 0 {
		return []*netlink.Rule{tcpRule(s, family), fromTUN, marked}
	}
	return []*netlink.Rule{fromTUN, marked}
}

// iifPriority is P-2, where "iif <tun> lookup main" (and an interface proxy's device's)
// sits: before every rule that looks at the mark, since replies that come out of the
// TUN or the device carry it too.
func iifPriority(s Spec) int { return s.RulePriority - 2 }

// isOurRule tells a rule tgtun installed: it carries RouteProtocol. A rule of an older
// tgtun (without the protocol) is recognised by everything else it carries: the TUN's
// name, or tgtun's mark and mask with its table, at tgtun's priorities.
func isOurRule(s Spec, r netlink.Rule) bool {
	if r.Protocol == RouteProtocol {
		return true
	}
	switch r.Priority {
	case iifPriority(s):
		// iif <tun> or, while an interface proxy is routed to, iif <device>
		return r.IifName != "" && r.Table == mainTable
	case s.RulePriority - 1:
		if r.Table == tcpTable(s) && r.Mark == s.Mark && r.Mask != nil && *r.Mask == s.Mask {
			return true
		}
		// An older tgtun's iif rule sat here.
		// iif <tun> or, while an interface proxy is routed to, iif <device>
		return r.IifName != "" && r.Table == mainTable
	case s.RulePriority:
		return r.Table == s.Table && r.Mark == s.Mark && r.Mask != nil && *r.Mask == s.Mask
	}
	return false
}

// sameRule tells whether an installed rule is the one wanted.
func sameRule(a netlink.Rule, b *netlink.Rule) bool {
	am, bm := uint32(0), uint32(0)
	if a.Mask != nil {
		am = *a.Mask
	}
	if b.Mask != nil {
		bm = *b.Mask
	}
	return a.Protocol == b.Protocol && a.Priority == b.Priority && a.Table == b.Table &&
		a.IifName == b.IifName && a.Mark == b.Mark && am == bm && a.IPProto == b.IPProto
}

// blockRoute is fail_mode block's "unreachable default metric 4294967295 table T": with
// the TUN's route gone (the daemon died, a rebuild failed) marked packets are refused at
// once instead of falling through to the main table and leaving directly.
func blockRoute(s Spec, family int) *netlink.Route {
	return &netlink.Route{Table: s.Table, Dst: defaultDst(family), Family: family, Type: unix.RTN_UNREACHABLE,
		Priority: blockMetric, Protocol: RouteProtocol}
}

func isBlockRoute(r netlink.Route) bool {
	return r.Type == unix.RTN_UNREACHABLE && r.Priority == blockMetric && r.Protocol == RouteProtocol
}

// installRouting adds the TUN's default route (link nil: none, the blocking state
// alone), the rules and, with Block, the unreachable default. Rules and the block
// route that are already there (a rebuild keeps them) are kept.
func installRouting(s Spec, link netlink.Link) error {
	for _, fam := range families(s.IPv6) {
		if link != nil {
			route := &netlink.Route{LinkIndex: link.Attrs().Index, Table: s.Table, Dst: defaultDst(fam), Family: fam, Protocol: RouteProtocol}
			if err := netlink.RouteAdd(route); err != nil {
				return fmt.Errorf("add %s route default dev %s table %d: %w", familyName(fam), s.TunName, s.Table, err)
			}
		}
		if s.Block {
			if err := addBlockRoute(s, fam); err != nil {
				return err
			}
		}
		for _, r := range wantedRules(s, fam) {
			if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add %s rule %s: %w", familyName(fam), r, err)
			}
		}
	}
	if s.TProxyPort != 0 {
		return installTCPRouting(s)
	}
	return nil
}

func addBlockRoute(s Spec, fam int) error {
	if err := netlink.RouteAdd(blockRoute(s, fam)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s route unreachable default table %d: %w", familyName(fam), s.Table, err)
	}
	return nil
}

func delBlockRoute(s Spec, fam int) error {
	if err := netlink.RouteDel(blockRoute(s, fam)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete %s route unreachable default table %d: %w", familyName(fam), s.Table, err)
	}
	return nil
}

// unsupportedFamily reports a kernel without that address family.
func unsupportedFamily(err error) bool {
	return errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP)
}

// removeRouting deletes tgtun's rules and routes (see isOurRule, isOurRoute), in both
// families whatever the spec says (an earlier run may have had IPv6 on). With keep set,
// the rules and block route s wants stay: a rebuild keeps blocking while it runs.
func removeRouting(s Spec, keep bool) error {
	var errs []error
	tunIndex := 0
	if link, err := netlink.LinkByName(s.TunName); err == nil {
		tunIndex = link.Attrs().Index
	}
	for _, fam := range families(true) {
		rules, err := netlink.RuleList(fam)
		if err != nil {
			if !unsupportedFamily(err) {
				errs = append(errs, fmt.Errorf("list %s rules: %w", familyName(fam), err))
			}
			continue
		}
		wanted := wantedRules(s, fam)
		if !keep || (fam == netlink.FAMILY_V6 && !s.IPv6) {
			wanted = nil
		}
	rules:
		for _, r := range rules {
			if !isOurRule(s, r) {
				continue
			}
			for _, w := range wanted {
				if sameRule(r, w) {
					continue rules
				}
			}
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete %s rule %s: %w", familyName(fam), r, err))
			}
		}
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: s.Table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			if !unsupportedFamily(err) {
				errs = append(errs, fmt.Errorf("list %s routes of table %d: %w", familyName(fam), s.Table, err))
			}
			continue
		}
		for _, r := range routes {
			ours := r.Protocol == RouteProtocol || (tunIndex != 0 && r.LinkIndex == tunIndex)
			if !ours || (keep && s.Block && isBlockRoute(r) && (fam == netlink.FAMILY_V4 || s.IPv6)) {
				continue
			}
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete %s route %s: %w", familyName(fam), r, err))
			}
		}
		// Table T+1 holds only the TCP default, which a rebuild installs again (the
		// listener, and so the port, is new).
		if err := removeTCPRoutes(s, fam); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// routingStatus reports whether both rules and the default route are there.
// tunIndex is the TUN's link index (0 when there is no TUN).
func routingStatus(s Spec, family, tunIndex int) (rules, route, block bool, err error) {
	list, err := netlink.RuleList(family)
	if err != nil {
		return false, false, false, fmt.Errorf("list %s rules: %w", familyName(family), err)
	}
	fromTUN, marked, tcp := false, false, s.TProxyPort == 0
	if !tcp {
		if tcp, err = tcpRoutingStatus(s, family, list); err != nil {
			return false, false, false, err
		}
	}
	for _, r := range list {
		switch {
		case r.Priority == iifPriority(s) && r.IifName == s.TunName && r.Table == mainTable:
			fromTUN = true
		case r.Priority == s.RulePriority && r.Table == s.Table && r.Mark == s.Mark && r.Mask != nil && *r.Mask == s.Mask && r.IPProto == 0:
			marked = true
		}
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: s.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, false, false, fmt.Errorf("list %s routes of table %d: %w", familyName(family), s.Table, err)
	}
	for _, r := range routes {
		if isBlockRoute(r) {
			block = true
			continue
		}
		isDefault := r.Dst == nil || isDefaultDst(r.Dst)
		// The default route leads to the TUN, or to an interface proxy's
		// device while that one is active (SetRouteDevice).
		if isDefault && tunIndex != 0 && r.LinkIndex != 0 {
			route = true
		}
	}
	return fromTUN && marked && tcp, route, block, nil
}

func isDefaultDst(dst *net.IPNet) bool {
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// RouteDevice is the device a packet to dst carrying the mark leaves by, as the kernel
// resolves it now (`ip route get DST mark M`): the TUN while the rules and the route of
// table T are in place. It is how `check` shows where messenger traffic really goes.
func (n *Net) RouteDevice(dst netip.Addr) (string, error) {
	routes, err := netlink.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{Mark: n.spec.Mark})
	if err != nil {
		return "", fmt.Errorf("route to %s with mark %#x: %w", dst, n.spec.Mark, err)
	}
	if len(routes) == 0 {
		return "", fmt.Errorf("route to %s with mark %#x: none", dst, n.spec.Mark)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("route to %s: device %d: %w", dst, routes[0].LinkIndex, err)
	}
	return link.Attrs().Name, nil
}

// PrepareRouteDevice readies an interface proxy's device for traffic that comes back out
// of it with a source the main table routes elsewhere (a messenger's address, routed via
// the WAN): src_valid_mark=1, so reverse-path filtering sees the restored mark (as on the
// TUN), and a strict rp_filter (1) made loose (2), since the health probe's replies carry
// no mark. Only that device's settings change, and only when they differ. It remembers
// nothing: DeviceSysctls does the same and can put the values back.
func PrepareRouteDevice(dev string) error { return prepareRouteDevice(dev, nil) }

// routeDeviceSysctls are the settings PrepareRouteDevice changes: from, to.
var routeDeviceSysctls = [][3]string{{"src_valid_mark", "0", "1"}, {"rp_filter", "1", "2"}}

func prepareRouteDevice(dev string, changed func(key, old, set string)) error {
	var errs []error
	for _, kv := range routeDeviceSysctls {
		p := "/proc/sys/net/ipv4/conf/" + dev + "/" + kv[0]
		cur, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if old := strings.TrimSpace(string(cur)); old == kv[1] {
			if err := os.WriteFile(p, []byte(kv[2]), 0); err != nil {
				errs = append(errs, fmt.Errorf("set %s=%s on %s: %w", kv[0], kv[2], dev, err))
			} else if changed != nil {
				changed(kv[0], old, kv[2])
			}
		}
	}
	return errors.Join(errs...)
}

// DeviceSysctls prepares interface proxies' devices as PrepareRouteDevice does and
// remembers what each setting was, so Restore can put it back when tgtun stops (the
// router must be as without tgtun). A device that was deleted and created again is
// another device: its old values are forgotten, its own are remembered when changed.
// The zero value is ready to use.
type DeviceSysctls struct {
	mu     sync.Mutex
	saved  map[string]*savedSysctls // by device name
	closed bool                     // restored: Prepare changes nothing any more
}

type savedSysctls struct {
	index  int                  // the device's ifindex when its values were saved
	values map[string][2]string // sysctl name → the value before tgtun changed it, and tgtun's
}

// Prepare readies dev (see PrepareRouteDevice), remembering the values it changes.
func (d *DeviceSysctls) Prepare(dev string) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", dev, err)
	}
	idx := link.Attrs().Index
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil // stopping: a probe still in flight must not change it again
	}
	if d.saved == nil {
		d.saved = map[string]*savedSysctls{}
	}
	s := d.saved[dev]
	if s == nil || s.index != idx {
		s = &savedSysctls{index: idx, values: map[string][2]string{}}
		d.saved[dev] = s
	}
	return prepareRouteDevice(dev, func(key, old, set string) {
		if _, ok := s.values[key]; !ok {
			s.values[key] = [2]string{old, set}
		}
	})
}

// Restore puts back the values Prepare changed on every device that still exists as
// the same device, unless someone changed them since. Prepare changes nothing after it.
func (d *DeviceSysctls) Restore() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	var errs []error
	for dev, s := range d.saved {
		delete(d.saved, dev)
		link, err := netlink.LinkByName(dev)
		if err != nil || link.Attrs().Index != s.index {
			continue // gone, or another device by now: nothing of ours to undo
		}
		for key, v := range s.values {
			p := "/proc/sys/net/ipv4/conf/" + dev + "/" + key
			if cur, err := os.ReadFile(p); err != nil || strings.TrimSpace(string(cur)) != v[1] {
				continue // the admin's value now
			}
			if err := os.WriteFile(p, []byte(v[0]), 0); err != nil {
				errs = append(errs, fmt.Errorf("restore %s=%s on %s: %w", key, v[0], dev, err))
			}
		}
	}
	return errors.Join(errs...)
}

// SetRouteDevice points table T's default routes at the device dev (an
// interface proxy: marked traffic goes straight into it, at kernel speed)
// or, with dev "", back at the TUN. Replies that come back out of dev carry
// the restored mark too, so "iif dev lookup main" keeps them out of table T,
// as the TUN's rule does; and src_valid_mark=1 on dev lets reverse-path
// filtering see the mark, as on the TUN. The previous device's rule goes.
func (n *Net) SetRouteDevice(dev string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errClosed
	}
	s := n.spec
	name := dev
	if name == "" {
		name = s.TunName
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("route into %s: %w", name, err)
	}
	var errs []error
	if s.TProxyPort != 0 {
		// TCP: table T+1 into the device too, and mark_dst marks TCP instead of handing
		// it to the listener; back at the TUN, T+1 delivers locally again.
		var devLink netlink.Link
		if dev != "" {
			devLink = link
		}
		for _, fam := range families(s.IPv6) {
			route, err := tcpRoute(s, fam, devLink)
			if err == nil {
				err = netlink.RouteReplace(route)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("replace %s route default table %d: %w", familyName(fam), tcpTable(s), err))
			}
		}
		if n.routeDev != dev {
			prev := n.routeDev
			n.routeDev = dev
			if err := n.requeueMarkDst(); err != nil {
				n.routeDev = prev
				errs = append(errs, fmt.Errorf("route tcp into %s: %w", name, err))
			}
		}
	}
	for _, fam := range families(s.IPv6) {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Table: s.Table, Dst: defaultDst(fam), Family: fam, Protocol: RouteProtocol}
		if err := netlink.RouteReplace(route); err != nil {
			errs = append(errs, fmt.Errorf("replace %s route default dev %s table %d: %w", familyName(fam), name, s.Table, err))
			continue
		}
		rules, err := netlink.RuleList(fam)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s rules: %w", familyName(fam), err))
			continue
		}
		have := false
		for _, r := range rules {
			if r.Priority != iifPriority(s) || r.Table != mainTable || r.IifName == s.TunName || !isOurRule(s, r) {
				continue
			}
			if r.IifName == dev {
				have = true
				continue
			}
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete %s rule %s: %w", familyName(fam), r, err))
			}
		}
		if dev != "" && !have {
			r := netlink.NewRule()
			r.Family, r.Priority, r.IifName, r.Table = fam, iifPriority(s), dev, mainTable
			r.Protocol = RouteProtocol
			if err := netlink.RuleAdd(r); err != nil {
				errs = append(errs, fmt.Errorf("add %s rule %s: %w", familyName(fam), r, err))
			}
		}
	}
	return errors.Join(errs...)
}

// LinkIndex is the index of the network device called name, and whether there is one.
func LinkIndex(name string) (int, bool) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return 0, false
	}
	return link.Attrs().Index, true
}
