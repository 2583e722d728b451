package config

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Values of Proxy.Transport (daemon/proxy/transport has the same names; this
// package does not import it). tcp is no transport: the stream is the TLS
// connection itself.
const (
	TransportTCP         = "tcp"
	TransportWS          = "ws"
	TransportHTTPUpgrade = "httpupgrade"
	TransportGRPC        = "grpc"
	TransportXHTTP       = "xhttp"
)

// Transports lists Proxy.Transport's values.
var Transports = []string{TransportTCP, TransportWS, TransportHTTPUpgrade, TransportGRPC, TransportXHTTP}

// Modes of the transports that have them.
var (
	GRPCModes  = []string{"gun", "multi"}
	XHTTPModes = []string{"auto", "packet-up", "stream-up", "stream-one"}
)

// MaxEarlyData bounds early_data (ws: its base64 must fit a header line).
const MaxEarlyData = 8192

// transportOptions are the options of a transport, with the transports that use
// each.
var transportOptions = []struct {
	name string
	by   []string
}{
	{"path", []string{TransportWS, TransportHTTPUpgrade, TransportXHTTP}},
	{"host", []string{TransportWS, TransportHTTPUpgrade, TransportGRPC, TransportXHTTP}},
	{"service_name", []string{TransportGRPC}},
	{"mode", []string{TransportGRPC, TransportXHTTP}},
	{"early_data", []string{TransportWS, TransportHTTPUpgrade}},
	{"padding_bytes", []string{TransportXHTTP}},
	{"extra", []string{TransportXHTTP}},
}

// proxyTransport reads the transport of a vless or trojan proxy and its options.
// What only the transport itself can judge (extra's fields) is checked by
// building it (Rules.CheckProxy), whose errors name the option.
func (c *checker) proxyTransport(r *section, p *Proxy) {
	tr, trSet := r.single("transport")
	vals := map[string]uciValue{}
	for _, o := range transportOptions {
		if v, ok := r.single(o.name); ok {
			vals[o.name] = v
		}
	}
	if p.Type != TypeVLESS && p.Type != TypeTrojan {
		if trSet {
			c.warn(tr.Line, r.s.label(), "transport is only used by vless and trojan proxies")
		}
		for _, o := range transportOptions {
			if v, ok := vals[o.name]; ok {
				c.warn(v.Line, r.s.label(), o.name+" is only used by vless and trojan proxies (with a transport)")
			}
		}
		return
	}
	kind := TransportTCP
	r.oneOf("transport", Transports, &kind)
	if trSet && !slices.Contains(Transports, tr.Text) {
		return
	}
	if kind != TransportTCP {
		p.Transport = kind // "" is tcp: no transport
	}
	for _, o := range transportOptions {
		v, ok := vals[o.name]
		if ok && !slices.Contains(o.by, kind) {
			c.warn(v.Line, r.s.label(), fmt.Sprintf("%s is not used by transport '%s' (it is for %s)", o.name, kind, strings.Join(o.by, ", ")))
			delete(vals, o.name)
		}
	}
	if v, ok := vals["path"]; ok {
		if len(v.Text) > 1024 || strings.ContainsFunc(v.Text, func(r rune) bool { return r <= ' ' || r > '~' || r == '#' }) {
			r.bad("path", v, "not a URL path (printable ASCII without spaces or '#', e.g. '/ws')")
		} else {
			p.Path = v.Text
		}
	}
	if v, ok := vals["host"]; ok {
		h, port, hasPort := strings.Cut(v.Text, ":")
		if v.Text != "" && (h == "" || !validSNI(h) || hasPort && !validPort(port)) {
			r.bad("host", v, "not a host name with an optional :port (e.g. 'cdn.example.com')")
		} else {
			p.Host = v.Text
		}
	}
	if v, ok := vals["service_name"]; ok {
		if len(v.Text) > 512 || strings.ContainsFunc(v.Text, func(r rune) bool { return r <= ' ' || r > '~' }) {
			r.bad("service_name", v, "not a gRPC service name (printable ASCII without spaces)")
		} else {
			p.ServiceName = v.Text
		}
	}
	if v, ok := vals["mode"]; ok {
		modes := XHTTPModes
		if p.Transport == TransportGRPC {
			modes = GRPCModes
		}
		if !slices.Contains(modes, v.Text) {
			r.bad("mode", v, fmt.Sprintf("not a mode of transport '%s' (allowed: %s)", kind, strings.Join(modes, ", ")))
		} else {
			p.Mode = v.Text
		}
	}
	if v, ok := vals["early_data"]; ok {
		if n, err := parseInt(v.Text, 0, MaxEarlyData); err != nil {
			r.bad("early_data", v, err.Error())
		} else {
			p.EarlyData = int(n)
		}
	}
	if v, ok := vals["padding_bytes"]; ok {
		if !validRange(v.Text, 1, 65536) {
			r.bad("padding_bytes", v, "not a range of padding lengths N or N-M from 1 (e.g. '100-1000')")
		} else {
			p.PaddingBytes = v.Text
		}
	}
	if v, ok := vals["extra"]; ok {
		var obj map[string]json.RawMessage
		if len(v.Text) > 8192 || json.Unmarshal([]byte(v.Text), &obj) != nil || obj == nil {
			r.bad("extra", v, "not a JSON object of XHTTP settings (as share links carry it, e.g. '{\"xPaddingBytes\":\"100-1000\"}')")
		} else {
			p.Extra = v.Text
		}
	}
	if p.Flow == FlowVision && kind != TransportTCP {
		r.bad("transport", tr, "not allowed with flow "+FlowVision+" (Vision needs transport 'tcp'; Xray refuses it over other transports)")
	}
	if p.Security == SecurityReality && (kind == TransportWS || kind == TransportHTTPUpgrade) {
		c.warn(tr.Line, r.s.label(), fmt.Sprintf("Xray-core's REALITY servers serve only tcp, xhttp and grpc, not %s (sing-box's may)", kind))
	}
}

// validPort accepts decimal digits of 1-65535.
func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return digits(s) && err == nil && n >= 1 && n <= 65535
}

// validRange accepts "N" or "N-M" (decimal digits) with min <= N <= M <= max.
func validRange(s string, min, max int) bool {
	a, b, dash := strings.Cut(s, "-")
	if !digits(a) || dash && !digits(b) {
		return false
	}
	from, err := strconv.Atoi(a)
	if err != nil {
		return false
	}
	to := from
	if dash {
		if to, err = strconv.Atoi(b); err != nil {
			return false
		}
	}
	return from >= min && to >= from && to <= max
}

func digits(s string) bool {
	return s != "" && len(s) <= 9 && strings.Trim(s, "0123456789") == ""
}
