package config

import (
	"encoding/hex"
	"path/filepath"
	"slices"
	"strings"
)

// proxyCerts reads how a vless or trojan proxy over TLS checks the server's certificate:
// pinned_sha256 (SHA-256 of the server's certificate, `pcs` of a share link, with
// Xray's meaning) and ca_file (the CA certificates to trust instead of the system's).
// Without either the system's roots are used. On other types, and with REALITY (which
// authenticates the server by public_key) or insecure '1' (which checks nothing), they
// are refused or warned about.
func (c *checker) proxyCerts(r *section, p *Proxy) {
	pins, pinsSet := r.list("pinned_sha256")
	caFile, caSet := r.single("ca_file")
	if caSet && caFile.Text == "" {
		caSet = false
	}
	if !pinsSet && !caSet {
		return
	}
	line := caFile.Line
	if len(pins) > 0 {
		line = pins[0].Line
	}
	if p.Type != TypeVLESS && p.Type != TypeTrojan {
		for _, o := range []struct {
			name string
			set  bool
		}{{"pinned_sha256", pinsSet && len(pins) > 0}, {"ca_file", caSet}} {
			if o.set {
				c.warn(line, r.s.label(), o.name+" is only used by vless and trojan proxies")
			}
		}
		return
	}
	for _, v := range pins {
		h, ok := ParsePinnedSHA256(v.Text)
		if !ok {
			r.bad("pinned_sha256", v, "not a SHA-256 in hex (64 hex digits, ':' between bytes allowed, as `openssl x509 -noout -fingerprint -sha256` prints it)")
			continue
		}
		if !slices.Contains(p.PinnedSHA256, h) {
			p.PinnedSHA256 = append(p.PinnedSHA256, h)
		}
	}
	if caSet {
		switch {
		case !filepath.IsAbs(caFile.Text) || strings.ContainsFunc(caFile.Text, func(r rune) bool { return r < ' ' || r == 0x7f }):
			r.bad("ca_file", caFile, "not an absolute file path (e.g. '/etc/ssl/my-ca.pem')")
		default:
			p.CAFile = caFile.Text
		}
	}
	switch {
	case p.Security == SecurityReality:
		c.fail(r.s, line, "", "pinned_sha256 and ca_file are not allowed with security reality (REALITY authenticates the server by public_key)")
	case p.Insecure:
		c.fail(r.s, line, "", "pinned_sha256 and ca_file are not allowed with insecure '1' (insecure skips the certificate check they ask for; remove insecure)")
	}
}

// ParsePinnedSHA256 reads a pinned certificate hash as Xray's pinnedPeerCertSha256 and
// share links' pcs write it: 64 hex digits, any case, optionally with ':' between the
// bytes (OpenSSL's fingerprint format). It returns lower-case hex without colons.
func ParsePinnedSHA256(s string) (string, bool) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(h) != 64 {
		return "", false
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", false
	}
	return h, true
}
