package engine

import (
	"runtime/metrics"
	"slices"
	"sync"
	"time"
)

// The engine keeps the daemon under its memory budget (Config.MemoryLimit, the
// daemon's GOMEMLIMIT) by the flows it admits: on a 128 MB router the kernel's
// OOM killer picks the biggest process, and a daemon that grows with its flows
// until the limit is that process (podkop and homeproxy users lose sing-box this
// way). The measure is the Go heap that was live at the last collection plus the
// goroutine stacks: what flows hold. The total the runtime maps runs ahead of it by
// the collector's headroom (GOGC=50: up to half the live heap again), so the
// thresholds are fractions of the limit that leave that headroom:
//   - above memRefuse, new flows are refused (TCP reset, datagram dropped);
//   - above memShed, the least recently active flows are closed until memCalm
//     is expected, once per collection (closing frees memory only at the next).
const (
	memRefuse = 0.55
	memShed   = 0.62
	memCalm   = 0.50
	// memSampleEvery bounds how often admission reads the runtime's metrics.
	memSampleEvery = 50 * time.Millisecond
)

var memMetrics = []string{"/gc/heap/live:bytes", "/memory/classes/heap/stacks:bytes", "/gc/cycles/total:gc-cycles"}

// memGuard samples what the flows hold and says when to refuse or shed.
type memGuard struct {
	limit uint64 // bytes; 0: no budget
	// read measures; the runtime's metrics, or a test's stand-in.
	read func() (used, cycle uint64)

	mu       sync.Mutex
	sampled  time.Time
	used     uint64
	cycle    uint64 // the collection the last sample is from
	shedInGC uint64 // the collection after which flows were last shed
	samples  []metrics.Sample
}

func newMemGuard(limit int64) *memGuard {
	g := &memGuard{}
	if limit > 0 {
		g.limit = uint64(limit)
	}
	for _, name := range memMetrics {
		g.samples = append(g.samples, metrics.Sample{Name: name})
	}
	g.read = g.readRuntime
	return g
}

// readRuntime reads the live heap and stacks, and the collection count.
func (g *memGuard) readRuntime() (used, cycle uint64) {
	metrics.Read(g.samples)
	for i, s := range g.samples {
		if s.Value.Kind() != metrics.KindUint64 {
			continue
		}
		if i == 2 {
			cycle = s.Value.Uint64()
		} else {
			used += s.Value.Uint64()
		}
	}
	return used, cycle
}

// sample returns the flows' memory as last measured, measuring again when the
// last sample is older than memSampleEvery.
func (g *memGuard) sample(now time.Time) (used, cycle uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.sampled) >= memSampleEvery {
		g.used, g.cycle = g.read()
		g.sampled = now
	}
	return g.used, g.cycle
}

// admit reports whether a new flow may come in.
func (g *memGuard) admit(now time.Time) bool {
	if g.limit == 0 {
		return true
	}
	used, _ := g.sample(now)
	return float64(used) < memRefuse*float64(g.limit)
}

// toShed returns how many bytes the flows should give up now, or 0: over
// memShed, once per collection.
func (g *memGuard) toShed(now time.Time) uint64 {
	if g.limit == 0 {
		return 0
	}
	used, cycle := g.sample(now)
	g.mu.Lock()
	defer g.mu.Unlock()
	if float64(used) < memShed*float64(g.limit) || cycle <= g.shedInGC {
		return 0
	}
	g.shedInGC = cycle
	return used - uint64(memCalm*float64(g.limit))
}

// idleFlow is what shedding needs to know of a flow.
type idleFlow interface {
	flow
	lastActive() int64 // monoNow of the last traffic
}

// shedFlows is called when a flow is refused for memory: it closes the least
// recently active flows until about bytes are expected back, counting an
// average flow's share of the memory in use.
func (e *Engine) shedFlows(bytes uint64) {
	e.mu.Lock()
	all := make([]idleFlow, 0, len(e.flows))
	for f := range e.flows {
		if f, ok := f.(idleFlow); ok {
			all = append(all, f)
		}
	}
	e.mu.Unlock()
	if len(all) == 0 {
		return
	}
	used, _ := e.mem.sample(time.Now())
	per := max(used/uint64(len(all)), 1)
	n := min(int((bytes+per-1)/per), len(all))
	slices.SortFunc(all, func(a, b idleFlow) int {
		switch la, lb := a.lastActive(), b.lastActive(); {
		case la < lb:
			return -1
		case la > lb:
			return 1
		}
		return 0
	})
	for _, f := range all[:n] {
		f.abort()
	}
	e.shed.Add(uint64(n))
	e.log.Warn("memory budget: closed the least recently active flows", "flows", n, "in_use", used, "limit", e.mem.limit)
}

// memoryAllows is asked before a flow is admitted: it refuses while the flows
// hold more than their share of the budget, and sheds the least recently active
// ones when they hold much more.
func (e *Engine) memoryAllows() bool {
	now := time.Now()
	if e.mem.admit(now) {
		return true
	}
	e.refusedMemory.Add(1)
	if b := e.mem.toShed(now); b > 0 {
		go e.shedFlows(b)
	}
	return false
}
