// Package dnsname checks domain names as tgtun accepts them in its configuration and
// lists, where each selects the domain and its subdomains (dnsmasq's semantics).
package dnsname

import (
	"fmt"
	"strings"
)

// Normalize checks one domain as typed in the configuration or found in a list and
// returns its canonical form (lower case, no leading "*." or ".", no trailing dot).
func Normalize(s string) (string, error) {
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
// domain must be canonical (Normalize).
func CoveredBy(name, domain string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	return name == domain || strings.HasSuffix(name, "."+domain)
}
