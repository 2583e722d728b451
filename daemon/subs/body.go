// Package subs keeps the proxies of subscriptions: a provider's URL that returns the
// current share links. It fetches them as a client panels recognise (User-Agent and
// device headers), reads the body (base64 or plain, one link a line) and the
// provider's headers (profile-update-interval, subscription-userinfo), turns each link
// into a `config proxy` section through daemon/links and checks it with daemon/config
// (the validation `config check` uses), and keeps the last good set, cached on tmpfs.
package subs

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Bounds on what a provider may send.
const (
	MaxBodyBytes = 2 << 20 // a body of several thousand links
	maxLineBytes = 16 << 10
	MaxMembers   = 1000 // links past this are skipped: each member costs memory and probes
)

// Body is a subscription's content: its link lines in order, and the metadata some
// providers put into the body as "#key: value" lines (Happ's format: #profile-title,
// #profile-update-interval, #subscription-userinfo), keys in lower case.
type Body struct {
	Links []string
	Meta  map[string]string
}

// Errors of DecodeBody that say what the provider sent instead of links.
var (
	ErrEmpty = errors.New("the body is empty")
	ErrJSON  = errors.New("the body is an Xray/sing-box JSON configuration, not share links: the panel serves JSON to this User-Agent; set option user_agent to a client it answers with links")
	ErrHTML  = errors.New("the body is an HTML page, not share links: the panel took the request for a browser; set option user_agent to a client it recognises")
)

var bom = []byte("\xef\xbb\xbf")

// DecodeBody reads a subscription body: share links one a line, or the same in base64
// (standard or URL alphabet, padded or not, wrapped over lines or not). Blank lines are
// skipped; lines starting with '#' are metadata or comments.
func DecodeBody(data []byte) (Body, error) {
	data = bytes.TrimPrefix(data, bom)
	text := strings.TrimSpace(string(data))
	switch {
	case text == "":
		return Body{}, ErrEmpty
	case text[0] == '{' || text[0] == '[':
		return Body{}, ErrJSON
	case text[0] == '<':
		return Body{}, ErrHTML
	}
	if !strings.Contains(text, "://") {
		dec, ok := decodeBase64(text)
		if !ok {
			return Body{}, errors.New("the body is neither share links (scheme://…, one a line) nor base64 of them")
		}
		text = strings.TrimSpace(string(bytes.TrimPrefix(dec, bom)))
		if !utf8.ValidString(text) || !strings.Contains(text, "://") {
			return Body{}, errors.New("the body is base64 of something that holds no share links")
		}
	}
	var b Body
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			if k, v, ok := strings.Cut(line[1:], ":"); ok && !strings.Contains(k, " ") && k != "" {
				if b.Meta == nil {
					b.Meta = map[string]string{}
				}
				b.Meta[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		default:
			b.Links = append(b.Links, line)
		}
	}
	if len(b.Links) == 0 {
		return b, errors.New("the body holds no share links")
	}
	return b, nil
}

// decodeBase64 accepts the standard and URL alphabets, padded or not, with whitespace
// (line wrapping) anywhere.
func decodeBase64(s string) ([]byte, bool) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}

// label is the name a link gives its proxy: its #fragment, percent-decoded where that
// works, without control characters, at most 64 characters. It is not a link parser:
// the link itself is read by daemon/links.
func label(link string) string {
	_, frag, ok := strings.Cut(link, "#")
	if !ok {
		return ""
	}
	if dec, err := url.PathUnescape(frag); err == nil {
		frag = dec
	}
	return printable(frag, 64)
}

// printable keeps valid, printable text of at most max runes (an ellipsis marks a cut).
func printable(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range strings.ToValidUTF8(s, "?") {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 {
			continue
		}
		if n == max {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}
