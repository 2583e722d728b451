package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
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
}

// engineEnd is an engine that stopped serving by itself, and why.
type engineEnd struct {
	eng *dataPath
	err error
}

// netCheckInterval is how often the watchdog looks for kernel state another program
// removed (`nft flush ruleset` by `fw4 flush`, `ip link del`); a check lists the rules,
// the routes of table T, the TUN and the nft chains, not the sets.
const netCheckInterval = 2 * time.Second

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

	pool, err := newPool(cfg, log)
	if err != nil {
		return err
	}
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

	// nftables tells at once when its table goes (`fw4 flush`); the watchdog's periodic
	// check covers the rest (rules, routes, the TUN) and a monitor that stopped.
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
	if err = eng.listen(&spec); err != nil {
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
	return nil
}

// stopNet detaches the engine and removes the kernel state (a clean stop, or a reload
// that changes the TUN's name or the table). With keep, only the TUN goes: the rules,
// fail_mode block's route and the nft table stay until startNet replaces them, so
// marked traffic is refused rather than sent directly in between, or for good if the
// rebuild fails. Called with d.mu held.
func (d *Daemon) stopNet(keep bool) {
	if d.engineStop != nil {
		d.engineStop()
		d.engineStop = nil
		// The engine reads the TUN's descriptor until Run returns; closing the device
		// before that could hand the number to another file under its feet.
		<-d.engineExited
	}
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

func (d *Daemon) shutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.poolStop != nil {
		d.poolStop()
	}
	// dnsmasq first: it must stop adding to (and forwarding for) sets that go away.
	d.stopDomains()
	d.stopNet(false)
}

// newPool builds the proxies of cfg, ordered by priority, behind health checks.
func newPool(cfg *config.Config, log *slog.Logger) (*proxy.Pool, error) {
	members := make([]proxy.Member, 0, len(cfg.Proxies))
	for _, p := range cfg.Proxies {
		m, err := proxy.NewMember(proxySpec(p), proxy.Options{BypassMark: cfg.Main.BypassMark})
		if err != nil {
			return nil, fmt.Errorf("proxy '%s': %w", p.Name, err)
		}
		members = append(members, m)
	}
	return proxy.NewPool(members, cfg.Main.HealthTarget, cfg.Main.HealthInterval, log), nil
}

func proxySpec(p config.Proxy) proxy.Spec {
	return proxy.Spec{
		Name: p.Name, Type: p.Type, Server: p.Server, Port: p.Port,
		Username: p.Username, Password: p.Password, Cipher: p.Cipher, UDP: p.UDP, Priority: p.Priority,
		UUID: p.UUID, Flow: p.Flow, Security: p.Security, SNI: p.SNI, Fingerprint: p.Fingerprint,
		PublicKey: p.PublicKey, ShortID: p.ShortID, ALPN: p.ALPN, Insecure: p.Insecure,
		Interface: p.Interface,
	}
}

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
		NoOffload:     !tunOffloads || !tunOffload(),
		DomainTimeout: m.DomainTimeout,
		Include:       devices(m.IncludeDevices), Exclude: devices(m.ExcludeDevices),
	}
}

// tunOffload lets an engine that uses the TUN's offloads (tunOffloads) have them unless
// TGTUN_TUN_OFFLOAD=0, which tells a problem in the offload path from one elsewhere.
func tunOffload() bool { return os.Getenv("TGTUN_TUN_OFFLOAD") != "0" }

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
	return out
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
