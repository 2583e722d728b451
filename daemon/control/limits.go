package control

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/tgtun/tgtun/daemon/config"
)

// The daemon's memory budget and how many flows it carries. A 128 MB router runs
// tgtun beside everything else it does, and the kernel's OOM killer picks the biggest
// process: the budget (GOMEMLIMIT) bounds the daemon, the engine refuses and sheds
// flows before they outgrow it (engine/memory.go), and max_flows follows from it.

const (
	// autoMemoryShare of the router's RAM is the budget when memory_limit is unset,
	// at most autoMemoryMax.
	autoMemoryShare = 4
	autoMemoryMax   = 64 << 20
	// fallbackMemory is the budget when the RAM cannot be read.
	fallbackMemory = 32 << 20
	// flowMemoryShare of the budget is what flows may hold before the engine refuses
	// new ones (engine memRefuse); baseMemory of it the idle daemon holds itself.
	flowMemoryShare = 0.55
	baseMemory      = 6 << 20
	minAutoFlows    = 64
)

// flowCost is what an idle flow through a proxy of each type costs the daemon, with a
// margin for the buffers of busy ones (measured: docs/performance.md). Interface
// proxies carry no flows of the daemon's.
var flowCost = map[string]int64{
	"socks5":      6 << 10,
	"http":        6 << 10,
	"shadowsocks": 12 << 10,
	"vless":       24 << 10,
	"trojan":      24 << 10,
	"interface":   0,
}

// defaultFlowCost is a type the table does not know.
const defaultFlowCost = 24 << 10

// memoryBudget is the limit to apply: memory_limit as set (0: none), or with it unset a
// quarter of MemTotal, at most 64 MiB.
func memoryBudget(limit int64, memTotal func() (int64, error)) int64 {
	if limit != config.MemoryLimitAuto {
		return limit
	}
	total, err := memTotal()
	if err != nil || total <= 0 {
		return fallbackMemory
	}
	return min(total/autoMemoryShare, autoMemoryMax)
}

// readMemTotal reads MemTotal from /proc/meminfo.
func readMemTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("meminfo MemTotal %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("meminfo: no MemTotal")
}

// applyMemoryLimit sets the runtime's limit to the budget, unless GOMEMLIMIT is set
// (procd passes memory_limit so), and returns the limit in force (0: none).
func applyMemoryLimit(budget int64) int64 {
	if os.Getenv("GOMEMLIMIT") == "" && budget > 0 {
		debug.SetMemoryLimit(budget)
	}
	if cur := debug.SetMemoryLimit(-1); cur != math.MaxInt64 {
		return cur
	}
	return 0
}

// flowLimit is max_flows as configured, or with it unset what the budget carries through
// the costliest proxy type in use, between minAutoFlows and config.AutoMaxFlows.
func flowLimit(cfg *config.Config, budget int64) int {
	if cfg.Main.MaxFlows > 0 {
		return cfg.Main.MaxFlows
	}
	if budget <= 0 {
		return config.AutoMaxFlows
	}
	var cost int64
	for _, p := range cfg.Proxies {
		c, ok := flowCost[p.Type]
		if !ok {
			c = defaultFlowCost
		}
		cost = max(cost, c)
	}
	if cost == 0 {
		return config.AutoMaxFlows
	}
	flows := (int64(float64(budget)*flowMemoryShare) - baseMemory) / cost
	return int(min(max(flows, minAutoFlows), config.AutoMaxFlows))
}

// perDeviceLimit is max_flows_per_device as configured, or a quarter of maxFlows; never
// above maxFlows.
func perDeviceLimit(cfg *config.Config, maxFlows int) int {
	if n := cfg.Main.MaxFlowsPerDevice; n > 0 {
		return min(n, maxFlows)
	}
	return max(maxFlows/4, 1)
}
