package subs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
)

// Where a subscription's members came from, as Status.Origin reports it.
const (
	OriginDownload = "download" // fetched in this run
	OriginCache    = "cache"    // read from the tmpfs cache at start
	OriginNone     = "none"     // nothing yet
)

// Options configure a Manager. Zero values take the defaults.
type Options struct {
	CacheDir string   // DefaultCacheDir
	Dial     DialFunc // required to fetch
	// Rules are the daemon's checks (control.ConfigRules): a link becomes a member only
	// if the proxy package can build it.
	Rules config.Rules
	// Device describes the router to the panel at host; nil: LocalDevice("/", host).
	Device  func(host string) Device
	Timeout time.Duration // DefaultTimeout per fetch
	Log     *slog.Logger
	Now     func() time.Time
}

// Manager keeps every subscription's last good set of members: from the cache at start,
// then from each refresh that yields at least one usable link. A refresh that fails or
// yields nothing keeps the set and says why in Status. It is safe for concurrent use.
type Manager struct {
	opts Options
	log  *slog.Logger

	refreshMu sync.Mutex // one refresh at a time

	mu    sync.Mutex
	subs  []*state
	taken []string // the configuration's section names
}

type state struct {
	cfg       config.Subscription
	links     []string // the last good body's links
	res       Result   // members of links under cfg's filters
	origin    string
	fetchedAt time.Time // of links
	attempt   time.Time
	next      time.Time
	failures  int // refreshes failed in a row
	lastErr   string
	userinfo  *Userinfo
	interval  time.Duration // the provider's profile-update-interval
	announce  string
	path      string // how the last good fetch went
}

// NewManager returns a Manager with no subscriptions.
func NewManager(opts Options) *Manager {
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Device == nil {
		opts.Device = func(host string) Device { return LocalDevice("/", host) }
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{opts: opts, log: log.With("component", "subscriptions")}
}

// SetSubscriptions replaces the subscriptions; taken are the configuration's section
// names, which members must not take. A subscription with the same name and URL keeps
// its links, and its members are rebuilt under the (maybe changed) filters and priority.
// Call Load to read the cache of new ones.
func (m *Manager) SetSubscriptions(subs []config.Subscription, taken []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	states := make([]*state, 0, len(subs))
	for _, sub := range subs {
		st := &state{cfg: sub, origin: OriginNone}
		for _, old := range m.subs {
			if old.cfg.Name == sub.Name && old.cfg.URL == sub.URL {
				*st = *old
				st.cfg = sub
			}
		}
		states = append(states, st)
	}
	m.subs, m.taken = states, slices.Clone(taken)
	m.rebuildLocked()
}

// rebuildLocked names and builds every subscription's members from its links, in
// configuration order (so names are stable while the links are).
func (m *Manager) rebuildLocked() {
	taken := make(map[string]bool, len(m.taken))
	for _, n := range m.taken {
		taken[n] = true
	}
	for _, st := range m.subs {
		if !st.cfg.Enabled || len(st.links) == 0 {
			st.res = Result{}
			continue
		}
		st.res = Build(st.cfg, st.links, taken, m.opts.Rules)
	}
}

// Load gives each subscription without links its cached ones, if any. A subscription
// with nothing is due for a refresh at once; a cached one when its interval from the
// cached fetch has passed.
func (m *Manager) Load() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	for _, st := range m.subs {
		if len(st.links) > 0 || st.cfg.URL == "" {
			continue
		}
		e, err := readCache(m.opts.CacheDir, st.cfg)
		switch {
		case err == nil:
			st.links, st.origin, st.fetchedAt = e.links, OriginCache, e.fetched
			st.userinfo, st.interval, st.announce = e.userinfo, e.interval, e.announce
			st.next = e.fetched.Add(st.every())
		case !errors.Is(err, fs.ErrNotExist):
			st.lastErr = err.Error()
			m.log.Warn("cached subscription unusable", "subscription", st.cfg.Name, "err", err)
		}
		if st.next.IsZero() || st.next.Before(now) {
			st.next = now
		}
	}
	m.rebuildLocked()
}

// every is the time between refreshes: the option, else the provider's header, else
// DefaultSubscriptionInterval.
func (st *state) every() time.Duration {
	switch {
	case st.cfg.Interval > 0:
		return st.cfg.Interval
	case st.interval > 0:
		return st.interval
	}
	return config.DefaultSubscriptionInterval
}

// retryAfter spaces the attempts after failures: 1 minute, doubling, at most every.
func (st *state) retryAfter() time.Duration {
	d := time.Minute << min(st.failures-1, 12)
	return min(d, st.every())
}

// Members are the members of every enabled subscription, in configuration order.
func (m *Manager) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Member
	for _, st := range m.subs {
		out = append(out, st.res.Members...)
	}
	return out
}

// Due is when the next refresh is due (zero when none is scheduled).
func (m *Manager) Due() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var due time.Time
	for _, st := range m.subs {
		if st.cfg.Enabled && !st.next.IsZero() && (due.IsZero() || st.next.Before(due)) {
			due = st.next
		}
	}
	return due
}

// RefreshDue refreshes the subscriptions whose time has come; see Refresh.
func (m *Manager) RefreshDue(ctx context.Context) (changed bool, err error) {
	return m.refresh(ctx, func(st *state, now time.Time) bool { return !st.next.After(now) })
}

// Refresh fetches the subscription called name ("" for every enabled one) now. changed
// says whether the members changed, so the caller swaps the pool's; err joins the
// failures (each also in Status), which kept their last good members.
func (m *Manager) Refresh(ctx context.Context, name string) (changed bool, err error) {
	if name != "" {
		m.mu.Lock()
		found := slices.ContainsFunc(m.subs, func(st *state) bool { return st.cfg.Name == name })
		m.mu.Unlock()
		if !found {
			return false, fmt.Errorf("no subscription %q", name)
		}
	}
	return m.refresh(ctx, func(st *state, _ time.Time) bool { return name == "" || st.cfg.Name == name })
}

func (m *Manager) refresh(ctx context.Context, pick func(*state, time.Time) bool) (bool, error) {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	m.mu.Lock()
	now := m.opts.Now()
	var todo []config.Subscription
	for _, st := range m.subs {
		if st.cfg.Enabled && pick(st, now) {
			todo = append(todo, st.cfg)
		}
	}
	m.mu.Unlock()

	changed := false
	var errs []error
	for _, sub := range todo {
		f, err := fetch(ctx, m.opts.Dial, sub, m.opts.Device(host(sub.URL)), m.opts.Timeout)
		if ctx.Err() != nil {
			return changed, ctx.Err() // stopping: not the provider's fault
		}
		c, err := m.apply(sub, f, err)
		changed = changed || c
		if err != nil {
			errs = append(errs, fmt.Errorf("subscription %s (%s): %w", sub.Name, RedactURL(sub.URL), err))
		}
	}
	return changed, errors.Join(errs...)
}

// apply records one fetch: a good answer with usable links replaces the members (and
// the cache); anything else keeps them.
func (m *Manager) apply(sub config.Subscription, f *fetched, err error) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	i := slices.IndexFunc(m.subs, func(st *state) bool { return st.cfg.Name == sub.Name && st.cfg.URL == sub.URL })
	if i < 0 {
		return false, nil // removed by a reload meanwhile
	}
	st := m.subs[i]
	st.attempt = now
	before := m.members()
	if err == nil {
		// The new links replace the old only if some of them are usable.
		oldLinks := st.links
		st.links = f.body.Links
		m.rebuildLocked()
		if len(st.res.Members) == 0 {
			err = noMembers(st.res, len(f.body.Links))
			st.links = oldLinks
			m.rebuildLocked()
		}
	}
	if err != nil {
		st.failures++
		st.lastErr = err.Error()
		st.next = now.Add(st.retryAfter())
		m.log.Warn("subscription refresh failed; its last good proxies stay", "subscription", sub.Name,
			"url", RedactURL(sub.URL), "members", len(st.res.Members), "err", err, "retry", st.next.Format(time.RFC3339))
		return false, err
	}
	st.origin, st.fetchedAt, st.path = OriginDownload, now, f.path
	st.userinfo, st.interval, st.announce = f.userinfo, f.interval, f.announce
	st.failures, st.lastErr = 0, ""
	st.next = now.Add(st.every())
	if err := writeCache(m.opts.CacheDir, st.cfg, cacheEntry{links: st.links, fetched: now, userinfo: st.userinfo,
		interval: st.interval, announce: st.announce}); err != nil {
		st.lastErr = "proxies updated, but not cached: " + err.Error()
		m.log.Warn("subscription not cached", "subscription", sub.Name, "err", err)
	}
	m.log.Info("subscription updated", "subscription", sub.Name, "members", len(st.res.Members),
		"skipped", len(st.res.Skipped), "filtered", st.res.Filtered, "via", f.path)
	for _, s := range st.res.Skipped[:min(len(st.res.Skipped), 5)] {
		m.log.Warn("subscription link skipped", "subscription", sub.Name, "link", s.String())
	}
	return !reflect.DeepEqual(before, m.members()), nil
}

func (m *Manager) members() []Member {
	var out []Member
	for _, st := range m.subs {
		out = append(out, st.res.Members...)
	}
	return out
}

// noMembers says why a body gave no member.
func noMembers(res Result, links int) error {
	switch {
	case len(res.Skipped) > 0:
		return fmt.Errorf("none of its %d links is usable (%s)", links, res.Skipped[0])
	case res.Filtered > 0:
		return fmt.Errorf("include/exclude leave none of its %d links", links)
	}
	return errors.New("no links")
}

// MemberStatus names one member and the label its link gave it.
type MemberStatus struct {
	Name  string `json:"name"`
	Label string `json:"label,omitempty"`
}

// Status reports one subscription.
type Status struct {
	Name        string         `json:"name"`
	URL         string         `json:"url"` // lists.RedactURL: no token
	Enabled     bool           `json:"enabled"`
	Via         string         `json:"via,omitempty"`
	FetchedVia  string         `json:"fetched_via,omitempty"`
	Origin      string         `json:"origin"`
	Members     []MemberStatus `json:"members"`
	Links       int            `json:"links"`
	Skipped     int            `json:"skipped"`
	SkipReasons []string       `json:"skip_reasons,omitempty"` // the first few
	Filtered    int            `json:"filtered,omitempty"`
	UpdatedAt   time.Time      `json:"updated_at,omitzero"` // when the links in use were fetched
	LastAttempt time.Time      `json:"last_attempt,omitzero"`
	NextRefresh time.Time      `json:"next_refresh,omitzero"`
	Interval    string         `json:"interval"`
	LastError   string         `json:"last_error,omitempty"`
	Userinfo    *Userinfo      `json:"userinfo,omitempty"` // traffic and expiry, from subscription-userinfo
	Announce    string         `json:"announce,omitempty"`
}

// Status reports every subscription, in configuration order.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.subs))
	for _, st := range m.subs {
		s := Status{
			Name: st.cfg.Name, URL: RedactURL(st.cfg.URL), Enabled: st.cfg.Enabled, Via: st.cfg.Via,
			FetchedVia: st.path, Origin: st.origin, Members: []MemberStatus{}, Links: len(st.links),
			Skipped: len(st.res.Skipped), Filtered: st.res.Filtered, UpdatedAt: st.fetchedAt,
			LastAttempt: st.attempt, NextRefresh: st.next, Interval: st.every().String(), LastError: st.lastErr,
			Announce: st.announce,
		}
		if st.userinfo != nil {
			u := *st.userinfo
			s.Userinfo = &u
		}
		for _, mb := range st.res.Members {
			s.Members = append(s.Members, MemberStatus{Name: mb.Name, Label: mb.Label})
		}
		for _, sk := range st.res.Skipped[:min(len(st.res.Skipped), 5)] {
			s.SkipReasons = append(s.SkipReasons, sk.String())
		}
		if !st.cfg.Enabled {
			s.NextRefresh = time.Time{}
		}
		out = append(out, s)
	}
	return out
}
