package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/dnsmasq"
	"github.com/tgtun/tgtun/daemon/engine"
	"github.com/tgtun/tgtun/daemon/lists"
	"github.com/tgtun/tgtun/daemon/proxy"
	"github.com/tgtun/tgtun/daemon/subs"
	"github.com/tgtun/tgtun/netcfg"
)

// Options are what `tgtun run` was started with.
type Options struct {
	ConfigPath string
	Socket     string
	UbusSocket string
	Version    string
	LogOutput  io.Writer
	// ListCacheDir is where downloaded lists are kept between restarts (tmpfs on OpenWrt).
	ListCacheDir string
	// DnsmasqDirs are the conf-dirs tgtun's dnsmasq file goes to (empty: OpenWrt's);
	// DnsmasqRestart makes dnsmasq read it (empty: /etc/init.d/dnsmasq restart).
	DnsmasqDirs    []string
	DnsmasqRestart []string
	// DnsmasqBinary is run with --version by check ("dnsmasq" when empty); DnsmasqAddr is
	// where check asks dnsmasq for a listed domain (127.0.0.1:53 when empty).
	DnsmasqBinary string
	DnsmasqAddr   string
	// SubscriptionCacheDir keeps the subscriptions' last good links (tmpfs; empty:
	// subs.DefaultCacheDir); SubscriptionTimeout bounds one fetch (0: subs.DefaultTimeout).
	SubscriptionCacheDir string
	SubscriptionTimeout  time.Duration
}

// Daemon is a running tgtun: the kernel state, the netstack engine, the proxy pool and the
// lists, and the configuration they were built from.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	started time.Time
	lists   *lists.Manager

	// mu serialises reload, list updates and the parts of status they change.
	mu           sync.Mutex
	cfg          *config.Config
	warnings     []config.Warning
	net          *netcfg.Net
	eng          *dataPath
	engineStop   context.CancelFunc
	engineExited chan struct{}
	// engineFailed carries an engine's unexpected end (its TUN reader died) to Run,
	// which then rebuilds the data path.
	engineFailed chan engineEnd
	pool         *proxy.Pool
	poolStop     context.CancelFunc
	marking      bool
	// routeDev is the interface proxy's device table T routes into ("" = the TUN), and
	// routeIdx its index (a recreated device gets a new one).
	routeDev      string
	routeIdx      int
	lastReloadErr string
	lastReload    time.Time
	// fallback is set while a failed reload's previous configuration runs (status).
	fallback string
	// bypass is the proxy servers' addresses as last resolved (outside mu).
	bypass []netip.Prefix
	// maxFlows is max_flows as the descriptor limit carries it (fitDescriptors).
	maxFlows int
	// memLimit is the memory limit in force (bytes, 0: none).
	memLimit int64
	// fdWarning says why maxFlows is below max_flows; "" when it is not.
	fdWarning string
	// The data path's repairs: how many, when and why the last one, and why the last
	// build failed (then net is nil and the watchdog tries again).
	rebuilds          int
	lastRebuild       time.Time
	lastRebuildReason string
	netErr            string
	lastNetAttempt    time.Time

	// runCtx lives as long as Run: what the DNS forwarder runs under.
	runCtx context.Context
	dom    domainSide

	// subs keeps the subscriptions' members (subscriptions.go); subsWake wakes its loop.
	subs     *subs.Manager
	subsWake chan struct{}
	// devices remembers the sysctls interface proxies' devices had before tgtun
	// changed them; a clean stop puts them back.
	devices netcfg.DeviceSysctls
}

// engineEnd is an engine that stopped serving by itself, and why.
type engineEnd struct {
	eng *dataPath
	err error
}

// netCheckInterval is how often the watchdog looks for kernel state another program
// removed (`nft flush ruleset` by `fw4 flush`, `ip link del`) without being told; a check
// lists the rules, the routes of tables T and T+1, the TUN and the nft chains, not the
// sets. The kernel's notifications (netcfg.WatchTable, WatchRouting) call the same check
// at once, so this is only the safety net: a router's idle core is not woken every few
// seconds for it.
const netCheckInterval = 30 * time.Second

// netRetryInterval spaces the attempts to build a data path that failed to build.
const netRetryInterval = 10 * time.Second

// Run starts the daemon and blocks until ctx is done (SIGTERM), then removes everything it
// installed. SIGHUP re-reads the configuration.
func Run(ctx context.Context, opts Options) error {
	level := new(slog.LevelVar)
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	if opts.ListCacheDir == "" {
		opts.ListCacheDir = "/var/run/tgtun/lists"
	}
	log := slog.New(slog.NewTextHandler(opts.LogOutput, &slog.HandlerOptions{Level: level}))

	cfg, warnings, err := LoadConfig(opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("configuration %s: %w", opts.ConfigPath, err)
	}
	for _, w := range warnings {
		log.Warn("configuration", "warning", w.String())
	}
	if !cfg.Main.Enabled {
		return fmt.Errorf("configuration %s: main.enabled is '0': nothing to do", opts.ConfigPath)
	}
	// Before anything touches the kernel: a second copy must change nothing.
	lock, err := lockInstance(instanceLockName)
	if err != nil {
		return err
	}
	defer lock.Close()
	level.Set(cfg.Main.LogLevel)
	memLimit := applyMemoryLimit(memoryBudget(cfg.Main.MemoryLimit, readMemTotal))

	if opts.DnsmasqAddr == "" {
		opts.DnsmasqAddr = "127.0.0.1:53"
	}
	d := &Daemon{opts: opts, log: log, level: level, started: time.Now(), cfg: cfg, warnings: warnings, marking: true, runCtx: ctx, memLimit: memLimit}
	d.maxFlows, d.fdWarning = fitDescriptors(sysRlimit{}, flowLimit(cfg, d.memLimit))
	if d.fdWarning != "" {
		log.Warn("descriptors", "warning", d.fdWarning)
	}
	if len(opts.DnsmasqDirs) > 0 || (fileExists(openwrtRelease) && fileExists(dnsmasqInit)) {
		d.dom.writer = dnsmasq.NewWriter(dnsmasq.Options{Dirs: opts.DnsmasqDirs, Restart: opts.DnsmasqRestart})
	}
	d.dom.direct = proxy.NewDirect(proxy.Options{BypassMark: cfg.Main.BypassMark})
	d.dom.nftset = dnsmasq.CheckNftset(ctx, opts.DnsmasqBinary)
	d.lists = lists.NewManager(lists.Options{
		CacheDir:           opts.ListCacheDir,
		HTTPClient:         d.listClient(),
		AllowDocumentation: allowDocumentation(),
		Log:                log,
	})
	d.lists.SetSources(listSources(cfg))
	d.lists.Load()
	d.newSubscriptions(cfg)

	pool, err := newPool(cfg, &d.devices, log)
	if err != nil {
		return err
	}
	d.withSubscriptions(pool, cfg)
	d.engineFailed = make(chan engineEnd, 1)
	d.startPool(ctx, pool)
	d.bypass = d.resolveBypass(ctx, cfg)
	d.startForwarder(ctx, cfg)
	if err := d.startNet(ctx, cfg, d.bypass); err != nil {
		d.poolStop()
		d.stopDomains()
		return err
	}
	log.Info("tgtun running", "version", opts.Version, "tun", cfg.Main.TunName, "proxies", len(cfg.Proxies))

	table := d.Table()
	var wg sync.WaitGroup
	socketErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		socketErr <- ServeSocket(ctx, opts.Socket, table, log)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.serveUbus(ctx, table)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.updateListsLoop(ctx)
	}()
	wg.Go(func() { d.subscriptionsLoop(ctx) })

	// nftables tells at once when its table goes (`fw4 flush`), rtnetlink when a rule, a
	// route, an address or a device changes; the watchdog's periodic check covers a
	// monitor that stopped.
	tableGone := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := netcfg.WatchTable(ctx, func() {
			select {
			case tableGone <- struct{}{}:
			default:
			}
		})
		if err != nil {
			log.Warn("nftables notifications stopped; the periodic check remains", "err", err)
		}
	}()
	wg.Go(func() {
		err := netcfg.WatchRouting(ctx, func() {
			select {
			case tableGone <- struct{}{}:
			default:
			}
		})
		if err != nil {
			log.Warn("routing notifications stopped; the periodic check remains", "err", err)
		}
	})

	// Interface proxies follow their devices as the kernel reports them.
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.watchLinks(ctx)
	}()

	hup := make(chan os.Signal, 1)
	notifyHUP(hup)
	defer stopNotify(hup)
	watchdog := time.NewTicker(netCheckInterval)
	defer watchdog.Stop()

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			if err := d.Reload(ctx); err != nil {
				log.Error("reload on SIGHUP", "err", err)
			}
		case err := <-socketErr:
			if err != nil {
				runErr = err
				break loop
			}
		case end := <-d.engineFailed:
			d.mu.Lock()
			if end.eng == d.eng { // not one a reload already replaced
				d.rebuildNet(ctx, fmt.Sprintf("engine stopped: %v", end.err))
			}
			d.mu.Unlock()
		case <-watchdog.C:
			d.checkNet(ctx)
		case <-tableGone:
			d.checkNet(ctx)
		}
	}
	d.shutdown()
	wg.Wait()
	log.Info("tgtun stopped")
	return runErr
}

// engineConfig is the engine's part of cfg, with max_flows as the descriptor limit
// carries it.
func engineConfig(cfg *config.Config, maxFlows int, memLimit int64) engine.Config {
	return engine.Config{MTU: cfg.Main.TunMTU, MaxFlows: maxFlows,
		MaxFlowsPerDevice: perDeviceLimit(cfg, maxFlows), IPv4Only: !cfg.Main.IPv6, MemoryLimit: memLimit}
}

// startNet installs the kernel state for cfg and attaches the engine to its TUN.
// bypass is resolved by the caller, outside d.mu. Called with d.mu held or before
// anything else runs.
func (d *Daemon) startNet(ctx context.Context, cfg *config.Config, bypass []netip.Prefix) error {
	v4, v6 := d.lists.Targets()
	spec := netSpec(cfg, v4, v6, bypass)
	d.lastNetAttempt = time.Now()
	// An engine serves one TUN: a rebuilt TUN gets a new engine (its counters restart).
	eng, err := newDataPath(engineConfig(cfg, d.maxFlows, d.memLimit), d.pool, d.log)
	if err != nil {
		d.netErr = err.Error()
		return fmt.Errorf("engine: %w", err)
	}
	if spec.TProxyPort, err = eng.listen(cfg.Main.IPv6); err != nil {
		d.netErr = err.Error()
		return fmt.Errorf("engine: %w", err)
	}
	n, err := netcfg.Apply(ctx, spec)
	if err != nil {
		eng.abandon()
		d.netErr = err.Error()
		return fmt.Errorf("network setup: %w", err)
	}
	d.netErr = ""
	engCtx, stop := context.WithCancel(context.Background())
	exited := make(chan struct{})
	fd := int(n.TUN().Fd())
	go func() {
		defer close(exited)
		err := eng.run(engCtx, fd)
		if engCtx.Err() != nil {
			return // stopped on purpose
		}
		if err == nil {
			err = errors.New("engine returned without being stopped")
		}
		select {
		case d.engineFailed <- engineEnd{eng, err}:
		default:
		}
	}()
	d.eng, d.net, d.engineStop, d.engineExited = eng, n, stop, exited
	d.dom.net.Store(n)
	d.marking = true
	d.applyDomains(ctx, cfg)
	d.routeDev, d.routeIdx = "", 0
	// The pool may have judged its members before this data path existed (its first
	// probes run at once): apply its verdict now, not at its next change.
	d.syncMarking()
	d.syncRoute()
	return nil
}

// stopNet detaches the engine and removes the kernel state (a clean stop, or a reload
// that changes the TUN's name or the table). With keep, only the TUN goes: the rules,
// fail_mode block's route and the nft table stay until startNet replaces them, so
// marked traffic is refused rather than sent directly in between, or for good if the
// rebuild fails. Called with d.mu held.
func (d *Daemon) stopNet(keep bool) {
	d.stopEngine()
	d.eng = nil
	d.dom.net.Store(nil)
	if d.net != nil {
		release := d.net.Close
		if keep {
			release = d.net.Detach
		}
		if err := release(); err != nil {
			d.log.Error("network teardown", "err", err)
		}
		d.net = nil
	}
}

// stopEngine stops the engine and waits for it. Called with d.mu held.
func (d *Daemon) stopEngine() {
	if d.engineStop != nil {
		d.engineStop()
		d.engineStop = nil
		// The engine reads the TUN's descriptor until Run returns; closing the device
		// before that could hand the number to another file under its feet.
		<-d.engineExited
	}
}

// rebuildNet replaces the data path with a fresh one for the running configuration and
// records why in status. Called with d.mu held.
func (d *Daemon) rebuildNet(ctx context.Context, reason string) {
	d.log.Warn("data path broken, rebuilding it", "reason", reason)
	d.stopNet(true)
	d.rebuilds++
	d.lastRebuild, d.lastRebuildReason = time.Now(), reason
	if err := d.startNet(ctx, d.cfg, d.bypass); err != nil {
		d.log.Error("data path rebuild failed; retrying", "err", err, "fail_mode", d.cfg.Main.FailMode)
		return
	}
	d.syncMarking()
	d.log.Info("data path rebuilt", "reason", reason)
}

// checkNet is the watchdog: it rebuilds a data path whose kernel state another program
// removed, or that failed to build. Called without d.mu.
func (d *Daemon) checkNet(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.net == nil {
		if time.Since(d.lastNetAttempt) >= netRetryInterval {
			d.rebuildNet(ctx, "no data path: "+d.netErr)
		}
		return
	}
	d.repairDomains(ctx)
	missing, err := d.net.Missing()
	if err != nil {
		d.log.Debug("data path check", "err", err)
		return
	}
	if len(missing) > 0 {
		d.rebuildNet(ctx, "removed by another program: "+strings.Join(missing, ", "))
	}
}

func (d *Daemon) startPool(ctx context.Context, pool *proxy.Pool) {
	pctx, stop := context.WithCancel(ctx)
	d.pool, d.poolStop = pool, stop
	d.dom.pool.Store(pool)
	pool.OnChange = func(bool) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.pool == pool { // a replaced pool's last probe must not decide anything
			d.syncMarking()
		}
	}
	pool.OnProbed = func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.pool == pool {
			d.syncRoute()
		}
	}
	go pool.Run(pctx)
}

// syncMarking applies fail_mode: with 'direct', targets stop being marked while no proxy is
// healthy, so new connections take the normal path; marked flows keep theirs. Called with
// d.mu held.
func (d *Daemon) syncMarking() {
	want := d.cfg.Main.FailMode != config.FailDirect || d.pool.AnyHealthy()
	if d.net == nil || want == d.marking {
		return
	}
	if err := d.net.SetMarking(want); err != nil {
		d.log.Error("fail mode: switch marking", "on", want, "err", err)
		return
	}
	d.marking = want
	if want {
		d.log.Info("a proxy is healthy again: messenger traffic goes through it")
	} else {
		d.log.Warn("no proxy is healthy: messenger traffic takes the normal path (fail_mode direct)")
	}
}

// syncRoute points table T at the active member's device when that member is an interface
// proxy (type 'interface': kernel routing, no netstack), else at the TUN; with no healthy
// member the TUN gets the traffic, where fail_mode applies. Called with d.mu held.
func (d *Daemon) syncRoute() {
	if d.net == nil || d.pool == nil {
		return
	}
	dev, idx := "", 0
	for _, m := range d.pool.Status() {
		if !m.Active || m.Type != proxy.TypeInterface {
			continue
		}
		if ifc, ok := d.pool.Dialer(m.Name).(*proxy.Interface); ok {
			link, err := ifc.Device()
			if err != nil {
				d.log.Warn("interface proxy: device not usable; routing into the TUN", "proxy", m.Name, "err", err)
				break
			}
			dev, idx = link.Attrs().Name, link.Attrs().Index
		}
	}
	if dev == d.routeDev && idx == d.routeIdx {
		return
	}
	if err := d.net.SetRouteDevice(dev); err != nil {
		d.log.Error("route marked traffic", "device", dev, "err", err)
		return
	}
	d.routeDev, d.routeIdx = dev, idx
	if dev != "" {
		d.log.Info("marked traffic is routed into the interface proxy's device", "device", dev)
	} else {
		d.log.Info("marked traffic is routed into the TUN")
	}
}

// watchLinks re-judges interface proxies when the kernel reports a change of their
// devices (netifd restarting a tunnel deletes and creates it again; a link going down
// or up): at once, not at the next health round, and table T's route follows
// (Pool.OnProbed). Called once, from Run.
func (d *Daemon) watchLinks(ctx context.Context) {
	events := make(chan string, 64)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		err := netcfg.WatchLinks(ctx, func(name string) {
			select {
			case events <- name:
			default: // full: a burst; one re-judgement covers it
			}
		})
		if err != nil {
			d.log.Warn("link notifications unavailable; interface proxies follow their devices at each health round", "err", err)
		}
	}()
	defer func() { <-watchDone }()
	for {
		var names []string
		select {
		case <-ctx.Done():
			return
		case name := <-events:
			names = append(names, name)
		}
		for drained := false; !drained; { // the rest of a burst
			select {
			case name := <-events:
				names = append(names, name)
			default:
				drained = true
			}
		}
		d.reprobeInterfaces(ctx, names)
	}
}

// reprobeInterfaces probes the interface proxies whose device is among names (a name
// "" stands for any), or that name a netifd interface rather than a device. A device
// that is up but not yet carrying (a tunnel configured after it came up) is probed
// again a few times, a second apart at most, before the health round takes over.
func (d *Daemon) reprobeInterfaces(ctx context.Context, names []string) {
	d.mu.Lock()
	pool, routeDev := d.pool, d.routeDev
	d.mu.Unlock()
	if pool == nil {
		return
	}
	changed := func(dev string) bool {
		return slices.Contains(names, dev) || slices.Contains(names, "")
	}
	var members []string
	for _, m := range pool.Status() {
		ifc, ok := pool.Dialer(m.Name).(*proxy.Interface)
		if !ok {
			continue
		}
		_, isDevice := netcfg.LinkIndex(ifc.Name())
		if changed(ifc.Name()) || (routeDev != "" && m.Active && changed(routeDev)) || !isDevice {
			members = append(members, m.Name)
		}
	}
	for _, name := range members {
		for _, wait := range []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second} {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			pool.ProbeMember(ctx, name)
			i := slices.IndexFunc(pool.Status(), func(s proxy.MemberStatus) bool { return s.Name == name })
			if i < 0 {
				break
			}
			st := pool.Status()[i]
			if st.Healthy || strings.Contains(st.LastError, proxy.ErrDeviceDown.Error()) {
				break // judged: carrying, or nothing to carry with until the next change
			}
		}
	}
}

// shutdown removes everything the daemon installed (a clean stop: procd gives it 10 s
// before kill -9). The garbage collector stops first: with thousands of flows the heap
// sits near memory_limit, and tearing them down made the collector run nearly
// back-to-back (two thirds of the daemon's CPU time during a stop with 5000 flows); a
// stop lasts seconds and allocates little. dnsmasq's file goes, and dnsmasq restarts
// (a second or more on a router), while the engine stops; the sets dnsmasq fills go
// only after both.
func (d *Daemon) shutdown() {
	start := time.Now()
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(math.MaxInt64)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.poolStop != nil {
		d.poolStop()
	}
	domains := make(chan time.Duration, 1)
	go func() {
		t := time.Now()
		d.stopDomains()
		domains <- time.Since(t)
	}()
	t := time.Now()
	d.stopEngine()
	engineTook := time.Since(t)
	dnsTook := <-domains
	t = time.Now()
	d.stopNet(false)
	if err := d.devices.Restore(); err != nil {
		d.log.Error("interface proxies: restoring device settings", "err", err)
	}
	d.log.Info("stop", "took", time.Since(start).Round(time.Millisecond), "engine", engineTook.Round(time.Millisecond),
		"dnsmasq", dnsTook.Round(time.Millisecond), "kernel_state", time.Since(t).Round(time.Millisecond))
}

// newPool builds the proxies of cfg, ordered by priority, behind health checks.
// devices readies (and remembers, to restore) interface proxies' devices.
func newPool(cfg *config.Config, devices proxy.DevicePreparer, log *slog.Logger) (*proxy.Pool, error) {
	members, err := configMembers(cfg, devices)
	if err != nil {
		return nil, err
	}
	pool := proxy.NewPool(members, cfg.Main.HealthTarget, cfg.Main.HealthInterval, log)
	pool.Select = cfg.Main.Select
	pool.Check = healthCheck(cfg.Main)
	return pool, nil
}

// configMembers builds the proxies of cfg's proxy sections.
func configMembers(cfg *config.Config, devices proxy.DevicePreparer) ([]proxy.Member, error) {
	members := make([]proxy.Member, 0, len(cfg.Proxies))
	for _, p := range cfg.Proxies {
		m, err := proxy.NewMember(proxySpec(p), proxy.Options{BypassMark: cfg.Main.BypassMark, Devices: devices})
		if err != nil {
			return nil, fmt.Errorf("proxy '%s': %w", p.Name, err)
		}
		m.ID = specID(p)
		members = append(members, m)
	}
	return members, nil
}

// healthCheck is what the probe asks health_target: health_check 'auto' is an MTProto
// exchange when the target is in Telegram's ranges (the lists catalogue's; the default
// target is a Telegram data centre), else a connect.
func healthCheck(m config.Main) proxy.Check {
	switch m.HealthCheck {
	case config.HealthMTProto:
		return proxy.Check{Kind: proxy.CheckMTProto}
	case config.HealthTLS:
		return proxy.Check{Kind: proxy.CheckTLS, Name: m.HealthName}
	case config.HealthConnect:
		return proxy.Check{Kind: proxy.CheckConnect}
	}
	if e, ok := lists.Lookup("telegram"); ok && slices.ContainsFunc(e.Prefixes, func(p netip.Prefix) bool { return p.Contains(m.HealthTarget.Addr()) }) {
		return proxy.Check{Kind: proxy.CheckMTProto}
	}
	return proxy.Check{Kind: proxy.CheckConnect}
}

// proxySpec is p as the proxy package takes it: proxy.Spec mirrors config.Proxy field
// by field, so a field added to one and not the other does not compile.
func proxySpec(p config.Proxy) proxy.Spec { return proxy.Spec(p) }

// netSpec is the kernel state cfg asks for.
func netSpec(cfg *config.Config, v4, v6, bypass []netip.Prefix) netcfg.Spec {
	m := cfg.Main
	if !m.IPv6 {
		v6 = nil // lists carry IPv6 ranges whatever the setting; nothing IPv6 is tunnelled
	}
	return netcfg.Spec{
		TunName: m.TunName, MTU: m.TunMTU,
		LANIfaces: m.LANIfaces, RouterTraffic: m.RouterTraffic, IPv6: m.IPv6,
		Mark: m.FwMark, Mask: m.FwMask, BypassMark: m.BypassMark,
		Table: m.RouteTable, RulePriority: m.RulePriority,
		Block:    m.FailMode == config.FailBlock,
		Targets4: v4, Targets6: v6, Bypass: bypass,
		DomainTimeout: m.DomainTimeout,
		Include:       devices(m.IncludeDevices), Exclude: devices(m.ExcludeDevices),
	}
}

// kernelSpecChanged tells whether a reload must rebuild the TUN and rules (which resets
// the flows through it) or can keep them and only swap sets and proxies.
func kernelSpecChanged(a, b netcfg.Spec) bool {
	return a.TunName != b.TunName || a.MTU != b.MTU || !slices.Equal(a.LANIfaces, b.LANIfaces) ||
		a.RouterTraffic != b.RouterTraffic || a.IPv6 != b.IPv6 || a.Mark != b.Mark || a.Mask != b.Mask ||
		a.BypassMark != b.BypassMark || a.Table != b.Table || a.RulePriority != b.RulePriority ||
		a.DomainTimeout != b.DomainTimeout
}

// resolveBypass returns the proxy servers' addresses, which must never be marked even if
// a list covers them (the proxy would then be dialled through itself). It may wait on
// DNS: call it without d.mu, so status and the CLI keep answering meanwhile.
func (d *Daemon) resolveBypass(ctx context.Context, cfg *config.Config) []netip.Prefix {
	resolver := proxy.MarkedResolver(cfg.Main.BypassMark)
	var out []netip.Prefix
	for _, p := range cfg.Proxies {
		if p.Server == "" { // an interface proxy: no server of its own
			continue
		}
		if a, err := netip.ParseAddr(p.Server); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := resolver.LookupNetIP(rctx, "ip", p.Server)
		cancel()
		if err != nil {
			d.log.Warn("cannot resolve proxy server; it is not excluded from marking", "proxy", p.Name, "server", p.Server, "err", err)
			continue
		}
		for _, a := range addrs {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return append(out, d.resolveSubscriptionServers(ctx, cfg.Main.BypassMark)...)
}

// listSources turns the enabled services and custom sections into list sources.
func listSources(cfg *config.Config) []lists.Source {
	var out []lists.Source
	for _, s := range cfg.Services {
		if !s.Enabled {
			continue
		}
		entry, ok := lists.Lookup(s.Name)
		if !ok {
			continue // LoadConfig refuses an unknown service; this is only defensive
		}
		url := entry.UpdateURL
		if s.URL != "" {
			url = s.URL
		}
		out = append(out, lists.Source{Name: s.Name, Kind: "service", URL: url, Embedded: entry.Prefixes, Domains: entry.Domains})
		if s.DomainURL != "" {
			out = append(out, lists.Source{Name: s.Name + "#domains", Kind: "service", URL: s.DomainURL, DomainList: true})
		}
	}
	for _, c := range cfg.Customs {
		if len(c.Subnets) > 0 || len(c.Domains) > 0 {
			out = append(out, lists.Source{Name: c.Name, Kind: "custom", Static: c.Subnets, Trusted: true, Domains: c.Domains})
		}
		for i, u := range c.DomainURLs {
			out = append(out, lists.Source{Name: c.Name + "#domains" + strconv.Itoa(i+1), Kind: "custom", URL: u, DomainList: true})
		}
		for i, u := range c.URLs {
			out = append(out, lists.Source{Name: c.Name + "#" + strconv.Itoa(i+1), Kind: "custom", URL: u})
		}
	}
	return out
}

// listClient downloads lists through the active proxy: the list source itself may be
// blocked, and the daemon's traffic must not depend on the direct path.
func (d *Daemon) listClient() *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			pn, err := strconv.ParseUint(port, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("port of %s: %w", addr, err)
			}
			d.mu.Lock()
			pool, mark := d.pool, d.cfg.Main.BypassMark
			d.mu.Unlock()
			ips, err := proxy.MarkedResolver(mark).LookupNetIP(ctx, "ip", host)
			if err != nil {
				return nil, err
			}
			var lastErr error
			for _, ip := range ips {
				c, err := pool.DialTCP(ctx, netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
				if err == nil {
					return c, nil
				}
				lastErr = err
			}
			return nil, lastErr
		},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConns:          1,
		IdleConnTimeout:       10 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// allowDocumentation lets lists hold the documentation ranges. Only the e2e test network
// sets it: real lists never carry them.
func allowDocumentation() bool {
	return os.Getenv("TGTUN_ALLOW_DOCUMENTATION_RANGES") == "1"
}
