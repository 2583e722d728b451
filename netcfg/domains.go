package netcfg

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Sets filled by dnsmasq (nftset=) with the addresses listed domains resolve to, and the
// sets of devices to tunnel or never tunnel.
const (
	SetDst4DNS = "dst4_dns"
	SetDst6DNS = "dst6_dns"

	setIncl4   = "incl4"
	setIncl6   = "incl6"
	setInclMAC = "incl_mac"
	setExcl4   = "excl4"
	setExcl6   = "excl6"
	setExclMAC = "excl_mac"

	// chainMarkDst marks connections to targets; mark_new reaches it for the devices that
	// are tunnelled.
	chainMarkDst = "mark_dst"
)

// DefaultDomainTimeout is how long an address dnsmasq put in a domain set stays there.
const DefaultDomainTimeout = 6 * time.Hour

// Devices selects LAN devices by address range or MAC address.
type Devices struct {
	Prefixes []netip.Prefix
	MACs     []net.HardwareAddr // 6 bytes each
}

func (d Devices) empty() bool { return len(d.Prefixes) == 0 && len(d.MACs) == 0 }

func (d Devices) validate() error {
	for _, p := range d.Prefixes {
		if !p.IsValid() {
			return fmt.Errorf("invalid prefix %v", p)
		}
	}
	for _, m := range d.MACs {
		if len(m) != 6 {
			return fmt.Errorf("MAC %v: not 6 bytes", m)
		}
	}
	return nil
}

// deviceObjects are the handles of the domain and device sets.
type deviceObjects struct {
	dst4DNS, dst6DNS      *nftables.Set
	incl4, incl6, inclMAC *nftables.Set
	excl4, excl6, exclMAC *nftables.Set
	markDst               *nftables.Chain
	includes              bool // the include sets are not empty
}

// queueDeviceSets queues the domain sets (timeout flag: entries expire on their own) and
// the device sets with their contents, and chain mark_dst.
func queueDeviceSets(c *nftables.Conn, o *nftObjects, s Spec) error {
	d := &o.dev
	timeout := s.DomainTimeout
	if timeout <= 0 {
		timeout = DefaultDomainTimeout
	}
	d.dst4DNS = &nftables.Set{Table: o.table, Name: SetDst4DNS, KeyType: nftables.TypeIPAddr, HasTimeout: true, Timeout: timeout}
	d.incl4 = intervalSet(o.table, setIncl4, nftables.TypeIPAddr)
	d.excl4 = intervalSet(o.table, setExcl4, nftables.TypeIPAddr)
	d.inclMAC = &nftables.Set{Table: o.table, Name: setInclMAC, KeyType: nftables.TypeEtherAddr}
	d.exclMAC = &nftables.Set{Table: o.table, Name: setExclMAC, KeyType: nftables.TypeEtherAddr}
	sets := []*nftables.Set{d.dst4DNS, d.incl4, d.excl4, d.inclMAC, d.exclMAC}
	if s.IPv6 {
		d.dst6DNS = &nftables.Set{Table: o.table, Name: SetDst6DNS, KeyType: nftables.TypeIP6Addr, HasTimeout: true, Timeout: timeout}
		d.incl6 = intervalSet(o.table, setIncl6, nftables.TypeIP6Addr)
		d.excl6 = intervalSet(o.table, setExcl6, nftables.TypeIP6Addr)
		sets = append(sets, d.dst6DNS, d.incl6, d.excl6)
	}
	for _, set := range sets {
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("nft set %s: %w", set.Name, err)
		}
	}
	if err := queueDevices(c, o, s.IPv6, s.Include, s.Exclude); err != nil {
		return err
	}
	d.markDst = c.AddChain(&nftables.Chain{Table: o.table, Name: chainMarkDst})
	return nil
}

// queueDevices queues the contents of the device sets (after flushing them).
func queueDevices(c *nftables.Conn, o *nftObjects, ipv6 bool, include, exclude Devices) error {
	d := &o.dev
	for _, x := range []struct {
		devs       Devices
		v4, v6, hw *nftables.Set
	}{{include, d.incl4, d.incl6, d.inclMAC}, {exclude, d.excl4, d.excl6, d.exclMAC}} {
		p4, p6 := byFamily(x.devs.Prefixes)
		c.FlushSet(x.v4)
		if err := queueElements(c, x.v4, mergeRanges(p4)); err != nil {
			return err
		}
		if ipv6 {
			c.FlushSet(x.v6)
			if err := queueElements(c, x.v6, mergeRanges(p6)); err != nil {
				return err
			}
		}
		c.FlushSet(x.hw)
		var els []nftables.SetElement
		for _, m := range x.devs.MACs {
			els = append(els, nftables.SetElement{Key: []byte(m)})
		}
		if len(els) > 0 {
			if err := c.SetAddElements(x.hw, els); err != nil {
				return fmt.Errorf("nft set %s: %w", x.hw.Name, err)
			}
		}
	}
	// With IPv6 off, IPv6 devices cannot be told apart: an include list of only IPv6
	// addresses then tunnels nobody, which is what it asks for IPv4.
	d.includes = !include.empty()
	return nil
}

// queueMarkDstRules fills chain mark_dst: the static ranges and the domain sets. With
// TCP on the kernel's stack (tproxy, unless an interface proxy is routed to) TCP goes to
// the listener and the rest is marked for the TUN (queueTProxyDstRules); otherwise every
// packet is marked.
func queueMarkDstRules(c *nftables.Conn, o *nftObjects, s Spec, tproxy bool) {
	for _, f := range targetFamilies(o, s) {
		for _, set := range f.sets {
			match := addrIn(f.proto, f.offset, f.length, set)
			if tproxy {
				queueTProxyDstRules(c, o, s, match, f.proto)
				continue
			}
			c.AddRule(&nftables.Rule{Table: o.table, Chain: o.dev.markDst,
				Exprs: concat(match,
					setMark(true, s.Mark, s.Mask),  // ct mark
					setMark(false, s.Mark, s.Mask), // meta mark
				),
			})
		}
	}
}

// queueMarkOutRules fills chain mark_out, the output chain's: the proxies' addresses
// return, every packet to a target is marked (TCP then goes to the listener through lo,
// see tproxy.go). Devices play no part: these are the router's own connections.
func queueMarkOutRules(c *nftables.Conn, o *nftObjects, s Spec) {
	for _, f := range targetFamilies(o, s) {
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.markOut,
			Exprs: concat(daddrIn(f.proto, f.offset, f.length, f.bypass), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}),
		})
		for _, set := range f.sets {
			c.AddRule(&nftables.Rule{Table: o.table, Chain: o.markOut,
				Exprs: concat(addrIn(f.proto, f.offset, f.length, set),
					setMark(true, s.Mark, s.Mask), setMark(false, s.Mark, s.Mask)),
			})
		}
	}
}

// targetFamily is one address family's part of the table: where its destination
// address sits in the header, its target sets and its bypass set.
type targetFamily struct {
	proto          byte
	offset, length uint32
	sets           []*nftables.Set
	bypass         *nftables.Set
}

func targetFamilies(o *nftObjects, s Spec) []targetFamily {
	fams := []targetFamily{{unix.NFPROTO_IPV4, 16, 4, []*nftables.Set{o.dst4, o.dev.dst4DNS}, o.bypass4}}
	if s.IPv6 {
		fams = append(fams, targetFamily{unix.NFPROTO_IPV6, 24, 16, []*nftables.Set{o.dst6, o.dev.dst6DNS}, o.bypass6})
	}
	return fams
}

// queueDeviceRules queues the device part of mark_new: excluded devices return, then
// either every device or only the included ones go to mark_dst.
func queueDeviceRules(c *nftables.Conn, o *nftObjects, s Spec) {
	d := &o.dev
	ret := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	toDst := []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: chainMarkDst}}
	src := func(excl bool) [][]expr.Any {
		v4, v6, hw := d.incl4, d.incl6, d.inclMAC
		if excl {
			v4, v6, hw = d.excl4, d.excl6, d.exclMAC
		}
		out := [][]expr.Any{addrIn(unix.NFPROTO_IPV4, 12, 4, v4)}
		if s.IPv6 {
			out = append(out, addrIn(unix.NFPROTO_IPV6, 8, 16, v6))
		}
		return append(out, etherSaddrIn(hw))
	}
	for _, m := range src(true) {
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.markNew, Exprs: concat(m, ret)})
	}
	if !d.includes {
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.markNew, Exprs: toDst})
		return
	}
	for _, m := range src(false) {
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.markNew, Exprs: concat(m, toDst)})
	}
}

// addrIn matches "ip saddr/daddr @set" / "ip6 ..." in an inet table; offset picks the field.
func addrIn(proto byte, offset, length uint32, set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

// etherSaddrIn matches "ether saddr @set": packets that came in on an Ethernet device
// (so never the router's own, which have no input device).
func etherSaddrIn(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

// SetDevices replaces the devices to tunnel (include; empty = all) and never to tunnel
// (exclude), and the rules that depend on whether includes exist, in one transaction.
func (n *Net) SetDevices(include, exclude Devices) error {
	if err := include.validate(); err != nil {
		return fmt.Errorf("set devices (include): %w", err)
	}
	if err := exclude.validate(); err != nil {
		return fmt.Errorf("set devices (exclude): %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errClosed
	}
	marking := len(n.markingRules()) > 0
	if err := queueDevices(n.nft, n.objs, n.spec.IPv6, include, exclude); err != nil {
		return fmt.Errorf("set devices: %w", err)
	}
	n.nft.FlushChain(n.objs.markNew)
	if marking {
		queueMarkNewRules(n.nft, n.objs, n.spec)
	}
	if err := n.nft.Flush(); err != nil {
		return fmt.Errorf("set devices: %w", err)
	}
	n.spec.Include, n.spec.Exclude = include, exclude
	return nil
}

func (n *Net) markingRules() []*nftables.Rule {
	rules, err := n.nft.GetRules(n.objs.table, n.objs.markNew)
	if err != nil {
		return []*nftables.Rule{{}} // assume on: marking is the normal state
	}
	return rules
}

// DomainAddrs returns the addresses now in the domain sets (dst4_dns, dst6_dns).
func (n *Net) DomainAddrs() ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errClosed
	}
	var out []netip.Addr
	for _, set := range []*nftables.Set{n.objs.dev.dst4DNS, n.objs.dev.dst6DNS} {
		if set == nil {
			continue
		}
		els, err := n.nft.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("list nft set %s: %w", set.Name, err)
		}
		for _, e := range els {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out, nil
}

// RefreshDomainAddrs puts addrs into the domain sets with a fresh timeout. dnsmasq adds
// what it resolves too, but its "add" leaves an element that is already there with its
// old expiry; tgtun's forwarder calls this for every answer it hands out, so an address
// in use never expires while clients may still hold it from their caches.
func (n *Net) RefreshDomainAddrs(addrs []netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errClosed
	}
	byset := map[*nftables.Set][]nftables.SetElement{}
	for _, a := range addrs {
		a = a.Unmap()
		set := n.objs.dev.dst4DNS
		if a.Is6() {
			set = n.objs.dev.dst6DNS
		}
		if set == nil || !a.IsValid() {
			continue
		}
		byset[set] = append(byset[set], nftables.SetElement{Key: a.AsSlice()})
	}
	if len(byset) == 0 {
		return nil
	}
	// Add (a no-op for present elements), then delete and add again: the second batch
	// finds every element present, and re-adding starts its timeout anew.
	for set, els := range byset {
		if err := n.nft.SetAddElements(set, els); err != nil {
			return fmt.Errorf("refresh %s: %w", set.Name, err)
		}
	}
	if err := n.nft.Flush(); err != nil {
		return fmt.Errorf("refresh domain sets: %w", err)
	}
	for set, els := range byset {
		if err := n.nft.SetDeleteElements(set, els); err != nil {
			return fmt.Errorf("refresh %s: %w", set.Name, err)
		}
		if err := n.nft.SetAddElements(set, els); err != nil {
			return fmt.Errorf("refresh %s: %w", set.Name, err)
		}
	}
	if err := n.nft.Flush(); err != nil {
		// An element that expired between the two batches makes the delete fail; the
		// first batch already put it back with a full timeout unless it expired right
		// then, which the next answer fixes.
		return fmt.Errorf("refresh domain sets: %w", err)
	}
	return nil
}
