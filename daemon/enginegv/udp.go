package enginegv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpBurst bounds the datagrams one proxy → client worker moves before it
// re-arms the poller, so that one busy flow does not keep a worker for ever.
const udpBurst = 64

// handleUDP runs in the netstack's dispatch goroutine for the first datagram
// of a (client, destination) pair, so it must not block: it binds a
// connected endpoint to the pair (later datagrams queue there, not here) and
// dials in a goroutine that lives as long as the dial. It always reports the
// datagram handled, so nothing answers with ICMP port unreachable.
func (e *Engine) handleUDP(ctx context.Context, r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst := addrPort(id.LocalAddress, id.LocalPort)
	src := addrPort(id.RemoteAddress, id.RemotePort)
	key := flowKey{src: src, dst: dst}
	if e.udpBackoff.blocked(key, time.Now()) {
		e.droppedUDP.Add(1)
		return true
	}
	if !e.reserveSlot(src.Addr()) {
		e.rejected.Add(1)
		e.droppedUDP.Add(1)
		return true
	}
	// Bounded like TCP handshakes: a flood of new pairs must not become as
	// many dials in flight. The datagram is dropped; the next one tries again.
	if e.udpDialing.Add(1) > int64(e.cfg.MaxHandshakes) {
		e.udpDialing.Add(-1)
		e.freeSlot(src.Addr())
		e.droppedUDP.Add(1)
		return true
	}
	if !e.startDial(src.Addr()) {
		e.udpDialing.Add(-1)
		e.freeSlot(src.Addr())
		e.droppedUDP.Add(1)
		return true
	}
	f := &udpFlow{e: e, src: src, dst: dst, done: make(chan struct{})}
	ep, terr := r.CreateEndpoint(&f.wq)
	if terr != nil {
		e.udpDialing.Add(-1)
		e.endDial(src.Addr())
		e.freeSlot(src.Addr())
		e.droppedUDP.Add(1)
		e.log.Debug("udp endpoint for new flow", "src", src, "dst", dst, "err", terr)
		return true
	}
	f.ep = ep
	if !e.admit(f) {
		e.udpDialing.Add(-1)
		e.endDial(src.Addr())
		ep.Close()
		e.freeSlot(src.Addr())
		return true
	}
	go f.dial(ctx)
	return true
}

// udpFlow relays the datagrams of one (client, destination) pair.
//
// Like a TCP flow it holds no goroutine and no buffer while idle: datagrams
// from the client wake it through the endpoint's waiter queue, datagrams from
// the proxy through the engine's poller (for a conn that is a plain socket or
// can say which sockets to watch), and a short worker moves them with a
// pooled buffer. A conn that can only be read blocking keeps one goroutine
// and a HeldBufferSize buffer instead.
type udpFlow struct {
	e        *Engine
	src, dst netip.AddrPort
	wq       waiter.Queue
	ep       tcpip.Endpoint // set before dial starts
	idle     idleWatch

	mu         sync.Mutex
	terminated bool // guarded by mu
	done       chan struct{}
	conn       net.Conn
	attached   bool // conn set; activeUDP counts the flow

	refs     flowRefs
	upBusy   atomic.Bool
	downBusy atomic.Bool
	readable waiter.Entry
	hooked   bool       // readable is registered; set by start
	watch    proxyWatch // the proxy conn's sockets on the poller, when it is polled

	upW   tcpip.SliceWriter
	downR bytes.Reader
}

func (f *udpFlow) key() flowKey { return flowKey{src: f.src, dst: f.dst} }

// abort ends the flow; the last reference out finishes it.
func (f *udpFlow) abort() {
	f.mu.Lock()
	if f.terminated {
		f.mu.Unlock()
		return
	}
	f.terminated = true
	close(f.done)
	attached := f.attached
	if attached {
		f.conn.Close()
	}
	// Closing unbinds the pair: the next datagram starts a new flow.
	f.ep.Close()
	f.mu.Unlock()
	if attached {
		f.releaseRef() // attach's reference
	}
}

func (f *udpFlow) attach(conn net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminated {
		conn.Close()
		return false
	}
	f.conn, f.attached = conn, true
	f.refs.Store(1)
	return true
}

func (f *udpFlow) acquire() bool { return f.refs.acquire() }

func (f *udpFlow) releaseRef() {
	if f.refs.release() {
		f.finish()
	}
}

// finish runs once: after a failed dial, or when the last reference of an
// attached flow is gone.
func (f *udpFlow) finish() {
	f.idle.stop()
	if f.hooked {
		f.wq.EventUnregister(&f.readable)
	}
	f.watch.stop(f.e)
	if f.attached {
		f.e.activeUDP.Add(-1)
	}
	f.e.release(f)
	f.e.freeSlot(f.src.Addr())
}

// dial opens the proxy conn, then hands the flow to its events and ends.
func (f *udpFlow) dial(ctx context.Context) {
	e := f.e
	dialCtx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	conn, err := e.currentDialer().DialUDP(dialCtx, f.dst)
	cancel()
	e.udpDialing.Add(-1)
	e.endDial(f.src.Addr())
	if err != nil {
		e.rejected.Add(1)
		// Later datagrams of the pair are dropped without a dial for a while;
		// a proxy that carries no UDP at all is asked again after UDPIdleTimeout.
		var wait time.Duration
		if errors.Is(err, errors.ErrUnsupported) {
			wait = e.cfg.UDPIdleTimeout
		}
		e.udpBackoff.failed(f.key(), time.Now(), wait)
		e.log.Debug("udp dial through proxy failed", "src", f.src, "dst", f.dst, "err", err)
		f.discardQueued()
		f.abort()
		f.finish()
		return
	}
	e.udpBackoff.succeeded(f.key())
	if !f.attach(conn) {
		f.finish() // shut down while dialling; attach closed the conn
		return
	}
	e.activeUDP.Add(1)
	e.totalUDP.Add(1)
	f.start()
}

// start hooks the flow to its events; from here on they drive it.
func (f *udpFlow) start() {
	if !f.acquire() {
		return
	}
	defer f.releaseRef()
	f.idle.start(f.e.cfg.UDPIdleTimeout, f.done, f.abort)
	f.readable = waiter.NewFunctionEntry(waiter.ReadableEvents, func(waiter.EventMask) { f.startUp() })
	f.wq.EventRegister(&f.readable)
	f.hooked = true
	f.startUp() // datagrams queued while dialling
	f.startDown()
}

func (f *udpFlow) fail(dir string, err error) {
	select {
	case <-f.done:
	default:
		f.e.log.Debug("udp relay failed", "src", f.src, "dst", f.dst, "dir", dir, "err", err)
	}
	f.abort()
}

func (f *udpFlow) discardQueued() {
	for {
		if _, terr := f.ep.Read(io.Discard, tcpip.ReadOptions{}); terr != nil {
			return
		}
		f.e.droppedUDP.Add(1)
	}
}

// startUp starts a client → proxy worker unless one runs. It is called by the
// endpoint's waiter queue, so it must not block.
func (f *udpFlow) startUp() {
	if f.refs.claim(&f.upBusy) {
		go f.runUp()
	}
}

func (f *udpFlow) runUp() {
	defer f.releaseRef()
	for {
		if err := f.drainUp(); err != nil {
			f.fail("client→proxy", err)
			return
		}
		// A wake-up between the endpoint running dry and this store found the
		// worker busy and did nothing: look again.
		f.upBusy.Store(false)
		if f.ep.Readiness(waiter.ReadableEvents) == 0 || !f.upBusy.CompareAndSwap(false, true) {
			return
		}
	}
}

// drainUp sends the client's queued datagrams to the proxy.
func (f *udpFlow) drainUp() error {
	bp := f.e.getBuf()
	defer f.e.putBuf(bp)
	for {
		f.upW = tcpip.SliceWriter(*bp)
		res, terr := f.ep.Read(&f.upW, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			return nil
		case *tcpip.ErrClosedForReceive:
			return fmt.Errorf("read from client: %s", terr)
		default:
			// An ICMP error from the client (its port closed, say), reported once:
			// a NAT keeps the mapping, and so does the flow.
			continue
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

// startDown arranges for proxy → client datagrams: through the poller when
// the conn allows, else with a worker that blocks in Read.
func (f *udpFlow) startDown() {
	if f.watch.watch(f.e, &f.mu, f.conn, f.onProxyReadable, "udp", f.src, f.dst) {
		return
	}
	if f.acquire() {
		go f.blockingDown()
	}
}

// onProxyReadable runs in the poller's goroutine. With two sockets polled both
// may fire: one worker is enough, and it re-arms both when it is done.
func (f *udpFlow) onProxyReadable() {
	if f.refs.claim(&f.downBusy) {
		go f.runDown()
	}
}

// runDown moves what the proxy sockets hold and re-arms the poller.
func (f *udpFlow) runDown() {
	defer f.releaseRef()
	bp := f.e.getBuf()
	err := f.drainDown(f.watch.conn(&f.mu), *bp)
	f.e.putBuf(bp)
	f.downBusy.Store(false)
	if err != nil {
		f.fail("proxy→client", err)
		return
	}
	if err := f.watch.rearm(f.e, &f.mu, &f.terminated); err != nil {
		f.fail("proxy→client", err)
	}
}

// drainDown reads without waiting until the conn is drained (EAGAIN) or a
// burst is done; the buffer goes back to the pool either way.
func (f *udpFlow) drainDown(nb pollableConn, buf []byte) error {
	for range udpBurst {
		n, err := nb.ReadNonblock(buf)
		if errors.Is(err, syscall.EAGAIN) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read from proxy: %w", err)
		}
		if n > len(buf) {
			f.e.droppedUDP.Add(1) // cut short: never forward part of a datagram
			continue
		}
		if err := f.sendDown(buf[:n]); err != nil {
			return err
		}
	}
	return nil
}

// blockingDown moves proxy → client datagrams for a conn the poller cannot
// watch.
func (f *udpFlow) blockingDown() {
	defer f.releaseRef()
	bp := f.e.getHeldBuf()
	defer f.e.putHeldBuf(bp)
	for {
		n, err := f.conn.Read(*bp)
		if err != nil {
			f.fail("proxy→client", fmt.Errorf("read from proxy: %w", err))
			return
		}
		if n == len(*bp) {
			f.e.droppedUDP.Add(1) // possibly truncated: never forward a cut datagram
			continue
		}
		if err := f.sendDown((*bp)[:n]); err != nil {
			f.fail("proxy→client", err)
			return
		}
	}
}

// sendDown writes one datagram to the client. It is never waited for: if the
// endpoint cannot take it, it is dropped, as a router would.
func (f *udpFlow) sendDown(b []byte) error {
	f.downR.Reset(b)
	if _, terr := f.ep.Write(&f.downR, tcpip.WriteOptions{}); terr != nil {
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			f.e.droppedUDP.Add(1)
			return nil
		}
		return fmt.Errorf("write to client: %s", terr)
	}
	f.e.bytesDown.Add(uint64(len(b)))
	f.idle.touch()
	return nil
}
