package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/proxy"
	"github.com/tgtun/tgtun/daemon/subs"
)

// The subscriptions' side of the daemon: their members join the pool beside the
// configured proxies; a refresh that changes them swaps the pool's members at once
// (proxy.Pool.SetMembers keeps unchanged members and their flows).

// newSubscriptions makes the manager of cfg's subscriptions and gives it the cache.
func (d *Daemon) newSubscriptions(cfg *config.Config) {
	d.subs = subs.NewManager(subs.Options{
		CacheDir: d.opts.SubscriptionCacheDir,
		Dial:     d.dialSubscription,
		Rules:    ConfigRules{},
		Timeout:  d.opts.SubscriptionTimeout,
		Log:      d.log,
	})
	d.subsWake = make(chan struct{}, 1)
	d.subs.SetSubscriptions(cfg.Subscriptions, sectionNames(cfg))
	d.subs.Load()
}

// sectionNames are the names a subscription's members must not take.
func sectionNames(cfg *config.Config) []string {
	names := []string{"main"}
	for _, p := range cfg.Proxies {
		names = append(names, p.Name)
	}
	for _, s := range cfg.Services {
		names = append(names, s.Name)
	}
	for _, c := range cfg.Customs {
		names = append(names, c.Name)
	}
	for _, s := range cfg.Subscriptions {
		names = append(names, s.Name)
	}
	return names
}

// specID identifies a proxy's settings for proxy.Pool.SetMembers, as a hash: the
// settings hold secrets.
func specID(p config.Proxy) string {
	s := proxySpec(p)
	h := sha256.New()
	for _, f := range []string{s.Type, s.Server, strconv.Itoa(int(s.Port)), s.Username, s.Password, s.Cipher,
		strconv.FormatBool(s.UDP), s.UUID, s.Flow, s.Security, s.SNI, s.Fingerprint, s.PublicKey, s.ShortID,
		strings.Join(s.ALPN, ","), strconv.FormatBool(s.Insecure), s.Interface, strings.Join(s.PinnedSHA256, ","), s.CAFile,
		s.Transport, s.Path, s.Host, s.ServiceName, s.Mode, strconv.Itoa(s.EarlyData), s.PaddingBytes, s.Extra} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// withSubscriptions makes pool's members cfg's proxies and the subscriptions' members.
// Called with d.mu held, or before anything runs.
func (d *Daemon) withSubscriptions(pool *proxy.Pool, cfg *config.Config) {
	members, err := configMembers(cfg, &d.devices)
	if err != nil {
		d.log.Error("proxies", "err", err) // LoadConfig built them already: not expected
		return
	}
	for _, m := range d.subs.Members() {
		pm, err := proxy.NewMember(proxySpec(m.Proxy), proxy.Options{BypassMark: cfg.Main.BypassMark})
		if err != nil {
			d.log.Warn("subscription proxy not usable", "subscription", m.Sub, "proxy", m.Name, "err", err)
			continue
		}
		pm.ID = specID(m.Proxy)
		members = append(members, pm)
	}
	pool.SetMembers(members)
}

// subscriptionsLoop refreshes each subscription when it is due, until ctx ends; a
// reload wakes it to look at new subscriptions.
func (d *Daemon) subscriptionsLoop(ctx context.Context) {
	for {
		var due <-chan time.Time
		var t *time.Timer
		if next := d.subs.Due(); !next.IsZero() {
			t = time.NewTimer(max(time.Until(next), 0))
			due = t.C
		}
		woken := false
		select {
		case <-ctx.Done():
		case <-d.subsWake:
			woken = true
		case <-due:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if woken {
			continue
		}
		changed, _ := d.subs.RefreshDue(ctx) // failures are logged and in status
		if changed && ctx.Err() == nil {
			d.applySubscriptions(ctx)
		}
	}
}

// wakeSubscriptions makes the loop look at the schedule again (after a reload).
func (d *Daemon) wakeSubscriptions() {
	select {
	case d.subsWake <- struct{}{}:
	default:
	}
}

// applySubscriptions swaps the pool's members for the subscriptions' current ones and
// keeps their servers out of the target sets. Called without d.mu.
func (d *Daemon) applySubscriptions(ctx context.Context) {
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	bypass := d.resolveBypass(ctx, cfg) // DNS, outside d.mu
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg != cfg {
		return // a reload came in between and applied the members itself
	}
	d.withSubscriptions(d.pool, d.cfg)
	d.syncMarking()
	d.syncRoute()
	d.bypass = bypass
	if d.net != nil {
		if err := d.net.SetBypass(bypass); err != nil {
			d.log.Error("bypass set", "err", err)
		}
	}
}

// UpdateSubscriptions fetches the subscription called name ("" every one) now.
func (d *Daemon) UpdateSubscriptions(ctx context.Context, name string) (any, error) {
	changed, err := d.subs.Refresh(ctx, name)
	if changed {
		d.applySubscriptions(ctx)
	}
	res := map[string]any{"subscriptions": d.subs.Status()}
	if err != nil {
		if strings.HasPrefix(err.Error(), "no subscription") {
			return nil, &Error{Code: CodeNotFound, Msg: err.Error()}
		}
		res["error"] = err.Error()
	}
	return res, nil
}

// dialSubscription connects to a subscription's host: through the proxy via names,
// directly, or ("") through the pool and directly when no proxy gets through (the
// first fetch of a subscription that supplies every proxy has no proxy yet).
func (d *Daemon) dialSubscription(ctx context.Context, via, address string) (net.Conn, string, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, "", err
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, "", fmt.Errorf("port of %s: %w", address, err)
	}
	d.mu.Lock()
	pool, mark := d.pool, d.cfg.Main.BypassMark
	d.mu.Unlock()
	ips, err := proxy.MarkedResolver(mark).LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, "", err
	}
	each := func(dial func(context.Context, netip.AddrPort) (net.Conn, error)) (net.Conn, error) {
		var errs []error
		for _, ip := range ips {
			c, err := dial(ctx, netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	switch via {
	case config.ViaDirect:
		c, err := each(d.dom.direct.DialTCP)
		return c, "direct", err
	case "":
		if c, err := each(pool.DialTCP); err == nil {
			return c, "proxy", nil
		} else if ctx.Err() != nil {
			return nil, "", err
		}
		c, err := each(d.dom.direct.DialTCP)
		return c, "direct (no proxy got through)", err
	default:
		dialer := pool.Dialer(via)
		if dialer == nil {
			return nil, "", fmt.Errorf("via proxy '%s' is not in use", via)
		}
		c, err := each(dialer.DialTCP)
		return c, "proxy '" + via + "'", err
	}
}

// resolveSubscriptionServers are the addresses of the subscriptions' members, which
// must never be marked. Host names are looked up at most 8 at a time.
func (d *Daemon) resolveSubscriptionServers(ctx context.Context, mark uint32) []netip.Prefix {
	var out []netip.Prefix
	var names []string
	for _, m := range d.subs.Members() {
		if a, err := netip.ParseAddr(m.Proxy.Server); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		} else if !slices.Contains(names, m.Proxy.Server) {
			names = append(names, m.Proxy.Server)
		}
	}
	resolver := proxy.MarkedResolver(mark)
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, 8)
	for _, name := range names {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			addrs, err := resolver.LookupNetIP(rctx, "ip", name)
			cancel()
			if err != nil {
				d.log.Warn("cannot resolve a subscription's proxy server; it is not excluded from marking", "server", name, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, a := range addrs {
				out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			}
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return slices.Compact(out)
}

// checkSubscriptions adds a step per subscription to check: it has members, and its
// last refresh worked.
func (d *Daemon) checkSubscriptions(r *CheckResult) {
	for _, s := range d.subs.Status() {
		if !s.Enabled {
			continue
		}
		detail := fmt.Sprintf("%d proxies from %s (%s", len(s.Members), s.URL, s.Origin)
		if !s.UpdatedAt.IsZero() {
			detail += ", fetched " + s.UpdatedAt.Format(time.RFC3339)
		}
		detail += ")"
		if s.Skipped > 0 {
			detail += fmt.Sprintf("; %d links skipped", s.Skipped)
		}
		if s.LastError != "" {
			detail += "; last refresh failed: " + s.LastError
		}
		r.add("subscription '"+s.Name+"'", len(s.Members) > 0 && s.LastError == "", detail, subscriptionHint(s))
	}
}

// subscriptionHint says what to do about a subscription's state.
func subscriptionHint(s subs.Status) string {
	m := strings.ToLower(s.LastError)
	switch {
	case strings.Contains(m, "device limit"), strings.Contains(m, "device headers"), strings.Contains(m, "x-hwid"):
		return "the panel refuses this router as a device: see the error; the proxies it gave last time stay in use"
	case strings.Contains(m, "json configuration"), strings.Contains(m, "html page"):
		return "the panel did not answer with share links for this User-Agent: set option user_agent to a client it serves links (e.g. 'v2rayN/6.30', 'Happ/1.63.0')"
	case strings.Contains(m, "http 401"), strings.Contains(m, "http 403"), strings.Contains(m, "http 404"):
		return "the panel refused the URL: the subscription may have expired or been revoked; take the current URL from the provider"
	case strings.Contains(m, "none of its"), strings.Contains(m, "no links"), strings.Contains(m, "include/exclude"):
		return "the subscription holds no link tgtun can use (see skip_reasons in tgtun status -json), or include/exclude leave none"
	case strings.Contains(m, "no answer"), strings.Contains(m, "timeout"), strings.Contains(m, "refused"), strings.Contains(m, "no such host"):
		return "the panel could not be reached: check the URL and option via (fetch through a proxy, or 'direct')"
	case len(s.Members) == 0:
		return "no proxy from this subscription yet: run tgtun subscription update, and see its last error in tgtun status"
	}
	return "see the last error; the proxies the subscription gave last time stay in use"
}
