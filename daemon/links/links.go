// Package links turns proxy share links (socks5://, http://, ss://, vless://,
// trojan://) into tgtun's UCI `config proxy` options. It only parses: the
// caller validates the result with daemon/config, the same check as
// `tgtun config check`.
package links

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Option is one UCI option (or list, when List is set) of a proxy section.
type Option struct {
	Name   string
	Values []string
	List   bool
}

// Proxy is what a link describes: its options in the order they are
// written, and the name the link suggests (its #fragment, made a valid
// section name; "" when there is none).
type Proxy struct {
	Name    string
	Options []Option
	// Ignored are the link's parameters that tgtun does not use, each with the
	// reason (for the user to read: none is dropped silently). A parameter that
	// changes what goes on the wire is never ignored: Parse refuses it.
	Ignored []Ignored
}

// Ignored is a parameter of a link that is not used.
type Ignored struct {
	Param  string // the parameter's name, "extra.field" for a field of extra
	Reason string
}

func (p *Proxy) ignore(param, reason string) {
	p.Ignored = append(p.Ignored, Ignored{Param: param, Reason: reason})
}

// Get returns the first value of option name, or "".
func (p *Proxy) Get(name string) string {
	for _, o := range p.Options {
		if o.Name == name && len(o.Values) > 0 {
			return o.Values[0]
		}
	}
	return ""
}

func (p *Proxy) set(name, value string) {
	if value != "" {
		p.Options = append(p.Options, Option{Name: name, Values: []string{value}})
	}
}

// UCI renders the section, named name, as /etc/config/tgtun holds it.
func (p *Proxy) UCI(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "config proxy %s\n", quote(name))
	for _, o := range p.Options {
		kw := "option"
		if o.List {
			kw = "list"
		}
		for _, v := range o.Values {
			fmt.Fprintf(&b, "\t%s %s %s\n", kw, o.Name, quote(v))
		}
	}
	return b.String()
}

// quote writes a UCI value in single quotes; a quote inside becomes '\”.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Schemes lists the link kinds Parse reads, for messages.
const Schemes = "socks5://, socks://, http://, ss://, vless://, trojan://"

// Parse reads one share link. Errors name the link kind and the part that
// cannot be used, and never contain the link's secrets.
func Parse(link string) (*Proxy, error) {
	link = strings.TrimSpace(link)
	scheme, _, ok := strings.Cut(link, "://")
	if !ok {
		return nil, fmt.Errorf("not a share link (want one of %s)", Schemes)
	}
	p, err := parse(strings.ToLower(scheme), link)
	if err != nil {
		return nil, err
	}
	for _, o := range p.Options {
		for _, v := range o.Values {
			if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
				return nil, fmt.Errorf("%s link: the %s contains a control character", p.Get("type"), o.Name)
			}
		}
	}
	return p, nil
}

func parse(scheme, link string) (*Proxy, error) {
	switch scheme {
	case "socks5", "socks", "socks5h":
		return parseSOCKS(link)
	case "http":
		return parseHTTP(link)
	case "https":
		return nil, fmt.Errorf("https link: TLS to an HTTP proxy is not supported; http:// (plain HTTP CONNECT) is")
	case "ss":
		return parseSS(link)
	case "vless":
		return parseVLESS(link)
	case "trojan":
		return parseTrojan(link)
	case "hysteria2", "hy2", "hysteria":
		return nil, fmt.Errorf("%s link: not supported: Hysteria runs over QUIC (UDP) and tgtun's proxies are TCP-based (supported: %s)", scheme, Schemes)
	case "tuic":
		return nil, fmt.Errorf("%s link: not supported: TUIC runs over QUIC (UDP) and tgtun's proxies are TCP-based (supported: %s)", scheme, Schemes)
	default:
		return nil, fmt.Errorf("%s link: not supported (supported: %s)", sanitize(scheme), Schemes)
	}
}

// parseURL parses link and checks host and port, naming kind in errors.
// url.Parse's own errors quote the whole link, secrets included, so they
// are replaced.
func parseURL(kind, link string) (*url.URL, *Proxy, error) {
	u, err := url.Parse(link)
	if err != nil {
		return nil, nil, fmt.Errorf("%s link: not a valid URL (%s)", kind, urlErrReason(err))
	}
	p := &Proxy{Name: SectionName(u.Fragment)}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return nil, nil, fmt.Errorf("%s link: the server is missing", kind)
	}
	if port == "" {
		return nil, nil, fmt.Errorf("%s link: the port is missing", kind)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, nil, fmt.Errorf("%s link: port %q is not 1-65535", kind, sanitize(port))
	}
	return u, p, nil
}

func urlErrReason(err error) string {
	if ue, ok := err.(*url.Error); ok {
		err = ue.Err
	}
	// url's errors quote the offending part, which may be a password:
	// keep only the kind of problem.
	switch err.(type) {
	case url.EscapeError:
		return "bad %-escape"
	case url.InvalidHostError:
		return "bad character in the server"
	}
	if strings.Contains(err.Error(), "port") {
		return "bad port"
	}
	return "malformed"
}

func addServer(p *Proxy, u *url.URL) {
	p.set("server", u.Hostname())
	p.set("port", u.Port())
}

func parseSOCKS(link string) (*Proxy, error) {
	u, p, err := parseURL("socks5", link)
	if err != nil {
		return nil, err
	}
	p.set("type", "socks5")
	addServer(p, u)
	if u.User != nil {
		user := u.User.Username()
		pass, hasPass := u.User.Password()
		if !hasPass { // v2rayN writes base64("user:pass")
			if dec, ok := decodeB64(user); ok {
				if du, dp, ok := strings.Cut(dec, ":"); ok {
					user, pass = du, dp
				}
			}
		}
		p.set("username", user)
		p.set("password", pass)
	}
	return p, nil
}

func parseHTTP(link string) (*Proxy, error) {
	u, p, err := parseURL("http", link)
	if err != nil {
		return nil, err
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("http link: a path is not part of a proxy address")
	}
	p.set("type", "http")
	addServer(p, u)
	if u.User != nil {
		pass, _ := u.User.Password()
		p.set("username", u.User.Username())
		p.set("password", pass)
	}
	return p, nil
}

// ssCiphers lists the Shadowsocks ciphers tgtun speaks.
var ssCiphers = []string{"aes-128-gcm", "aes-256-gcm", "chacha20-ietf-poly1305",
	"2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm", "2022-blake3-chacha20-poly1305"}

// parseSS reads SIP002 (ss://userinfo@host:port/?plugin=…#name, userinfo
// base64url of method:password, or percent-encoded for 2022 ciphers) and
// the older ss://base64(method:password@host:port)#name.
func parseSS(link string) (*Proxy, error) {
	body := link[len("ss://"):]
	frag := ""
	if i := strings.IndexByte(body, '#'); i >= 0 {
		body, frag = body[:i], body[i:]
	}
	if !strings.Contains(body, "@") { // the whole of it is base64
		rest, query, _ := strings.Cut(body, "?")
		dec, ok := decodeB64(strings.TrimSuffix(rest, "/"))
		if !ok {
			return nil, fmt.Errorf("ss link: neither SIP002 (userinfo@server:port) nor base64 of method:password@server:port")
		}
		i := strings.LastIndexByte(dec, '@')
		if i < 0 {
			return nil, fmt.Errorf("ss link: the decoded part has no '@' between method:password and server:port")
		}
		link = "ss://" + url.PathEscape(dec[:i]) + "@" + dec[i+1:]
		if query != "" {
			link += "/?" + query
		}
		link += frag
	}
	u, p, err := parseURL("ss", link)
	if err != nil {
		return nil, err
	}
	if pl := u.Query().Get("plugin"); pl != "" {
		name, _, _ := strings.Cut(pl, ";")
		return nil, fmt.Errorf("ss link: plugin=%s is not supported; only plugin-less links are", sanitize(name))
	}
	if u.User == nil {
		return nil, fmt.Errorf("ss link: the method and password are missing")
	}
	var method, pass string
	if pw, ok := u.User.Password(); ok {
		method, pass = u.User.Username(), pw
	} else {
		dec, ok := decodeB64(u.User.Username())
		if !ok {
			return nil, fmt.Errorf("ss link: userinfo is neither method:password nor its base64")
		}
		method, pass, ok = strings.Cut(dec, ":")
		if !ok {
			return nil, fmt.Errorf("ss link: decoded userinfo has no ':' between method and password")
		}
	}
	method = strings.ToLower(method)
	if !slices.Contains(ssCiphers, method) {
		return nil, fmt.Errorf("ss link: method %s is not supported; %s are", sanitize(method), strings.Join(ssCiphers, ", "))
	}
	if pass == "" {
		return nil, fmt.Errorf("ss link: the password is empty")
	}
	p.set("type", "shadowsocks")
	addServer(p, u)
	p.set("cipher", method)
	p.set("password", pass)
	return p, nil
}

// Parameters of vless:// and trojan:// links (the Xray share-link format, as
// 3x-ui, Marzban and Remnawave write it) that are used, by the option they fill:
// type, security, encryption, flow, sni/peer, fp, alpn, allowInsecure/insecure,
// pcs, pbk, sid, headerType, path, host, authority, serviceName, mode, extra,
// x_padding_bytes, ed. The others are either refused (they change what goes on
// the wire) or ignored with a reason (they do not).
var (
	refusedParams = map[string]string{
		"fm":  "finalmask (fm=) changes the packets on the wire; it is not supported",
		"ech": "Encrypted Client Hello (ech=) is not supported (without it the server name would show)",
		"vcn": "verifyPeerCertByName (vcn=) is not supported",
	}
	ignoredParams = map[string]string{
		"spx":               "REALITY's spiderX: tgtun never browses the imitated site",
		"pqv":               "REALITY's ML-DSA-65 check is not made; the server is still authenticated by its public key (pbk)",
		"fragment":          "TLS ClientHello fragmentation is not done",
		"heartbeatPeriod":   "WebSocket pings are not sent (an idle router stays idle)",
		"cs":                "the fingerprint's TLS cipher suites are offered",
		"seed":              "mKCP's seed: the transport is not mKCP",
		"mtu":               "mKCP's MTU: the transport is not mKCP",
		"tti":               "mKCP's TTI: the transport is not mKCP",
		"quicSecurity":      "the transport is not QUIC",
		"key":               "the transport is not QUIC",
		"serverDescription": "a client's display text",
	}
	// transportParams are the parameters of each type (transport).
	transportParams = map[string][]string{
		"tcp":         {"headerType"},
		"ws":          {"path", "host", "ed"},
		"httpupgrade": {"path", "host", "ed"},
		"grpc":        {"serviceName", "authority", "host", "mode"},
		"xhttp":       {"path", "host", "mode", "extra", "x_padding_bytes"},
	}
	// knownParams are used by some type or by the TLS layer.
	knownParams = map[string]bool{
		"type": true, "security": true, "encryption": true, "flow": true, "sni": true, "peer": true,
		"fp": true, "alpn": true, "allowInsecure": true, "insecure": true, "pbk": true, "sid": true,
		"headerType": true, "path": true, "host": true, "authority": true, "serviceName": true, "mode": true,
		"extra": true, "x_padding_bytes": true, "ed": true, "pcs": true,
	}
)

// transportType checks type= (the transport) and headerType=, before the rest of
// the link: "tcp" for none.
func transportType(kind string, q url.Values) (string, error) {
	t := q.Get("type")
	switch t {
	case "", "tcp", "raw":
		t = "tcp"
	case "splithttp":
		t = "xhttp"
	case "ws", "httpupgrade", "grpc", "xhttp":
	default:
		return "", fmt.Errorf("%s link: type=%s is not supported; tcp, ws, httpupgrade, grpc and xhttp are", kind, sanitize(t))
	}
	if h := q.Get("headerType"); h != "" && h != "none" {
		return "", fmt.Errorf("%s link: headerType=%s is not supported; none is", kind, sanitize(h))
	}
	return t, nil
}

// transportOptions reads type= and its parameters into the transport options,
// refusing what tgtun cannot do and noting what it does not use.
func transportOptions(kind string, p *Proxy, q url.Values) error {
	get := func(k string) string { return q.Get(k) }
	t, err := transportType(kind, q)
	if err != nil {
		return err
	}
	// Parameters that belong to another type are noted, not used.
	for _, name := range sortedKeys(q) {
		if get(name) == "" || name == "headerType" {
			continue
		}
		if knownParams[name] && !slices.Contains(transportParams[t], name) && isTransportParam(name) {
			p.ignore(name, "not used by type="+t)
		}
	}
	if t == "tcp" {
		return nil
	}
	p.set("transport", t)
	switch t {
	case "ws", "httpupgrade":
		path, ed, err := cutEarlyData(get("path"))
		if err != nil {
			return fmt.Errorf("%s link: %w", kind, err)
		}
		if ed == "" {
			ed = get("ed")
		}
		p.set("path", path)
		p.set("host", get("host"))
		if ed != "" {
			if n, err := strconv.Atoi(ed); err != nil || n < 0 || n > 8192 {
				return fmt.Errorf("%s link: ed=%s is not an early data size 0-8192", kind, sanitize(ed))
			} else if n > 0 {
				p.set("early_data", strconv.Itoa(n))
			}
		}
	case "grpc":
		p.set("service_name", get("serviceName"))
		host := get("authority")
		if host == "" {
			host = get("host")
		} else if h := get("host"); h != "" && h != host {
			p.ignore("host", "authority is the gRPC host")
		}
		p.set("host", host)
		switch m := get("mode"); m {
		case "", "gun", "multi":
			p.set("mode", m)
		default:
			return fmt.Errorf("%s link: mode=%s is not a gRPC mode; gun or multi is", kind, sanitize(m))
		}
	case "xhttp":
		p.set("path", get("path"))
		p.set("host", get("host"))
		switch m := get("mode"); m {
		case "", "auto", "packet-up", "stream-up", "stream-one":
			p.set("mode", m)
		default:
			return fmt.Errorf("%s link: mode=%s is not an XHTTP mode; auto, packet-up, stream-up or stream-one is", kind, sanitize(m))
		}
		p.set("padding_bytes", get("x_padding_bytes"))
		if e := get("extra"); e != "" {
			if err := checkExtra(p, e); err != nil {
				return fmt.Errorf("%s link: extra: %w", kind, err)
			}
			p.set("extra", e)
		}
	}
	return nil
}

// isTransportParam tells the transport parameters from the TLS ones.
func isTransportParam(name string) bool {
	for _, ps := range transportParams {
		if slices.Contains(ps, name) {
			return true
		}
	}
	return false
}

// otherParams refuses the parameters that change the wire and notes the unknown
// and unused ones.
func otherParams(kind string, p *Proxy, q url.Values) error {
	for _, name := range sortedKeys(q) {
		if q.Get(name) == "" || knownParams[name] {
			continue
		}
		if why, ok := refusedParams[name]; ok {
			return fmt.Errorf("%s link: %s", kind, why)
		}
		if why, ok := ignoredParams[name]; ok {
			p.ignore(name, why)
			continue
		}
		p.ignore(sanitize(name), "unknown to tgtun, not used")
	}
	return nil
}

func sortedKeys(q url.Values) []string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// cutEarlyData takes Xray's early data size out of a WebSocket path
// ("/ws?ed=2048"), as Xray does: the rest of the path's query stays.
func cutEarlyData(path string) (rest, ed string, err error) {
	base, query, ok := strings.Cut(path, "?")
	if !ok {
		return path, "", nil
	}
	var keep []string
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k == "ed" {
			ed = v
			continue
		}
		keep = append(keep, kv)
	}
	if len(keep) > 0 {
		base += "?" + strings.Join(keep, "&")
	}
	return base, ed, nil
}

// XHTTP extra's fields: those a client uses, those it ignores (with why), and the
// ones refused by name; any other field is refused as unknown. daemon/proxy/transport
// holds the same lists (config check builds the transport to judge the values).
var (
	extraUsed = []string{
		"headers", "xPaddingBytes", "xPaddingObfsMode", "xPaddingKey", "xPaddingHeader",
		"xPaddingPlacement", "xPaddingMethod", "uplinkHTTPMethod", "sessionPlacement", "sessionKey",
		"sessionIDPlacement", "sessionIDKey", "seqPlacement", "seqKey", "uplinkDataPlacement", "uplinkDataKey",
		"uplinkChunkSize", "noGRPCHeader", "scMaxEachPostBytes", "scMinPostsIntervalMs", "xmux",
		"host", "path", "mode",
	}
	extraIgnored = map[string]string{
		"noSSEHeader":          "a server setting",
		"scMaxBufferedPosts":   "a server setting",
		"scStreamUpServerSecs": "a server setting",
		"serverMaxHeaderBytes": "a server setting",
		"scMaxConcurrentPosts": "removed from Xray-core",
		"keepAlivePeriod":      "not an Xray-core setting (xmux.hKeepAlivePeriod is)",
	}
	extraRefused = map[string]string{
		"downloadSettings": "a separate download server is not supported",
		"sessionIDTable":   "custom session ids are not supported",
		"sessionIDLength":  "custom session ids are not supported",
	}
)

// checkExtra checks that extra is a JSON object of fields tgtun knows, noting
// the ignored ones.
func checkExtra(p *Proxy, extra string) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(extra), &fields); err != nil || fields == nil {
		return fmt.Errorf("not a JSON object")
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		switch {
		case slices.Contains(extraUsed, name):
			if name == "xmux" {
				var x map[string]json.RawMessage
				if json.Unmarshal(fields[name], &x) == nil {
					if _, ok := x["hKeepAlivePeriod"]; ok {
						p.ignore("extra.xmux.hKeepAlivePeriod", "HTTP/2 keep-alive pings are not sent (an idle router stays idle)")
					}
				}
			}
		case extraIgnored[name] != "":
			p.ignore("extra."+name, extraIgnored[name])
		case extraRefused[name] != "":
			return fmt.Errorf("%s: %s", name, extraRefused[name])
		default:
			return fmt.Errorf("%s: unknown field, not supported", sanitize(name))
		}
	}
	return nil
}

// tlsOptions copies sni, fingerprint, alpn and insecure.
func tlsOptions(p *Proxy, q url.Values) {
	sni := q.Get("sni")
	if sni == "" {
		sni = q.Get("peer")
	}
	p.set("sni", sni)
	p.set("fingerprint", q.Get("fp"))
	if a := q.Get("alpn"); a != "" {
		var vals []string
		for v := range strings.SplitSeq(a, ",") {
			if v = strings.TrimSpace(v); v != "" {
				vals = append(vals, v)
			}
		}
		if len(vals) > 0 {
			p.Options = append(p.Options, Option{Name: "alpn", Values: vals, List: true})
		}
	}
	if v := q.Get("allowInsecure"); v == "1" || v == "true" {
		p.set("insecure", "1")
	}
	if v := q.Get("insecure"); v == "1" || v == "true" {
		p.set("insecure", "1")
	}
	pinnedCerts(p, q)
}

// pinnedCerts copies pcs (Xray's pinnedPeerCertSha256: hex SHA-256 of the server's
// certificate, several joined by ',', ':' between bytes allowed) into the list
// pinned_sha256, lower case without colons. A pin supersedes allowInsecure, which
// panels write beside it for clients that know no pcs.
func pinnedCerts(p *Proxy, q url.Values) {
	var pins []string
	for v := range strings.SplitSeq(q.Get("pcs"), ",") {
		v = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(v), ":", ""))
		if v != "" && !slices.Contains(pins, v) {
			pins = append(pins, v)
		}
	}
	if len(pins) == 0 {
		return
	}
	p.Options = slices.DeleteFunc(p.Options, func(o Option) bool { return o.Name == "insecure" })
	p.Options = append(p.Options, Option{Name: "pinned_sha256", Values: pins, List: true})
}

// isUUID accepts 32 hex digits in the 8-4-4-4-12 groups, each '-' between
// them optional, as config check and the LuCI form do (no regexp: it would
// add ~150 KiB to the binary).
func isUUID(s string) bool {
	for i, n := range []int{8, 4, 4, 4, 12} {
		if i > 0 && strings.HasPrefix(s, "-") {
			s = s[1:]
		}
		if len(s) < n {
			return false
		}
		for _, c := range []byte(s[:n]) {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
		s = s[n:]
	}
	return s == ""
}

func parseVLESS(link string) (*Proxy, error) {
	u, p, err := parseURL("vless", link)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	if u.User == nil || u.User.Username() == "" {
		return nil, fmt.Errorf("vless link: the uuid (before '@') is missing")
	}
	id := u.User.Username()
	if !isUUID(id) {
		return nil, fmt.Errorf("vless link: the id before '@' is not a UUID")
	}
	if _, err := transportType("vless", q); err != nil {
		return nil, err
	}
	if e := q.Get("encryption"); e != "" && e != "none" {
		return nil, fmt.Errorf("vless link: encryption=%s is not supported; none is", sanitize(e))
	}
	sec := q.Get("security")
	switch sec {
	case "tls", "reality":
	case "", "none":
		return nil, fmt.Errorf("vless link: security=%s is not supported; tls or reality is", orNone(sec))
	default:
		return nil, fmt.Errorf("vless link: security=%s is not supported; tls or reality is", sanitize(sec))
	}
	flow := q.Get("flow")
	switch flow {
	case "", "xtls-rprx-vision":
	case "xtls-rprx-vision-udp443":
		flow = "xtls-rprx-vision"
	default:
		return nil, fmt.Errorf("vless link: flow=%s is not supported; xtls-rprx-vision or none is", sanitize(flow))
	}
	p.set("type", "vless")
	addServer(p, u)
	p.set("uuid", strings.ToLower(id))
	p.set("security", sec)
	p.set("flow", flow)
	tlsOptions(p, q)
	if sec == "reality" {
		if q.Get("pbk") == "" {
			return nil, fmt.Errorf("vless link: security=reality needs pbk (the server's public key)")
		}
		p.set("public_key", q.Get("pbk"))
		p.set("short_id", q.Get("sid"))
		if p.Get("insecure") != "" {
			return nil, fmt.Errorf("vless link: allowInsecure applies to tls only, not reality")
		}
		if p.Get("pinned_sha256") != "" {
			return nil, fmt.Errorf("vless link: pcs (a pinned certificate) applies to tls only, not reality")
		}
		// REALITY's hello is the fingerprint's, ALPN included (Xray ignores
		// alpn there too); the LuCI form offers alpn with tls only.
		if slices.ContainsFunc(p.Options, func(o Option) bool { return o.Name == "alpn" }) {
			p.Options = slices.DeleteFunc(p.Options, func(o Option) bool { return o.Name == "alpn" })
			p.ignore("alpn", "with security=reality the fingerprint's ALPN is sent")
		}
	}
	if flow != "" && q.Get("type") != "" && q.Get("type") != "tcp" && q.Get("type") != "raw" {
		return nil, fmt.Errorf("vless link: flow=%s needs type=tcp; Xray refuses Vision over type=%s", flow, sanitize(q.Get("type")))
	}
	if err := transportOptions("vless", p, q); err != nil {
		return nil, err
	}
	if err := otherParams("vless", p, q); err != nil {
		return nil, err
	}
	return p, nil
}

func parseTrojan(link string) (*Proxy, error) {
	u, p, err := parseURL("trojan", link)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	if u.User == nil || u.User.Username() == "" {
		return nil, fmt.Errorf("trojan link: the password (before '@') is missing")
	}
	if _, err := transportType("trojan", q); err != nil {
		return nil, err
	}
	if sec := q.Get("security"); sec != "" && sec != "tls" {
		return nil, fmt.Errorf("trojan link: security=%s is not supported; tls is", sanitize(sec))
	}
	p.set("type", "trojan")
	addServer(p, u)
	// A trojan password may itself hold ':' and is written raw.
	pass := u.User.Username()
	if pw, ok := u.User.Password(); ok {
		pass += ":" + pw
	}
	p.set("password", pass)
	tlsOptions(p, q)
	if err := transportOptions("trojan", p, q); err != nil {
		return nil, err
	}
	for _, name := range []string{"encryption", "flow", "pbk", "sid"} {
		if q.Get(name) != "" {
			p.ignore(name, "not a trojan parameter")
		}
	}
	if err := otherParams("trojan", p, q); err != nil {
		return nil, err
	}
	return p, nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// decodeB64 accepts standard and URL alphabets, padded or not.
func decodeB64(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", false
	}
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return string(b), true
		}
	}
	return "", false
}

// SectionName turns a link's #name into a UCI section name ([A-Za-z0-9_],
// at most 32 bytes, not starting with a digit); "" when nothing is left.
func SectionName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		case r == '-' || r == ' ' || r == '.':
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "_") {
				b.WriteByte('_')
			}
		}
		if b.Len() >= 32 {
			break
		}
	}
	name := strings.Trim(b.String(), "_")
	if name != "" && name[0] >= '0' && name[0] <= '9' {
		name = strings.TrimRight(("p_" + name)[:min(len(name)+2, 32)], "_")
	}
	return name
}

// sanitize keeps a piece of a link printable and short for an error.
func sanitize(s string) string {
	const max = 40
	b := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(b) < max; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b = append(b, c)
	}
	if len(s) > max {
		return string(b) + "..."
	}
	return string(b)
}
