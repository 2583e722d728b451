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
	"syscall"

	"golang.org/x/sys/unix"
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
	if !e.reserveSlot() {
		e.rejected.Add(1)
		e.log.Debug("tcp flow over cap, reset", "src", src, "dst", dst, "max_flows", e.cfg.MaxFlows)
		r.Complete(true)
		return
	}
	defer e.freeSlot()
	f := &tcpFlow{e: e, src: src, dst: dst, done: make(chan struct{})}
	if !e.admit(f) {
		r.Complete(true)
		return
	}
	defer e.release(f)

	dialCtx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	conn, err := e.currentDialer().DialTCP(dialCtx, dst)
	cancel()
	if err != nil {
		e.rejected.Add(1)
		e.log.Debug("tcp dial through proxy failed, reset", "src", src, "dst", dst, "err", err)
		r.Complete(true)
		return
	}
	ep, terr := r.CreateEndpoint(&f.wq)
	if terr != nil {
		// The client gave up (or reset) while we were dialling.
		conn.Close()
		r.Complete(true)
		e.log.Debug("tcp handshake with client failed", "src", src, "dst", dst, "err", terr)
		return
	}
	r.Complete(false)
	if !f.attach(conn, ep) {
		return // shut down while dialling; attach closed both ends
	}
	e.activeTCP.Add(1)
	e.totalTCP.Add(1)
	defer e.activeTCP.Add(-1)
	f.relay()
}

// tcpFlow relays one TCP connection: netstack endpoint ⇄ proxy conn.
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
	return true
}

func (f *tcpFlow) abort() { f.terminate(true) }

// terminate closes both ends once; abort resets the client instead of a FIN.
func (f *tcpFlow) terminate(abort bool) {
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
	if f.ep != nil {
		if abort {
			f.ep.Abort()
		} else {
			f.ep.Close()
		}
	}
}

// relay copies both directions until both have seen EOF, one fails, or the
// flow is idle for TCPIdleTimeout. An EOF is passed on as a half-close, so a
// client that shuts its write side still receives the rest of the response.
func (f *tcpFlow) relay() {
	f.idle.start(f.e.cfg.TCPIdleTimeout, f.done, func() {
		f.e.log.Debug("tcp flow idle, reset", "src", f.src, "dst", f.dst)
		f.abort()
	})
	defer f.idle.stop()

	var up sync.WaitGroup
	up.Go(func() {
		if err := f.pumpUp(); err != nil {
			f.fail("client→proxy", err)
		}
	})
	if err := f.pumpDown(); err != nil {
		f.fail("proxy→client", err)
	}
	up.Wait()
	f.terminate(false)
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

// pumpUp copies client → proxy. It borrows a buffer only while the
// endpoint has data, so an idle flow holds a single pooled buffer (the one
// pumpDown blocks on) rather than two.
func (f *tcpFlow) pumpUp() error {
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	f.wq.EventRegister(&entry)
	defer f.wq.EventUnregister(&entry)
	for {
		if !waitReadable(f.ep, ready, f.done) {
			return errFlowClosed
		}
		eof, err := f.drainUp()
		if err != nil {
			return err
		}
		if eof {
			// Client FIN: pass the half-close on. A conn that cannot
			// half-close keeps going until the proxy side ends or idles.
			if cw, ok := f.conn.(interface{ CloseWrite() error }); ok {
				if err := cw.CloseWrite(); err != nil {
					return fmt.Errorf("half-close proxy conn: %w", err)
				}
			}
			return nil
		}
	}
}

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

// pumpDown copies proxy → client.
func (f *tcpFlow) pumpDown() error {
	entry, writable := waiter.NewChannelEntry(waiter.WritableEvents)
	f.wq.EventRegister(&entry)
	defer f.wq.EventUnregister(&entry)
	for {
		// An idle flow waits here without a buffer: most flows are idle most of the
		// time (a messenger keeps connections open for pushes), and a 16 KiB buffer
		// parked in Read on each was half of the memory 1000 idle flows cost.
		waitConnReadable(f.conn)
		bp := f.e.getBuf()
		eof, err := f.pumpDownBurst(*bp, writable)
		f.e.putBuf(bp)
		if err != nil {
			return err
		}
		if eof {
			// Proxy side finished: FIN to the client, keep reading from it.
			f.ep.Shutdown(tcpip.ShutdownWrite)
			return nil
		}
	}
}

// pumpDownBurst copies while the proxy conn fills the buffer, and returns after a short
// read, when the conn is likely drained, so the buffer goes back to the pool.
func (f *tcpFlow) pumpDownBurst(buf []byte, writable <-chan struct{}) (eof bool, err error) {
	for {
		n, err := f.conn.Read(buf)
		if n > 0 {
			if werr := f.writeClient(buf[:n], writable); werr != nil {
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

// waitConnReadable parks until c has something to read (data, EOF or an error) without
// holding a buffer, through the runtime's poller. Conns that are not plain sockets
// (a decrypting Shadowsocks stream, a buffered HTTP reply) return at once and are read
// with a buffer as before.
func waitConnReadable(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		// Look without taking: the poller's readiness was reset when this wait began,
		// so data that arrived before it would never wake it; a peek sees it. Any
		// answer but "would block" (data, EOF, an error) ends the wait, and the
		// reading is left to c.Read.
		var one [1]byte
		_, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN
	})
}

// writeClient writes all of b into the endpoint, waiting for send-buffer
// space (that wait is the back-pressure on the proxy conn).
func (f *tcpFlow) writeClient(b []byte, writable <-chan struct{}) error {
	for written := 0; written < len(b); {
		f.downR.Reset(b[written:])
		n, terr := f.ep.Write(&f.downR, tcpip.WriteOptions{})
		written += int(n)
		switch terr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			select {
			case <-writable:
			case <-f.done:
				return errFlowClosed
			}
		default:
			return fmt.Errorf("write to client: %s", terr)
		}
	}
	return nil
}
