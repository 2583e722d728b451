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

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// handleTCP runs in its own goroutine (started by the forwarder) for every
// new SYN.
//
// The proxy is dialled BEFORE the handshake with the client completes. The
// client then only sees an established connection when there is something
// at the other end: if the proxy or the messenger is unreachable it gets a
// RST (ECONNREFUSED) at once, and apps fail over (Telegram tries its next
// data centre) instead of writing into a connection that will never answer
// and waiting for their own timeouts. While we dial, the client's SYN
// retransmits are absorbed by the forwarder (one request per 4-tuple).
func (e *Engine) handleTCP(ctx context.Context, r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := addrPort(id.LocalAddress, id.LocalPort)
	src := addrPort(id.RemoteAddress, id.RemotePort)
	if !e.reserveSlot(src.Addr()) {
		e.rejected.Add(1)
		e.log.Debug("tcp flow over cap, reset", "src", src, "dst", dst, "max_flows", e.cfg.MaxFlows)
		r.Complete(true)
		return
	}
	if !e.startDial(src.Addr()) {
		e.rejected.Add(1)
		e.freeSlot(src.Addr())
		r.Complete(true)
		return
	}
	f := &tcpFlow{e: e, src: src, dst: dst, done: make(chan struct{})}
	if !e.admit(f) {
		e.endDial(src.Addr())
		e.freeSlot(src.Addr())
		r.Complete(true)
		return
	}
	// Until attach hands the flow to its events, this goroutine owns the slot
	// and the registration.
	giveUp := func() {
		e.release(f)
		e.freeSlot(src.Addr())
	}

	dialCtx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	conn, err := e.currentDialer().DialTCP(dialCtx, dst)
	cancel()
	e.endDial(src.Addr())
	if err != nil {
		e.rejected.Add(1)
		e.log.Debug("tcp dial through proxy failed, reset", "src", src, "dst", dst, "err", err)
		r.Complete(true)
		giveUp()
		return
	}
	ep, terr := r.CreateEndpoint(&f.wq)
	if terr != nil {
		// The client gave up (or reset) while we were dialling.
		conn.Close()
		r.Complete(true)
		e.log.Debug("tcp handshake with client failed", "src", src, "dst", dst, "err", terr)
		giveUp()
		return
	}
	r.Complete(false)
	if !f.attach(conn, ep) {
		giveUp() // shut down while dialling; attach closed both ends
		return
	}
	e.activeTCP.Add(1)
	e.totalTCP.Add(1)
	f.start()
}

// tcpFlow relays one TCP connection: netstack endpoint ⇄ proxy conn.
//
// No goroutine waits on an idle flow. Data from the client wakes the flow
// through the endpoint's waiter queue, data from the proxy through the engine's
// readPoller; either starts a short-lived worker that copies what is there with
// a pooled buffer and ends. A conn that is not a plain socket (a decrypting
// Shadowsocks stream, a buffered HTTP reply) cannot be polled and gets a worker
// that blocks in Read for the flow's life instead.
type tcpFlow struct {
	e        *Engine
	src, dst netip.AddrPort
	wq       waiter.Queue
	idle     idleWatch

	mu         sync.Mutex
	terminated bool // guarded by mu
	done       chan struct{}
	conn       net.Conn
	ep         tcpip.Endpoint

	refs flowRefs
	// upBusy is set while a worker copies client → proxy, and for good once that
	// direction has ended.
	upBusy atomic.Bool
	// halves counts directions that have passed their EOF on; at two the flow closes.
	halves     atomic.Int32
	readable   waiter.Entry // calls startUp
	writable   waiter.Entry
	writableCh chan struct{}
	watch      proxyWatch // the proxy conn's sockets on the poller, when it is polled

	// Reused per flow so that the relay path does not allocate.
	upW   tcpip.SliceWriter
	downR bytes.Reader
}

func (f *tcpFlow) attach(conn net.Conn, ep tcpip.Endpoint) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminated {
		conn.Close()
		ep.Abort()
		return false
	}
	f.conn, f.ep = conn, ep
	f.refs.Store(1)
	return true
}

// start hooks the flow to its events; from here on they drive it.
func (f *tcpFlow) start() {
	// Holding a reference keeps finish, which undoes all of this, from running
	// halfway through it.
	if !f.acquire() {
		return
	}
	defer f.releaseRef()
	f.idle.start(f.e.cfg.TCPIdleTimeout, f.done, func() {
		f.e.log.Debug("tcp flow idle, reset", "src", f.src, "dst", f.dst)
		f.abort()
	})
	f.writable, f.writableCh = waiter.NewChannelEntry(waiter.WritableEvents)
	f.wq.EventRegister(&f.writable)
	f.readable = waiter.NewFunctionEntry(waiter.ReadableEvents, func(waiter.EventMask) { f.startUp() })
	f.wq.EventRegister(&f.readable)
	f.startUp() // for data that arrived before the entry was registered
	f.startDown()
}

// finish runs once, when the flow is terminated and its last worker is done.
func (f *tcpFlow) finish() {
	f.idle.stop()
	f.wq.EventUnregister(&f.readable)
	f.wq.EventUnregister(&f.writable)
	f.watch.stop(f.e)
	f.e.activeTCP.Add(-1)
	f.e.release(f)
	f.e.freeSlot(f.src.Addr())
}

func (f *tcpFlow) acquire() bool { return f.refs.acquire() }

func (f *tcpFlow) releaseRef() {
	if f.refs.release() {
		f.finish()
	}
}

func (f *tcpFlow) abort() { f.terminate(true) }

// terminate closes both ends once; abort resets the client instead of a FIN.
func (f *tcpFlow) terminate(abort bool) {
	f.mu.Lock()
	if f.terminated {
		f.mu.Unlock()
		return
	}
	f.terminated = true
	close(f.done)
	attached := f.conn != nil
	if attached {
		f.conn.Close()
		if abort {
			f.ep.Abort()
		} else {
			f.ep.Close()
		}
	}
	f.mu.Unlock()
	if attached {
		f.releaseRef() // attach's reference
	}
}

// halfClosed notes that one direction has passed its EOF on. Once both have,
// the flow closes; until then a client that shut its write side still
// receives the rest of the response.
func (f *tcpFlow) halfClosed() {
	if f.halves.Add(1) == 2 {
		f.terminate(false)
	}
}

// fail logs why a direction broke, unless the flow was torn down on purpose
// (which makes the other direction fail too), and resets the flow.
func (f *tcpFlow) fail(dir string, err error) {
	select {
	case <-f.done:
	default:
		f.e.log.Debug("tcp relay failed", "src", f.src, "dst", f.dst, "dir", dir, "err", err)
	}
	f.abort()
}

// startUp starts a client → proxy worker unless one runs or that direction is over.
// It is called by the endpoint's waiter queue, so it must not block.
func (f *tcpFlow) startUp() {
	if f.refs.claim(&f.upBusy) {
		go f.runUp()
	}
}

func (f *tcpFlow) runUp() {
	defer f.releaseRef()
	for {
		eof, err := f.drainUp()
		if err != nil {
			f.fail("client→proxy", err)
			return // upBusy stays set: no more workers for this direction
		}
		if eof {
			// Client FIN: pass the half-close on. A conn that cannot
			// half-close keeps going until the proxy side ends or idles.
			if cw, ok := f.conn.(interface{ CloseWrite() error }); ok {
				if err := cw.CloseWrite(); err != nil {
					f.fail("client→proxy", fmt.Errorf("half-close proxy conn: %w", err))
					return
				}
			}
			f.halfClosed()
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

// drainUp copies client → proxy until the endpoint has nothing more to read.
func (f *tcpFlow) drainUp() (eof bool, err error) {
	bp := f.e.getBuf()
	defer f.e.putBuf(bp)
	for {
		f.upW = tcpip.SliceWriter(*bp)
		res, terr := f.ep.Read(&f.upW, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			return false, nil
		case *tcpip.ErrClosedForReceive:
			return true, nil
		default:
			return false, fmt.Errorf("read from client: %s", terr)
		}
		// Feeds receive-buffer auto-tuning, as gonet does on every Read.
		f.ep.ModerateRecvBuf(res.Count)
		if _, err := f.conn.Write((*bp)[:res.Count]); err != nil {
			return false, fmt.Errorf("write to proxy: %w", err)
		}
		f.e.bytesUp.Add(uint64(res.Count))
		f.idle.touch()
	}
}

// startDown arranges for proxy → client copies: through the poller when the
// conn allows, else with a worker that blocks in Read.
func (f *tcpFlow) startDown() {
	if f.watch.watch(f.e, &f.mu, f.conn, f.onProxyReadable, "tcp", f.src, f.dst) {
		return
	}
	if f.acquire() {
		go f.blockingDown()
	}
}

// onProxyReadable runs in the poller's goroutine.
func (f *tcpFlow) onProxyReadable() {
	if f.acquire() {
		go f.runDown()
	}
}

// runDown copies what the proxy conn has, without waiting for more, and
// re-arms the poller: the worker never parks holding its buffer, not even
// after a burst that filled the buffer exactly.
func (f *tcpFlow) runDown() {
	defer f.releaseRef()
	bp := f.e.getBuf()
	eof, err := f.pumpDownNonblock(f.watch.conn(&f.mu), *bp)
	f.e.putBuf(bp)
	if f.downOver(eof, err) {
		return
	}
	if err := f.watch.rearm(f.e, &f.mu, &f.terminated); err != nil {
		f.fail("proxy→client", err)
	}
}

// pumpDownNonblock copies until the conn has nothing more (EAGAIN).
func (f *tcpFlow) pumpDownNonblock(nb pollableConn, buf []byte) (eof bool, err error) {
	for {
		n, err := nb.ReadNonblock(buf)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return false, nil
		case errors.Is(err, io.EOF):
			return true, nil
		case err != nil:
			return false, fmt.Errorf("read from proxy: %w", err)
		}
		if werr := f.writeClient(buf[:n]); werr != nil {
			return false, werr
		}
		f.e.bytesDown.Add(uint64(n))
		f.idle.touch()
	}
}

// blockingDown copies proxy → client for a conn the poller cannot watch.
func (f *tcpFlow) blockingDown() {
	defer f.releaseRef()
	bp := f.e.getHeldBuf()
	defer f.e.putHeldBuf(bp)
	for {
		if f.downOver(f.pumpDownBurst(*bp)) {
			return
		}
	}
}

// downOver settles how a proxy → client burst ended and reports whether that
// direction is over: on an error the flow is reset; on EOF the proxy side's FIN
// goes on to the client, which may keep sending.
func (f *tcpFlow) downOver(eof bool, err error) bool {
	switch {
	case err != nil:
		f.fail("proxy→client", err)
	case eof:
		f.ep.Shutdown(tcpip.ShutdownWrite)
		f.halfClosed()
	default:
		return false
	}
	return true
}

// pumpDownBurst copies while the proxy conn fills the buffer, and returns after a short
// read, when the conn is likely drained, so the buffer goes back to the pool.
func (f *tcpFlow) pumpDownBurst(buf []byte) (eof bool, err error) {
	for {
		n, err := f.conn.Read(buf)
		if n > 0 {
			if werr := f.writeClient(buf[:n]); werr != nil {
				return false, werr
			}
			f.e.bytesDown.Add(uint64(n))
			f.idle.touch()
		}
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("read from proxy: %w", err)
		}
		if n < len(buf) {
			return false, nil
		}
	}
}

// writeClient writes all of b into the endpoint, waiting for send-buffer
// space (that wait is the back-pressure on the proxy conn).
func (f *tcpFlow) writeClient(b []byte) error {
	for written := 0; written < len(b); {
		f.downR.Reset(b[written:])
		n, terr := f.ep.Write(&f.downR, tcpip.WriteOptions{})
		written += int(n)
		switch terr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			select {
			case <-f.writableCh:
			case <-f.done:
				return errFlowClosed
			}
		default:
			return fmt.Errorf("write to client: %s", terr)
		}
	}
	return nil
}
