package config

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Values of Proxy.Flow, Proxy.Security and Proxy.Fingerprint (daemon/proxy has the
// same names; this package does not import it).
const (
	FlowVision         = "xtls-rprx-vision"
	SecurityTLS        = "tls"
	SecurityReality    = "reality"
	DefaultFingerprint = "chrome"
)

// Fingerprints are the browser ClientHellos a vless or trojan proxy can imitate.
var Fingerprints = []string{"chrome", "firefox", "safari", "ios", "edge", "android", "360", "qq", "random", "randomized"}

// proxyTLS reads the options of vless and trojan proxies: the user id, flow and the
// TLS or REALITY settings. On other types they are warned about and ignored.
func (c *checker) proxyTLS(r *section, p *Proxy, hasServer bool) {
	uuid, uuidSet := r.single("uuid")
	flow, flowSet := r.single("flow")
	security, securitySet := r.single("security")
	sni, sniSet := r.single("sni")
	fp, fpSet := r.single("fingerprint")
	pub, pubSet := r.single("public_key")
	sid, sidSet := r.single("short_id")
	alpn, alpnSet := r.list("alpn")
	insecure, insecureSet := r.single("insecure")
	if p.Type != TypeVLESS && p.Type != TypeTrojan {
		for _, o := range []struct {
			name string
			set  bool
			line int
		}{
			{"uuid", uuidSet, uuid.Line}, {"flow", flowSet, flow.Line}, {"security", securitySet, security.Line},
			{"sni", sniSet, sni.Line}, {"fingerprint", fpSet, fp.Line}, {"public_key", pubSet, pub.Line},
			{"short_id", sidSet, sid.Line}, {"insecure", insecureSet, insecure.Line},
		} {
			if o.set {
				c.warn(o.line, r.s.label(), o.name+" is only used by vless and trojan proxies")
			}
		}
		if alpnSet && len(alpn) > 0 {
			c.warn(alpn[0].Line, r.s.label(), "alpn is only used by vless and trojan proxies")
		}
		return
	}

	p.Security = SecurityTLS
	p.Fingerprint = DefaultFingerprint
	if p.Type == TypeVLESS {
		r.oneOf("security", []string{SecurityTLS, SecurityReality}, &p.Security)
		r.oneOf("flow", []string{"", FlowVision}, &p.Flow)
		switch {
		case !uuidSet || uuid.Text == "":
			if hasServer {
				c.fail(r.s, r.s.Line, "uuid", "uuid is missing (vless needs the user id the server gave you)")
			}
		case !validVLESSUUID(uuid.Text):
			r.badSecret("uuid", uuid, "is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) nor a text of 1-30 characters")
		default:
			p.UUID = uuid.Text
		}
	} else {
		if securitySet && security.Text != SecurityTLS {
			r.bad("security", security, "not allowed for trojan (it runs over tls only)")
		}
		for _, o := range []struct {
			name string
			v    uciValue
			set  bool
		}{{"uuid", uuid, uuidSet}, {"flow", flow, flowSet}, {"public_key", pub, pubSet}, {"short_id", sid, sidSet}} {
			if o.set {
				c.warn(o.v.Line, r.s.label(), o.name+" is not used by trojan")
			}
		}
	}
	if sniSet {
		if sni.Text != "" && !validSNI(sni.Text) {
			r.bad("sni", sni, "not a host name (letters, digits, '-', '.'; at most 253 characters)")
		} else {
			p.SNI = sni.Text
		}
	}
	if fpSet && fp.Text != "" {
		r.oneOf("fingerprint", Fingerprints, &p.Fingerprint)
	}
	for _, a := range alpn {
		if a.Text == "" || len(a.Text) > 255 || strings.ContainsFunc(a.Text, func(r rune) bool { return r <= ' ' || r > '~' }) {
			r.bad("alpn", a, "not a protocol name (e.g. h2, http/1.1)")
			continue
		}
		p.ALPN = append(p.ALPN, a.Text)
	}
	r.boolean("insecure", &p.Insecure)

	if p.Security == SecurityReality {
		if p.Insecure {
			r.bad("insecure", insecure, "not allowed with security reality (REALITY authenticates the server by public_key)")
		}
		if p.SNI == "" && hasServer {
			c.fail(r.s, r.s.Line, "sni", "sni is missing (REALITY needs a server name the server accepts, e.g. the site it imitates)")
		}
		switch {
		case !pubSet || pub.Text == "":
			if hasServer {
				c.fail(r.s, r.s.Line, "public_key", "public_key is missing (REALITY needs the server's public key, pbk in a share link)")
			}
		case !validRealityKey(pub.Text):
			r.bad("public_key", pub, "not a base64 X25519 public key of 32 bytes")
		default:
			p.PublicKey = pub.Text
		}
		if sidSet {
			if !validShortID(sid.Text) {
				r.bad("short_id", sid, "not hex of up to 8 bytes (an even number of 0-16 digits)")
			} else {
				p.ShortID = sid.Text
			}
		}
		if p.Fingerprint == "randomized" {
			r.bad("fingerprint", fp, "not allowed with security reality (its hello may lack the X25519 share REALITY needs)")
		}
	} else {
		for _, o := range []struct {
			name string
			v    uciValue
			set  bool
		}{{"public_key", pub, pubSet}, {"short_id", sid, sidSet}} {
			if o.set && p.Type == TypeVLESS {
				c.warn(o.v.Line, r.s.label(), o.name+" is only used with security reality")
			}
		}
		if p.Insecure {
			c.warn(insecure.Line, r.s.label(), "insecure '1': the server's certificate is not checked, so anyone in the path can read the traffic")
		}
	}
}

// validVLESSUUID accepts a UUID, with or without dashes, or a text of 1-30 bytes
// (servers map it to a name-based UUID).
func validVLESSUUID(s string) bool {
	h := strings.ReplaceAll(s, "-", "")
	if len(h) == 32 {
		if _, err := hex.DecodeString(h); err == nil {
			return true
		}
	}
	return len(s) >= 1 && len(s) <= 30 && !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f })
}

func validRealityKey(s string) bool {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return len(b) == 32
		}
	}
	return false
}

func validShortID(s string) bool {
	if len(s) > 16 || len(s)%2 != 0 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func validSNI(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
