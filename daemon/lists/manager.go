package lists

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultCacheDir is on tmpfs on OpenWrt: lists change daily, and writing them to flash
// would wear it out for data that is re-fetched after a reboot anyway.
const DefaultCacheDir = "/var/run/tgtun/lists"

// DefaultTimeout bounds one download, connection and body included.
const DefaultTimeout = 2 * time.Minute

// Source kinds.
const (
	KindService = "service" // a catalogue entry
	KindCustom  = "custom"  // the user's own subnets or list URL
)

// Where the list of a source came from, as reported in ListStatus.Origin.
const (
	OriginDownload = "download" // fetched by Update in this run
	OriginCache    = "cache"    // read from the cache directory by Load
	OriginEmbedded = "embedded" // the catalogue's built-in list
	OriginStatic   = "static"   // only subnets from the configuration
	OriginNone     = "none"     // nothing yet: a URL that has not been fetched, no fallback
)

// Options configure a Manager. Zero values take the defaults.
type Options struct {
	CacheDir string // DefaultCacheDir
	// HTTPClient fetches the lists. The daemon supplies one whose transport dials through
	// the active proxy with the bypass mark: the list hosts may be blocked too.
	HTTPClient *http.Client
	MaxBytes   int64         // DefaultMaxBytes per list
	MaxEntries int           // DefaultMaxEntries per list
	Timeout    time.Duration // DefaultTimeout per download
	// AllowDocumentation lets lists hold documentation ranges (tests, the e2e network).
	AllowDocumentation bool
	Log                *slog.Logger
	// OnChange, if set, is called after an Update that changed the merged target set,
	// with the new set, so the caller swaps its nftables sets once. It is not called by
	// SetSources or Load: the caller reads Targets after those itself.
	OnChange func(v4, v6 []netip.Prefix)
	// OnDomainsChange, if set, is called after an Update that changed the domains, with
	// all of them (Domains).
	OnDomainsChange func(domains []string)
}

// Source is one list the Manager tracks.
type Source struct {
	Name string
	Kind string // KindService or KindCustom
	// URL is fetched by Update; "" for none.
	URL string
	// Embedded is used until a download or a cached copy exists.
	Embedded []netip.Prefix
	// Static prefixes (a custom section's subnets) are always targets. They are trusted:
	// any length is fine, but private, loopback and similar ranges are still refused.
	Static []netip.Prefix
	// Trusted lets the downloaded list hold prefixes shorter than /8 or /16.
	Trusted bool
	// Domains are always targets, through dnsmasq (the catalogue's, a custom section's).
	Domains []string
	// DomainList says that URL serves a list of domains (ParseDomains), not of prefixes.
	DomainList bool
}

// ListStatus reports one source.
type ListStatus struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	URL         string    `json:"url,omitempty"`
	Origin      string    `json:"origin"`   // one of the Origin constants
	Entries4    int       `json:"entries4"` // prefixes after merging
	Entries6    int       `json:"entries6"`
	Domains     int       `json:"domains"`             // domains selected through dnsmasq
	UpdatedAt   time.Time `json:"updated_at,omitzero"` // when the list in use was fetched
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

// Manager keeps the lists of every enabled source: the embedded ones, downloads and
// their cache. It is safe for concurrent use.
type Manager struct {
	opts   Options
	log    *slog.Logger
	client *http.Client

	updateMu sync.Mutex // one Update at a time

	mu     sync.Mutex
	states []*listState
}

type listState struct {
	src       Source
	static    []netip.Prefix // the valid part of src.Static
	staticErr string
	list      []netip.Prefix // downloaded, cached or embedded; merged
	domains   []string       // downloaded or cached domain list (DomainList sources)
	origin    string
	loaded    bool
	updatedAt time.Time
	attempted time.Time
	lastErr   string
}

// NewManager returns a Manager with no sources.
func NewManager(opts Options) *Manager {
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: opts.Timeout}
	}
	return &Manager{opts: opts, log: log.With("component", "lists"), client: client}
}

func (m *Manager) parseOptions(trusted bool) ParseOptions {
	return ParseOptions{
		MaxBytes:           m.opts.MaxBytes,
		MaxEntries:         m.opts.MaxEntries,
		AllowDocumentation: m.opts.AllowDocumentation,
		Trusted:            trusted,
	}
}

// SetSources replaces the tracked sources. A source with the same name, URL and trust
// as before keeps its downloaded or cached list; call Load to fill in the rest.
func (m *Manager) SetSources(srcs []Source) {
	m.mu.Lock()
	defer m.mu.Unlock()
	states := make([]*listState, 0, len(srcs))
	for _, src := range srcs {
		src.Embedded = slices.Clone(src.Embedded)
		src.Static = slices.Clone(src.Static)
		src.Domains = slices.Clone(src.Domains)
		st := &listState{src: src}
		st.static, st.staticErr = m.validStatic(src)
		for _, old := range m.states {
			if old.src.Name == src.Name && old.src.URL == src.URL && old.src.Trusted == src.Trusted &&
				old.src.DomainList == src.DomainList && (old.origin == OriginDownload || old.origin == OriginCache) {
				st.list, st.domains, st.origin, st.loaded = old.list, old.domains, old.origin, true
				st.updatedAt, st.attempted, st.lastErr = old.updatedAt, old.attempted, old.lastErr
			}
		}
		states = append(states, st)
	}
	m.states = states
}

// validStatic keeps the configured subnets that may be targets and says why the others
// were dropped.
func (m *Manager) validStatic(src Source) ([]netip.Prefix, string) {
	// The user typed these: they may be any length and may be documentation ranges (a lab
	// or the e2e network), but private, loopback and similar ranges would still break the
	// network they run on.
	var ok []netip.Prefix
	var bad []string
	for _, p := range src.Static {
		if !p.IsValid() {
			continue
		}
		p = p.Masked()
		if err := CheckUserPrefix(p); err != nil {
			bad = append(bad, err.Error())
			continue
		}
		ok = append(ok, p)
	}
	if len(bad) > 0 {
		return ok, "subnets ignored: " + strings.Join(bad, "; ")
	}
	return ok, ""
}

// Load gives every source without a list one: its cached download if there is a valid
// one, else its embedded list. Problems with the cache are logged and reported in Status.
func (m *Manager) Load() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.states {
		if st.loaded {
			continue
		}
		st.loaded = true
		if st.src.URL != "" {
			list, domains, mtime, err := m.readCache(st.src)
			switch {
			case err == nil:
				st.list, st.domains, st.origin, st.updatedAt = list, domains, OriginCache, mtime
				continue
			case !errors.Is(err, fs.ErrNotExist):
				st.lastErr = err.Error()
				m.log.Warn("cached list unusable, using the built-in one", "list", st.src.Name, "err", err)
			}
		}
		switch {
		case len(st.src.Embedded) > 0:
			st.list, st.origin = Merge(st.src.Embedded), OriginEmbedded
		case st.src.URL == "" && (len(st.static) > 0 || len(st.src.Domains) > 0):
			st.list, st.origin = nil, OriginStatic
		default:
			st.list, st.origin = nil, OriginNone
		}
	}
}

// Targets returns the merged prefixes of every source.
func (m *Manager) Targets() (v4, v6 []netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.targetsLocked()
}

func (m *Manager) targetsLocked() (v4, v6 []netip.Prefix) {
	var all []netip.Prefix
	for _, st := range m.states {
		all = append(all, st.static...)
		all = append(all, st.list...)
	}
	return Split(Merge(all))
}

// Domains returns the domains of every source, sorted, without duplicates.
func (m *Manager) Domains() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var all []string
	for _, st := range m.states {
		all = append(all, st.src.Domains...)
		all = append(all, st.domains...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// SourceDomains returns the domains of each source by name (only sources that have some).
func (m *Manager) SourceDomains() map[string][]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]string{}
	for _, st := range m.states {
		if d := append(slices.Clone(st.src.Domains), st.domains...); len(d) > 0 {
			out[st.src.Name] = append(out[st.src.Name], d...)
		}
	}
	return out
}

// Status reports every source, in the order given to SetSources.
func (m *Manager) Status() []ListStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ListStatus, 0, len(m.states))
	for _, st := range m.states {
		v4, v6 := Split(Merge(append(slices.Clone(st.static), st.list...)))
		origin := st.origin
		if origin == "" {
			origin = OriginNone
		}
		errs := slices.DeleteFunc([]string{st.lastErr, st.staticErr}, func(s string) bool { return s == "" })
		out = append(out, ListStatus{
			Name:        st.src.Name,
			Kind:        st.src.Kind,
			URL:         RedactURL(st.src.URL),
			Origin:      origin,
			Entries4:    len(v4),
			Entries6:    len(v6),
			Domains:     len(st.src.Domains) + len(st.domains),
			UpdatedAt:   st.updatedAt,
			LastAttempt: st.attempted,
			LastError:   strings.Join(errs, "; "),
		})
	}
	return out
}

// fetchResult is one finished download.
type fetchResult struct {
	src     Source
	list    []netip.Prefix // as parsed, unmerged: what the cache stores
	domains []string       // DomainList sources
	err     error
	at      time.Time
}

// Update downloads every source that has a URL. A valid list replaces the one in use
// and is cached; an invalid one or a failed download leaves the one in use untouched
// and is reported in Status and in the returned error (one line per failed source).
func (m *Manager) Update(ctx context.Context) error {
	m.updateMu.Lock()
	defer m.updateMu.Unlock()

	m.mu.Lock()
	var srcs []Source
	for _, st := range m.states {
		if st.src.URL != "" {
			srcs = append(srcs, st.src)
		}
	}
	before4, before6 := m.targetsLocked()
	m.mu.Unlock()
	beforeDomains := m.Domains()

	results := make([]fetchResult, 0, len(srcs))
	for _, src := range srcs {
		body, err := m.download(ctx, src)
		r := fetchResult{src: src, err: err, at: time.Now()}
		if err == nil {
			r.list, r.domains, r.err = m.parseSource(src, body)
			if r.err != nil {
				r.err = fmt.Errorf("invalid list: %w", r.err)
			}
		}
		results = append(results, r)
	}

	var errs []error
	m.mu.Lock()
	for _, r := range results {
		st := m.stateFor(r.src)
		if r.err != nil {
			m.log.Warn("list update refused, keeping the list in use", "list", r.src.Name, "url", RedactURL(r.src.URL), "err", r.err)
			errs = append(errs, fmt.Errorf("list %s (%s): %w", r.src.Name, RedactURL(r.src.URL), r.err))
			if st != nil {
				st.attempted, st.lastErr = r.at, r.err.Error()
			}
			continue
		}
		if st == nil {
			continue // removed by SetSources while downloading
		}
		st.list, st.domains, st.origin, st.loaded = Merge(r.list), r.domains, OriginDownload, true
		st.updatedAt, st.attempted, st.lastErr = r.at, r.at, ""
		if err := m.writeCache(r.src, r.list, r.domains, r.at); err != nil {
			// The list is good and in use; only the next restart loses it.
			st.lastErr = "list applied, but not cached: " + err.Error()
			m.log.Warn("list not cached", "list", r.src.Name, "err", err)
		}
		m.log.Info("list updated", "list", r.src.Name, "entries", len(st.list)+len(st.domains))
	}
	after4, after6 := m.targetsLocked()
	m.mu.Unlock()

	if m.opts.OnChange != nil && (!slices.Equal(before4, after4) || !slices.Equal(before6, after6)) {
		m.opts.OnChange(after4, after6)
	}
	if after := m.Domains(); m.opts.OnDomainsChange != nil && !slices.Equal(beforeDomains, after) {
		m.opts.OnDomainsChange(after)
	}
	return errors.Join(errs...)
}

// stateFor finds the current state of src, which SetSources may have replaced.
func (m *Manager) stateFor(src Source) *listState {
	for _, st := range m.states {
		if st.src.Name == src.Name && st.src.URL == src.URL && st.src.Trusted == src.Trusted {
			return st
		}
	}
	return nil
}

// parseSource validates a downloaded or cached list of src.
func (m *Manager) parseSource(src Source, body []byte) ([]netip.Prefix, []string, error) {
	if src.DomainList {
		d, err := ParseDomains(body, DomainOptions{MaxBytes: m.opts.MaxBytes})
		return nil, d, err
	}
	list, err := Parse(body, m.parseOptions(src.Trusted))
	return list, nil, err
}

// download fetches the list of src, bounded in time and size. Its errors never show
// the URL's credentials (RedactURL).
func (m *Manager) download(ctx context.Context, src Source) ([]byte, error) {
	body, err := m.downloadRaw(ctx, src)
	return body, scrubURL(err, src.URL)
}

func (m *Manager) downloadRaw(ctx context.Context, src Source) ([]byte, error) {
	u, err := url.Parse(src.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("URL %s: only http:// and https:// URLs can be fetched", RedactURL(src.URL))
	}
	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("User-Agent", "tgtun")
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download: HTTP %s", resp.Status)
	}
	// Read one byte past the limit to tell "exactly the limit" from "more".
	body, err := io.ReadAll(io.LimitReader(resp.Body, m.opts.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	if int64(len(body)) > m.opts.MaxBytes {
		return nil, fmt.Errorf("download: larger than the %d-byte limit", m.opts.MaxBytes)
	}
	return body, nil
}

// cachePath names the cache file after the source and a hash of its URL, so a changed
// URL never picks up the old URL's list.
func (m *Manager) cachePath(src Source) string {
	sum := sha256.Sum256([]byte(src.URL))
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, src.Name)
	return filepath.Join(m.opts.CacheDir, safe+"-"+hex.EncodeToString(sum[:6])+".txt")
}

// readCache returns the cached list of src, merged, and when it was fetched. The cache
// is validated like a download: it is only a file in /var/run.
func (m *Manager) readCache(src Source) ([]netip.Prefix, []string, time.Time, error) {
	path := m.cachePath(src)
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("cache %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("cache %s: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, m.opts.MaxBytes+1))
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("cache %s: %w", path, err)
	}
	list, domains, err := m.parseSource(src, data)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("cache %s: %w", path, err)
	}
	return Merge(list), domains, info.ModTime(), nil
}

// writeCache stores list atomically (a temporary file renamed over the old one), so a
// crash or a full tmpfs never leaves half a list behind. Its time is the fetch time.
func (m *Manager) writeCache(src Source, list []netip.Prefix, domains []string, fetched time.Time) (err error) {
	if err := os.MkdirAll(m.opts.CacheDir, 0o755); err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	path := m.cachePath(src)
	tmp, err := os.CreateTemp(m.opts.CacheDir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var b strings.Builder
	fmt.Fprintf(&b, "# tgtun cache of list %s\n# from %s\n# fetched %s\n", src.Name, RedactURL(src.URL), fetched.UTC().Format(time.RFC3339))
	for _, p := range list {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	for _, d := range domains {
		b.WriteString(d)
		b.WriteByte('\n')
	}
	if _, err = tmp.WriteString(b.String()); err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	if err = os.Chtimes(tmp.Name(), fetched, fetched); err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	return nil
}
