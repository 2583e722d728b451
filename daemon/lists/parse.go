package lists

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Default limits for a downloaded list. Telegram's list is under 1 KiB and Meta's whole
// AS is about 120 prefixes; these leave room for big custom lists while keeping a
// runaway download from eating a small router's memory or its nftables set.
const (
	DefaultMaxBytes   = 1 << 20
	DefaultMaxEntries = 20000
)

// ParseOptions are the limits and relaxations applied by Parse.
type ParseOptions struct {
	// MaxBytes rejects larger input (0: DefaultMaxBytes).
	MaxBytes int64
	// MaxEntries rejects input with more prefixes than this (0: DefaultMaxEntries).
	MaxEntries int
	// AllowDocumentation accepts the documentation ranges (192.0.2.0/24,
	// 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20). Only tests and the e2e
	// network set it: real lists never carry them.
	AllowDocumentation bool
	// Trusted accepts prefixes shorter than /8 (IPv4) or /16 (IPv6): the user typed them.
	Trusted bool
}

func (o ParseOptions) maxBytes() int64 {
	if o.MaxBytes > 0 {
		return o.MaxBytes
	}
	return DefaultMaxBytes
}

func (o ParseOptions) maxEntries() int {
	if o.MaxEntries > 0 {
		return o.MaxEntries
	}
	return DefaultMaxEntries
}

// ParseError says why a list was refused. Line is 1-based; 0 means the list as a whole.
type ParseError struct {
	Line   int
	Reason string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return e.Reason
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// Parse reads a list: one CIDR or bare address (a /32 or /128) a line, '#' or ';'
// comments (also after an entry), blank lines, CRLF line ends, a UTF-8 byte order mark
// and surrounding spaces are fine. It returns the prefixes in file order, masked.
//
// One bad line refuses the whole list: a download with garbage in it is most likely not
// the list (a captive portal, an error page, a cut-off transfer, a hijacked source), and
// applying the part that parsed would silently drop or add targets.
func Parse(data []byte, opts ParseOptions) ([]netip.Prefix, error) {
	if int64(len(data)) > opts.maxBytes() {
		return nil, &ParseError{Reason: fmt.Sprintf("list is larger than the %d-byte limit", opts.maxBytes())}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if line, ok := htmlLine(data); ok {
		return nil, &ParseError{Line: line, Reason: "this is an HTML page (an error page or a captive portal?), not a list of CIDRs"}
	}

	check := newChecker(opts)
	var out []netip.Prefix
	maxEntries := opts.maxEntries()
	lineNo := 0
	for rest := data; len(rest) > 0; {
		lineNo++
		raw, tail, complete := bytes.Cut(rest, []byte("\n"))
		rest = tail
		text := string(bytes.TrimRight(raw, "\r"))
		if !utf8.ValidString(text) {
			return nil, &ParseError{Line: lineNo, Reason: "not UTF-8 text"}
		}
		if i := strings.IndexAny(text, "#;"); i >= 0 {
			text = text[:i]
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		p, err := parseEntry(text)
		if err != nil && !complete {
			// The last line has no newline and does not parse: the transfer was cut.
			return nil, &ParseError{Line: lineNo, Reason: fmt.Sprintf("%q is cut off: the list ends in the middle of a line (truncated download?)", text)}
		}
		if err == nil {
			err = check.check(p)
		}
		if err != nil {
			return nil, &ParseError{Line: lineNo, Reason: err.Error()}
		}
		if len(out) == maxEntries {
			return nil, &ParseError{Line: lineNo, Reason: fmt.Sprintf("more than %d entries", maxEntries)}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, &ParseError{Reason: fmt.Sprintf("list has no entries (%d lines, all blank or comments)", lineNo)}
	}
	return out, nil
}

// htmlLine finds HTML: a document whose first non-space byte is '<', or one that holds
// "<html" anywhere. Servers send such pages with any content type, so this looks at the
// bytes only.
func htmlLine(data []byte) (int, bool) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '<' {
		return 1 + bytes.Count(data[:len(data)-len(trimmed)], []byte("\n")), true
	}
	if i := indexFold(data, "<html"); i >= 0 {
		return 1 + bytes.Count(data[:i], []byte("\n")), true
	}
	return 0, false
}

// indexFold is a case-insensitive bytes.Index for an ASCII needle, without copying data.
func indexFold(data []byte, needle string) int {
	for i := 0; i+len(needle) <= len(data); i++ {
		if data[i] == '<' && strings.EqualFold(string(data[i:i+len(needle)]), needle) {
			return i
		}
	}
	return -1
}

// parseEntry reads one CIDR or bare address.
func parseEntry(text string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(text, "/") {
		var err error
		p, err = netip.ParsePrefix(text)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix", text)
		}
	} else {
		a, err := netip.ParseAddr(text)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", text)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%s is an IPv4-mapped IPv6 prefix: write it as IPv4", p)
	}
	if m := p.Masked(); m != p {
		// Host bits set usually means a cut or mangled line: refuse rather than guess.
		return netip.Prefix{}, fmt.Errorf("%s has host bits set (the prefix would be %s)", p, m)
	}
	return p, nil
}

// reservedRange is a range no list may touch, with the reason given when one does.
type reservedRange struct {
	prefix netip.Prefix
	what   string
}

// forbiddenRanges never leave the local network or are not unicast: tunnelling them
// would capture the LAN, the router itself, or nothing at all. A prefix overlapping one
// is refused, so 10.0.0.0/7 is refused as well as 10.1.0.0/16.
func forbiddenRanges() []reservedRange {
	mk := func(s, what string) reservedRange { return reservedRange{netip.MustParsePrefix(s), what} }
	return []reservedRange{
		mk("0.0.0.0/8", "the unspecified (\"this network\") range"),
		mk("10.0.0.0/8", "a private range"),
		mk("100.64.0.0/10", "the shared CGNAT range"),
		mk("127.0.0.0/8", "a loopback range"),
		mk("169.254.0.0/16", "a link-local range"),
		mk("172.16.0.0/12", "a private range"),
		mk("192.168.0.0/16", "a private range"),
		mk("224.0.0.0/4", "a multicast range"),
		mk("240.0.0.0/4", "a reserved range (and broadcast)"),
		mk("::/128", "the unspecified address"),
		mk("::1/128", "the loopback address"),
		mk("::ffff:0:0/96", "the IPv4-mapped range"),
		mk("fc00::/7", "a private (unique local) range"),
		mk("fe80::/10", "a link-local range"),
		mk("ff00::/8", "a multicast range"),
	}
}

// documentationRanges are refused unless ParseOptions.AllowDocumentation is set. Only a
// prefix inside one is refused: a larger real range around it harms nobody.
func documentationRanges() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("3fff::/20"),
	}
}

// checker refuses what must never be a target; built once per list.
type checker struct {
	opts          ParseOptions
	forbidden     []reservedRange
	documentation []netip.Prefix
	global6       netip.Prefix
}

func newChecker(opts ParseOptions) *checker {
	return &checker{
		opts:          opts,
		forbidden:     forbiddenRanges(),
		documentation: documentationRanges(),
		// Every public IPv6 address lives here today.
		global6: netip.MustParsePrefix("2000::/3"),
	}
}

// check returns why p may not be a target, or nil. p is masked.
func (c *checker) check(p netip.Prefix) error {
	if p.Bits() == 0 {
		return fmt.Errorf("%s is a default route", p)
	}
	for _, r := range c.forbidden {
		if r.prefix.Addr().BitLen() != p.Addr().BitLen() || !r.prefix.Overlaps(p) {
			continue
		}
		if p == r.prefix {
			return fmt.Errorf("%s is %s", p, r.what)
		}
		if p.Bits() > r.prefix.Bits() {
			return fmt.Errorf("%s is %s (inside %s)", p, r.what, r.prefix)
		}
		return fmt.Errorf("%s covers %s (%s)", p, r.what, r.prefix)
	}
	if p.Addr().Is6() && !c.global6.Overlaps(p) {
		return fmt.Errorf("%s is outside the global unicast range %s", p, c.global6)
	}
	if !c.opts.AllowDocumentation {
		for _, d := range c.documentation {
			if d.Addr().BitLen() == p.Addr().BitLen() && d.Bits() <= p.Bits() && d.Contains(p.Addr()) {
				return fmt.Errorf("%s is a documentation range (inside %s)", p, d)
			}
		}
	}
	minBits := 8
	if p.Addr().Is6() {
		minBits = 16
	}
	if !c.opts.Trusted && p.Bits() < minBits {
		return fmt.Errorf("%s is shorter than /%d: too wide for a downloaded list", p, minBits)
	}
	return nil
}

// CheckUserPrefix says why a subnet the user typed (config custom, list subnet) may not be
// a target, or returns nil. Such a subnet may be any length and may be a documentation
// range (a lab, the e2e network), but a default route, private, loopback, link-local or
// multicast space is refused: it would capture the LAN or the router itself. The lists
// manager and `tgtun config check` (through control's config rules) both call it, so
// check refuses exactly what the daemon would drop.
func CheckUserPrefix(p netip.Prefix) error {
	return newChecker(ParseOptions{Trusted: true, AllowDocumentation: true}).check(p.Masked())
}
