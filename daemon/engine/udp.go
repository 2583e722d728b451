package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// udpBurst bounds the datagrams one proxy → client worker moves before it
// re-arms the poller, so that one busy flow does not keep a worker for ever.
const udpBurst = 64

// udpQueueMax bounds the client datagrams a flow queues for its proxy conn
// (while it dials, or while the conn is slow); beyond it they are dropped, as a
// router drops what its queue cannot take.
const udpQueueMax = 64

// tunDevice is the engine's own descriptor of the TUN (a duplicate, so that
// closing it stops the reader without touching the caller's), non-blocking:
// reads wait in the runtime's poller, one packet per read and per write.
type tunDevice struct{ f *os.File }

func newTUNDevice(fd int) (*tunDevice, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate TUN descriptor: %w", err)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("TUN non-blocking: %w", err)
	}
	return &tunDevice{f: os.NewFile(uintptr(nfd), "tun")}, nil
}

func (t *tunDevice) close() { t.f.Close() }

// readTUN reads the TUN until it is closed; a read that fails otherwise (the
// device was deleted) ends the engine's service.
func (e *Engine) readTUN(ctx context.Context, t *tunDevice) {
	buf := make([]byte, e.cfg.MTU)
	for {
		n, err := t.f.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return
			}
			e.readerExited(fmt.Errorf("read TUN: %w", err))
			return
		}
		e.udp.packet(ctx, buf[:n])
	}
}

// udpTable holds the UDP flows by (client, destination).
type udpTable struct {
	e      *Engine
	tun    *tunDevice
	dgrams sync.Pool // *[]byte of the MTU: queued client datagrams

	mu    sync.Mutex
	flows map[flowKey]*udpFlow // guarded by mu

	skipped atomic.Uint64 // packets that were not UDP datagrams
}

func newUDPTable(e *Engine, tun *tunDevice) *udpTable {
	t := &udpTable{e: e, tun: tun, flows: make(map[flowKey]*udpFlow)}
	t.dgrams.New = newBuffer(e.cfg.MTU)
	return t
}

// packet takes one packet the TUN delivered. It runs in the reader's
// goroutine, so it never waits: a new pair is dialled in a goroutine of its
// own, and datagrams queue on their flow.
func (t *udpTable) packet(ctx context.Context, pkt []byte) {
	src, dst, payload, err := parseUDP(pkt)
	if err != nil {
		// Only tunnelled UDP is routed here; anything else (an ICMP error, a TCP
		// packet while the listener's rules were being replaced) is dropped.
		if t.skipped.Add(1) == 1 {
			t.e.log.Debug("TUN packet dropped", "err", err)
		}
		return
	}
	key := flowKey{src: src, dst: dst}
	t.mu.Lock()
	f := t.flows[key]
	t.mu.Unlock()
	if f == nil {
		if f = t.newFlow(ctx, key); f == nil {
			t.e.droppedUDP.Add(1)
			return
		}
	}
	f.enqueue(payload)
}

// newFlow admits a new pair, or returns nil: in back-off after a failed dial,
// over the caps, or shutting down.
func (t *udpTable) newFlow(ctx context.Context, key flowKey) *udpFlow {
	e := t.e
	if e.udpBackoff.blocked(key, time.Now()) {
		return nil
	}
	src := key.src.Addr()
	if !e.memoryAllows() {
		e.rejected.Add(1)
		return nil
	}
	if !e.reserveSlot(src, false) {
		e.rejected.Add(1)
		return nil
	}
	// Bounded like TCP dials: a flood of new pairs must not become as many
	// dials in flight. The datagram is dropped; the next one tries again.
	if !e.startDial(src, &e.udpDialing, true) {
		e.freeSlot(src)
		return nil
	}
	f := &udpFlow{e: e, t: t, src: key.src, dst: key.dst, dialer: e.currentDialer(), done: make(chan struct{})}
	f.idle.touch()
	if !e.admit(f) {
		e.endDial(src, &e.udpDialing)
		e.freeSlot(src)
		return nil
	}
	t.mu.Lock()
	t.flows[key] = f
	t.mu.Unlock()
	e.trackUDP(f)
	go f.dial(ctx)
	return f
}

// forget unbinds f's pair: the next datagram starts a new flow.
func (t *udpTable) forget(f *udpFlow) {
	t.mu.Lock()
	if t.flows[f.key()] == f {
		delete(t.flows, f.key())
	}
	t.mu.Unlock()
}

// write sends one packet into the TUN; one the kernel refuses is dropped.
func (t *udpTable) write(pkt []byte) bool {
	_, err := t.tun.f.Write(pkt)
	return err == nil
}

// udpFlow relays the datagrams of one (client, destination) pair.
//
// It holds no goroutine and no buffer while idle: datagrams from the client
// are queued by the TUN reader and sent by a short worker, datagrams from the
// proxy wake a worker through the engine's poller (for a conn that is a plain
// socket or can say which sockets to watch). A conn that can only be read
// blocking keeps one goroutine and a HeldBufferSize buffer instead.
type udpFlow struct {
	e        *Engine
	t        *udpTable
	src, dst netip.AddrPort
	dialer   Dialer // the dialer when the first datagram came
	idle     idleWatch
	// slotTaken: the flow was evicted and its slot passed to a new flow of the
	// same device, so finish must not give it back.
	slotTaken atomic.Bool

	mu         sync.Mutex
	terminated bool // guarded by mu
	done       chan struct{}
	conn       net.Conn
	attached   bool // conn set; activeUDP counts the flow
	finished   atomic.Bool

	refs     flowRefs
	upBusy   atomic.Bool
	downBusy atomic.Bool
	watch    proxyWatch // the proxy conn's sockets on the poller, when it is polled

	qmu    sync.Mutex
	queue  []datagram // guarded by qmu: client → proxy
	closed bool       // guarded by qmu: nothing is queued any more
}

// datagram is a queued client datagram in a pooled buffer.
type datagram struct {
	b *[]byte
	n int
}

func (f *udpFlow) key() flowKey { return flowKey{src: f.src, dst: f.dst} }

// enqueue queues a copy of payload for the proxy and starts a worker if the
// conn is there.
func (f *udpFlow) enqueue(payload []byte) {
	bp := f.t.dgrams.Get().(*[]byte)
	if len(payload) > len(*bp) {
		f.t.dgrams.Put(bp)
		f.e.droppedUDP.Add(1)
		return
	}
	n := copy(*bp, payload)
	f.qmu.Lock()
	if f.closed || len(f.queue) >= udpQueueMax {
		f.qmu.Unlock()
		f.t.dgrams.Put(bp)
		f.e.droppedUDP.Add(1)
		return
	}
	f.queue = append(f.queue, datagram{bp, n})
	f.qmu.Unlock()
	f.idle.touch()
	f.startUp()
}

// dequeue takes the oldest queued datagram.
func (f *udpFlow) dequeue() (datagram, bool) {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	if len(f.queue) == 0 {
		return datagram{}, false
	}
	d := f.queue[0]
	f.queue[0] = datagram{}
	f.queue = f.queue[1:]
	if len(f.queue) == 0 {
		f.queue = nil // an idle flow keeps no queue
	}
	return d, true
}

func (f *udpFlow) queued() bool {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	return len(f.queue) > 0
}

// dropQueue discards what is queued and refuses more.
func (f *udpFlow) dropQueue() {
	f.qmu.Lock()
	q := f.queue
	f.queue, f.closed = nil, true
	f.qmu.Unlock()
	for _, d := range q {
		f.t.dgrams.Put(d.b)
		f.e.droppedUDP.Add(1)
	}
}

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
	f.mu.Unlock()
	f.t.forget(f)
	f.dropQueue()
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

func (f *udpFlow) lastActive() int64 { return f.idle.last.Load() }

func (f *udpFlow) releaseRef() {
	if f.refs.release() {
		f.finish()
	}
}

// finish runs once: after a failed dial, or when the last reference of an
// attached flow is gone.
func (f *udpFlow) finish() {
	if !f.finished.CompareAndSwap(false, true) {
		return
	}
	f.idle.stop()
	f.watch.stop(f.e)
	if f.attached {
		f.e.activeUDP.Add(-1)
	}
	f.e.untrackUDP(f)
	f.e.release(f)
	if !f.slotTaken.Load() {
		f.e.freeSlot(f.src.Addr())
	}
}

// dial opens the proxy conn, then hands the flow to its events and ends.
func (f *udpFlow) dial(ctx context.Context) {
	e := f.e
	dialCtx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	conn, err := f.dialer.DialUDP(dialCtx, f.dst)
	cancel()
	e.endDial(f.src.Addr(), &e.udpDialing)
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
		f.abort()
		f.finish()
		return
	}
	e.udpBackoff.succeeded(f.key())
	if !f.attach(conn) {
		f.finish() // shut down or evicted while dialling; attach closed the conn
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

// startUp starts a client → proxy worker unless one runs or the conn is not
// there yet. It runs in the TUN reader's goroutine, so it must not block.
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
		// A datagram queued between the queue running dry and this store found
		// the worker busy and did not start one: look again.
		f.upBusy.Store(false)
		if !f.queued() || !f.upBusy.CompareAndSwap(false, true) {
			return
		}
	}
}

// drainUp sends the queued datagrams to the proxy.
func (f *udpFlow) drainUp() error {
	for {
		d, ok := f.dequeue()
		if !ok {
			return nil
		}
		_, err := f.conn.Write((*d.b)[:d.n])
		f.t.dgrams.Put(d.b)
		if err != nil {
			return fmt.Errorf("write to proxy: %w", err)
		}
		f.e.bytesUp.Add(uint64(d.n))
	}
}

// startDown arranges for proxy → client datagrams: through the poller when
// the conn allows, else with a worker that blocks in Read.
func (f *udpFlow) startDown() {
	if f.watch.watch(f.e, &f.mu, f.conn, f.onProxyReadable, "udp", f.src, f.dst) {
		f.onProxyReadable() // what the conn may hold already
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
// burst is done.
func (f *udpFlow) drainDown(nb pollableConn, buf []byte) error {
	for range udpBurst {
		n, err := nb.ReadNonblock(buf[headroom:])
		if errors.Is(err, syscall.EAGAIN) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read from proxy: %w", err)
		}
		if n > len(buf)-headroom {
			f.e.droppedUDP.Add(1) // cut short: never forward part of a datagram
			continue
		}
		f.sendDown(buf, n)
	}
	return nil
}

// blockingDown moves proxy → client datagrams for a conn the poller cannot
// watch.
func (f *udpFlow) blockingDown() {
	defer f.releaseRef()
	bp := f.e.getHeldBuf()
	defer f.e.putHeldBuf(bp)
	buf := *bp
	for {
		n, err := f.conn.Read(buf[headroom:])
		if err != nil {
			f.fail("proxy→client", fmt.Errorf("read from proxy: %w", err))
			return
		}
		if n == len(buf)-headroom {
			f.e.droppedUDP.Add(1) // possibly truncated: never forward a cut datagram
			continue
		}
		f.sendDown(buf, n)
	}
}

// sendDown writes the datagram in buf[headroom:headroom+n] to the client, from
// the destination it was sent to. It is never waited for: what the TUN
// refuses, or what is too large for the client's family, is dropped, as a
// router would.
func (f *udpFlow) sendDown(buf []byte, n int) {
	if n > maxPayload(f.e.cfg.MTU, f.src.Addr().Is6()) {
		f.e.droppedUDP.Add(1)
		return
	}
	pkt := buildUDP(buf, n, f.dst, f.src, uint16(f.e.ipID.Add(1)))
	if !f.t.write(pkt) {
		f.e.droppedUDP.Add(1)
		return
	}
	f.e.bytesDown.Add(uint64(n))
	f.idle.touch()
}
