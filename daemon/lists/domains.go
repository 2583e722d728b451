package lists

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tgtun/tgtun/daemon/dnsname"
)

// Limits of a domain list. A catalogue list has tens of domains; the cap keeps a runaway
// download from filling dnsmasq's configuration (every domain is two lines there).
const (
	DefaultMaxDomainBytes   = 256 << 10
	DefaultMaxDomainEntries = 5000
)

// DomainOptions are the limits applied by ParseDomains.
type DomainOptions struct {
	MaxBytes   int64 // DefaultMaxDomainBytes when 0
	MaxEntries int   // DefaultMaxDomainEntries when 0
}

// ParseDomains reads a domain list: one domain a line, '#' or ';' comments (also after an
// entry), blank lines, CRLF, a UTF-8 byte order mark and surrounding spaces are fine. A
// leading "*." or "." and a trailing "." are dropped (a domain already covers its
// subdomains, as dnsmasq matches them). Domains are lower-cased, de-duplicated and sorted.
//
// Refused, with the line named: wildcards other than a leading "*.", a bare top-level
// domain ("com": that would send a whole TLD through the proxy), anything that is not a
// host name in ASCII (IDNs in punycode, xn--...), IP addresses, HTML. One bad line refuses
// the whole list, as for range lists.
func ParseDomains(data []byte, opts DomainOptions) ([]string, error) {
	maxBytes, maxEntries := opts.MaxBytes, opts.MaxEntries
	if maxBytes <= 0 {
		maxBytes = DefaultMaxDomainBytes
	}
	if maxEntries <= 0 {
		maxEntries = DefaultMaxDomainEntries
	}
	if int64(len(data)) > maxBytes {
		return nil, &ParseError{Reason: fmt.Sprintf("list is larger than the %d-byte limit", maxBytes)}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if line, ok := htmlLine(data); ok {
		return nil, &ParseError{Line: line, Reason: "this is an HTML page (an error page or a captive portal?), not a list of domains"}
	}
	if !utf8.Valid(data) {
		return nil, &ParseError{Reason: "the list is not UTF-8 text"}
	}
	var out []string
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		if cut := strings.IndexAny(line, "#;"); cut >= 0 {
			line = line[:cut]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		d, err := NormalizeDomain(line)
		if err != nil {
			if i == len(lines)-1 {
				return nil, &ParseError{Line: i + 1, Reason: "the last line is cut off or invalid (truncated download?): " + err.Error()}
			}
			return nil, &ParseError{Line: i + 1, Reason: err.Error()}
		}
		out = append(out, d)
		if len(out) > maxEntries {
			return nil, &ParseError{Reason: fmt.Sprintf("more than %d domains", maxEntries)}
		}
	}
	if len(out) == 0 {
		return nil, &ParseError{Reason: "the list has no domains"}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// NormalizeDomain checks one domain and returns its canonical form (dnsname.Normalize).
func NormalizeDomain(s string) (string, error) { return dnsname.Normalize(s) }

// CoveredBy reports whether name is domain or one of its subdomains (dnsmasq semantics).
func CoveredBy(name, domain string) bool { return dnsname.CoveredBy(name, domain) }
