package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// XHTTP's "extra": the JSON object of Xray's SplitHTTPConfig as share links carry
// it (URL-encoded in extra=). Every field is either used, known to mean nothing
// to a client (ExtraIgnored: the server's settings, fields Xray dropped), or
// refused with its name: a setting that changes what goes on the wire is never
// dropped silently.

// ExtraUsed lists the fields of extra this client applies.
var ExtraUsed = []string{
	"headers", "xPaddingBytes", "xPaddingObfsMode", "xPaddingKey", "xPaddingHeader",
	"xPaddingPlacement", "xPaddingMethod", "uplinkHTTPMethod", "sessionPlacement", "sessionKey",
	"sessionIDPlacement", "sessionIDKey", "seqPlacement", "seqKey", "uplinkDataPlacement", "uplinkDataKey",
	"uplinkChunkSize", "noGRPCHeader", "scMaxEachPostBytes", "scMinPostsIntervalMs", "xmux",
	// The link's own path, host and mode win over these, as in Xray.
	"host", "path", "mode",
}

// ExtraIgnored lists the fields of extra that mean nothing to a client, each with
// the reason, for messages.
var ExtraIgnored = map[string]string{
	"noSSEHeader":          "a server setting",
	"scMaxBufferedPosts":   "a server setting",
	"scStreamUpServerSecs": "a server setting",
	"serverMaxHeaderBytes": "a server setting",
	"scMaxConcurrentPosts": "removed from Xray-core",
	"keepAlivePeriod":      "not an Xray-core setting (xmux.hKeepAlivePeriod is)",
}

// xmuxIgnored are the xmux fields a client without keep-alive pings ignores.
var xmuxIgnored = map[string]string{
	"hKeepAlivePeriod": "tgtun sends no HTTP/2 keep-alive pings (an idle router stays idle)",
}

// xhttpConfig is XHTTP's configuration with Xray's defaults applied.
type xhttpConfig struct {
	headers      map[string]string
	padding      Range
	obfs         bool
	padKey       string
	padHeader    string
	padPlacement string
	padMethod    string
	method       string
	sessPlace    string
	sessKey      string
	seqPlace     string
	seqKey       string
	dataPlace    string
	dataKey      string
	chunk        Range
	noGRPCHeader bool
	maxPost      Range
	interval     Range
	mux          muxLimits
	muxSet       bool
}

// Placements of XHTTP's padding, session id, sequence number and upload data.
const (
	placePath          = "path"
	placeQuery         = "query"
	placeHeader        = "header"
	placeCookie        = "cookie"
	placeQueryInHeader = "queryInHeader"
	placeBody          = "body"
	placeAuto          = "auto"
)

// maxPostBytes bounds scMaxEachPostBytes: what one upload request may carry.
const maxPostBytes = 16 << 20

// ParseExtra checks an extra object as config check and the link parser see it:
// the names of the fields it ignores, or an error naming the field it refuses.
func ParseExtra(extra string) (ignored []string, err error) {
	_, ignored, err = parseExtra(extra, "")
	return ignored, err
}

// parseExtra reads extra (may be empty) on top of Xray's defaults; paddingBytes
// is the x_padding_bytes option (xPaddingBytes in extra must agree with it).
func parseExtra(extra, paddingBytes string) (*xhttpConfig, []string, error) {
	c := &xhttpConfig{
		padding: Range{100, 1000}, padKey: "x_padding", padHeader: "X-Padding",
		padPlacement: placeQueryInHeader, padMethod: "repeat-x", method: http.MethodPost,
		sessPlace: placePath, seqPlace: placePath, dataPlace: placeAuto,
		maxPost: Range{1000000, 1000000}, interval: Range{30, 30},
	}
	if paddingBytes != "" {
		r, err := parseRange(paddingBytes, 1<<16)
		if err != nil || r.From <= 0 {
			return nil, nil, optErr("padding_bytes", "%v", errOr(err, "must start at 1 or more (the server checks the padding)"))
		}
		c.padding = r
	}
	var ignored []string
	if strings.TrimSpace(extra) == "" {
		return c, nil, nil
	}
	fields, err := jsonObject(extra)
	if err != nil {
		return nil, nil, optErr("extra", "not a JSON object: %v", err)
	}
	bad := func(name, format string, args ...any) error {
		return optErr("extra", "%s: %s", name, fmt.Sprintf(format, args...))
	}
	var chunkSet bool
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		raw := fields[name]
		if why, ok := ExtraIgnored[name]; ok {
			_ = why
			ignored = append(ignored, name)
			continue
		}
		switch name {
		case "host", "path", "mode":
			// The link's (the proxy's) own options decide, as in Xray.
		case "headers":
			var h map[string]string
			if err := json.Unmarshal(raw, &h); err != nil {
				return nil, nil, bad(name, "not an object of strings")
			}
			for k, v := range h {
				if strings.EqualFold(k, "host") {
					return nil, nil, bad(name, "must not hold Host (the host option sets it)")
				}
				if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
					return nil, nil, bad(name, "%q is not a valid header", sanitize(k, 30))
				}
			}
			c.headers = h
		case "xPaddingBytes":
			r, err := jsonRange(raw, 1<<16)
			if err != nil || r.From <= 0 {
				return nil, nil, bad(name, "%v", errOr(err, "must start at 1 or more (the server checks the padding)"))
			}
			if paddingBytes != "" && r != c.padding {
				return nil, nil, bad(name, "%s differs from padding_bytes %s", r, c.padding)
			}
			c.padding = r
		case "xPaddingObfsMode", "noGRPCHeader":
			var b bool
			if err := json.Unmarshal(raw, &b); err != nil {
				return nil, nil, bad(name, "not true or false")
			}
			if name == "noGRPCHeader" {
				c.noGRPCHeader = b
			} else {
				c.obfs = b
			}
		case "xPaddingKey", "xPaddingHeader", "sessionPlacement", "sessionIDPlacement", "sessionKey", "sessionIDKey",
			"seqPlacement", "seqKey", "uplinkDataPlacement", "uplinkDataKey", "uplinkHTTPMethod", "xPaddingPlacement", "xPaddingMethod":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil || len(s) > 64 || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) {
				return nil, nil, bad(name, "not a short printable string")
			}
			if s == "" {
				continue
			}
			var ok bool
			switch name {
			case "xPaddingKey":
				c.padKey, ok = s, true
			case "xPaddingHeader":
				c.padHeader, ok = s, validHeaderName(s)
			case "xPaddingPlacement":
				c.padPlacement, ok = s, slices.Contains([]string{placeCookie, placeHeader, placeQuery, placeQueryInHeader}, s)
			case "xPaddingMethod":
				c.padMethod, ok = s, s == "repeat-x" || s == "tokenish"
			case "sessionPlacement", "sessionIDPlacement":
				c.sessPlace, ok = s, slices.Contains([]string{placePath, placeCookie, placeHeader, placeQuery}, s)
			case "seqPlacement":
				c.seqPlace, ok = s, slices.Contains([]string{placePath, placeCookie, placeHeader, placeQuery}, s)
			case "sessionKey", "sessionIDKey":
				c.sessKey, ok = s, true
			case "seqKey":
				c.seqKey, ok = s, true
			case "uplinkDataPlacement":
				c.dataPlace, ok = s, slices.Contains([]string{placeAuto, placeBody, placeCookie, placeHeader}, s)
			case "uplinkDataKey":
				c.dataKey, ok = s, true
			case "uplinkHTTPMethod":
				c.method = strings.ToUpper(s)
				ok = slices.Contains([]string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodGet, http.MethodDelete}, c.method)
			}
			if !ok {
				return nil, nil, bad(name, "%q is not supported", sanitize(s, 30))
			}
		case "uplinkChunkSize":
			r, err := jsonRange(raw, 1<<20)
			if err != nil {
				return nil, nil, bad(name, "%v", err)
			}
			c.chunk, chunkSet = r, r.To > 0
		case "scMaxEachPostBytes":
			r, err := jsonRange(raw, maxPostBytes)
			if err != nil || r.From <= 0 {
				return nil, nil, bad(name, "%v", errOr(err, "must be more than 0"))
			}
			c.maxPost = r
		case "scMinPostsIntervalMs":
			r, err := jsonRange(raw, 60000)
			if err != nil {
				return nil, nil, bad(name, "%v", err)
			}
			if r.To > 0 {
				c.interval = r
			}
		case "xmux":
			ign, err := c.mux.parse(raw)
			if err != nil {
				return nil, nil, bad(name, "%v", err)
			}
			c.muxSet = true
			for _, f := range ign {
				ignored = append(ignored, "xmux."+f)
			}
		case "downloadSettings":
			return nil, nil, bad(name, "not supported (a separate download server)")
		case "sessionIDTable", "sessionIDLength":
			return nil, nil, bad(name, "not supported (custom session ids are newer than the Xray-core tgtun is tested against)")
		default:
			return nil, nil, bad(sanitize(name, 30), "unknown field, not supported")
		}
	}
	if c.sessKey == "" {
		c.sessKey = map[string]string{placeHeader: "X-Session", placeCookie: "x_session", placeQuery: "x_session"}[c.sessPlace]
	}
	if c.seqKey == "" {
		c.seqKey = map[string]string{placeHeader: "X-Seq", placeCookie: "x_seq", placeQuery: "x_seq"}[c.seqPlace]
	}
	if c.dataKey == "" {
		c.dataKey = map[string]string{placeCookie: "x_data", placeHeader: "X-Data", placeAuto: "X-Data"}[c.dataPlace]
	}
	if !chunkSet {
		switch c.dataPlace {
		case placeCookie:
			c.chunk = Range{2 << 10, 3 << 10}
		case placeHeader:
			c.chunk = Range{3000, 4000}
		}
	} else if c.chunk.From < 64 {
		c.chunk = Range{64, max(64, c.chunk.To)}
	}
	if (c.padPlacement == placeHeader || c.padPlacement == placeQueryInHeader) && !validHeaderName(c.padHeader) {
		return nil, nil, optErr("extra", "xPaddingHeader: %q is not a header name", sanitize(c.padHeader, 30))
	}
	return c, ignored, nil
}

// check refuses settings that need another mode.
func (c *xhttpConfig) check(mode string) error {
	if (c.dataPlace == placeHeader || c.dataPlace == placeCookie) && mode != ModePacketUp {
		return optErr("extra", "uplinkDataPlacement %s needs mode packet-up", c.dataPlace)
	}
	if c.method == http.MethodGet && mode != ModePacketUp {
		return optErr("extra", "uplinkHTTPMethod GET needs mode packet-up")
	}
	if c.method == http.MethodGet && (c.dataPlace == placeBody || c.dataPlace == placeAuto) {
		return optErr("extra", "uplinkHTTPMethod GET carries no body: set uplinkDataPlacement header or cookie")
	}
	return nil
}

// muxLimits bound how flows share HTTP/2 connections (Xray's xmux).
type muxLimits struct {
	maxConcurrency Range // flows on one connection at a time; 0 = no bound
	maxConnections Range // connections to spread flows over; 0 = by maxConcurrency
	maxReuse       Range // flows one connection carries in its life; 0 = no bound
	maxRequests    Range // requests one connection carries; 0 = no bound
	maxAgeSecs     Range // seconds a connection takes new flows; 0 = no bound
}

// defaultMux is tgtun's sharing without an xmux setting: up to 8 flows a
// connection (one TLS handshake and one connection's memory for eight), and
// Xray's request and age bounds, so no connection lives for ever.
var defaultMux = muxLimits{
	maxConcurrency: Range{8, 8},
	maxRequests:    Range{600, 900},
	maxAgeSecs:     Range{1800, 3000},
}

func (m *muxLimits) parse(raw json.RawMessage) (ignored []string, err error) {
	fields, err := jsonObject(string(raw))
	if err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if _, ok := xmuxIgnored[name]; ok {
			ignored = append(ignored, name)
			continue
		}
		var dst *Range
		limit := 1 << 20
		switch name {
		case "maxConcurrency":
			dst, limit = &m.maxConcurrency, 1024
		case "maxConnections":
			dst, limit = &m.maxConnections, 64
		case "cMaxReuseTimes":
			dst = &m.maxReuse
		case "hMaxRequestTimes":
			dst = &m.maxRequests
		case "hMaxReusableSecs":
			dst, limit = &m.maxAgeSecs, 7*24*3600
		default:
			return nil, fmt.Errorf("%s: unknown field, not supported", sanitize(name, 30))
		}
		r, err := jsonRange(fields[name], limit)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		*dst = r
	}
	if m.maxConcurrency.To > 0 && m.maxConnections.To > 0 {
		return nil, errors.New("maxConnections cannot be set together with maxConcurrency")
	}
	return ignored, nil
}

// jsonObject decodes one JSON object into its raw fields; duplicate names and
// trailing data are refused.
func jsonObject(s string) (map[string]json.RawMessage, error) {
	if len(s) > 8192 {
		return nil, errors.New("longer than 8192 bytes")
	}
	dec := json.NewDecoder(strings.NewReader(s))
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil {
		return nil, errors.New(sanitize(strings.TrimPrefix(err.Error(), "json: "), 60))
	}
	if m == nil {
		return nil, errors.New("null")
	}
	if dec.More() {
		return nil, errors.New("data after the object")
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("data after the object")
	}
	return m, nil
}

// jsonRange reads a range as Xray's JSON writes it: a number, "N", "N-M" or
// {"from": N, "to": M}.
func jsonRange(raw json.RawMessage, max int) (Range, error) {
	raw = bytes.TrimSpace(raw)
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return parseRange(s, max)
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err == nil {
		if f < 0 || f > float64(max) || f != math.Trunc(f) {
			return Range{}, fmt.Errorf("%s is not a whole number within 0-%d", sanitize(string(raw), 24), max)
		}
		return Range{int(f), int(f)}, nil
	}
	var o struct{ From, To *float64 }
	if err := json.Unmarshal(raw, &o); err == nil && o.From != nil && o.To != nil {
		return parseRange(strconv.FormatFloat(*o.From, 'f', -1, 64)+"-"+strconv.FormatFloat(*o.To, 'f', -1, 64), max)
	}
	return Range{}, fmt.Errorf("%s is not a range (a number, \"N-M\" or {\"from\":N,\"to\":M})", sanitize(string(raw), 24))
}

func validHeaderName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return true
}

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}
