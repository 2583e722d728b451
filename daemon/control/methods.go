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
	pool, err := newPool(cfg, d.log)
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

	oldStop := d.poolStop
	d.startPool(context.Background(), pool)
	if d.eng != nil {
		d.eng.SetDialer(pool)
	}
	if oldStop != nil {
		oldStop()
	}
	oldCfg, oldMaxFlows, oldMemLimit := d.cfg, d.maxFlows, d.memLimit
	d.maxFlows, d.fdWarning = maxFlows, fdWarning
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
		d.stopNet(oldSpec.TunName == newSpec.TunName && oldSpec.Table == newSpec.Table)
		d.bypass = bypass
		if err := d.startNet(ctx, cfg, bypass); err != nil {
			d.lastReloadErr = err.Error()
			d.log.Error("reload: the new data path failed; the watchdog retries", "err", err)
			d.cfg, d.warnings = cfg, warnings
			return &Error{Code: CodeUnknown, Msg: err.Error()}
		}
	default:
		if oldSpec.Block != newSpec.Block && d.net != nil {
			if err := d.net.SetBlock(newSpec.Block); err != nil {
				d.lastReloadErr = err.Error()
				return &Error{Code: CodeUnknown, Msg: err.Error()}
			}
		}
		if err := d.applyTargets(ctx, cfg, bypass); err != nil {
			d.lastReloadErr = err.Error()
			return &Error{Code: CodeUnknown, Msg: err.Error()}
		}
	}
	d.cfg, d.warnings, d.lastReloadErr = cfg, warnings, ""
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
