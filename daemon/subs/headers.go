package subs

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"time"
)

// Userinfo is a provider's subscription-userinfo header: traffic used (upload and
// download) and allowed (total, 0 = unlimited) in bytes, and when the account expires.
type Userinfo struct {
	Upload   int64     `json:"upload"`
	Download int64     `json:"download"`
	Total    int64     `json:"total"`
	Expire   time.Time `json:"expire,omitzero"`
}

// ParseUserinfo reads "upload=1; download=2; total=3; expire=1767225600" (the format of
// 3x-ui, Marzban, Remnawave and clients). Unknown keys and bad values are ignored; ok
// says whether any field was read.
func ParseUserinfo(s string) (u Userinfo, ok bool) {
	for part := range strings.SplitSeq(s, ";") {
		k, v, found := strings.Cut(part, "=")
		if !found {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || n < 0 || math.IsNaN(n) || n > math.MaxInt64/2 {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "upload":
			u.Upload, ok = int64(n), true
		case "download":
			u.Download, ok = int64(n), true
		case "total":
			u.Total, ok = int64(n), true
		case "expire":
			if n > 0 && n < 1e11 { // seconds; 0 means never
				u.Expire, ok = time.Unix(int64(n), 0).UTC(), true
			}
		}
	}
	return u, ok
}

// String is the header's format (for the cache).
func (u Userinfo) String() string {
	exp := int64(0)
	if !u.Expire.IsZero() {
		exp = u.Expire.Unix()
	}
	return "upload=" + strconv.FormatInt(u.Upload, 10) + "; download=" + strconv.FormatInt(u.Download, 10) +
		"; total=" + strconv.FormatInt(u.Total, 10) + "; expire=" + strconv.FormatInt(exp, 10)
}

// minProviderInterval keeps a provider's profile-update-interval from making the router
// poll it more than every 10 minutes.
const minProviderInterval = 10 * time.Minute

// ParseInterval reads profile-update-interval: hours (a number). 0 for none or bad.
func ParseInterval(s string) time.Duration {
	h, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || h <= 0 || math.IsNaN(h) || h > 24*366 {
		return 0
	}
	return max(time.Duration(h*float64(time.Hour)), minProviderInterval)
}

// ParseText reads a text header that may be "base64:…" encoded (announce,
// profile-title), as printable text of at most max characters.
func ParseText(s string, max int) string {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "base64:"); ok {
		if dec, ok := decodeBase64(rest); ok {
			s = string(dec)
		}
	}
	return printable(s, max)
}

// refusal says why a panel sent no links, from the headers Remnawave-style panels set
// when the device check fails ("" when none is set).
func refusal(get func(string) string, sentDevice bool) string {
	is := func(h string) bool { return strings.EqualFold(strings.TrimSpace(get(h)), "true") }
	switch {
	case is("x-hwid-max-devices-reached"):
		return "the panel's device limit is reached (x-hwid-max-devices-reached): remove a device of this account in the panel or its bot, or set option hwid to the id of one it knows"
	case is("x-hwid-not-supported") && !sentDevice:
		return "the panel requires device headers (x-hwid-not-supported): set device_headers '1'"
	case is("x-hwid-not-supported"):
		return "the panel refused this client's device headers (x-hwid-not-supported)"
	case is("x-hwid-limit"):
		return "the panel refused this device (x-hwid-limit)"
	}
	return ""
}

// b64 is base64 for the cache's text headers.
func b64(s string) string { return "base64:" + base64.StdEncoding.EncodeToString([]byte(s)) }
