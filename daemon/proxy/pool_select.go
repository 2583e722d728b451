package proxy

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Values of Pool.Select.
const (
	SelectPriority = "priority"
	SelectLatency  = "latency"
)

// Probing many members (a subscription may hold hundreds) must not cost a connection
// per member every interval: a round probes the members that decide where traffic
// goes now, and the others in turns.
const (
	// probeParallel bounds the probes in flight at once.
	probeParallel = 16
	// standbyPerRound is how many of the other members a round probes (in turn, from
	// a rotating cursor); a pool of at most 1+standbyPerRound members is probed whole.
	standbyPerRound = 8
	// rescuePerRound replaces standbyPerRound while no member is healthy, to find a
	// working one sooner.
	rescuePerRound = 32
)

// Hysteresis of SelectLatency: another member takes over only when its smoothed
// latency is lower by a fifth of the active one's and by at least switchMargin, so
// that two members of about the same latency do not take turns.
const switchMargin = 10 * time.Millisecond

// smooth is an exponential moving average (weight 1/4 for the new sample).
func smooth(avg, sample time.Duration) time.Duration {
	if avg <= 0 {
		return sample
	}
	return (3*avg + sample) / 4
}

// SetMembers replaces the pool's members at once (a subscription refresh, a reload).
// A member with the same Name and ID as one in the pool keeps that one's dialer and
// state (health, latency, flows counted); the others are unknown until probed, as in
// NewPool. Connections already dialled are not touched. It does not call OnChange
// or OnProbed: the caller, which holds what they would lock, applies AnyHealthy itself.
func (p *Pool) SetMembers(members []Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := make(map[string]*poolMember, len(p.members))
	for _, m := range p.members {
		old[m.Name] = m
	}
	next := make([]*poolMember, 0, len(members))
	for _, m := range members {
		if o := old[m.Name]; o != nil && o.ID == m.ID && m.ID != "" {
			o.Member.Priority, o.Member.Type, o.Member.Server = m.Priority, m.Type, m.Server
			next = append(next, o)
			delete(old, m.Name)
			continue
		}
		next = append(next, &poolMember{Member: m, state: StateUnknown})
	}
	slices.SortStableFunc(next, func(a, b *poolMember) int { return cmp.Compare(a.Priority, b.Priority) })
	p.members = next
	if !slices.Contains(p.members, p.active) {
		p.active = nil
	}
	p.cursor = 0
	p.reselectLocked()
}

// probeRound probes the members a round is due for (see scheduleLocked).
func (p *Pool) probeRound(ctx context.Context) {
	if !p.probe.IsValid() {
		return
	}
	p.mu.Lock()
	members := p.scheduleLocked()
	p.mu.Unlock()
	p.probeMembers(ctx, members)
}

// scheduleLocked picks a round's members: all of a small pool; else the active member,
// those preferred over it (a lower priority: they may have recovered) and the next
// standbyPerRound others in turn (rescuePerRound while none is healthy).
func (p *Pool) scheduleLocked() []*poolMember {
	if len(p.members) <= 1+standbyPerRound {
		return slices.Clone(p.members)
	}
	active := p.activeLocked()
	var out, rest []*poolMember
	for _, m := range p.members {
		if m == active || active != nil && m.Priority < active.Priority {
			out = append(out, m)
		} else {
			rest = append(rest, m)
		}
	}
	turns := standbyPerRound
	if active == nil {
		turns = rescuePerRound
	}
	if p.cursor >= len(rest) {
		p.cursor = 0
	}
	for i := 0; i < min(turns, len(rest)); i++ {
		out = append(out, rest[(p.cursor+i)%len(rest)])
	}
	p.cursor += min(turns, len(rest))
	return out
}

// probeMembers probes members, at most probeParallel at a time, then chooses the
// active member again and reports the round (OnChange, OnProbed).
func (p *Pool) probeMembers(ctx context.Context, members []*poolMember) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, probeParallel)
	for _, m := range members {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			p.probeMember(ctx, m)
		})
	}
	wg.Wait()
	p.mu.Lock()
	p.reselectLocked()
	p.mu.Unlock()
	p.notify()
}

// activeLocked is the member new flows try first: with SelectLatency its choice while
// that is healthy, else the first candidate (healthy, then not judged yet; nil: none).
func (p *Pool) activeLocked() *poolMember {
	if p.active != nil && p.active.state == StateHealthy {
		return p.active
	}
	if c := p.candidatesLocked(); len(c) > 0 {
		return c[0]
	}
	return nil
}

// dialOrderLocked puts the active member first; the others keep priority order.
func (p *Pool) dialOrderLocked(healthy []*poolMember) []*poolMember {
	a := p.activeLocked()
	if i := slices.Index(healthy, a); i > 0 {
		copy(healthy[1:i+1], healthy[:i])
		healthy[0] = a
	}
	return healthy
}

// reselectLocked is SelectLatency's choice after a round: among the healthy members of
// the lowest priority that have a measured latency, the fastest, unless the active one
// is still among them and not slower by more than the hysteresis.
func (p *Pool) reselectLocked() {
	if p.Select != SelectLatency {
		p.active = nil
		return
	}
	var best *poolMember
	lowest, found := 0, false
	for _, m := range p.members {
		if m.state != StateHealthy {
			continue
		}
		if !found {
			lowest, found = m.Priority, true
		}
		if m.Priority != lowest || m.smoothed <= 0 {
			continue
		}
		if best == nil || m.smoothed < best.smoothed {
			best = m
		}
	}
	cur := p.active
	keep := cur != nil && cur.state == StateHealthy && cur.Priority == lowest && cur.smoothed > 0
	switch {
	case best == nil || best == cur:
		if !keep {
			p.active = best
		}
	case !keep:
		p.active = best
	case best.smoothed+max(cur.smoothed/5, switchMargin) < cur.smoothed:
		p.log.Info("a faster proxy takes over", "from", cur.Name, "from_latency", cur.smoothed.Round(time.Millisecond),
			"to", best.Name, "to_latency", best.smoothed.Round(time.Millisecond))
		p.active = best
	}
}
