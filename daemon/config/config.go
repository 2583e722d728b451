// Package config reads tgtun's UCI configuration (/etc/config/tgtun) into a validated
// Config with defaults. Every problem is reported at once, each naming file, line,
// section and option; secrets never appear in messages or in formatted values.
package config

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tgtun/tgtun/daemon/dnsname"
)

// DefaultPath is where OpenWrt keeps the configuration.
const DefaultPath = "/etc/config/tgtun"

// Config is a validated configuration.
type Config struct {
	Main     Main
	Proxies  []Proxy   // proxies with a server, by Priority, then file order
	Services []Service // catalogue entries, in file order
	Customs  []Custom  // user lists, in file order
}

// Main is the `config main` section.
type Main struct {
	Enabled        bool
	TunName        string
	TunMTU         int
	IPv6           bool
	LANIfaces      []string
	RouterTraffic  bool
	FwMark         uint32
	FwMask         uint32
	BypassMark     uint32
	RouteTable     int
	RulePriority   int
	FailMode       string // FailBlock or FailDirect
	UpdateInterval time.Duration
	HealthTarget   netip.AddrPort
	HealthInterval time.Duration
	MemoryLimit    int64 // bytes; 0 = no limit; MemoryLimitAuto: from the router's RAM (control)
	MaxFlows       int   // concurrent TCP+UDP flows; 0 = from the memory budget and proxy types (control)
	LogLevel       slog.Level

	// MaxFlowsPerDevice caps the flows of one LAN address; 0 = a quarter of max_flows.
	MaxFlowsPerDevice int
	// DNSPort is the port of tgtun's DNS forwarder on 127.0.0.1, to which dnsmasq sends
	// the queries for listed domains.
	DNSPort int
	// DNSUpstream is where the forwarder resolves, through the proxy: "IP:port" (DNS over
	// TCP) or an https:// URL (DNS over HTTPS).
	DNSUpstream string
	// DomainTimeout is how long an address a listed domain resolved to stays in the
	// domain sets (dst4_dns, dst6_dns) after dnsmasq added it.
	DomainTimeout time.Duration
	// IncludeDevices, when not empty, are the only devices tunnelled; ExcludeDevices are
	// never tunnelled.
	IncludeDevices []Device
	ExcludeDevices []Device
}

// Device is a LAN device by address range or by MAC address (exactly one is set).
type Device struct {
	Prefix netip.Prefix // masked; a single address is a /32 or /128
	MAC    string       // aa:bb:cc:dd:ee:ff, lower case
}

func (d Device) String() string {
	if d.MAC != "" {
		return d.MAC
	}
	return d.Prefix.String()
}

// Values of Main.FailMode.
const (
	FailBlock  = "block"
	FailDirect = "direct"
)

// Values of Proxy.Type.
const (
	TypeSOCKS5      = "socks5"
	TypeHTTP        = "http"
	TypeShadowsocks = "shadowsocks"
	TypeVLESS       = "vless"
	TypeTrojan      = "trojan"
	TypeInterface   = "interface"
)

// Proxy is a `config proxy` section that has a server. Username and Password are
// secrets: fmt, slog and encoding/json output of a Proxy (and of a Config) shows
// only whether they are set.
type Proxy struct {
	Name     string
	Type     string // TypeSOCKS5, TypeHTTP or TypeShadowsocks
	Server   string // IP address (IPv6 without brackets) or host name
	Port     uint16
	Username string
	Password string // also the Shadowsocks password or key
	Cipher   string // Shadowsocks only
	UDP      bool   // relay UDP; always false for http
	Priority int    // lower wins
	Line     int    // line of the `config proxy` statement

	// vless and trojan (see proxyTLS). UUID is a secret like Password.
	UUID        string   // vless user id
	Flow        string   // vless: "" or FlowVision
	Security    string   // vless: SecurityTLS or SecurityReality; trojan: SecurityTLS
	SNI         string   // TLS server name ("" = server, tls only)
	Fingerprint string   // browser ClientHello (Fingerprints)
	PublicKey   string   // reality: server's X25519 public key, base64url
	ShortID     string   // reality: hex, 0-16 digits
	ALPN        []string // TLS ALPN; empty keeps the fingerprint's
	Insecure    bool     // tls: do not verify the server's certificate

	Interface string // interface: a device or netifd interface name (then no server/port)
}

// Service is a `config service` section: an entry of the built-in catalogue.
type Service struct {
	Name    string // the section name: telegram, whatsapp, ...
	Enabled bool
	URL     string // overrides the catalogue's update source; "" = the catalogue's
	// DomainURL is a list of domains downloaded and used with the catalogue's.
	DomainURL string
}

// Custom is a `config custom` section: the user's own subnets and list URLs.
type Custom struct {
	Name    string
	Subnets []netip.Prefix // masked to their prefix length
	URLs    []string
	// Domains are selected by name through dnsmasq; subdomains match. Canonical form
	// (lower case, no trailing dot).
	Domains []string
	// DomainURLs are lists of domains to download, validated like range lists.
	DomainURLs []string
}

// Defaults of the DNS options.
const (
	// DefaultDNSPort is not 5353, which mDNS responders (umdns, avahi) hold on every address.
	DefaultDNSPort = 5354
	// DefaultDNSUpstream is Cloudflare's public resolver, reached over TCP through the proxy.
	DefaultDNSUpstream   = "1.1.1.1:53"
	DefaultDomainTimeout = 6 * time.Hour
)

// Shadowsocks ciphers, with the key length the 2022 ones need.
var ssCiphers = []string{"aes-128-gcm", "aes-256-gcm", "chacha20-ietf-poly1305", "2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm", "2022-blake3-chacha20-poly1305"}

// Bounds of options.
const (
	minMTU, minMTUv4, maxMTU = 1280, 576, 9000
	minUpdateInterval        = 10 * time.Minute
	maxUpdateInterval        = 365 * 24 * time.Hour
	minHealthInterval        = time.Second
	maxHealthInterval        = time.Hour
	maxRulePriority          = 32765
	// minRulePriority leaves P-1 (TCP to the listener) and P-2 (replies out of the TUN)
	// above 0, the local table's rule.
	minRulePriority = 3
	// AutoMaxFlows is the most max_flows comes to when it is left unset.
	AutoMaxFlows = 4096
	// MemoryLimitAuto is memory_limit left unset: the daemon takes a share of the
	// router's RAM (control).
	MemoryLimitAuto    = -1
	maxPriority        = 1000
	maxSOCKSCredential = 255  // RFC 1929
	maxCredential      = 1024 // http and shadowsocks
)

// Default returns the defaults, with no proxies. Enabled is false: the daemon does
// nothing until the user has set a proxy and enabled it.
func Default() *Config {
	return &Config{Main: Main{
		TunName:        "tgtun0",
		TunMTU:         1500,
		IPv6:           true,
		LANIfaces:      []string{"br-lan"},
		FwMark:         0x100000,
		FwMask:         0x100000,
		BypassMark:     0x200000,
		RouteTable:     7470,
		RulePriority:   7470,
		FailMode:       FailBlock,
		UpdateInterval: 24 * time.Hour,
		HealthTarget:   netip.MustParseAddrPort("149.154.167.51:443"),
		HealthInterval: 10 * time.Second,
		MemoryLimit:    MemoryLimitAuto,
		MaxFlows:       0,
		LogLevel:       slog.LevelInfo,

		MaxFlowsPerDevice: 0,
		DNSPort:           DefaultDNSPort,
		DNSUpstream:       DefaultDNSUpstream,
		DomainTimeout:     DefaultDomainTimeout,
	}}
}

// Rules are the checks whose knowledge lives outside this package: which services the
// catalogue knows (daemon/lists), which subnets a list may hold (daemon/lists) and which
// proxies the proxy package can build (daemon/proxy). control.ConfigRules supplies the
// daemon's; `tgtun config check`, start and reload all load through control.LoadConfig
// with them, so that whatever check accepts the daemon runs. Each problem is reported at
// the line of the section or value it concerns.
type Rules interface {
	// Services lists the known service names, in the catalogue's order.
	Services() []string
	// CheckSubnet says why a custom subnet (masked) may not be a target, or nil.
	CheckSubnet(netip.Prefix) error
	// CheckProxy builds p as the daemon would and says why that fails, or nil. It is
	// called only for a proxy section that has a server and no other error.
	CheckProxy(Proxy) error
}

// Load reads and validates the file at path. The error, if any, is an Errors holding
// every problem (errors.As works with Errors and *Errors; errors.Is reaches I/O causes).
// Load checks syntax and values only; the daemon and `config check` use LoadWith with
// the daemon's Rules.
func Load(path string) (*Config, []Warning, error) {
	return LoadWith(path, nil)
}

// LoadWith is Load with the checks of rules (nil: none) on top.
func LoadWith(path string, rules Rules) (*Config, []Warning, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, Errors{{File: path, Msg: "cannot read the file: " + errText(err), err: err}}
	}
	defer f.Close()
	return ParseWith(path, f, rules)
}

// Parse reads and validates a configuration; name is used in messages.
func Parse(name string, r io.Reader) (*Config, []Warning, error) {
	return ParseWith(name, r, nil)
}

// ParseWith is Parse with the checks of rules (nil: none) on top.
//
// A syntax error (an unterminated quote, a statement the parser cannot read) is reported
// first and alone: what follows from a line that could not be read (a missing option,
// an option outside its section) would only mislead.
func ParseWith(name string, r io.Reader, rules Rules) (*Config, []Warning, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, nil, Errors{{File: name, Msg: "cannot read the file: " + errText(err), err: err}}
	}
	file, warnings, errs := parseUCI(name, data)
	if file == nil || len(errs) > 0 {
		return nil, nil, errs
	}
	c := &checker{file: name, errs: errs, warnings: warnings, rules: rules}
	cfg := c.build(file)
	slices.SortStableFunc(c.errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	slices.SortStableFunc(c.warnings, func(a, b Warning) int { return cmp.Compare(a.Line, b.Line) })
	if len(c.errs) > 0 {
		return nil, c.warnings, c.errs
	}
	return cfg, c.warnings, nil
}

func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// checker turns a parsed file into a Config, collecting problems.
type checker struct {
	file     string
	errs     Errors
	warnings []Warning
	rules    Rules // nil: syntax and values only
}

func (c *checker) build(f *uciFile) *Config {
	cfg := Default()
	var mainSec *uciSection
	var enabledLine int
	var proxies []Proxy
	configured := 0 // proxies with a server, valid or not
	for _, s := range f.sections {
		switch s.Type {
		case "main":
			if mainSec != nil {
				c.fail(s, s.Line, "", fmt.Sprintf("only one main section is allowed (the first is at line %d)", mainSec.Line))
				continue
			}
			mainSec = s
			enabledLine = c.main(s, &cfg.Main)
		case "proxy":
			p, hasServer, ok := c.proxy(s)
			if hasServer {
				configured++
			}
			if ok {
				proxies = append(proxies, p)
			}
		case "service":
			if sv, ok := c.service(s); ok {
				cfg.Services = append(cfg.Services, sv)
			}
		case "custom":
			cfg.Customs = append(cfg.Customs, c.custom(s, cfg.Main.IPv6))
		default:
			msg := fmt.Sprintf("unknown section type %s is ignored (known: main, proxy, service, custom)", quoteValue(s.Type))
			if near := closest(s.Type, []string{"main", "proxy", "service", "custom"}); near != "" {
				msg = fmt.Sprintf("unknown section type %s is ignored; did you mean '%s'?", quoteValue(s.Type), near)
			}
			c.warn(s.Line, "", msg)
		}
	}
	slices.SortStableFunc(proxies, func(a, b Proxy) int { return cmp.Compare(a.Priority, b.Priority) })
	cfg.Proxies = proxies
	if cfg.Main.Enabled && configured == 0 {
		c.errs = append(c.errs, &Error{File: c.file, Line: enabledLine, Section: mainSec.label(), Option: "enabled",
			Msg: "enabled but no proxy has a server (set option server in a proxy section, or enabled '0')"})
	}
	return cfg
}

func (c *checker) fail(s *uciSection, line int, option, msg string) {
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Section: s.label(), Option: option, Msg: msg})
}

func (c *checker) warn(line int, section, msg string) {
	if section != "" {
		msg = section + ": " + msg
	}
	c.warnings = append(c.warnings, Warning{File: c.file, Line: line, Msg: msg})
}

// section reads the options of one section, remembering which were used so that the
// rest can be reported as unknown.
type section struct {
	c    *checker
	s    *uciSection
	used map[string]bool
}

func (c *checker) section(s *uciSection) *section {
	return &section{c: c, s: s, used: map[string]bool{}}
}

// single returns the value of a single-value option.
func (r *section) single(name string) (uciValue, bool) {
	r.used[name] = true
	o := r.s.option(name)
	if o == nil {
		return uciValue{}, false
	}
	if o.IsList {
		r.c.fail(r.s, o.Line, name, fmt.Sprintf("%s takes one value: write `option %s '...'`, not `list`", name, name))
		return uciValue{}, false
	}
	return o.Values[0], true
}

// list returns the values of a list option. `option NAME 'a b'` counts as a list
// of its whitespace-separated words, as OpenWrt's shell functions read it.
func (r *section) list(name string) ([]uciValue, bool) {
	r.used[name] = true
	o := r.s.option(name)
	if o == nil {
		return nil, false
	}
	if o.IsList {
		return o.Values, true
	}
	var out []uciValue
	for w := range strings.FieldsSeq(o.Values[0].Text) {
		out = append(out, uciValue{Text: w, Line: o.Values[0].Line})
	}
	return out, true
}

// bad reports a value that is not allowed; msg completes "NAME 'VALUE' is ...".
func (r *section) bad(name string, v uciValue, msg string) {
	r.c.fail(r.s, v.Line, name, fmt.Sprintf("%s %s is %s", name, quoteValue(v.Text), msg))
}

// badSecret reports a secret value without showing it.
func (r *section) badSecret(name string, v uciValue, msg string) {
	r.c.fail(r.s, v.Line, name, name+" "+msg)
}

func (r *section) boolean(name string, dst *bool) (uciValue, bool) {
	v, ok := r.single(name)
	if !ok {
		return v, false
	}
	b, err := parseBool(v.Text)
	if err != nil {
		r.bad(name, v, err.Error())
		return v, false
	}
	*dst = b
	return v, true
}

func (r *section) integer(name string, min, max int64, dst *int) {
	if v, ok := r.single(name); ok {
		if n, err := parseInt(v.Text, min, max); err != nil {
			r.bad(name, v, err.Error())
		} else {
			*dst = int(n)
		}
	}
}

func (r *section) duration(name string, min, max time.Duration, zeroOK bool, dst *time.Duration) {
	v, ok := r.single(name)
	if !ok {
		return
	}
	d, err := parseDuration(v.Text)
	switch {
	case err != nil:
		r.bad(name, v, err.Error())
	case d == 0 && zeroOK:
		*dst = 0
	case d < min || d > max:
		allowed := fmt.Sprintf("out of range %s-%s", fmtDuration(min), fmtDuration(max))
		if zeroOK {
			allowed += ", or 0 to disable"
		}
		r.bad(name, v, allowed)
	default:
		*dst = d
	}
}

func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (r *section) oneOf(name string, allowed []string, dst *string) {
	if v, ok := r.single(name); ok {
		if !slices.Contains(allowed, v.Text) {
			r.bad(name, v, "not allowed (allowed: "+strings.Join(allowed, ", ")+")")
		} else {
			*dst = v.Text
		}
	}
}

// finish warns about options nobody asked for: old or misspelt ones, naming the closest
// option the section knows. Their values are not shown: a misspelt password option is
// still a password.
func (r *section) finish() {
	var known []string
	for name := range r.used {
		known = append(known, name)
	}
	slices.Sort(known)
	for _, o := range r.s.Options {
		if !r.used[o.Name] {
			msg := fmt.Sprintf("unknown option %s is ignored", quoteValue(o.Name))
			if near := closest(o.Name, known); near != "" {
				msg = fmt.Sprintf("unknown option %s; did you mean '%s'? (it is ignored)", quoteValue(o.Name), near)
			}
			r.c.warn(o.Line, r.s.label(), msg)
		}
	}
}

// main reads the main section into m and returns the line that enabled it.
func (c *checker) main(s *uciSection, m *Main) (enabledLine int) {
	r := c.section(s)
	enabledLine = s.Line
	if v, ok := r.boolean("enabled", &m.Enabled); ok {
		enabledLine = v.Line
	}
	if v, ok := r.single("tun_name"); ok {
		if name, err := parseIfname(v.Text); err != nil {
			r.bad("tun_name", v, err.Error())
		} else {
			m.TunName = name
		}
	}
	r.boolean("ipv6", &m.IPv6)
	if v, ok := r.single("tun_mtu"); ok {
		lo := int64(minMTU)
		hint := " (IPv6 needs at least 1280; with ipv6 '0' the minimum is 576)"
		if !m.IPv6 {
			lo, hint = minMTUv4, ""
		}
		if n, err := parseInt(v.Text, lo, maxMTU); errors.Is(err, errNotNumber) {
			r.bad("tun_mtu", v, err.Error())
		} else if err != nil {
			r.bad("tun_mtu", v, err.Error()+hint)
		} else {
			m.TunMTU = int(n)
		}
	}
	if vals, ok := r.list("lan_iface"); ok {
		var ifaces []string
		for _, v := range vals {
			name, err := parseIfname(v.Text)
			switch {
			case err != nil:
				r.bad("lan_iface", v, err.Error())
			case slices.Contains(ifaces, name):
				c.warn(v.Line, s.label(), fmt.Sprintf("lan_iface '%s' is listed twice", name))
			default:
				ifaces = append(ifaces, name)
			}
		}
		if len(vals) == 0 {
			c.fail(s, s.option("lan_iface").Line, "lan_iface", "lan_iface is empty (at least one interface, e.g. 'br-lan')")
		}
		m.LANIfaces = ifaces
	}
	r.boolean("router_traffic", &m.RouterTraffic)
	fwmarkOK := true
	fwmark, fwmarkSet := r.single("fwmark")
	if v, ok := fwmark, fwmarkSet; ok {
		if mark, mask, err := parseFwmark(v.Text); err != nil {
			r.bad("fwmark", v, err.Error())
			fwmarkOK = false
		} else {
			m.FwMark, m.FwMask = mark, mask
		}
	}
	if v, ok := r.single("bypass_mark"); ok {
		b, err := parseUint32(v.Text)
		switch {
		case err != nil:
			r.bad("bypass_mark", v, err.Error())
		case b == 0:
			r.bad("bypass_mark", v, "zero (the mark must have at least one bit set)")
		case fwmarkOK && b&m.FwMask != 0:
			r.bad("bypass_mark", v, fmt.Sprintf("overlapping the fwmark mask 0x%x (they must share no bit)", m.FwMask))
		default:
			m.BypassMark = b
		}
	} else if fwmarkOK && m.BypassMark&m.FwMask != 0 {
		c.fail(s, fwmark.Line, "fwmark", fmt.Sprintf("fwmark mask 0x%x overlaps the default bypass_mark 0x%x (set option bypass_mark to a bit outside the mask)", m.FwMask, m.BypassMark))
	}
	if v, ok := r.single("route_table"); ok {
		// TCP uses the next table (route_table + 1), which must be free too.
		n, err := parseInt(v.Text, 1, math.MaxInt32-1)
		switch {
		case errors.Is(err, errNotNumber):
			r.bad("route_table", v, err.Error())
		case err != nil:
			r.bad("route_table", v, err.Error()+" (except 252-255)")
		case n >= 252 && n <= 255:
			r.bad("route_table", v, "reserved (253 default, 254 main, 255 local; tgtun also uses the next number, for TCP); pick another table number")
		default:
			m.RouteTable = int(n)
		}
	}
	r.integer("rule_priority", minRulePriority, maxRulePriority, &m.RulePriority)
	r.oneOf("fail_mode", []string{FailBlock, FailDirect}, &m.FailMode)
	r.duration("update_interval", minUpdateInterval, maxUpdateInterval, true, &m.UpdateInterval)
	if v, ok := r.single("health_target"); ok {
		ap, err := netip.ParseAddrPort(v.Text)
		switch {
		case err != nil:
			r.bad("health_target", v, "not an address with a port (e.g. '149.154.167.51:443' or '[2001:db8::1]:443')")
		case ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().Zone() != "":
			r.bad("health_target", v, "not a usable address and port (no port 0, unspecified address or zone)")
		default:
			m.HealthTarget = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	r.duration("health_interval", minHealthInterval, maxHealthInterval, false, &m.HealthInterval)
	if v, ok := r.single("memory_limit"); ok {
		if n, err := parseSize(v.Text); err != nil {
			r.bad("memory_limit", v, err.Error())
		} else {
			m.MemoryLimit = n
		}
	}
	r.integer("max_flows", 64, 65536, &m.MaxFlows)
	// Unset, max_flows follows the memory budget, at most AutoMaxFlows; the
	// per-device cap is then a quarter of what it comes to, unless set.
	m.MaxFlowsPerDevice = m.MaxFlows / 4
	if v, ok := r.single("max_flows_per_device"); ok {
		most := int64(AutoMaxFlows)
		if m.MaxFlows > 0 {
			most = int64(m.MaxFlows)
		}
		if n, err := parseInt(v.Text, 1, most); err != nil {
			r.bad("max_flows_per_device", v, err.Error()+" (at most max_flows)")
		} else {
			m.MaxFlowsPerDevice = int(n)
		}
	}
	r.integer("dns_port", 1, 65535, &m.DNSPort)
	if v, ok := r.single("dns_upstream"); ok {
		if u, err := parseDNSUpstream(v.Text); err != nil {
			r.bad("dns_upstream", v, err.Error())
		} else {
			m.DNSUpstream = u
		}
	}
	r.duration("domain_timeout", time.Second, 7*24*time.Hour, false, &m.DomainTimeout)
	m.IncludeDevices = c.devices(r, "include_device")
	m.ExcludeDevices = c.devices(r, "exclude_device")
	if v, ok := r.single("log_level"); ok {
		switch strings.ToLower(v.Text) {
		case "debug":
			m.LogLevel = slog.LevelDebug
		case "info":
			m.LogLevel = slog.LevelInfo
		case "warn", "warning":
			m.LogLevel = slog.LevelWarn
		case "error":
			m.LogLevel = slog.LevelError
		default:
			r.bad("log_level", v, "not allowed (allowed: debug, info, warn, error)")
		}
	}
	r.finish()
	return enabledLine
}

// proxy reads a proxy section. hasServer tells whether it is configured at all; ok is
// false when it has errors or no server.
func (c *checker) proxy(s *uciSection) (p Proxy, hasServer, ok bool) {
	r := c.section(s)
	nerrs := len(c.errs)
	p = Proxy{Name: s.Name, Type: TypeSOCKS5, UDP: true, Priority: 10, Line: s.Line}
	r.oneOf("type", []string{TypeSOCKS5, TypeHTTP, TypeShadowsocks, TypeVLESS, TypeTrojan, TypeInterface}, &p.Type)
	isIface := p.Type == TypeInterface
	if isIface {
		// An interface proxy is "configured" by its interface; server and port mean nothing.
		for _, o := range []string{"server", "port"} {
			if v, set := r.single(o); set {
				c.warn(v.Line, s.label(), o+" is not used by an interface proxy (marked traffic is routed into the interface)")
			}
		}
		if v, set := r.single("interface"); set && v.Text != "" {
			hasServer = true
			if err := checkIfaceName(v.Text); err != nil {
				r.bad("interface", v, err.Error())
			} else {
				p.Interface = v.Text
			}
		}
	} else if v, set := r.single("interface"); set {
		c.warn(v.Line, s.label(), "interface is only used by interface proxies (type 'interface')")
	}
	if v, set := r.single("server"); !isIface && set && v.Text != "" {
		hasServer = true
		if srv, err := parseServer(v.Text); err != nil {
			r.bad("server", v, err.Error())
		} else {
			p.Server = srv
		}
	}
	if v, set := r.single("port"); isIface {
		// not used
	} else if set {
		if n, err := parseInt(v.Text, 1, math.MaxUint16); err != nil {
			r.bad("port", v, err.Error())
		} else {
			p.Port = uint16(n)
		}
	} else if hasServer {
		c.fail(s, s.Line, "port", "port is missing (1-65535)")
	}
	user, _ := r.single("username")
	pass, _ := r.single("password")
	p.Username, p.Password = user.Text, pass.Text
	cipher, cipherSet := r.single("cipher")
	if cipherSet && cipher.Text != "" {
		if !slices.Contains(ssCiphers, cipher.Text) {
			r.bad("cipher", cipher, "not allowed (allowed: "+strings.Join(ssCiphers, ", ")+")")
		} else {
			p.Cipher = cipher.Text
		}
	}
	udpVal, udpSet := r.boolean("udp", &p.UDP)
	r.integer("priority", 0, maxPriority, &p.Priority)
	c.proxyTLS(r, &p, hasServer)
	r.finish()

	switch p.Type {
	case TypeSOCKS5:
		c.credentials(r, user, pass, maxSOCKSCredential)
	case TypeHTTP:
		c.credentials(r, user, pass, maxCredential)
		if strings.Contains(user.Text, ":") {
			r.badSecret("username", user, "contains ':', which HTTP basic authentication cannot carry")
		}
		if udpSet && p.UDP {
			c.warn(udpVal.Line, s.label(), "udp '1' has no effect on an http proxy (HTTP CONNECT carries only TCP); UDP to targets is dropped")
		}
		p.UDP = false
	case TypeVLESS:
		if user.Text != "" || pass.Text != "" {
			c.warn(s.Line, s.label(), "username and password are not used by vless (it authenticates with uuid)")
		}
	case TypeTrojan:
		if pass.Text == "" {
			if hasServer {
				c.fail(s, s.Line, "password", "password is missing (trojan needs the server's password)")
			}
		} else {
			c.credential(r, "password", pass, maxCredential)
		}
		if user.Text != "" {
			c.warn(user.Line, s.label(), "username is not used by trojan")
		}
	case TypeShadowsocks:
		if pass.Text == "" {
			if hasServer {
				c.fail(s, s.Line, "password", "password is missing (shadowsocks needs the server's password or key)")
			}
		} else {
			c.credential(r, "password", pass, maxCredential)
			if keyLen := ss2022KeyLen(p.Cipher); keyLen > 0 && !validSS2022Key(pass.Text, keyLen) {
				r.badSecret("password", pass, fmt.Sprintf("is not a base64 key of %d bytes, as %s needs", keyLen, p.Cipher))
			} else if keyLen > 0 && strings.Contains(pass.Text, ":") && !strings.Contains(p.Cipher, "-aes-") {
				r.badSecret("password", pass, "holds several keys (identity headers), which only the AES 2022 ciphers support")
			}
		}
		if hasServer && (!cipherSet || cipher.Text == "") {
			c.fail(s, s.Line, "cipher", "cipher is missing (shadowsocks needs one of: "+strings.Join(ssCiphers, ", ")+")")
		}
		if user.Text != "" {
			c.warn(user.Line, s.label(), "username is not used by shadowsocks")
		}
	}
	if p.Type != TypeShadowsocks && cipher.Text != "" {
		c.warn(cipher.Line, s.label(), "cipher is only used by shadowsocks proxies")
	}
	if !hasServer && isIface {
		c.warn(s.Line, s.label(), "interface proxy has no interface; it is not used until option interface is set (e.g. 'wg0')")
		return Proxy{}, false, false
	}
	if !hasServer {
		c.warn(s.Line, s.label(), "proxy has no server; it is not used until option server is set")
		return Proxy{}, false, false
	}
	if len(c.errs) == nerrs && c.rules != nil {
		if err := c.rules.CheckProxy(p); err != nil {
			line := s.Line
			if cipherSet {
				line = cipher.Line // what the proxy package refuses is most often the cipher
			}
			c.fail(s, line, "", "the daemon cannot use this proxy: "+err.Error())
		}
	}
	return p, true, len(c.errs) == nerrs
}

// checkIfaceName accepts a Linux device name or a netifd interface name.
func checkIfaceName(n string) error {
	switch {
	case len(n) > 15:
		return errors.New("longer than 15 bytes (a device or netifd interface name, e.g. 'wg0')")
	case n == "." || n == ".." || strings.ContainsAny(n, "/: \t'\""):
		return errors.New("not a device or netifd interface name (e.g. 'wg0')")
	case strings.ContainsFunc(n, func(r rune) bool { return r < ' ' || r > '~' }):
		return errors.New("not a device or netifd interface name (printable ASCII, e.g. 'wg0')")
	}
	return nil
}

// credentials checks a username/password pair without ever showing them.
func (c *checker) credentials(r *section, user, pass uciValue, maxLen int) {
	c.credential(r, "username", user, maxLen)
	c.credential(r, "password", pass, maxLen)
	switch {
	case user.Text != "" && pass.Text == "":
		c.fail(r.s, user.Line, "password", "username is set but password is empty (both are needed for authentication)")
	case user.Text == "" && pass.Text != "":
		c.fail(r.s, pass.Line, "username", "password is set but username is empty (both are needed for authentication)")
	}
}

func (c *checker) credential(r *section, name string, v uciValue, maxLen int) {
	switch {
	case len(v.Text) > maxLen:
		r.badSecret(name, v, fmt.Sprintf("is too long (%d bytes, at most %d)", len(v.Text), maxLen))
	case strings.ContainsFunc(v.Text, func(r rune) bool { return r < ' ' || r == 0x7f }):
		r.badSecret(name, v, "contains a control character")
	}
}

func ss2022KeyLen(cipher string) int {
	switch cipher {
	case "2022-blake3-aes-128-gcm":
		return 16
	case "2022-blake3-aes-256-gcm", "2022-blake3-chacha20-poly1305":
		return 32
	}
	return 0
}

// validSS2022Key accepts a base64 key of n bytes, or several joined by ':' (an
// identity key and a user key, as multi-user 2022 servers take them).
func validSS2022Key(s string, n int) bool {
	for part := range strings.SplitSeq(s, ":") {
		if decodedLen(part) != n {
			return false
		}
	}
	return true
}

func (c *checker) service(s *uciSection) (Service, bool) {
	r := c.section(s)
	nerrs := len(c.errs)
	sv := Service{Name: s.Name, Enabled: true}
	if s.Anonymous {
		c.fail(s, s.Line, "", "a service section needs a name, the service's: config service 'telegram'")
	}
	r.boolean("enabled", &sv.Enabled)
	if c.rules != nil && !s.Anonymous {
		if known := c.rules.Services(); !slices.Contains(known, s.Name) {
			msg := fmt.Sprintf("service %s is not in the catalogue (known: %s)", quoteValue(s.Name), strings.Join(known, ", "))
			if near := closest(s.Name, known); near != "" {
				msg += fmt.Sprintf("; did you mean '%s'?", near)
			}
			c.fail(s, s.Line, "", msg)
		}
	}
	if v, ok := r.single("url"); ok && v.Text != "" {
		if u, err := parseURL(v.Text); err != nil {
			c.fail(s, v.Line, "url", "url is "+err.Error())
		} else {
			sv.URL = u
		}
	}
	if v, ok := r.single("domain_url"); ok && v.Text != "" {
		if u, err := parseURL(v.Text); err != nil {
			c.fail(s, v.Line, "domain_url", "domain_url is "+err.Error())
		} else {
			sv.DomainURL = u
		}
	}
	r.finish()
	return sv, len(c.errs) == nerrs
}

func (c *checker) custom(s *uciSection, ipv6 bool) Custom {
	r := c.section(s)
	cu := Custom{Name: s.Name}
	subnets, _ := r.list("subnet")
	for _, v := range subnets {
		p, err := netip.ParsePrefix(v.Text)
		if err != nil {
			r.bad("subnet", v, "not a CIDR prefix (e.g. '203.0.113.0/24' or '2001:db8:3::/64')")
			continue
		}
		if m := p.Masked(); m != p {
			c.warn(v.Line, s.label(), fmt.Sprintf("subnet '%s' has host bits set; using %s", p, m))
			p = m
		}
		if p.Addr().Is4In6() {
			r.bad("subnet", v, "an IPv4-mapped IPv6 prefix; write the IPv4 prefix")
			continue
		}
		if c.rules != nil {
			if err := c.rules.CheckSubnet(p); err != nil {
				r.bad("subnet", v, "refused: "+err.Error())
				continue
			}
		}
		if (p.Addr().Is4() && p.Bits() < 8) || (p.Addr().Is6() && p.Bits() < 16) {
			c.warn(v.Line, s.label(), fmt.Sprintf("subnet '%s' is very broad: all of it goes through the proxy", p))
		}
		if p.Addr().Is6() && !ipv6 {
			c.warn(v.Line, s.label(), fmt.Sprintf("subnet '%s' is IPv6 and is ignored while main ipv6 is '0'", p))
		}
		if !slices.Contains(cu.Subnets, p) {
			cu.Subnets = append(cu.Subnets, p)
		}
	}
	urls, _ := r.list("url")
	for _, v := range urls {
		// URLs are not echoed: they may carry credentials.
		if u, err := parseURL(v.Text); err != nil {
			c.fail(s, v.Line, "url", "url is "+err.Error())
		} else if !slices.Contains(cu.URLs, u) {
			cu.URLs = append(cu.URLs, u)
		}
	}
	domains, _ := r.list("domain")
	for _, v := range domains {
		if d, err := dnsname.Normalize(v.Text); err != nil {
			c.fail(s, v.Line, "domain", "domain "+err.Error())
		} else if !slices.Contains(cu.Domains, d) {
			cu.Domains = append(cu.Domains, d)
		}
	}
	domainURLs, _ := r.list("domain_url")
	for _, v := range domainURLs {
		if u, err := parseURL(v.Text); err != nil {
			c.fail(s, v.Line, "domain_url", "domain_url is "+err.Error())
		} else if !slices.Contains(cu.DomainURLs, u) {
			cu.DomainURLs = append(cu.DomainURLs, u)
		}
	}
	if len(subnets) == 0 && len(urls) == 0 && len(domains) == 0 && len(domainURLs) == 0 {
		c.warn(s.Line, s.label(), "has no subnet, url, domain or domain_url; it adds nothing")
	}
	r.finish()
	return cu
}

// devices reads include_device or exclude_device: addresses, prefixes or MACs.
func (c *checker) devices(r *section, name string) []Device {
	vals, _ := r.list(name)
	var out []Device
	for _, v := range vals {
		d, err := parseDevice(v.Text)
		if err != nil {
			r.bad(name, v, err.Error())
			continue
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// decodedLen is the length of standard base64 (padded or not), or -1.
func decodedLen(s string) int {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return len(b)
		}
	}
	return -1
}
