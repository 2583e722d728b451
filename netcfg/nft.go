package netcfg

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Names inside table inet tgtun.
const (
	setLANIfaces = "lan_ifaces"
	setDst4      = "dst4"
	setDst6      = "dst6"
	setBypass4   = "bypass4"
	setBypass6   = "bypass6"

	chainPrerouting = "prerouting"
	chainOutput     = "output"
	// chainMarkNew holds the rules that mark new connections to targets.
	// SetMarking(false) empties it; established flows keep their conntrack
	// mark, which the base chains restore.
	chainMarkNew = "mark_new"
	// chainMarkOut marks the router's own new connections to targets (the output
	// chain's counterpart of mark_new; SetMarking empties it too).
	chainMarkOut = "mark_out"
)

// chainPriority is where tgtun's base chains hook: mangle + 1 (-149), just after fw4's
// mangle_prerouting and mangle_output (priority mangle). Netfilter runs hooks of equal
// priority newest first, so at mangle itself tgtun (started after fw4) ran first and a
// user's fw4 `meta mark set` rule then overwrote tgtun's bit. After them, tgtun's mark
// goes on last, written under its mask so the others' bits stay.
func chainPriority() *nftables.ChainPriority {
	return nftables.ChainPriorityRef(*nftables.ChainPriorityMangle + 1)
}

// elementsPerMessage bounds one NEWSETELEM message; a batch may hold many.
const elementsPerMessage = 1024

// nftBufferBytes is forced on the nftables socket so that a batch replacing
// large lists (tens of thousands of ranges) fits in one sendmsg.
const nftBufferBytes = 32 << 20

func newNFTConn() (*nftables.Conn, error) {
	force := func(opt int) nftables.SockOption {
		return func(c *netlink.Conn) error {
			raw, err := c.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			if err := raw.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, nftBufferBytes)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := nftables.New(nftables.WithSockOptions(force(unix.SO_SNDBUFFORCE), force(unix.SO_RCVBUFFORCE)))
	if err != nil {
		return nil, fmt.Errorf("nftables connection: %w", err)
	}
	return c, nil
}

func nftTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

// isNotExist reports whether err says that an nftables object is absent.
func isNotExist(err error) bool {
	return errors.Is(err, syscall.ENOENT)
}

// deleteTable removes table inet tgtun if it is there.
func deleteTable(c *nftables.Conn) error {
	c.DelTable(nftTable())
	if err := c.Flush(); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete nft table inet %s: %w", TableName, err)
	}
	return nil
}

// nftObjects are the handles of what installTable created.
type nftObjects struct {
	table                             *nftables.Table
	lan, dst4, dst6, bypass4, bypass6 *nftables.Set
	prerouting, output, markNew       *nftables.Chain
	markOut                           *nftables.Chain // with RouterTraffic
	dev                               deviceObjects   // domain and device sets (domains.go)
}

func intervalSet(t *nftables.Table, name string, key nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: key, Interval: true}
}

// tableExists tells whether table inet tgtun is there.
func tableExists(c *nftables.Conn) (bool, error) {
	_, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	switch {
	case err == nil:
		return true, nil
	case isNotExist(err):
		return false, nil
	}
	return false, fmt.Errorf("look for nft table inet %s: %w", TableName, err)
}

// installTable queues the whole table in one batch and sends it. A table already there
// (an earlier run's, or ours being rebuilt) is deleted in the same batch: no packet sees
// the gap between the two.
func installTable(c *nftables.Conn, s Spec) (*nftObjects, error) {
	o := &nftObjects{table: nftTable()}
	exists, err := tableExists(c)
	if err != nil {
		return nil, err
	}
	if exists {
		c.DelTable(o.table)
	}
	c.AddTable(o.table)

	// Interface names are strings, kept in host byte order as nft itself
	// does: without it `nft list` shows them reversed (as "").
	o.lan = &nftables.Set{Table: o.table, Name: setLANIfaces, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
	var ifaces []nftables.SetElement
	for _, name := range s.LANIfaces {
		ifaces = append(ifaces, nftables.SetElement{Key: ifnameKey(name)})
	}
	if err := c.AddSet(o.lan, ifaces); err != nil {
		return nil, fmt.Errorf("nft set %s: %w", setLANIfaces, err)
	}

	v4, _ := splitFamily(s.Targets4, true)
	b4, b6 := byFamily(s.Bypass)
	o.dst4 = intervalSet(o.table, setDst4, nftables.TypeIPAddr)
	o.bypass4 = intervalSet(o.table, setBypass4, nftables.TypeIPAddr)
	sets := []struct {
		set *nftables.Set
		ps  []netip.Prefix
	}{{o.dst4, v4}, {o.bypass4, b4}}
	if s.IPv6 {
		v6, _ := splitFamily(s.Targets6, false)
		o.dst6 = intervalSet(o.table, setDst6, nftables.TypeIP6Addr)
		o.bypass6 = intervalSet(o.table, setBypass6, nftables.TypeIP6Addr)
		sets = append(sets, struct {
			set *nftables.Set
			ps  []netip.Prefix
		}{o.dst6, v6}, struct {
			set *nftables.Set
			ps  []netip.Prefix
		}{o.bypass6, b6})
	}
	for _, st := range sets {
		if err := c.AddSet(st.set, nil); err != nil {
			return nil, fmt.Errorf("nft set %s: %w", st.set.Name, err)
		}
		if err := queueElements(c, st.set, mergeRanges(st.ps)); err != nil {
			return nil, err
		}
	}

	if err := queueDeviceSets(c, o, s); err != nil {
		return nil, err
	}
	queueMarkDstRules(c, o, s, s.TProxyPort != 0)
	o.markNew = c.AddChain(&nftables.Chain{Table: o.table, Name: chainMarkNew})
	queueMarkNewRules(c, o, s)
	if s.RouterTraffic {
		o.markOut = c.AddChain(&nftables.Chain{Table: o.table, Name: chainMarkOut})
		queueMarkOutRules(c, o, s)
	}

	accept := nftables.ChainPolicyAccept
	o.prerouting = c.AddChain(&nftables.Chain{
		Table: o.table, Name: chainPrerouting,
		Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting,
		Priority: chainPriority(), Policy: &accept,
	})
	c.AddRule(&nftables.Rule{Table: o.table, Chain: o.prerouting,
		Exprs:    restoreMark(s),
		UserData: comment("keep tunnelled connections on the tunnel, replies from the TUN included"),
	})
	if s.RouterTraffic && s.TProxyPort != 0 {
		queueLocalTProxy(c, o, s)
	}
	c.AddRule(&nftables.Rule{Table: o.table, Chain: o.prerouting,
		Exprs: concat(
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: o.lan.Name, SetID: o.lan.ID},
			},
			ctStateNew(),
			[]expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainMarkNew}},
		),
	})

	if s.RouterTraffic {
		o.output = c.AddChain(&nftables.Chain{
			Table: o.table, Name: chainOutput,
			Type: nftables.ChainTypeRoute, Hooknum: nftables.ChainHookOutput,
			Priority: chainPriority(), Policy: &accept,
		})
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.output,
			Exprs:    concat(packetMarkHas(s.BypassMark, s.BypassMark), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}),
			UserData: comment("the daemon's own sockets: never tunnelled"),
		})
		// Only the original direction: the listener's own answers to LAN clients
		// (replies of a tunnelled connection) must take the main table, not lo.
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.output, Exprs: concat(ctOriginal(), restoreMark(s))})
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.output,
			Exprs: concat(ctStateNew(), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainMarkOut}}),
		})
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("create nft table inet %s: %w", TableName, err)
	}
	return o, nil
}

// queueMarkNewRules queues the rules of chain mark_new: bypass first, then
// the devices (excluded ones return), then targets (chain mark_dst).
func queueMarkNewRules(c *nftables.Conn, o *nftObjects, s Spec) {
	type family struct {
		proto          byte
		offset, length uint32
		bypass, dst    *nftables.Set
	}
	fams := []family{{unix.NFPROTO_IPV4, 16, 4, o.bypass4, o.dst4}}
	if s.IPv6 {
		fams = append(fams, family{unix.NFPROTO_IPV6, 24, 16, o.bypass6, o.dst6})
	}
	for _, f := range fams {
		c.AddRule(&nftables.Rule{Table: o.table, Chain: o.markNew,
			Exprs: concat(daddrIn(f.proto, f.offset, f.length, f.bypass), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}),
		})
	}
	queueDeviceRules(c, o, s)
}

// queueElements queues set elements in messages of bounded size.
func queueElements(c *nftables.Conn, set *nftables.Set, rs []addrRange) error {
	els := setElements(rs)
	for len(els) > 0 {
		n := min(len(els), elementsPerMessage)
		if !els[n-1].IntervalEnd && n < len(els) && els[n].IntervalEnd {
			n++ // keep a range's start and end in one message
		}
		if err := c.SetAddElements(set, els[:n]); err != nil {
			return fmt.Errorf("nft set %s: %w", set.Name, err)
		}
		els = els[n:]
	}
	return nil
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

func ifnameKey(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func native(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(expr.CtStateBitNEW), Xor: native(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native(0)},
	}
}

// loadMark loads the ct mark (ct) or the packet mark into register 1.
func loadMark(ct bool) expr.Any {
	if ct {
		return &expr.Ct{Key: expr.CtKeyMARK, Register: 1}
	}
	return &expr.Meta{Key: expr.MetaKeyMARK, Register: 1}
}

// packetMarkHas matches "meta mark & mask == value".
func packetMarkHas(value, mask uint32) []expr.Any {
	return []expr.Any{
		loadMark(false),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(mask), Xor: native(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native(value)},
	}
}

// setMark sets "mark = mark & ~mask | value" on the ct mark or the packet
// mark, leaving the bits other tools (fw4, mwan3, sqm) own untouched.
func setMark(ct bool, value, mask uint32) []expr.Any {
	var store expr.Any = &expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true}
	if ct {
		store = &expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true}
	}
	return []expr.Any{
		loadMark(ct),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(^mask), Xor: native(value)},
		store,
	}
}

// restoreMark: "ct mark & Mask == M meta mark set meta mark & ~Mask | M".
func restoreMark(s Spec) []expr.Any {
	return concat(
		[]expr.Any{
			loadMark(true),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(s.Mask), Xor: native(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native(s.Mark)},
		},
		setMark(false, s.Mark, s.Mask),
	)
}

// daddrIn matches "ip daddr @set" / "ip6 daddr @set" in an inet table.
func daddrIn(proto byte, offset, length uint32, set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

// replaceSets flushes each set and adds its new ranges in ONE transaction, so
// no packet ever sees an empty or half-filled set.
func replaceSets(c *nftables.Conn, contents map[*nftables.Set][]addrRange) error {
	for set, rs := range contents {
		c.FlushSet(set)
		if err := queueElements(c, set, rs); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("replace nft set contents: %w", err)
	}
	return nil
}

// countRanges counts the ranges (interval starts) in a set.
func countRanges(c *nftables.Conn, set *nftables.Set) (int, error) {
	els, err := c.GetSetElements(set)
	if err != nil {
		return 0, fmt.Errorf("list nft set %s: %w", set.Name, err)
	}
	n := 0
	for _, e := range els {
		if !e.IntervalEnd {
			n++
		}
	}
	return n, nil
}
