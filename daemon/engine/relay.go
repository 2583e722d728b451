package engine

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// idleWatch closes a flow after a period without traffic. One timer per
// flow, no goroutine: the timer re-arms itself for the time that is left,
// so touch (on the relay path) is one atomic store.
type idleWatch struct {
	last    atomic.Int64 // monoNow of the last traffic
	timeout time.Duration
	timer   atomic.Pointer[time.Timer]
	expire  func()
	done    <-chan struct{}
}

func (w *idleWatch) start(timeout time.Duration, done <-chan struct{}, expire func()) {
	w.timeout, w.done, w.expire = timeout, done, expire
	w.touch()
	w.timer.Store(time.AfterFunc(timeout, w.check))
}

func (w *idleWatch) touch() { w.last.Store(monoNow()) }

// monoBase is the origin of monoNow; set once when the package loads, never changed.
var monoBase = time.Now()

// monoNow reads only the monotonic clock, in nanoseconds since monoBase. time.Now
// reads the wall clock too, and on 32-bit MIPS (no vDSO for Go there) each read is a
// system call: touch runs on every wake-up of a flow, and the two clock reads were a
// fifth of the relay's CPU in the emulated router's profile.
func monoNow() int64 { return int64(time.Since(monoBase)) }

func (w *idleWatch) check() {
	select {
	case <-w.done:
		return
	default:
	}
	idle := time.Duration(monoNow() - w.last.Load())
	if idle >= w.timeout {
		w.expire()
		return
	}
	if t := w.timer.Load(); t != nil {
		t.Reset(w.timeout - idle)
	}
}

func (w *idleWatch) stop() {
	if t := w.timer.Load(); t != nil {
		t.Stop()
	}
}

// The rest is what the poller-driven relays of TCP and UDP flows share.

// flowRefs counts a flow's running workers, plus one from attach until
// terminate; the last one out finishes the flow.
type flowRefs struct{ atomic.Int32 }

// acquire counts in a new worker, unless the flow is already over.
func (r *flowRefs) acquire() bool {
	for {
		n := r.Load()
		if n == 0 {
			return false
		}
		if r.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// claim counts in a worker for the direction busy guards, unless one runs
// there or the flow is over; the caller then starts it. busy stays set until
// the worker clears it.
func (r *flowRefs) claim(busy *atomic.Bool) bool {
	if !busy.CompareAndSwap(false, true) {
		return false
	}
	if !r.acquire() {
		busy.Store(false)
		return false
	}
	return true
}

// release counts a worker out and reports whether it was the last one.
func (r *flowRefs) release() bool { return r.Add(-1) == 0 }

// proxyWatch is the poller's hold on a flow's proxy conn. Its fields are
// guarded by the flow's mu: the poller's goroutine starts the workers that read
// them without synchronising with watch.
type proxyWatch struct {
	nb    pollableConn      // the proxy conn read without waiting
	raws  []syscall.RawConn // its sockets, nil when not polled
	token uint32            // their readPoller token
}

// watch registers onReadable with the poller and arms every socket of conn.
// It reports false when conn cannot be polled (logged unless conn offers no
// sockets at all): the flow then reads it with a blocking worker.
func (w *proxyWatch) watch(e *Engine, mu *sync.Mutex, conn net.Conn, onReadable func(), kind string, src, dst netip.AddrPort) bool {
	nb := asPollable(conn)
	if nb == nil {
		return false
	}
	raws, err := nb.RawConns()
	if err == nil {
		// Under mu, as the workers re-arm under it: the poller may start one
		// before every socket is armed.
		mu.Lock()
		w.nb, w.raws, w.token = nb, raws, e.poller.register(onReadable)
		for _, raw := range raws {
			if err = e.poller.arm(raw, w.token, true); err != nil {
				break
			}
		}
		if err != nil {
			e.poller.unregister(w.token)
			w.raws = nil
		}
		mu.Unlock()
		if err == nil {
			return true
		}
	}
	e.log.Debug(kind+" flow falls back to a blocking reader", "src", src, "dst", dst, "err", err)
	return false
}

// conn returns the non-blocking view of the proxy conn, read under mu.
func (w *proxyWatch) conn(mu *sync.Mutex) pollableConn {
	mu.Lock()
	defer mu.Unlock()
	return w.nb
}

// rearm arms the sockets for their next readable event, unless the flow is
// terminated (*terminated, guarded by mu like the conn it closes).
func (w *proxyWatch) rearm(e *Engine, mu *sync.Mutex, terminated *bool) error {
	mu.Lock()
	defer mu.Unlock()
	if *terminated {
		return nil
	}
	for _, raw := range w.raws {
		if err := e.poller.arm(raw, w.token, false); err != nil {
			return err
		}
	}
	return nil
}

// stop takes the sockets off the poller, if they were on it. It runs in
// finish, after the last worker.
func (w *proxyWatch) stop(e *Engine) {
	if w.raws != nil {
		e.poller.unregister(w.token)
	}
}
