package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Subscription is a `config subscription` section: a provider's URL that returns the
// current share links (base64 or plain, one a line). Its links become proxies of the
// pool, named after their #fragments; the daemon refreshes them (daemon/subs). URL is
// a secret (it carries the account's token): messages never show it.
type Subscription struct {
	Name    string
	Line    int
	Enabled bool
	URL     string
	// Via is how the URL is fetched: "" through the active proxy (directly while no
	// proxy works), ViaDirect, or the name of a proxy section.
	Via string
	// Interval between refreshes; 0 means the provider's profile-update-interval
	// header, else DefaultSubscriptionInterval.
	Interval time.Duration
	// Priority of every member (lower wins; the subscription's order breaks ties, or
	// latency with main select 'latency').
	Priority int
	// Include (when set) and Exclude filter members by their name (the link's
	// #fragment): case-insensitive substrings.
	Include, Exclude []string
	// UserAgent is sent with the request: panels answer only clients they recognise.
	UserAgent string
	// DeviceHeaders sends X-HWID, X-Device-OS, X-Ver-OS and X-Device-Model, which
	// Remnawave-style panels key device limits on; HWID overrides the derived id.
	DeviceHeaders bool
	HWID          string
}

// Defaults of subscriptions.
const (
	ViaDirect                   = "direct"
	DefaultSubscriptionInterval = 12 * time.Hour
	// DefaultUserAgent is a Happ-style client (the X-HWID headers are Happ's), of a
	// version that 3x-ui, Marzban and Remnawave answer with share links rather than
	// an Xray JSON configuration (which they send newer Happ and v2rayN versions when
	// the panel enables it).
	DefaultUserAgent = "Happ/1.63.0"
)

// Values of Main.Select.
const (
	SelectPriority = "priority"
	SelectLatency  = "latency"
)

// subscription reads a subscription section; proxies are the names of the file's
// proxy sections (what via may name).
func (c *checker) subscription(s *uciSection) (Subscription, bool) {
	r := c.section(s)
	nerrs := len(c.errs)
	sub := Subscription{Name: s.Name, Line: s.Line, Enabled: true, Priority: 10, UserAgent: DefaultUserAgent, DeviceHeaders: true}
	if s.Anonymous {
		c.fail(s, s.Line, "", "a subscription section needs a name: config subscription 'myvpn' (its proxies are named after their links)")
	}
	r.boolean("enabled", &sub.Enabled)
	if v, ok := r.single("url"); ok && v.Text != "" {
		// The URL is not echoed: it carries the account's token.
		if u, err := parseURL(v.Text); err != nil {
			c.fail(s, v.Line, "url", "url is "+err.Error())
		} else {
			sub.URL = u
		}
	} else {
		c.fail(s, s.Line, "url", "url is missing (the subscription address the provider gave you, http:// or https://)")
	}
	if v, ok := r.single("via"); ok && v.Text != "" {
		if v.Text != ViaDirect && !validName(v.Text) {
			r.bad("via", v, "not a proxy section name or 'direct'")
		} else {
			sub.Via = v.Text
			c.vias = append(c.vias, viaRef{section: s, value: v})
		}
	}
	r.duration("interval", minUpdateInterval, maxUpdateInterval, false, &sub.Interval)
	r.integer("priority", 0, maxPriority, &sub.Priority)
	sub.Include = c.nameFilters(r, "include")
	sub.Exclude = c.nameFilters(r, "exclude")
	if v, ok := r.single("user_agent"); ok && v.Text != "" {
		if len(v.Text) > 256 || strings.ContainsFunc(v.Text, func(r rune) bool { return r < ' ' || r > '~' }) {
			r.bad("user_agent", v, "not a User-Agent (printable ASCII, at most 256 characters)")
		} else {
			sub.UserAgent = v.Text
		}
	}
	r.boolean("device_headers", &sub.DeviceHeaders)
	if v, ok := r.single("hwid"); ok && v.Text != "" {
		if len(v.Text) > 64 || strings.ContainsFunc(v.Text, func(r rune) bool { return r <= ' ' || r > '~' }) {
			r.bad("hwid", v, "not a device id (printable ASCII without spaces, at most 64 characters)")
		} else {
			sub.HWID = v.Text
		}
	}
	r.finish()
	return sub, len(c.errs) == nerrs
}

func (c *checker) nameFilters(r *section, name string) []string {
	vals, _ := r.list(name)
	var out []string
	for _, v := range vals {
		if strings.ContainsFunc(v.Text, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			r.bad(name, v, "not a name filter (text without control characters)")
			continue
		}
		if !slices.Contains(out, v.Text) {
			out = append(out, v.Text)
		}
	}
	return out
}

// viaRef is a subscription's via naming a proxy, checked once every section is read.
type viaRef struct {
	section *uciSection
	value   uciValue
}

// checkVias requires each via that names a proxy to name a proxy section of the file.
func (c *checker) checkVias(proxies map[string]bool) {
	for _, v := range c.vias {
		if v.value.Text == ViaDirect || proxies[v.value.Text] {
			continue
		}
		known := make([]string, 0, len(proxies))
		for name := range proxies {
			known = append(known, name)
		}
		slices.Sort(known)
		msg := fmt.Sprintf("via %s is not a proxy section of this file (proxies: %s; or 'direct')", quoteValue(v.value.Text), strings.Join(known, ", "))
		if len(known) == 0 {
			msg = fmt.Sprintf("via %s is not a proxy section of this file (it has none; use 'direct' or leave via unset)", quoteValue(v.value.Text))
		}
		c.fail(v.section, v.value.Line, "via", msg)
	}
}
