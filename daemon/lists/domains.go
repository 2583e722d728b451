package lists

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
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

// NormalizeDomain checks one domain as typed in the configuration or found in a list and
// returns its canonical form (lower case, no leading "*." or ".", no trailing dot).
func NormalizeDomain(s string) (string, error) {
	d := strings.ToLower(strings.TrimSpace(s))
	d = strings.TrimPrefix(d, "*.")
	d = strings.TrimPrefix(d, ".")
	d = strings.TrimSuffix(d, ".")
	quoted := fmt.Sprintf("%q", s)
	switch {
	case d == "" || d == "*":
		return "", fmt.Errorf("%s matches every domain", quoted)
	case strings.Contains(d, "*"):
		return "", fmt.Errorf("%s: only a leading '*.' is allowed (a domain covers its subdomains anyway)", quoted)
	case len(d) > 253:
		return "", fmt.Errorf("%s is longer than 253 characters", quoted)
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("%s is a top-level domain alone (it would send the whole TLD through the proxy)", quoted)
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 {
			return "", fmt.Errorf("%s has an empty label or one longer than 63 characters", quoted)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("%s has a label starting or ending with '-'", quoted)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%s is not a host name (letters, digits, '-'; IDNs in punycode, xn--...)", quoted)
			}
		}
	}
	tld := labels[len(labels)-1]
	if strings.Trim(tld, "0123456789") == "" {
		return "", fmt.Errorf("%s looks like an IP address, not a domain", quoted)
	}
	return d, nil
}

// CoveredBy reports whether name is domain or one of its subdomains (dnsmasq semantics).
func CoveredBy(name, domain string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	return name == domain || strings.HasSuffix(name, "."+domain)
}
