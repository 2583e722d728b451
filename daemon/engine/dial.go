package engine

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// Proxy dials in flight are bounded: MaxHandshakes for TCP and for UDP each, a
// quarter of that for one device, so a device's flood of connections to
// unreachable targets (seconds a dial) cannot hold up the others'. A UDP datagram
// beyond the bound is dropped (the next one tries again). A TCP connection beyond
// it waits in its device's queue for a dial: the kernel completed its handshake
// already, and an app that opens a hundred connections at once (resuming after a
// network change) must not see resets for what a held SYN used to absorb. It holds
// its flow slot while it waits, so a device's queue is bounded by its share of
// MaxFlows; one that waited DialTimeout is reset.

// pendingDial is a TCP flow waiting for a dial.
type pendingDial struct {
	f     *tcpFlow
	since time.Time
}

// startDial counts a proxy dial of src in flight, unless the engine already has
// MaxHandshakes of them for this protocol (inFlight) or src a quarter of those.
// A refusal for src's share is counted in RefusedPerDevice when count is set.
func (e *Engine) startDial(src netip.Addr, inFlight *atomic.Int64, count bool) bool {
	e.devMu.Lock()
	defer e.devMu.Unlock()
	d := e.devices[src.Unmap()]
	if d == nil {
		return false
	}
	return e.claimDial(d, inFlight, count)
}

// claimDial takes a dial slot for d. Called with devMu held.
func (e *Engine) claimDial(d *device, inFlight *atomic.Int64, count bool) bool {
	if d.dialing >= e.perDeviceDials() {
		if count {
			e.refusedPerDevice.Add(1)
		}
		return false
	}
	if inFlight.Add(1) > int64(e.cfg.MaxHandshakes) {
		inFlight.Add(-1)
		return false
	}
	d.dialing++
	return true
}

func (e *Engine) perDeviceDials() int { return max(e.cfg.MaxHandshakes/4, 1) }

// endDial ends a dial startDial counted; a TCP dial's slot goes to a waiting
// flow, if one can take it.
func (e *Engine) endDial(src netip.Addr, inFlight *atomic.Int64) {
	inFlight.Add(-1)
	src = src.Unmap()
	e.devMu.Lock()
	if d := e.devices[src]; d != nil {
		d.dialing--
		e.dropIfEmpty(src, d)
	}
	e.devMu.Unlock()
	if inFlight == &e.tcpDialing {
		e.startWaiting()
	}
}

// dialTCP dials for f now, or queues it until a dial slot is free.
func (e *Engine) dialTCP(f *tcpFlow) {
	src := f.src.Addr().Unmap()
	e.devMu.Lock()
	d := e.devices[src]
	if d != nil && e.claimDial(d, &e.tcpDialing, false) {
		e.devMu.Unlock()
		go f.dial(e.runCtx)
		return
	}
	if d != nil {
		d.pending = append(d.pending, pendingDial{f: f, since: time.Now()})
		e.waiting++
	}
	e.devMu.Unlock()
	if d == nil { // cannot happen: the flow holds a slot of its device
		f.abort()
		f.giveUp()
	}
}

// startWaiting starts the dials of waiting flows while slots are free: each
// device's queue in order, the devices in turn.
func (e *Engine) startWaiting() {
	for {
		e.devMu.Lock()
		if e.waiting == 0 {
			e.devMu.Unlock()
			return
		}
		var next pendingDial
		for _, d := range e.devices {
			if len(d.pending) == 0 || !e.claimDial(d, &e.tcpDialing, false) {
				continue
			}
			next = d.pending[0]
			d.pending[0] = pendingDial{}
			d.pending = d.pending[1:]
			if len(d.pending) == 0 {
				d.pending = nil
			}
			e.waiting--
			break
		}
		e.devMu.Unlock()
		if next.f == nil {
			return // every waiting device is at its share, or the engine at MaxHandshakes
		}
		if time.Since(next.since) >= e.cfg.DialTimeout {
			e.log.Debug("tcp flow waited too long for a dial, reset", "src", next.f.src, "dst", next.f.dst)
			e.rejected.Add(1)
			next.f.abort()
			next.f.giveUp()
			e.endDial(next.f.src.Addr(), &e.tcpDialing) // passes the slot on
			return
		}
		go next.f.dial(e.runCtx)
	}
}

// dropPending gives up every waiting flow (shutdown: they are aborted already).
func (e *Engine) dropPending() {
	e.devMu.Lock()
	var all []pendingDial
	for _, d := range e.devices {
		all = append(all, d.pending...)
		d.pending = nil
	}
	e.waiting = 0
	e.devMu.Unlock()
	for _, p := range all {
		p.f.abort()
		p.f.giveUp()
	}
}
