package engine

import (
	"errors"
	"sync/atomic"
	"time"
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
