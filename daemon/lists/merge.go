package lists

import (
	"net/netip"
	"slices"
)

// Merge returns the smallest set of prefixes covering exactly the addresses of ps:
// duplicates dropped, overlapping and adjacent prefixes joined. IPv4 comes first, then
// IPv6, each in address order, so equal inputs give equal outputs whatever their order.
// Invalid prefixes are dropped; host bits are ignored.
func Merge(ps []netip.Prefix) []netip.Prefix {
	v4, v6 := Split(ps)
	return append(mergeFamily(v4), mergeFamily(v6)...)
}

// Split separates IPv4 from IPv6 prefixes, keeping their order and masking them. An
// IPv4-mapped IPv6 prefix of /96 or longer counts as the IPv4 prefix it maps.
func Split(ps []netip.Prefix) (v4, v6 []netip.Prefix) {
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		a := p.Addr()
		if a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return v4, v6
}

// addrRange is an inclusive range of addresses of one family.
type addrRange struct{ first, last netip.Addr }

// mergeFamily merges prefixes of one address family: sort the ranges, join those that
// overlap or touch, then cut each joined range back into the fewest aligned prefixes.
func mergeFamily(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	ranges := make([]addrRange, 0, len(ps))
	for _, p := range ps {
		ranges = append(ranges, addrRange{p.Addr(), lastAddr(p)})
	}
	slices.SortFunc(ranges, func(a, b addrRange) int { return a.first.Compare(b.first) })

	joined := ranges[:1]
	for _, r := range ranges[1:] {
		cur := &joined[len(joined)-1]
		next := cur.last.Next() // invalid after the family's last address
		if r.first.Compare(cur.last) <= 0 || (next.IsValid() && r.first == next) {
			if r.last.Compare(cur.last) > 0 {
				cur.last = r.last
			}
			continue
		}
		joined = append(joined, r)
	}

	var out []netip.Prefix
	for _, r := range joined {
		out = appendRange(out, r)
	}
	return out
}

// appendRange appends the fewest prefixes that cover r exactly.
func appendRange(out []netip.Prefix, r addrRange) []netip.Prefix {
	start := r.first
	for {
		// The widest prefix that starts at start and ends within r.
		var p netip.Prefix
		for bits := 0; bits <= start.BitLen(); bits++ {
			c := netip.PrefixFrom(start, bits)
			if c.Masked().Addr() == start && lastAddr(c).Compare(r.last) <= 0 {
				p = c
				break
			}
		}
		out = append(out, p)
		end := lastAddr(p)
		if end == r.last {
			return out
		}
		start = end.Next()
	}
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

func setHostBits(b []byte, bits int) {
	for i := range b {
		switch {
		case bits >= 8*(i+1):
			// network byte: keep
		case bits <= 8*i:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> (bits - 8*i)
		}
	}
}
