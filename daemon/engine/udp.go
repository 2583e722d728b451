package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// handleUDP runs in the netstack's dispatch goroutine for the first datagram
// of a (client, destination) pair, so it must not block: it binds a
// connected endpoint to the pair (later datagrams queue there, not here) and
// dials in the flow's goroutine. It always reports the datagram handled, so
// nothing answers with ICMP port unreachable.
func (e *Engine) handleUDP(ctx context.Context, r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst := addrPort(id.LocalAddress, id.LocalPort)
	src := addrPort(id.RemoteAddress, id.RemotePort)
	if !e.reserveSlot(src.Addr()) {
		e.rejected.Add(1)
		e.droppedUDP.Add(1)
		return true
	}
	f := &udpFlow{e: e, src: src, dst: dst, done: make(chan struct{})}
	ep, terr := r.CreateEndpoint(&f.wq)
	if terr != nil {
		e.freeSlot(src.Addr())
		e.droppedUDP.Add(1)
		e.log.Debug("udp endpoint for new flow", "src", src, "dst", dst, "err", terr)
		return true
	}
	f.ep = ep
	if !e.admit(f) {
		ep.Close()
		e.freeSlot(src.Addr())
		return true
	}
	go f.serve(ctx)
	return true
}

// udpFlow relays the datagrams of one (client, destination) pair.
type udpFlow struct {
	e        *Engine
	src, dst netip.AddrPort
	wq       waiter.Queue
	ep       tcpip.Endpoint // set before serve starts
	idle     idleWatch

	mu         sync.Mutex
	terminated bool // guarded by mu
	done       chan struct{}
	conn       net.Conn

	upW   tcpip.SliceWriter
	downR bytes.Reader
}

func (f *udpFlow) abort() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminated {
		return
	}
	f.terminated = true
	close(f.done)
	if f.conn != nil {
		f.conn.Close()
	}
	// Closing unbinds the pair: the next datagram starts a new flow.
	f.ep.Close()
}

func (f *udpFlow) attach(conn net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminated {
		conn.Close()
		return false
	}
	f.conn = conn
	return true
}

func (f *udpFlow) serve(ctx context.Context) {
	e := f.e
	defer e.freeSlot(f.src.Addr())
	defer e.release(f)
	defer f.abort()

	ready, unregister := f.readableEntry()
	defer unregister()

	dialCtx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	conn, err := e.currentDialer().DialUDP(dialCtx, f.dst)
	cancel()
	if err != nil {
		e.rejected.Add(1)
		if errors.Is(err, errors.ErrUnsupported) {
			e.log.Debug("udp not supported by the proxy, dropping flow", "src", f.src, "dst", f.dst)
			f.sink(ready)
			return
		}
		e.log.Debug("udp dial through proxy failed", "src", f.src, "dst", f.dst, "err", err)
		f.discardQueued()
		return
	}
	if !f.attach(conn) {
		return
	}
	e.activeUDP.Add(1)
	e.totalUDP.Add(1)
	defer e.activeUDP.Add(-1)

	f.idle.start(e.cfg.UDPIdleTimeout, f.done, f.abort)
	defer f.idle.stop()
	var up sync.WaitGroup
	up.Go(func() {
		if err := f.pumpUp(ready); err != nil {
			f.fail("client→proxy", err)
		}
	})
	if err := f.pumpDown(); err != nil {
		f.fail("proxy→client", err)
	}
	up.Wait()
}

func (f *udpFlow) readableEntry() (<-chan struct{}, func()) {
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	f.wq.EventRegister(&entry)
	return ready, func() { f.wq.EventUnregister(&entry) }
}

func (f *udpFlow) fail(dir string, err error) {
	select {
	case <-f.done:
	default:
		f.e.log.Debug("udp relay failed", "src", f.src, "dst", f.dst, "dir", dir, "err", err)
	}
	f.abort()
}

// sink keeps the pair bound and drops its datagrams for one UDPIdleTimeout,
// counted, when the proxy cannot carry UDP. Traffic does not extend it, so
// a new dial (perhaps through a new dialer) is tried at most that often.
func (f *udpFlow) sink(ready <-chan struct{}) {
	t := time.NewTimer(f.e.cfg.UDPIdleTimeout)
	defer t.Stop()
	for {
		f.discardQueued()
		select {
		case <-ready:
		case <-t.C:
			return
		case <-f.done:
			return
		}
	}
}

func (f *udpFlow) discardQueued() {
	for {
		if _, terr := f.ep.Read(io.Discard, tcpip.ReadOptions{}); terr != nil {
			return
		}
		f.e.droppedUDP.Add(1)
	}
}

// pumpUp sends the client's datagrams to the proxy, borrowing a buffer only
// while some are queued.
func (f *udpFlow) pumpUp(ready <-chan struct{}) error {
	for {
		if !waitReadable(f.ep, ready, f.done) {
			return errFlowClosed
		}
		if err := f.drainUp(); err != nil {
			return err
		}
	}
}

func (f *udpFlow) drainUp() error {
	bp := f.e.getHeldBuf()
	defer f.e.putHeldBuf(bp)
	for {
		f.upW = tcpip.SliceWriter(*bp)
		res, terr := f.ep.Read(&f.upW, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			return nil
		default:
			return fmt.Errorf("read from client: %s", terr)
		}
		if res.Total > res.Count {
			f.e.droppedUDP.Add(1) // larger than the relay buffer
			continue
		}
		if _, err := f.conn.Write((*bp)[:res.Count]); err != nil {
			return fmt.Errorf("write to proxy: %w", err)
		}
		f.e.bytesUp.Add(uint64(res.Count))
		f.idle.touch()
	}
}

// pumpDown sends the proxy's datagrams to the client. A datagram is never
// waited for: if the endpoint cannot take it, it is dropped, as a router
// would.
func (f *udpFlow) pumpDown() error {
	bp := f.e.getHeldBuf()
	defer f.e.putHeldBuf(bp)
	for {
		n, err := f.conn.Read(*bp)
		if err != nil {
			return fmt.Errorf("read from proxy: %w", err)
		}
		if n == len(*bp) {
			f.e.droppedUDP.Add(1) // possibly truncated: never forward a cut datagram
			continue
		}
		f.downR.Reset((*bp)[:n])
		if _, terr := f.ep.Write(&f.downR, tcpip.WriteOptions{}); terr != nil {
			if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
				f.e.droppedUDP.Add(1)
				continue
			}
			return fmt.Errorf("write to client: %s", terr)
		}
		f.e.bytesDown.Add(uint64(n))
		f.idle.touch()
	}
}
