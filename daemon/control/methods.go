package control

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/engine"
	"github.com/tgtun/tgtun/daemon/lists"
	"github.com/tgtun/tgtun/daemon/proxy"
	"github.com/tgtun/tgtun/daemon/subs"
	"github.com/tgtun/tgtun/netcfg"
)

func notifyHUP(c chan os.Signal)  { signal.Notify(c, syscall.SIGHUP) }
func stopNotify(c chan os.Signal) { signal.Stop(c) }

// Table is the daemon's method table: the same on ubus and on the CLI socket.
func (d *Daemon) Table() *Table {
	return NewTable(
		Method{Name: "status", Handle: func(ctx context.Context, _ map[string]any) (any, error) {
			return d.Status(), nil
		}},
		Method{Name: "reload", Handle: func(ctx context.Context, _ map[string]any) (any, error) {
			if err := d.Reload(ctx); err != nil {
				return nil, err
			}
			return map[string]any{"reloaded": true}, nil
		}},
		Method{Name: "update_lists", Handle: func(ctx context.Context, _ map[string]any) (any, error) {
			return d.UpdateLists(ctx)
		}},
		Method{Name: "check", Handle: func(ctx context.Context, _ map[string]any) (any, error) {
			return d.Check(ctx), nil
		}},
		Method{Name: "update_subscriptions", Args: map[string]ArgType{"name": ArgString}, Handle: func(ctx context.Context, args map[string]any) (any, error) {
			name, _ := args["name"].(string)
			return d.UpdateSubscriptions(ctx, name)
		}},
	)
}

// Status is what `tgtun status` and `ubus call tgtun status` show.
type Status struct {
	Running         bool                 `json:"running"`
	Version         string               `json:"version"`
	Uptime          string               `json:"uptime"`
	Config          string               `json:"config"`
	LastReload      string               `json:"last_reload,omitempty"`
	LastReloadError string               `json:"last_reload_error,omitempty"`
	Warnings        []string             `json:"warnings,omitempty"`
	FailMode        string               `json:"fail_mode"`
	Marking         bool                 `json:"marking"`
	Net             netcfg.Status        `json:"net"`
	NetError        string               `json:"net_error,omitempty"`
	Proxies         []proxy.MemberStatus `json:"proxies"`
	Lists           []lists.ListStatus   `json:"lists"`
	Flows           engine.Stats         `json:"flows"`
	// MaxFlows is max_flows as in force: lower than configured when the descriptor
	// limit cannot carry it (a warning says so).
	MaxFlows int `json:"max_flows"`
	// MemoryLimit is the daemon's memory budget in force, in bytes (0: none).
	MemoryLimit int64 `json:"memory_limit"`
	// Rebuilds counts the repairs of the data path (TUN, routes, rules, nft table)
	// after another program removed part of it or the engine's TUN reader died;
	// LastRebuild says when and why the last one happened.
	Rebuilds    int             `json:"rebuilds"`
	LastRebuild string          `json:"last_rebuild,omitempty"`
	Services    []ServiceStatus `json:"services"`
	DNS         DNSStatus       `json:"dns"`
	// Subscriptions: members, last refresh and error, traffic and expiry of each.
	Subscriptions []subs.Status `json:"subscriptions"`

	// ConfigFallback says when and why the configuration in force is not the file's: a
	// reload whose configuration did not run went back to the one that ran before it.
	ConfigFallback string `json:"config_fallback,omitempty"`
}

// Status reports the daemon's state.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Status{
		Running:         true,
		Version:         d.opts.Version,
		Uptime:          time.Since(d.started).Round(time.Second).String(),
		Config:          d.opts.ConfigPath,
		LastReloadError: d.lastReloadErr,
		ConfigFallback:  d.fallback,
		FailMode:        d.cfg.Main.FailMode,
		Marking:         d.marking,
		Proxies:         withHints(d.pool.Status()),
		Lists:           d.lists.Status(),
		MaxFlows:        d.maxFlows,
		MemoryLimit:     d.memLimit,
		Rebuilds:        d.rebuilds,
		NetError:        d.netErr,
	}
	if !d.lastRebuild.IsZero() {
		st.LastRebuild = d.lastRebuild.Format(time.RFC3339) + ": " + d.lastRebuildReason
	}
	if d.fdWarning != "" {
		st.Warnings = append(st.Warnings, d.fdWarning)
	}
	if !d.lastReload.IsZero() {
		st.LastReload = d.lastReload.Format(time.RFC3339)
	}
	for _, w := range d.warnings {
		st.Warnings = append(st.Warnings, w.String())
	}
	if w := probeWarning(d.cfg); w != "" {
		st.Warnings = append(st.Warnings, w)
	}
	if d.eng != nil {
		st.Flows = d.eng.Stats()
	}
	if d.net != nil {
		ns, err := d.net.Status()
		st.Net = ns
		if err != nil {
			st.NetError = err.Error()
		}
	}
	st.Services = d.servicesStatus(st.Lists)
	st.DNS = d.dnsStatus()
	st.Subscriptions = d.subs.Status()
	return st
}

// Reload re-reads the configuration. A file with errors, or values the data path cannot
// run, changes nothing: everything is validated before anything is stopped, the running
// configuration stays and the error says why. Established flows are kept unless the
// kernel side itself (TUN, marks, table, LAN interfaces) or the engine's settings
// (max_flows) changed, or part of the kernel state is missing: then the data path is
// rebuilt.
func (d *Daemon) Reload(ctx context.Context) error {
	cfg, warnings, err := LoadConfig(d.opts.ConfigPath)
	var bypass []netip.Prefix
	if err == nil && cfg.Main.Enabled {
		bypass = d.resolveBypass(ctx, cfg) // DNS, outside d.mu
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastReload = time.Now()
	if err != nil {
		d.lastReloadErr = err.Error()
		d.log.Error("reload: configuration rejected, the running one stays", "err", err)
		return &Error{Code: CodeInvalidArgument, Msg: "configuration not reloaded, the running one stays: " + err.Error()}
	}
	if !cfg.Main.Enabled {
		d.lastReloadErr = "main.enabled is '0'; stop the service to disable tgtun"
		return &Error{Code: CodeInvalidArgument, Msg: d.lastReloadErr}
	}
	reject := func(err error) error {
		d.lastReloadErr = err.Error()
		d.log.Error("reload: configuration rejected, the running one stays", "err", err)
		return &Error{Code: CodeInvalidArgument, Msg: "configuration not reloaded, the running one stays: " + err.Error()}
	}
	pool, err := newPool(cfg, &d.devices, d.log)
	if err != nil {
		return reject(err)
	}
	oldSpec := netSpec(d.cfg, nil, nil, nil)
	newSpec := netSpec(cfg, nil, nil, nil)
	if err := newSpec.Validate(); err != nil {
		return reject(fmt.Errorf("network: %w", err))
	}
	memLimit := memoryBudget(cfg.Main.MemoryLimit, readMemTotal)
	if os.Getenv("GOMEMLIMIT") != "" {
		memLimit = d.memLimit // procd's stays
	}
	maxFlows, fdWarning := fitDescriptors(sysRlimit{}, flowLimit(cfg, memLimit))
	newEngine := engineConfig(cfg, maxFlows, memLimit)
	if _, err := engine.New(newEngine, pool, nil); err != nil {
		return reject(err)
	}
	// From here on the new configuration is applied.
	d.lists.SetSources(listSources(cfg))
	d.lists.Load()
	d.subs.SetSubscriptions(cfg.Subscriptions, sectionNames(cfg))
	d.subs.Load()
	d.withSubscriptions(pool, cfg)
	d.wakeSubscriptions()

	oldStop := d.poolStop
	d.startPool(context.Background(), pool)
	if d.eng != nil {
		d.eng.SetDialer(pool)
	}
	if oldStop != nil {
		oldStop()
	}
	oldCfg, oldMaxFlows, oldMemLimit, oldFdWarning, oldBypass := d.cfg, d.maxFlows, d.memLimit, d.fdWarning, d.bypass
	d.maxFlows, d.fdWarning, d.memLimit = maxFlows, fdWarning, memLimit
	keep := oldSpec.TunName == newSpec.TunName && oldSpec.Table == newSpec.Table
	// fallBack runs the configuration that ran before this reload again when the new one
	// failed to run (its data path could not be built: a TUN name another device has, a
	// kernel that refuses a setting), and says so in status. Its proxies start afresh.
	fallBack := func(cause error) error {
		d.log.Error("reload: the new configuration did not run; the previous one runs again", "err", cause)
		d.subs.SetSubscriptions(oldCfg.Subscriptions, sectionNames(oldCfg))
		d.subs.Load()
		if p, err := newPool(oldCfg, &d.devices, d.log); err == nil {
			d.withSubscriptions(p, oldCfg)
			stopNew := d.poolStop
			d.startPool(context.Background(), p)
			stopNew()
		}
		d.lists.SetSources(listSources(oldCfg))
		d.lists.Load()
		d.maxFlows, d.fdWarning, d.bypass, d.memLimit = oldMaxFlows, oldFdWarning, oldBypass, oldMemLimit
		d.stopNet(keep)
		if !keep {
			// What the failed build left of its own (rules of another table or TUN).
			if err := netcfg.Cleanup(ctx, newSpec); err != nil {
				d.log.Debug("reload: cleaning up after the failed data path", "err", err)
			}
		}
		d.fallback = fmt.Sprintf("%s: the reloaded configuration did not run (%v); the previous configuration runs again until a reload succeeds",
			time.Now().Format(time.RFC3339), cause)
		if err := d.startNet(ctx, oldCfg, oldBypass); err != nil {
			d.fallback += fmt.Sprintf("; its data path failed too (%v), the watchdog retries it", err)
			d.log.Error("reload: the previous configuration's data path failed too; the watchdog retries", "err", err)
		}
		d.lastReloadErr = d.fallback
		return &Error{Code: CodeUnknown, Msg: d.fallback}
	}
	var missing []string
	if d.net == nil {
		missing = []string{"the data path (" + d.netErr + ")"}
	} else if m, err := d.net.Missing(); err == nil {
		missing = m
	}
	switch {
	case kernelSpecChanged(oldSpec, newSpec) || newEngine != engineConfig(oldCfg, oldMaxFlows, oldMemLimit) || len(missing) > 0:
		if len(missing) > 0 {
			d.log.Warn("reload: part of the data path is missing, rebuilding it", "missing", strings.Join(missing, ", "))
		} else {
			d.log.Warn("reload: TUN, marks, table, interfaces or engine settings changed; rebuilding them resets the flows through tgtun")
		}
		// A new TUN name or table leaves nothing of the old state worth keeping.
		d.stopNet(keep)
		d.bypass = bypass
		if err := d.startNet(ctx, cfg, bypass); err != nil {
			return fallBack(err)
		}
	default:
		if oldSpec.Block != newSpec.Block && d.net != nil {
			if err := d.net.SetBlock(newSpec.Block); err != nil {
				return fallBack(err)
			}
		}
		if err := d.applyTargets(ctx, cfg, bypass); err != nil {
			return fallBack(err)
		}
	}
	d.cfg, d.warnings, d.lastReloadErr, d.fallback = cfg, warnings, "", ""
	d.startForwarder(d.runCtx, cfg)
	d.syncMarking()
	d.syncRoute()
	d.level.Set(cfg.Main.LogLevel)
	d.memLimit = applyMemoryLimit(memLimit)
	d.log.Info("configuration reloaded", "proxies", len(cfg.Proxies))
	return nil
}

// applyTargets swaps the target and bypass sets for the current lists. bypass is
// resolved by the caller, outside d.mu. Called with d.mu held.
func (d *Daemon) applyTargets(ctx context.Context, cfg *config.Config, bypass []netip.Prefix) error {
	d.bypass = bypass
	if d.net == nil {
		return nil
	}
	v4, v6 := d.lists.Targets()
	if !d.net.Spec().IPv6 {
		v6 = nil // see netSpec
	}
	if err := d.net.SetBypass(bypass); err != nil {
		return fmt.Errorf("bypass set: %w", err)
	}
	if err := d.net.SetTargets(v4, v6); err != nil {
		return fmt.Errorf("target sets: %w", err)
	}
	if err := d.net.SetDevices(devices(cfg.Main.IncludeDevices), devices(cfg.Main.ExcludeDevices)); err != nil {
		return fmt.Errorf("device sets: %w", err)
	}
	d.applyDomains(ctx, cfg)
	return nil
}

// UpdateLists downloads every list with a source now and swaps the sets if they changed.
func (d *Daemon) UpdateLists(ctx context.Context) (any, error) {
	updateErr := d.lists.Update(ctx)
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	bypass := d.resolveBypass(ctx, cfg) // DNS, outside d.mu
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.applyTargets(ctx, d.cfg, bypass); err != nil {
		return nil, &Error{Code: CodeUnknown, Msg: err.Error()}
	}
	res := map[string]any{"lists": d.lists.Status()}
	if updateErr != nil {
		res["error"] = updateErr.Error()
	}
	return res, nil
}

// firstListUpdate is how soon after start the lists are refreshed: the embedded or cached
// copies may be old, and a custom list URL has nothing at all until its first download.
// The pause lets the first health check find a working proxy.
const firstListUpdate = 30 * time.Second

func (d *Daemon) updateListsLoop(ctx context.Context) {
	wait := firstListUpdate
	for {
		d.mu.Lock()
		every := d.cfg.Main.UpdateInterval
		d.mu.Unlock()
		if every <= 0 {
			every = time.Hour // updates are off; look again later in case a reload turned them on
		}
		t := time.NewTimer(min(wait, every))
		wait = every
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d.mu.Lock()
		on := d.cfg.Main.UpdateInterval > 0
		d.mu.Unlock()
		if !on {
			continue
		}
		if _, err := d.UpdateLists(ctx); err != nil {
			d.log.Warn("scheduled list update", "err", err)
		}
	}
}

// probeWarning says when the health probe cannot tell a VLESS or Trojan server's
// fallback web site from the health target: it only connects.
func probeWarning(cfg *config.Config) string {
	if healthCheck(cfg.Main).EndToEnd() {
		return ""
	}
	for _, p := range cfg.Proxies {
		if p.Type == config.TypeVLESS || p.Type == config.TypeTrojan {
			return fmt.Sprintf("health_check %s: the probe only connects to %s through each proxy, so a VLESS or Trojan server that hands a wrong uuid or password to its fallback web site passes it; use a Telegram address as health_target, or health_check 'tls' with health_name",
				"'"+cfg.Main.HealthCheck+"'", cfg.Main.HealthTarget)
		}
	}
	return ""
}
