package control

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/dnsfwd"
	"github.com/tgtun/tgtun/daemon/dnsmasq"
	"github.com/tgtun/tgtun/daemon/dnsname"
	"github.com/tgtun/tgtun/daemon/lists"
	"github.com/tgtun/tgtun/daemon/proxy"
	"github.com/tgtun/tgtun/netcfg"
)

// domainSide is the part of the daemon that selects targets by domain: the DNS forwarder
// and the file dnsmasq reads. Its fields have their own locks: DNS queries never wait
// for the daemon's lock.
type domainSide struct {
	writer *dnsmasq.Writer
	// pool is the proxy pool in force; direct is used while none is healthy with
	// fail_mode direct, so listed domains still resolve.
	pool       atomic.Pointer[proxy.Pool]
	net        atomic.Pointer[netcfg.Net] // the installed kernel side, for refreshes
	failDirect atomic.Bool
	direct     *proxy.Direct
	resolved   resolvedLog

	mu         sync.Mutex
	fwd        *dnsfwd.Server
	fwdStop    context.CancelFunc
	fwdDone    chan struct{}
	fwdAddr    netip.AddrPort
	fwdUp      string
	fwdTTL     time.Duration
	fwdErr     string
	nftset     string // "ok" or why dnsmasq cannot fill nft sets
	dnsmasqErr string // the last failure writing or restarting
	// content is the file last handed to dnsmasq: the watchdog writes it again when
	// it went missing or changed. guard, with fail_mode direct, hands the domains
	// back to dnsmasq's usual servers if the daemon dies.
	content []byte
	guard   *dnsmasq.Guard
}

// dnsDialer is what the forwarder dials the upstream with.
func (s *domainSide) dnsDialer() dnsfwd.Dialer {
	p := s.pool.Load()
	if p == nil || (s.failDirect.Load() && !p.AnyHealthy()) {
		return s.direct
	}
	return p
}

// startForwarder (re)starts the DNS forwarder if its address or upstream changed.
func (d *Daemon) startForwarder(ctx context.Context, cfg *config.Config) {
	s := &d.dom
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cfg.Main.DNSPort))
	s.failDirect.Store(cfg.Main.FailMode == config.FailDirect)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fwd != nil && s.fwdAddr == addr && s.fwdUp == cfg.Main.DNSUpstream && s.fwdTTL == cfg.Main.DomainTimeout {
		return
	}
	s.stopForwarderLocked()
	fwd := dnsfwd.New(dnsfwd.Options{
		Upstream:   cfg.Main.DNSUpstream,
		Dialer:     s.dnsDialer,
		HTTPClient: d.listClient(),
		Log:        d.log,
		MaxTTL:     cfg.Main.DomainTimeout,
		OnAnswer: func(name string, addrs []netip.Addr) {
			s.resolved.record(name, addrs)
			if n := s.net.Load(); n != nil {
				if err := n.RefreshDomainAddrs(addrs); err != nil {
					d.log.Debug("refresh domain sets", "name", name, "err", err)
				}
			}
		},
	})
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	s.fwd, s.fwdStop, s.fwdDone, s.fwdAddr, s.fwdUp, s.fwdErr = fwd, stop, done, addr, cfg.Main.DNSUpstream, ""
	s.fwdTTL = cfg.Main.DomainTimeout
	go func() {
		defer close(done)
		if err := fwd.Serve(fctx, addr); err != nil {
			d.log.Error("DNS forwarder", "err", err)
			s.mu.Lock()
			if s.fwd == fwd {
				s.fwdErr = err.Error()
			}
			s.mu.Unlock()
		}
	}()
}

func (s *domainSide) stopForwarderLocked() {
	if s.fwdStop != nil {
		s.fwdStop()
		<-s.fwdDone
	}
	s.fwd, s.fwdStop, s.fwdDone = nil, nil, nil
}

// applyDomains hands the domains of the lists to dnsmasq. Called with d.mu held.
func (d *Daemon) applyDomains(ctx context.Context, cfg *config.Config) {
	s := &d.dom
	set4, set6 := netcfg.SetDst4DNS, ""
	if cfg.Main.IPv6 {
		set6 = netcfg.SetDst6DNS
	}
	s.mu.Lock()
	nftset := s.nftset
	s.mu.Unlock()
	if nftset != "ok" {
		// Only the forwarding: a dnsmasq without nftset support would not start with the
		// nftset lines. The domains then resolve truthfully but select nothing.
		set4, set6 = "", ""
	}
	content := dnsmasq.Render(dnsmasq.Directives{
		Domains: d.lists.Domains(), ForwardPort: cfg.Main.DNSPort,
		Table: netcfg.TableName, Set4: set4, Set6: set6,
	})
	if s.writer == nil {
		s.mu.Lock()
		s.dnsmasqErr = "not OpenWrt (" + openwrtRelease + ", " + dnsmasqInit + ") and no --dnsmasq-dir: domains are not handed to dnsmasq"
		s.mu.Unlock()
		return
	}
	restarted, err := s.writer.Apply(ctx, content)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.dnsmasqErr = err.Error()
		d.log.Error("dnsmasq: domains not handed over", "err", err)
		return
	}
	s.content = content
	s.syncGuardLocked(cfg.Main.FailMode == config.FailDirect, d.log)
	s.dnsmasqErr = ""
	if nftset != "ok" {
		s.dnsmasqErr = nftset
	}
	if restarted {
		d.log.Info("dnsmasq restarted with tgtun's domains", "domains", len(d.lists.Domains()))
	}
}

// syncGuardLocked runs a dnsmasq guard while the file is handed over with fail_mode
// direct (after the daemon's death, 'direct' means the router's usual resolver answers
// the listed domains; 'block' leaves them forwarded to the dead forwarder, unresolved).
// A guard is started before an old one goes. Called with s.mu held.
func (s *domainSide) syncGuardLocked(want bool, log *slog.Logger) {
	switch {
	case want && s.guard == nil:
		g, err := s.writer.StartGuard()
		if err != nil {
			log.Error("dnsmasq guard not started: if tgtun dies, the listed domains do not resolve until it is back", "err", err)
			return
		}
		s.guard = g
		log.Debug("dnsmasq guard started", "pid", g.Pid())
	case !want && s.guard != nil:
		s.guard.Release()
		s.guard = nil
	}
}

// repairDomains writes tgtun's dnsmasq file again (and restarts dnsmasq) if it went
// missing or was changed, e.g. by a guard of an earlier run that acted late. Called
// by the watchdog.
func (d *Daemon) repairDomains(ctx context.Context) {
	s := &d.dom
	s.mu.Lock()
	content := s.content
	s.mu.Unlock()
	if s.writer == nil || content == nil {
		return
	}
	restarted, err := s.writer.Apply(ctx, content)
	switch {
	case err != nil:
		d.log.Debug("dnsmasq file check", "err", err)
	case restarted:
		d.log.Warn("dnsmasq: tgtun's file was missing or changed; written again and dnsmasq restarted")
	}
}

// stopDomains removes tgtun's directives from dnsmasq and stops the forwarder.
func (d *Daemon) stopDomains() {
	s := &d.dom
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.writer == nil {
		// nothing was written
	} else if err := s.writer.Remove(ctx); err != nil {
		d.log.Error("dnsmasq: removing tgtun's directives", "err", err)
	}
	s.mu.Lock()
	s.content = nil
	s.syncGuardLocked(false, d.log)
	s.stopForwarderLocked()
	s.mu.Unlock()
}

// dnsmasqInit is OpenWrt's dnsmasq service. Only on OpenWrt (openwrtRelease) with it, or
// with --dnsmasq-dir, does tgtun write a dnsmasq file and restart dnsmasq: elsewhere (a
// Debian test machine with its own dnsmasq) that would change a service it does not own.
const (
	dnsmasqInit    = "/etc/init.d/dnsmasq"
	openwrtRelease = "/etc/openwrt_release"
)

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// devices turns the configured devices into netcfg's.
func devices(ds []config.Device) netcfg.Devices {
	var out netcfg.Devices
	for _, d := range ds {
		if d.MAC != "" {
			if hw, err := net.ParseMAC(d.MAC); err == nil {
				out.MACs = append(out.MACs, hw)
			}
			continue
		}
		out.Prefixes = append(out.Prefixes, d.Prefix)
	}
	return out
}

// ServiceStatus is one entry of status `services`.
type ServiceStatus struct {
	Name     string `json:"name"`
	Enabled  bool   `json:"enabled"`
	Ranges   int    `json:"ranges"`   // prefixes in the range sets
	Domains  int    `json:"domains"`  // domains handed to dnsmasq
	Resolved int    `json:"resolved"` // addresses of its domains now in the domain sets
}

// DNSStatus is status `dns`.
type DNSStatus struct {
	Listen    string `json:"listen"`
	Upstream  string `json:"upstream"`
	Dnsmasq   string `json:"dnsmasq"` // "ok" or what is wrong
	Queries   uint64 `json:"queries"`
	CacheHits uint64 `json:"cache_hits"`
	Failures  uint64 `json:"failures"`
	LastError string `json:"last_error,omitempty"`
	// Guard is the pid of the process that hands the listed domains back to
	// dnsmasq's usual servers if tgtun dies (fail_mode direct); 0 when none runs.
	Guard int `json:"guard,omitempty"`
}

// servicesStatus reports every catalogue service. Called with d.mu held.
func (d *Daemon) servicesStatus(listStatus []lists.ListStatus) []ServiceStatus {
	var inSet []netip.Addr
	if d.net != nil {
		inSet, _ = d.net.DomainAddrs()
	}
	names := d.dom.resolved.lookup(inSet)
	byName := d.lists.SourceDomains()
	var out []ServiceStatus
	for _, e := range lists.Catalogue() {
		st := ServiceStatus{Name: e.Name}
		for _, s := range d.cfg.Services {
			if s.Name == e.Name {
				st.Enabled = s.Enabled
			}
		}
		for _, l := range listStatus {
			if l.Kind != lists.KindService {
				continue
			}
			switch l.Name {
			case e.Name:
				st.Ranges, st.Domains = l.Entries4+l.Entries6, st.Domains+l.Domains
			case e.Name + "#domains": // option domain_url
				st.Domains += l.Domains
			}
		}
		domains := append(slices.Clone(byName[e.Name]), byName[e.Name+"#domains"]...)
		if !st.Enabled {
			st.Domains = len(e.Domains)
			st.Ranges = len(e.Prefixes)
		}
		for _, name := range names {
			if slices.ContainsFunc(domains, func(dom string) bool { return dnsname.CoveredBy(name, dom) }) {
				st.Resolved++
			}
		}
		if !st.Enabled {
			st.Resolved = 0
		}
		out = append(out, st)
	}
	return out
}

// dnsStatus reports the forwarder and dnsmasq.
func (d *Daemon) dnsStatus() DNSStatus {
	s := &d.dom
	s.mu.Lock()
	defer s.mu.Unlock()
	st := DNSStatus{Listen: s.fwdAddr.String(), Upstream: s.fwdUp, Dnsmasq: s.nftset, LastError: s.fwdErr}
	if s.guard != nil {
		st.Guard = s.guard.Pid()
	}
	if s.dnsmasqErr != "" {
		st.Dnsmasq = s.dnsmasqErr
	}
	if s.fwd != nil {
		fs := s.fwd.Status()
		st.Queries, st.CacheHits, st.Failures = fs.Queries, fs.CacheHits, fs.Failures
		if st.LastError == "" {
			st.LastError = fs.LastError
		}
	}
	return st
}

// resolvedLog remembers which name each address the forwarder handed out belongs to, so
// status can count a service's addresses in the domain sets. Bounded; oldest go first.
type resolvedLog struct {
	mu    sync.Mutex
	names map[netip.Addr]string
	order []netip.Addr
}

const maxResolved = 20000

func (r *resolvedLog) record(name string, addrs []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names == nil {
		r.names = map[netip.Addr]string{}
	}
	for _, a := range addrs {
		if _, ok := r.names[a]; !ok {
			r.order = append(r.order, a)
		}
		r.names[a] = name
	}
	for len(r.order) > maxResolved {
		delete(r.names, r.order[0])
		r.order = r.order[1:]
	}
}

// names returns the recorded name of each address (unknown addresses are skipped).
func (r *resolvedLog) lookup(addrs []netip.Addr) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range addrs {
		if n, ok := r.names[a]; ok {
			out = append(out, n)
		}
	}
	return out
}

// checkDomains adds the domain steps to check: dnsmasq can fill nft sets, and a listed
// domain asked from dnsmasq lands in the domain sets.
func (d *Daemon) checkDomains(ctx context.Context, r *CheckResult, n *netcfg.Net) {
	hint := dnsmasq.CheckNftset(ctx, d.opts.DnsmasqBinary)
	d.dom.mu.Lock()
	d.dom.nftset = hint
	werr := d.dom.dnsmasqErr
	d.dom.mu.Unlock()
	domains := d.lists.Domains()
	if len(domains) == 0 {
		return
	}
	r.add("dnsmasq", hint == "ok", "dnsmasq --version: "+hint, "domains are selected by dnsmasq's nftset: install dnsmasq-full (opkg remove dnsmasq; opkg install dnsmasq-full)")
	if werr != "" {
		r.add("dnsmasq directives", false, werr, "tgtun could not write or restart dnsmasq: see logread -e dnsmasq")
	}
	if hint != "ok" || n == nil {
		return
	}
	probe := probeDomain(domains)
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, network, d.opts.DnsmasqAddr)
	}}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	addrs, err := res.LookupNetIP(rctx, "ip", probe)
	cancel()
	if err != nil {
		r.add("domain "+probe, false, fmt.Sprintf("asking dnsmasq (%s): %v", d.opts.DnsmasqAddr, err),
			"dnsmasq does not answer for a listed domain: is tgtun's DNS forwarder reachable (status dns) and a proxy healthy?")
		return
	}
	inSet, err := n.DomainAddrs()
	if err != nil {
		r.add("domain "+probe, false, err.Error(), "reload tgtun")
		return
	}
	var missing []string
	for _, a := range addrs {
		if !slices.Contains(inSet, a.Unmap()) {
			missing = append(missing, a.String())
		}
	}
	r.add("domain "+probe, len(missing) == 0, fmt.Sprintf("resolves to %v; in the domain sets: %d of %d", addrs, len(addrs)-len(missing), len(addrs)),
		"the answer did not land in nft set dst4_dns/dst6_dns: is dnsmasq-full installed and was it restarted (/etc/init.d/dnsmasq restart)? another dnsmasq instance may be the LAN's resolver")
}

// probeDomain picks the domain check asks for: a well-known one when listed.
func probeDomain(domains []string) string {
	for _, p := range []string{"telegram.org", "whatsapp.com", "signal.org", "discord.com", "viber.com"} {
		if slices.Contains(domains, p) {
			return p
		}
	}
	return domains[0]
}
