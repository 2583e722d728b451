package engine

import (
	"errors"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

var errFlowClosed = errors.New("flow closed")

// idleWatch closes a flow after a period without traffic. One timer per
// flow, no goroutine: the timer re-arms itself for the time that is left,
// so touch (on the relay path) is one atomic store.
type idleWatch struct {
	last    atomic.Int64 // unix nanoseconds of the last traffic
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

func (w *idleWatch) touch() { w.last.Store(time.Now().UnixNano()) }

func (w *idleWatch) check() {
	select {
	case <-w.done:
		return
	default:
	}
	idle := time.Duration(time.Now().UnixNano() - w.last.Load())
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

// waitReadable blocks until ep has data (or EOF, or an error) to read, or
// done is closed. ready must be a channel entry for waiter.ReadableEvents
// registered on ep's queue before the call, so no wake-up is lost.
func waitReadable(ep tcpip.Endpoint, ready, done <-chan struct{}) bool {
	for ep.Readiness(waiter.ReadableEvents) == 0 {
		select {
		case <-ready:
		case <-done:
			return false
		}
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}
