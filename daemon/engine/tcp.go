package engine

import (
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
)

// acceptLoop hands every connection ln accepts to relayTCP until ln is closed.
// A failed accept (EMFILE, ENFILE, ENOBUFS) is retried with a growing pause: the
// client's connection waits in the kernel's queue meanwhile.
func (e *Engine) acceptLoop(ctx context.Context, ln *net.TCPListener) {
	var delay time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			e.log.Warn("accept a TCP connection", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			continue
		}
		delay = 0
		src, dst, ok := captured(c)
		if !ok {
			e.log.Debug("tcp connection to the listener itself, not from tproxy: reset", "local", c.LocalAddr(), "remote", c.RemoteAddr())
			resetConn(c)
			continue
		}
		e.relayTCP(c, src, dst)
	}
}

// resetConn closes c with a RST, not a FIN: the client learns at once that
// nothing is behind the connection, as from a refused one.
func resetConn(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// relayTCP admits a connection from src to dst that tproxy handed over and dials
// the proxy for it.
//
// The kernel completed the client's handshake before the engine saw anything,
// so a connection the proxy cannot take is reset as soon as that is known: a
// refused or failed dial within milliseconds, a timed-out one at DialTimeout.
// Apps then fail over (Telegram tries its next data centre) instead of writing
// into a connection that never answers. What the client sent meanwhile waits in
// the kernel's receive buffer and goes nowhere else.
func (e *Engine) relayTCP(c *net.TCPConn, src, dst netip.AddrPort) {
	if !e.memoryAllows() {
		e.rejected.Add(1)
		e.log.Debug("tcp flow over the memory budget, reset", "src", src, "dst", dst)
		resetConn(c)
		return
	}
	if !e.reserveSlot(src.Addr(), true) {
		e.rejected.Add(1)
		e.log.Debug("tcp flow over cap, reset", "src", src, "dst", dst, "max_flows", e.cfg.MaxFlows)
		resetConn(c)
		return
	}
	// The dialer of the moment the connection came: a flow accepted before SetDialer
	// dials through the old one even if its dial starts later (it may wait for a slot).
	f := &tcpFlow{e: e, src: src, dst: dst, client: c, dialer: e.currentDialer(), done: make(chan struct{})}
	f.idle.touch()
	if !e.admit(f) {
		e.freeSlot(src.Addr())
		resetConn(c)
		return
	}
	e.dialTCP(f)
}

// tcpFlow relays one TCP connection: the client's kernel socket ⇄ proxy conn.
//
// No goroutine waits on an idle flow. Readability of the client's socket and of
// the proxy's sockets comes from the engine's poller; either starts a
// short-lived worker that moves what is there and re-arms. A plain proxy
// socket is spliced both ways (kernel to kernel, through a borrowed pipe);
// other conns are copied through a pooled buffer; a conn that cannot be polled
// gets a worker that blocks in Read for the flow's life.
type tcpFlow struct {
	e        *Engine
	src, dst netip.AddrPort
	client   *net.TCPConn
	dialer   Dialer
	idle     idleWatch

	mu         sync.Mutex
	terminated bool // guarded by mu
	done       chan struct{}
	conn       net.Conn // the proxy conn, once attached

	// Set by start, before any worker runs.
	clientRaw syscall.RawConn
	clientNB  *plainSocket
	proxyRaw  syscall.RawConn // the proxy conn's socket when it is a plain one
	spliced   atomic.Bool     // proxyRaw is moved with splice (until the kernel refuses)
	direct    atomic.Bool     // proxyRaw was taken from a conn that turned into its socket
	upToken   uint32          // the client socket's poller token
	polled    bool            // upToken is registered

	refs flowRefs
	// upBusy (downBusy) is set while a worker copies client → proxy (proxy → client),
	// and for good once that direction has ended.
	upBusy, downBusy atomic.Bool
	// halves counts directions that have passed their EOF on; at two the flow closes.
	halves atomic.Int32
	watch  proxyWatch // the proxy conn's sockets on the poller, when it is polled
}

// dial opens the proxy conn, then hands the flow to its events and ends.
func (f *tcpFlow) dial(ctx context.Context) {
	e := f.e
	dialCtx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	conn, err := f.dialer.DialTCP(dialCtx, f.dst)
	cancel()
	e.endDial(f.src.Addr(), &e.tcpDialing)
	if err != nil {
		e.rejected.Add(1)
		e.log.Debug("tcp dial through proxy failed, reset", "src", f.src, "dst", f.dst, "err", err)
		f.abort()
		f.giveUp()
		return
	}
	if !f.attach(conn) {
		f.giveUp() // shut down or reset while dialling; attach closed the conn
		return
	}
	e.activeTCP.Add(1)
	e.totalTCP.Add(1)
	f.start()
}

// giveUp releases what relayTCP took for a flow that never got its proxy conn.
func (f *tcpFlow) giveUp() {
	f.e.release(f)
	f.e.freeSlot(f.src.Addr())
}

func (f *tcpFlow) attach(conn net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminated {
		conn.Close()
		return false
	}
	f.conn = conn
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
	raw, err := f.client.SyscallConn()
	if err != nil {
		f.fail("client→proxy", fmt.Errorf("client socket: %w", err))
		return
	}
	f.clientRaw, f.clientNB = raw, &plainSocket{raw: raw, stream: true}
	if tc, ok := f.conn.(*net.TCPConn); ok {
		if f.proxyRaw, err = tc.SyscallConn(); err == nil {
			f.spliced.Store(true)
		}
	}
	f.mu.Lock()
	f.upToken, f.polled = f.e.poller.register(f.onClientReadable), true
	err = f.e.poller.arm(raw, f.upToken, true)
	f.mu.Unlock()
	if err != nil {
		f.fail("client→proxy", err)
		return
	}
	f.startDown()
}

// finish runs once, when the flow is terminated and its last worker is done.
func (f *tcpFlow) finish() {
	f.idle.stop()
	if f.polled {
		f.e.poller.unregister(f.upToken)
	}
	f.watch.stop(f.e)
	f.e.activeTCP.Add(-1)
	f.e.release(f)
	f.e.freeSlot(f.src.Addr())
}

func (f *tcpFlow) acquire() bool { return f.refs.acquire() }

func (f *tcpFlow) lastActive() int64 { return f.idle.last.Load() }

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
	if abort {
		f.client.SetLinger(0)
	}
	f.client.Close()
	attached := f.conn != nil
	if attached {
		f.conn.Close()
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

// onClientReadable runs in the poller's goroutine: the client sent data or its FIN.
func (f *tcpFlow) onClientReadable() {
	if f.refs.claim(&f.upBusy) {
		go f.runUp()
	}
}

func (f *tcpFlow) runUp() {
	defer f.releaseRef()
	eof, err := f.pumpUp()
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
	f.upBusy.Store(false)
	if err := f.rearmClient(); err != nil {
		f.fail("client→proxy", err)
	}
}

// rearmClient arms the client socket for its next readable event, unless the
// flow is terminated (its socket may be closed).
func (f *tcpFlow) rearmClient() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminated {
		return nil
	}
	return f.e.poller.arm(f.clientRaw, f.upToken, false)
}

// directConn is a proxy conn that turns into its TCP socket mid-flow (XTLS Vision
// once both directions are direct and nothing is buffered above the socket).
type directConn interface{ DirectTCP() *net.TCPConn }

// takeDirect switches the flow to splicing once its conn has turned into its socket.
func (f *tcpFlow) takeDirect() {
	if f.spliced.Load() || f.direct.Load() {
		return
	}
	dc, ok := f.conn.(directConn)
	if !ok {
		return
	}
	tc := dc.DirectTCP()
	if tc == nil || !f.direct.CompareAndSwap(false, true) {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	f.proxyRaw = raw // before spliced: a worker that sees spliced set sees proxyRaw
	f.spliced.Store(true)
	f.e.log.Debug("tcp flow now direct: spliced", "src", f.src, "dst", f.dst)
}

// pumpUp moves what the client sent, without waiting for more.
func (f *tcpFlow) pumpUp() (eof bool, err error) {
	f.takeDirect()
	up := func(n int) {
		f.e.bytesUp.Add(uint64(n))
		f.idle.touch()
	}
	if f.spliced.Load() {
		eof, err := f.splice(f.clientRaw, f.proxyRaw, up)
		if !errors.Is(err, errSpliceUnsupported) {
			return eof, err
		}
	}
	bp := f.e.getBuf()
	defer f.e.putBuf(bp)
	for {
		n, err := f.clientNB.ReadNonblock(*bp)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return false, nil
		case errors.Is(err, io.EOF):
			return true, nil
		case err != nil:
			return false, fmt.Errorf("read from client: %w", err)
		}
		if _, err := f.conn.Write((*bp)[:n]); err != nil {
			return false, fmt.Errorf("write to proxy: %w", err)
		}
		up(n)
	}
}

// splice moves src → dst with a borrowed pipe; errSpliceUnsupported turns the
// flow to copying for good.
func (f *tcpFlow) splice(src, dst syscall.RawConn, moved func(int)) (eof bool, err error) {
	p, err := f.e.pipes.get()
	if err != nil {
		// Out of descriptors, say: copy this time, splice again next time.
		f.e.log.Debug("no pipe for splice, copying", "src", f.src, "dst", f.dst, "err", err)
		return false, errSpliceUnsupported
	}
	eof, err = splicePump(src, dst, p, moved)
	f.e.pipes.put(p)
	if errors.Is(err, errSpliceUnsupported) {
		f.spliced.Store(false)
	}
	return eof, err
}

// startDown arranges for proxy → client copies: through the poller when the
// conn allows, else with a worker that blocks in Read.
func (f *tcpFlow) startDown() {
	if f.watch.watch(f.e, &f.mu, f.conn, f.onProxyReadable, "tcp", f.src, f.dst) {
		// A conn that decrypts may hold data already (read with its handshake), which
		// no socket event will announce: look once now.
		f.onProxyReadable()
		return
	}
	if f.acquire() {
		go f.blockingDown()
	}
}

// onProxyReadable runs in the poller's goroutine (and once from startDown).
func (f *tcpFlow) onProxyReadable() {
	if f.refs.claim(&f.downBusy) {
		go f.runDown()
	}
}

// runDown moves what the proxy conn has, without waiting for more, and
// re-arms the poller: the worker never parks holding a buffer or a pipe on an
// empty socket.
func (f *tcpFlow) runDown() {
	defer f.releaseRef()
	if f.downOver(f.pumpDown()) {
		return // downBusy stays set: no more workers for this direction
	}
	f.downBusy.Store(false)
	if err := f.watch.rearm(f.e, &f.mu, &f.terminated); err != nil {
		f.fail("proxy→client", err)
	}
}

func (f *tcpFlow) pumpDown() (eof bool, err error) {
	f.takeDirect()
	down := func(n int) {
		f.e.bytesDown.Add(uint64(n))
		f.idle.touch()
	}
	if f.spliced.Load() {
		eof, err := f.splice(f.proxyRaw, f.clientRaw, down)
		if !errors.Is(err, errSpliceUnsupported) {
			return eof, err
		}
	}
	nb := f.watch.conn(&f.mu)
	bp := f.e.getBuf()
	defer f.e.putBuf(bp)
	for {
		n, err := nb.ReadNonblock(*bp)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return false, nil
		case errors.Is(err, io.EOF):
			return true, nil
		case err != nil:
			return false, fmt.Errorf("read from proxy: %w", err)
		}
		if _, err := f.client.Write((*bp)[:n]); err != nil {
			return false, fmt.Errorf("write to client: %w", err)
		}
		down(n)
	}
}

// blockingDown copies proxy → client for a conn the poller cannot watch.
func (f *tcpFlow) blockingDown() {
	defer f.releaseRef()
	bp := f.e.getHeldBuf()
	defer f.e.putHeldBuf(bp)
	for {
		n, err := f.conn.Read(*bp)
		if n > 0 {
			if _, werr := f.client.Write((*bp)[:n]); werr != nil {
				f.fail("proxy→client", fmt.Errorf("write to client: %w", werr))
				return
			}
			f.e.bytesDown.Add(uint64(n))
			f.idle.touch()
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				f.downOver(true, nil)
			} else {
				f.downOver(false, fmt.Errorf("read from proxy: %w", err))
			}
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
		if err := f.client.CloseWrite(); err != nil {
			f.fail("proxy→client", fmt.Errorf("half-close client: %w", err))
			return true
		}
		f.halfClosed()
	default:
		return false
	}
	return true
}
