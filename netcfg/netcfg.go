package netcfg

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Net is the installed kernel state of one run. Its methods are safe for
// concurrent use.
type Net struct {
	spec Spec

	mu     sync.Mutex
	tun    *os.File
	nft    *nftables.Conn
	objs   *nftObjects
	closed bool
	// routeDev is the interface proxy's device that tables T and T+1 route into, ""
	// for the TUN (and, with TProxyPort, the listener).
	routeDev string
}

// Status is what is installed, as read back from the kernel.
type Status struct {
	TUNPresent, TUNUp bool
	Table             bool // nft table inet tgtun
	RouterTraffic     bool // its output chain
	Marking           bool // new connections to targets are being marked
	Rules4, Rules6    bool // both policy rules of the family
	Route4, Route6    bool // default dev <tun> in the route table
	Block             bool // fail_mode block's unreachable default in the route table (IPv4, and IPv6 with it on)
	// Ranges in the sets after merging overlapping and adjacent prefixes.
	Targets4, Targets6 int
	Bypass4, Bypass6   int
}

// Cleanup removes what an earlier run left in this network namespace: table
// inet tgtun, tgtun's rules and routes (those carrying RouteProtocol, or an older
// tgtun's marks and TUN; another tool's rules and routes in the same table stay) and the
// TUN device. Nothing there is not an error.
func Cleanup(ctx context.Context, spec Spec) error {
	s, err := spec.withDefaults()
	if err != nil {
		return fmt.Errorf("netcfg spec: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return cleanup(s)
}

func cleanup(s Spec) error {
	var errs []error
	c, err := newNFTConn()
	if err != nil {
		errs = append(errs, err)
	} else if err := deleteTable(c); err != nil {
		errs = append(errs, err)
	}
	if err := removeRouting(s, false); err != nil {
		errs = append(errs, err)
	}
	if err := deleteTUN(s.TunName); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netcfg cleanup: %w", err)
	}
	return nil
}

// Apply replaces what an earlier run left with a fresh TUN, its routes, the rules
// and the nft table. What the new state keeps as it is (the rules, fail_mode block's
// route) stays in place, and the old table is replaced by the new one in one
// transaction, so rebuilding never opens a gap through which marked traffic leaves
// directly. On failure it removes what it made, except with Block: then the rules, the
// block route and whatever table was there stay, and marked traffic is refused.
func Apply(ctx context.Context, spec Spec) (n *Net, err error) {
	s, err := spec.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("netcfg spec: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := removeRouting(s, true); err != nil {
		return nil, fmt.Errorf("netcfg cleanup: %w", err)
	}
	if err := deleteTUN(s.TunName); err != nil {
		return nil, fmt.Errorf("netcfg cleanup: %w", err)
	}
	n = &Net{spec: s}
	defer func() {
		if err != nil {
			undo := n.Close
			if s.Block {
				undo = n.Detach
				if berr := installRouting(s, nil); berr != nil {
					err = errors.Join(err, fmt.Errorf("keep blocking: %w", berr))
				}
			}
			if cerr := undo(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", cerr))
			}
			n = nil
		}
	}()
	if n.tun, err = openTUN(s.TunName); err != nil {
		return n, err
	}
	link, err := configureTUN(s)
	if err != nil {
		return n, err
	}
	if err := ctx.Err(); err != nil {
		return n, err
	}
	if err := installRouting(s, link); err != nil {
		return n, err
	}
	if n.nft, err = newNFTConn(); err != nil {
		return n, err
	}
	if n.objs, err = installTable(n.nft, s); err != nil {
		return n, err
	}
	return n, nil
}

// Detach closes the TUN (which takes its routes with it) and leaves the rules, the
// block route and the nft table in place, as a crash would: with Block, marked traffic
// is refused until the next Apply replaces them. A rebuild detaches, then applies.
func (n *Net) Detach() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.tun != nil {
		if err := n.tun.Close(); err != nil {
			return fmt.Errorf("close tun %s: %w", n.spec.TunName, err)
		}
	}
	return nil
}

// SetBlock adds (fail_mode block) or removes (fail_mode direct) the unreachable
// default of the route table.
func (n *Net) SetBlock(on bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errClosed
	}
	for _, fam := range families(n.spec.IPv6) {
		f := delBlockRoute
		if on {
			f = addBlockRoute
		}
		if err := f(n.spec, fam); err != nil {
			return fmt.Errorf("set block %t: %w", on, err)
		}
	}
	n.spec.Block = on
	if n.spec.TProxyPort != 0 {
		// mark_dst's reset of TCP that found no listener follows Block.
		if err := n.requeueMarkDst(); err != nil {
			return fmt.Errorf("set block %t: %w", on, err)
		}
	}
	return nil
}

// requeueMarkDst rebuilds chain mark_dst for the spec and route device in force, in one
// transaction. Called with n.mu held.
func (n *Net) requeueMarkDst() error {
	n.nft.FlushChain(n.objs.dev.markDst)
	queueMarkDstRules(n.nft, n.objs, n.spec, n.spec.TProxyPort != 0 && n.routeDev == "")
	return n.nft.Flush()
}

// Missing names what of the installed state is gone (the TUN, its routes, the rules,
// the nft table or one of its chains, the block route), checked cheaply enough to run
// every few seconds: another program may have deleted it (`nft flush ruleset`, `ip
// link del`). Empty means everything is there.
func (n *Net) Missing() ([]string, error) {
	n.mu.Lock()
	s := n.spec
	n.mu.Unlock()
	st, err := readStatus(s, false)
	if err != nil {
		return nil, err
	}
	var out []string
	add := func(ok bool, what string) {
		if !ok {
			out = append(out, what)
		}
	}
	add(st.TUNPresent && st.TUNUp, "tun "+s.TunName)
	add(st.Table, "nft table inet "+TableName)
	add(!s.RouterTraffic || st.RouterTraffic, "nft chain "+chainOutput)
	add(st.Rules4, "ipv4 rules")
	add(st.Route4, "ipv4 route")
	if s.IPv6 {
		add(st.Rules6, "ipv6 rules")
		add(st.Route6, "ipv6 route")
	}
	add(!s.Block || st.Block, "block route")
	return out, nil
}

// TUN is the TUN device's file: reads and writes carry bare IP packets.
// Net owns it; Close closes it.
func (n *Net) TUN() *os.File { return n.tun }

// Spec is the specification in force, with defaults filled in.
func (n *Net) Spec() Spec { return n.spec }

var errClosed = errors.New("netcfg: closed")

// SetTargets replaces the contents of sets dst4 and dst6 in one nftables
// transaction. Overlapping and adjacent prefixes are merged.
func (n *Net) SetTargets(v4, v6 []netip.Prefix) error {
	p4, err := splitFamily(v4, true)
	if err != nil {
		return fmt.Errorf("set targets (ipv4): %w", err)
	}
	p6, err := splitFamily(v6, false)
	if err != nil {
		return fmt.Errorf("set targets (ipv6): %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errClosed
	}
	contents := map[*nftables.Set][]addrRange{n.objs.dst4: mergeRanges(p4)}
	if n.spec.IPv6 {
		contents[n.objs.dst6] = mergeRanges(p6)
	} else if len(p6) > 0 {
		return fmt.Errorf("set targets: %d IPv6 prefixes with IPv6 off", len(p6))
	}
	if err := replaceSets(n.nft, contents); err != nil {
		return fmt.Errorf("set targets: %w", err)
	}
	return nil
}

// SetBypass replaces the addresses that are never marked (the proxy
// servers'), in one transaction. IPv6 prefixes are ignored with IPv6 off:
// nothing IPv6 is marked then.
func (n *Net) SetBypass(ps []netip.Prefix) error {
	for _, p := range ps {
		if !p.IsValid() {
			return fmt.Errorf("set bypass: invalid prefix %v", p)
		}
	}
	b4, b6 := byFamily(ps)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errClosed
	}
	contents := map[*nftables.Set][]addrRange{n.objs.bypass4: mergeRanges(b4)}
	if n.spec.IPv6 {
		contents[n.objs.bypass6] = mergeRanges(b6)
	}
	if err := replaceSets(n.nft, contents); err != nil {
		return fmt.Errorf("set bypass: %w", err)
	}
	return nil
}

// SetMarking stops (false) or resumes (true) the marking of new connections
// to targets: fail_mode direct. Established tunnelled connections keep their
// conntrack mark and stay on the tunnel.
func (n *Net) SetMarking(on bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errClosed
	}
	n.nft.FlushChain(n.objs.markNew)
	if n.objs.markOut != nil {
		n.nft.FlushChain(n.objs.markOut)
	}
	if on {
		queueMarkNewRules(n.nft, n.objs, n.spec)
		if n.objs.markOut != nil {
			queueMarkOutRules(n.nft, n.objs, n.spec)
		}
	}
	if err := n.nft.Flush(); err != nil {
		return fmt.Errorf("set marking %t: %w", on, err)
	}
	return nil
}

// Status reads back what is installed.
func (n *Net) Status() (Status, error) {
	n.mu.Lock()
	s := n.spec
	n.mu.Unlock()
	return readStatus(s, true)
}

// ReadStatus reads what is installed in this network namespace for spec,
// whether or not this process installed it.
func ReadStatus(spec Spec) (Status, error) {
	s, err := spec.withDefaults()
	if err != nil {
		return Status{}, fmt.Errorf("netcfg spec: %w", err)
	}
	return readStatus(s, true)
}

// readStatus reads the state; counts adds the sizes of the sets, the costly part.
func readStatus(s Spec, counts bool) (Status, error) {
	var err error
	var st Status
	tunIndex := 0
	if link, err := netlink.LinkByName(s.TunName); err == nil && link.Type() == "tuntap" {
		st.TUNPresent = true
		st.TUNUp = link.Attrs().Flags&unix.IFF_UP != 0
		tunIndex = link.Attrs().Index
	}
	var block4, block6 bool
	if st.Rules4, st.Route4, block4, err = routingStatus(s, netlink.FAMILY_V4, tunIndex); err != nil {
		return st, err
	}
	st.Block = block4
	if s.IPv6 {
		if st.Rules6, st.Route6, block6, err = routingStatus(s, netlink.FAMILY_V6, tunIndex); err != nil {
			return st, err
		}
		st.Block = block4 && block6
	}
	c, err := newNFTConn()
	if err != nil {
		return st, err
	}
	t := nftTable()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, fmt.Errorf("list nft chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		st.Table = true
		switch ch.Name {
		case chainOutput:
			st.RouterTraffic = true
		case chainMarkNew:
			rules, err := c.GetRules(t, ch)
			if err != nil {
				return st, fmt.Errorf("list nft chain %s: %w", chainMarkNew, err)
			}
			st.Marking = len(rules) > 0
		}
	}
	if !st.Table || !counts {
		return st, nil
	}
	sets := []struct {
		name string
		n    *int
	}{{setDst4, &st.Targets4}, {setDst6, &st.Targets6}, {setBypass4, &st.Bypass4}, {setBypass6, &st.Bypass6}}
	for _, cnt := range sets {
		set, err := c.GetSetByName(t, cnt.name)
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return st, fmt.Errorf("find nft set %s: %w", cnt.name, err)
		}
		if *cnt.n, err = countRanges(c, set); err != nil {
			return st, err
		}
	}
	return st, nil
}

// Close removes the table, the rules, the routes and the device. It is safe
// to call more than once.
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	if n.tun != nil {
		// Closing the last descriptor of a non-persistent TUN deletes the
		// device and every route through it.
		if err := n.tun.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close tun %s: %w", n.spec.TunName, err))
		}
	}
	if err := cleanup(n.spec); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
