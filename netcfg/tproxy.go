package netcfg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TCP on the kernel's stack (Spec.TProxyPort). A new LAN connection to a target is
// handed by nftables' tproxy to the daemon's transparent listener: the rule in mark_dst
// assigns the SYN to the listener on 127.0.0.1:PORT ([::1]:PORT) and marks the connection
// M; "priority P-1: fwmark M/Mask ipproto tcp lookup T+1" with "local default dev lo" in
// table T+1 delivers it (and every later packet of it, whose mark the prerouting chain
// restores) to the local stack, where the accepted socket carries the original
// destination. Without a listener (the daemon was killed) tproxy does not match and the
// rule is skipped, unmarked: fail_mode direct lets the SYN take the normal path, block
// resets it in the next rule. The router's own connections are marked in the output
// chain, rerouted to lo by the same rule, and handed over in prerouting.

// tcpTable is the routing table of marked TCP: T+1.
func tcpTable(s Spec) int { return s.Table + 1 }

// loopback addresses the listener binds.
var (
	tproxyAddr4 = netip.MustParseAddr("127.0.0.1")
	tproxyAddr6 = netip.IPv6Loopback()
)

// l4protoIs matches "meta l4proto tcp" (eq) or "meta l4proto != tcp".
func l4protoIs(proto byte, eq bool) []expr.Any {
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte{proto}},
	}
}

// tproxyTo hands the packet to the transparent socket listening on the family's
// loopback address and port; without one the rule stops here (no match).
func tproxyTo(proto byte, port uint16) []expr.Any {
	addr := tproxyAddr4
	if proto == unix.NFPROTO_IPV6 {
		addr = tproxyAddr6
	}
	p := make([]byte, 2)
	binary.BigEndian.PutUint16(p, port)
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: addr.AsSlice()},
		&expr.Immediate{Register: 2, Data: p},
		&expr.TProxy{Family: proto, TableFamily: unix.NFPROTO_INET, RegAddr: 1, RegPort: 2},
	}
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

// resetTCP answers a TCP packet with a reset and drops it.
func resetTCP() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
}

// ctOriginal matches packets of a connection's original direction.
func ctOriginal() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}}, // IP_CT_DIR_ORIGINAL
	}
}

// ctMarkIs matches "ct mark & Mask == M".
func ctMarkIs(s Spec) []expr.Any {
	return []expr.Any{
		loadMark(true),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(s.Mask), Xor: native(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native(s.Mark)},
	}
}

// queueTProxyDstRules queues, for one target set, the rules of mark_dst with TCP on
// the kernel's stack: TCP to the listener (marked), with Block a reset for TCP that
// found no listener, and the marks that route everything else into the TUN.
func queueTProxyDstRules(c *nftables.Conn, o *nftObjects, s Spec, match []expr.Any, proto byte) {
	tcp := concat(match, l4protoIs(unix.IPPROTO_TCP, true))
	c.AddRule(&nftables.Rule{Table: o.table, Chain: o.dev.markDst,
		Exprs: concat(tcp, tproxyTo(proto, s.TProxyPort),
			setMark(false, s.Mark, s.Mask), setMark(true, s.Mark, s.Mask), accept()),
	})
	if s.Block {
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.dev.markDst,
			Exprs:    concat(tcp, resetTCP()),
			UserData: comment("fail_mode block: no listener (tgtun is not running)"),
		})
	}
	c.AddRule(&nftables.Rule{Table: o.table, Chain: o.dev.markDst,
		Exprs: concat(match, l4protoIs(unix.IPPROTO_TCP, false),
			setMark(true, s.Mark, s.Mask), setMark(false, s.Mark, s.Mask)),
	})
}

// queueLocalTProxy queues the prerouting rule that hands the router's own new TCP
// connections, marked in the output chain and rerouted to lo, to the listener.
func queueLocalTProxy(c *nftables.Conn, o *nftObjects, s Spec) {
	fams := []byte{unix.NFPROTO_IPV4}
	if s.IPv6 {
		fams = append(fams, unix.NFPROTO_IPV6)
	}
	for _, proto := range fams {
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.prerouting,
			Exprs: concat(
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameKey("lo")},
					&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				},
				l4protoIs(unix.IPPROTO_TCP, true), ctStateNew(), ctMarkIs(s),
				tproxyTo(proto, s.TProxyPort), accept(),
			),
			UserData: comment("the router's own connections, rerouted to lo by the output chain's mark"),
		})
	}
}

// tcpRule is "priority P-1 fwmark M/Mask ipproto tcp lookup T+1".
func tcpRule(s Spec, family int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = family
	r.Priority = s.RulePriority - 1
	mask := s.Mask
	r.Mark = s.Mark
	r.Mask = &mask
	r.IPProto = unix.IPPROTO_TCP
	r.Table = tcpTable(s)
	r.Protocol = RouteProtocol
	return r
}

// tcpRoute is table T+1's default: "local default dev lo" for the listener, or, while an
// interface proxy is routed to, "default dev DEV" (link).
func tcpRoute(s Spec, family int, link netlink.Link) (*netlink.Route, error) {
	r := &netlink.Route{Table: tcpTable(s), Dst: defaultDst(family), Family: family, Protocol: RouteProtocol}
	if link != nil {
		r.LinkIndex = link.Attrs().Index
		return r, nil
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	r.LinkIndex, r.Type, r.Scope = lo.Attrs().Index, unix.RTN_LOCAL, netlink.SCOPE_HOST
	return r, nil
}

// installTCPRouting adds table T+1's local default and the TCP rule.
func installTCPRouting(s Spec) error {
	for _, fam := range families(s.IPv6) {
		route, err := tcpRoute(s, fam, nil)
		if err != nil {
			return err
		}
		if err := netlink.RouteReplace(route); err != nil {
			if errors.Is(err, unix.ENETDOWN) {
				err = fmt.Errorf("%w (the loopback device lo is down)", err)
			}
			return fmt.Errorf("add %s route local default dev lo table %d: %w", familyName(fam), tcpTable(s), err)
		}
		if err := netlink.RuleAdd(tcpRule(s, fam)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s rule %s: %w", familyName(fam), tcpRule(s, fam), err)
		}
	}
	return nil
}

// removeTCPRoutes deletes tgtun's routes of table T+1.
func removeTCPRoutes(s Spec, fam int) error {
	routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: tcpTable(s), Type: unix.RTN_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		if unsupportedFamily(err) {
			return nil
		}
		return fmt.Errorf("list %s routes of table %d: %w", familyName(fam), tcpTable(s), err)
	}
	var errs []error
	for _, r := range routes {
		if r.Protocol != RouteProtocol {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete %s route %s: %w", familyName(fam), r, err))
		}
	}
	return errors.Join(errs...)
}

// tcpRoutingStatus reports whether the TCP rule and table T+1's default are there.
func tcpRoutingStatus(s Spec, family int, rules []netlink.Rule) (bool, error) {
	rule := false
	want := tcpRule(s, family)
	for _, r := range rules {
		if sameRule(r, want) && r.IPProto == unix.IPPROTO_TCP {
			rule = true
		}
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: tcpTable(s), Type: unix.RTN_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, fmt.Errorf("list %s routes of table %d: %w", familyName(family), tcpTable(s), err)
	}
	route := false
	for _, r := range routes {
		if r.Protocol == RouteProtocol && (r.Dst == nil || isDefaultDst(r.Dst)) {
			route = true
		}
	}
	return rule && route, nil
}
