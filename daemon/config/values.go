package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Parsers of single option values. Their errors are short phrases completing
// "option 'x' is ...", and name what is allowed.

// parseBool accepts what OpenWrt's config_get_bool accepts.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "on", "true", "yes", "enabled":
		return true, nil
	case "0", "off", "false", "no", "disabled":
		return false, nil
	}
	return false, errors.New("not a boolean (allowed: '1' or '0')")
}

// parseIfname checks a Linux interface name: 1-15 bytes, no '/', ':' or whitespace,
// not "." or "..".
func parseIfname(s string) (string, error) {
	if s == "" || len(s) > 15 {
		return "", errors.New("not a valid interface name (1-15 characters)")
	}
	if s == "." || s == ".." {
		return "", errors.New("not a valid interface name")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' || c == ':' {
			return "", errors.New("not a valid interface name (no '/', ':', spaces or non-ASCII)")
		}
	}
	return s, nil
}

// errNotNumber is parseInt's error for text that is no decimal number at all: the
// message says so rather than "out of range", and range hints are left off.
var errNotNumber = errors.New("not a number")

// parseInt parses a decimal integer within [min, max].
func parseInt(s string, min, max int64) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if errors.Is(err, strconv.ErrSyntax) {
		return 0, fmt.Errorf("%w (%d-%d)", errNotNumber, min, max)
	}
	if err != nil || v < min || v > max {
		return 0, fmt.Errorf("out of range %d-%d", min, max)
	}
	return v, nil
}

// parseUint32 parses a mark: hexadecimal with 0x, or decimal.
func parseUint32(s string) (uint32, error) {
	var v uint64
	var err error
	if rest, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		v, err = strconv.ParseUint(rest, 16, 32)
	} else {
		v, err = strconv.ParseUint(s, 10, 32)
	}
	if err != nil || s == "" {
		return 0, errors.New("not a 32-bit number (hexadecimal 0x… or decimal)")
	}
	return uint32(v), nil
}

// parseFwmark parses VALUE or VALUE/MASK; the mask defaults to the value.
func parseFwmark(s string) (mark, mask uint32, err error) {
	ms, ks, hasMask := strings.Cut(s, "/")
	if mark, err = parseUint32(ms); err != nil {
		return 0, 0, err
	}
	mask = mark
	if hasMask {
		if mask, err = parseUint32(ks); err != nil {
			return 0, 0, fmt.Errorf("mask %w", err)
		}
	}
	if mark == 0 {
		return 0, 0, errors.New("zero (the mark must have at least one bit set)")
	}
	if mark&^mask != 0 {
		return 0, 0, errors.New("not inside its mask (VALUE/MASK needs VALUE & ~MASK == 0)")
	}
	return mark, mask, nil
}

// parseDuration accepts a Go duration ("10s", "24h", "1h30m"), plain seconds ("3600")
// or days ("7d").
func parseDuration(s string) (time.Duration, error) {
	const bad = "not a duration (e.g. '10s', '30m', '24h', '7d' or plain seconds)"
	if s == "" {
		return 0, errors.New(bad)
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > math.MaxInt64/int64(time.Second) {
			return 0, errors.New(bad)
		}
		return time.Duration(n) * time.Second, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/int64(24*time.Hour) {
			return 0, errors.New(bad)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New(bad)
	}
	return d, nil
}

// parseSize accepts the sizes the init script turns into GOMEMLIMIT: a number of
// bytes, or with K/M/G (binary) units; '0' and 'off' mean no limit.
func parseSize(s string) (int64, error) {
	const bad = "not a size (e.g. '32M', '512K', '1G', bytes, or '0'/'off' for none)"
	if s == "0" || s == "off" {
		return 0, nil
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New(bad)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, errors.New(bad)
	}
	var unit int64
	switch s[i:] {
	case "", "B", "b":
		unit = 1
	case "K", "k", "KB", "kB", "KiB":
		unit = 1 << 10
	case "M", "m", "MB", "MiB":
		unit = 1 << 20
	case "G", "g", "GB", "GiB":
		unit = 1 << 30
	default:
		return 0, errors.New(bad)
	}
	if n > math.MaxInt64/unit {
		return 0, errors.New(bad)
	}
	return n * unit, nil
}

// parseServer accepts an IP address (IPv6 optionally in brackets) or a host name.
func parseServer(s string) (string, error) {
	if inner, ok := strings.CutPrefix(s, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		a, err := netip.ParseAddr(inner)
		if !ok || err != nil || !a.Is6() {
			return "", errors.New("not an IP address or host name")
		}
		s = inner
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.IsUnspecified() {
			return "", errors.New("an unspecified address (0.0.0.0 or ::)")
		}
		return a.Unmap().String(), nil
	}
	if _, err := netip.ParseAddrPort(s); err == nil || strings.Count(s, ":") == 1 {
		return "", errors.New("not a host: the port goes in option port")
	}
	if !validHostname(s) {
		return "", errors.New("not an IP address or host name")
	}
	return s, nil
}

// validHostname checks DNS syntax, leniently allowing '_' (seen in /etc/hosts names).
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// parseURL accepts absolute http and https URLs with a host.
func parseURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return "", errors.New("not an http:// or https:// URL with a host")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", errors.New("not a URL (it contains spaces or control characters)")
	}
	return s, nil
}

// parseDevice reads an IPv4 or IPv6 address, a CIDR prefix or a MAC address.
func parseDevice(s string) (Device, error) {
	if hw, err := net.ParseMAC(s); err == nil {
		if len(hw) != 6 {
			return Device{}, errors.New("not a 6-byte MAC address (aa:bb:cc:dd:ee:ff)")
		}
		return Device{MAC: hw.String()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return Device{Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() {
			return Device{}, errors.New("an IPv4-mapped IPv6 prefix; write the IPv4 prefix")
		}
		return Device{Prefix: p.Masked()}, nil
	}
	return Device{}, errors.New("not an IP address, CIDR prefix or MAC address (e.g. '192.168.1.20', '192.168.1.0/28', '2001:db8::20', 'aa:bb:cc:dd:ee:ff')")
}

// parseDNSUpstream reads "IP", "IP:port", "[IPv6]:port" (DNS over TCP) or an https://
// URL (DNS over HTTPS), returning it with the port made explicit.
func parseDNSUpstream(s string) (string, error) {
	if strings.HasPrefix(s, "https://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || u.Hostname() == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return "", errors.New("not an https:// URL with a host (e.g. 'https://1.1.1.1/dns-query')")
		}
		return s, nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a.Unmap(), 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().IsUnspecified() {
		return "", errors.New("not an IP address with an optional port, or an https:// URL (e.g. '1.1.1.1', '9.9.9.9:53', '[2606:4700:4700::1111]:53', 'https://1.1.1.1/dns-query')")
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), nil
}
