package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tgtun/tgtun/daemon/subs"
)

// ErrCheckFailed is returned by Print for a `check` result with a failed step, so the CLI
// exits non-zero.
var ErrCheckFailed = errors.New("some checks failed")

// Print writes a method's JSON result for people.
func Print(w io.Writer, method string, raw json.RawMessage) error {
	switch method {
	case "status":
		var st Status
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("decode status: %w", err)
		}
		printStatus(w, st)
		return nil
	case "check":
		var r CheckResult
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decode check: %w", err)
		}
		for _, s := range r.Steps {
			mark := "ok  "
			if !s.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "[%s] %-18s %s\n", mark, s.Name, s.Detail)
			if s.Hint != "" {
				fmt.Fprintf(w, "       hint: %s\n", s.Hint)
			}
		}
		if !r.OK {
			return ErrCheckFailed
		}
		return nil
	case "reload":
		fmt.Fprintln(w, "configuration reloaded")
		return nil
	case "update_subscriptions":
		var r struct {
			Subscriptions []subs.Status `json:"subscriptions"`
			Error         string        `json:"error"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decode %s: %w", method, err)
		}
		printSubscriptions(w, r.Subscriptions)
		if r.Error != "" {
			return errors.New(r.Error)
		}
		return nil
	default:
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s: %w", method, err)
		}
		out, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(w, string(out))
		return nil
	}
}

func printStatus(w io.Writer, st Status) {
	fmt.Fprintf(w, "tgtun %s, up %s, config %s\n", st.Version, st.Uptime, st.Config)
	if st.LastReloadError != "" {
		fmt.Fprintf(w, "last reload FAILED (running config kept): %s\n", st.LastReloadError)
	}
	if st.ConfigFallback != "" && st.ConfigFallback != st.LastReloadError {
		fmt.Fprintf(w, "config fallback: %s\n", st.ConfigFallback)
	}
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	n := st.Net
	fmt.Fprintf(w, "tun: present=%v up=%v  nft table=%v marking=%v router_traffic=%v\n", n.TUNPresent, n.TUNUp, n.Table, n.Marking, n.RouterTraffic)
	fmt.Fprintf(w, "rules: v4=%v v6=%v  routes: v4=%v v6=%v  targets: %d v4, %d v6 ranges  bypass: %d v4, %d v6\n",
		n.Rules4, n.Rules6, n.Route4, n.Route6, n.Targets4, n.Targets6, n.Bypass4, n.Bypass6)
	if st.NetError != "" {
		fmt.Fprintf(w, "net error: %s\n", st.NetError)
	}
	if st.Rebuilds > 0 {
		fmt.Fprintf(w, "data path rebuilt %d times, last %s\n", st.Rebuilds, st.LastRebuild)
	}
	fmt.Fprintf(w, "fail mode: %s\n\n", st.FailMode)

	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tTYPE\tSERVER\tHEALTH\tLATENCY\tFLOWS\tLAST ERROR")
	for _, p := range st.Proxies {
		name := p.Name
		if p.Active {
			name = "*" + name
		}
		health := p.State
		if health == "" { // a daemon from before the states
			health = map[bool]string{true: "healthy", false: "unhealthy"}[p.Healthy]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", name, p.Type, p.Server, health, p.Latency.Round(time.Millisecond), p.Flows, p.LastError)
	}
	tw.Flush()
	for _, p := range st.Proxies {
		if p.Hint != "" {
			fmt.Fprintf(w, "hint for %s: %s\n", p.Name, p.Hint)
		}
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LIST\tKIND\tV4\tV6\tORIGIN\tUPDATED\tLAST ERROR")
	for _, l := range st.Lists {
		updated := "-"
		if !l.UpdatedAt.IsZero() {
			updated = l.UpdatedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", l.Name, l.Kind, l.Entries4, l.Entries6, l.Origin, updated, l.LastError)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tENABLED\tRANGES\tDOMAINS\tRESOLVED")
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%d\n", s.Name, s.Enabled, s.Ranges, s.Domains, s.Resolved)
	}
	tw.Flush()
	if len(st.Subscriptions) > 0 {
		fmt.Fprintln(w)
		printSubscriptions(w, st.Subscriptions)
	}
	d := st.DNS
	fmt.Fprintf(w, "\ndns: forwarder %s, upstream %s (through the proxy), dnsmasq: %s; %d queries, %d from cache, %d SERVFAIL\n",
		d.Listen, d.Upstream, d.Dnsmasq, d.Queries, d.CacheHits, d.Failures)
	if d.LastError != "" {
		fmt.Fprintf(w, "dns last error: %s\n", d.LastError)
	}
	f := st.Flows
	fmt.Fprintf(w, "\nflows: tcp %d active / %d total, udp %d active / %d total, rejected %d, udp dropped %d\n",
		f.ActiveTCP, f.TotalTCP, f.ActiveUDP, f.TotalUDP, f.Rejected, f.DroppedUDP)
	fmt.Fprintf(w, "bytes: up %d, down %d\n", f.BytesUp, f.BytesDown)
	fmt.Fprintf(w, "per device: limit %d, refused %d", f.PerDeviceLimit, f.RefusedPerDevice)
	for i, d := range f.TopDevices {
		sep := ", "
		if i == 0 {
			sep = "; most flows: "
		}
		fmt.Fprintf(w, "%s%s %d", sep, d.Address, d.Flows)
	}
	fmt.Fprintln(w)
}

// printSubscriptions shows each subscription: its proxies, last refresh and error,
// traffic and expiry.
func printSubscriptions(w io.Writer, list []subs.Status) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBSCRIPTION\tPROXIES\tSKIPPED\tUPDATED\tNEXT\tTRAFFIC\tEXPIRES\tLAST ERROR")
	for _, s := range list {
		updated, next := "-", "-"
		if !s.UpdatedAt.IsZero() {
			updated = s.UpdatedAt.Format(time.RFC3339) + " (" + s.Origin + ")"
		}
		if !s.NextRefresh.IsZero() {
			next = s.NextRefresh.Format(time.RFC3339)
		}
		if !s.Enabled {
			next = "disabled"
		}
		traffic, expires := "-", "-"
		if u := s.Userinfo; u != nil {
			total := "unlimited"
			if u.Total > 0 {
				total = humanBytes(u.Total)
			}
			traffic = humanBytes(u.Upload+u.Download) + " of " + total
			if !u.Expire.IsZero() {
				expires = u.Expire.Format("2006-01-02")
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", s.Name, len(s.Members), s.Skipped, updated, next, traffic, expires, s.LastError)
	}
	tw.Flush()
	for _, s := range list {
		if len(s.Members) > 0 {
			names := make([]string, 0, min(len(s.Members), 10))
			for _, m := range s.Members[:min(len(s.Members), 10)] {
				if m.Label != "" && m.Label != m.Name {
					names = append(names, fmt.Sprintf("%s (%s)", m.Name, m.Label))
				} else {
					names = append(names, m.Name)
				}
			}
			more := ""
			if len(s.Members) > 10 {
				more = fmt.Sprintf(" and %d more", len(s.Members)-10)
			}
			fmt.Fprintf(w, "proxies of %s (%s): %s%s\n", s.Name, s.URL, strings.Join(names, ", "), more)
		}
		for _, r := range s.SkipReasons {
			fmt.Fprintf(w, "skipped in %s: %s\n", s.Name, r)
		}
		if s.Announce != "" {
			fmt.Fprintf(w, "announcement of %s: %s\n", s.Name, s.Announce)
		}
	}
}

func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
