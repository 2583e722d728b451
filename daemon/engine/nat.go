//go:build engine_nat

package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The engine_nat build keeps TCP on the kernel's stack with a userspace NAT on
// the TUN (what sing-box and clash call the "system" stack), the prototype of
// design (a) of issue 21, measured against tproxy (the default build) and
// gVisor (engine_gvisor):
//
// A client's packet C:cp → T:tp read from the TUN is rewritten to F:np → L:lp
// and written back: L is the TUN's address, where the engine's plain listener
// waits; F, the next address of the TUN's prefix (routed into the TUN by that
// prefix), is the one source of every rewritten flow, np a port allocated per
// flow. The kernel's answers L:lp → F:np come out of the TUN and are rewritten
// back to T:tp → C:cp for the kernel to forward to the client. The listener's
// connection from F:np is relayed as tproxy's: relayTCP(conn, C:cp, T:tp).
//
// The client's SYN is answered at once, as with tproxy: the kernel completes
// the handshake and a failed proxy dial resets the connection (relayTCP), so
// both kernel designs keep one relay and one promise.

const (
	natPortMin = 1024 // NAT ports np are taken from natPortMin..65535, round robin
	// natLinger keeps a closed flow's mapping (FIN both ways, or a RST) for
	// the last ACKs and retransmitted FINs.
	natLinger = 10 * time.Second
	// natSynTimeout forgets a flow whose client never completed the
	// handshake; a later SYN maps it again.
	natSynTimeout = 30 * time.Second
	// natScanEvery bounds how often adding a flow scans the table for idle
	// mappings: no timer runs while nothing happens.
	natScanEvery = 30 * time.Second
)

// natEntry maps one client connection to its NAT port.
type natEntry struct {
	client, target netip.AddrPort
	port           uint16
	acked          bool  // the client sent more than SYNs
	finUp, finDown bool  // FIN seen from the client, from the listener
	closed         int64 // unix ns of the RST or second FIN; 0 while open
	last           int64 // unix ns of the last packet
}

// natTable is the engine_nat build's TCP NAT. Its packet method runs in the
// TUN reader's goroutine only; resolve in the acceptors'.
type natTable struct {
	l4, f4, l6, f6 netip.Addr // listener and NAT source addresses; l6 invalid without IPv6
	lp4, lp6       uint16     // the listener's ports

	e      *Engine
	tun    *tunDevice
	max    int
	idle   time.Duration
	linger time.Duration // natLinger; tests shorten it
	rstBuf [rstLen]byte  // the reader's

	mu       sync.Mutex
	byFlow   map[flowKey]*natEntry // guarded by mu: (client, target) → its latest mapping
	byPort   map[uint16]*natEntry  // guarded by mu: NAT port → mapping
	closing  []*natEntry           // guarded by mu: closed mappings, oldest first
	next     uint16                // guarded by mu: the last NAT port taken
	lastScan int64                 // guarded by mu
	dropped  uint64                // guarded by mu: frames dropped (malformed, unknown flow)
}

var _ tunNAT = (*natTable)(nil)

// ListenNAT opens the engine_nat build's listener: a plain TCP listener on l4
// and, when valid, on l6, which the NAT (started by Run on a TUN with a
// virtio_net_hdr) feeds with the flows it rewrites to come from f4 (f6). The
// sockets bind with IP_FREEBIND, before netcfg gives the TUN those addresses.
func ListenNAT(l4, f4, l6, f6 netip.Addr) (*Listener, error) {
	if !l4.Is4() || !f4.Is4() || l6.IsValid() != f6.IsValid() || (l6.IsValid() && (!l6.Is6() || !f6.Is6())) {
		return nil, fmt.Errorf("engine: NAT addresses %v %v %v %v: want IPv4 pair and optional IPv6 pair", l4, f4, l6, f6)
	}
	v4, err := listenFreebind("tcp4", netip.AddrPortFrom(l4, 0))
	if err != nil {
		return nil, err
	}
	t := &natTable{l4: l4, f4: f4, l6: l6, f6: f6, lp4: uint16(v4.Addr().(*net.TCPAddr).Port),
		byFlow: make(map[flowKey]*natEntry), byPort: make(map[uint16]*natEntry),
		next: natPortMin + uint16(rand.IntN(65536-natPortMin)), linger: natLinger}
	l := &Listener{v4: v4, port: t.lp4, nat: t}
	if l6.IsValid() {
		if l.v6, err = listenFreebind("tcp6", netip.AddrPortFrom(l6, 0)); err != nil {
			v4.Close()
			return nil, err
		}
		t.lp6 = uint16(l.v6.Addr().(*net.TCPAddr).Port)
	}
	return l, nil
}

func listenFreebind(network string, addr netip.AddrPort) (*net.TCPListener, error) {
	lc := net.ListenConfig{
		KeepAlive: -1, // as tproxy's listener: an idle flow costs nothing
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("set IP_FREEBIND: %w", serr)
			}
			return nil
		},
	}
	ln, err := lc.Listen(context.Background(), network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("engine: listen %s: %w", addr, err)
	}
	return ln.(*net.TCPListener), nil
}

func (t *natTable) start(e *Engine, tun *tunDevice) {
	t.e, t.tun = e, tun
	t.max = min(e.cfg.MaxFlows, 65536-natPortMin)
	t.idle = e.cfg.TCPIdleTimeout + time.Minute // the relay resets an idle flow first
}

// packet rewrites one TCP frame and writes it back into the TUN.
func (t *natTable) packet(frame []byte) bool {
	f, err := parseTCPFrame(frame)
	switch {
	case errors.Is(err, errNotTCP):
		return false
	case err != nil:
		t.drop("malformed TCP frame", err)
		return true
	}
	if l, lp := t.listener(f.v6); f.src.Addr() == l && f.src.Port() == lp {
		t.fromListener(&f, frame)
	} else {
		t.fromClient(&f, frame)
	}
	return true
}

// listener is the listener's address and port of a family.
func (t *natTable) listener(v6 bool) (netip.Addr, uint16) {
	if v6 {
		return t.l6, t.lp6
	}
	return t.l4, t.lp4
}

// fromClient rewrites C:cp → T:tp to F:np → L:lp, mapping a new flow on its SYN.
func (t *natTable) fromClient(f *tcpFrame, frame []byte) {
	now := time.Now().UnixNano()
	fam := t.f4
	if f.v6 {
		fam = t.f6
	}
	if !fam.IsValid() {
		t.drop("tcp of a family without a listener", nil)
		return
	}
	key := flowKey{src: f.src, dst: f.dst}
	t.mu.Lock()
	ent := t.byFlow[key]
	if f.flags&(tcpSYN|tcpACK|tcpRST) == tcpSYN && (ent == nil || ent.closed != 0) {
		if ent = t.add(key, now); ent == nil {
			t.mu.Unlock()
			t.e.rejected.Add(1)
			t.e.log.Debug("tcp nat table full, reset", "src", f.src, "dst", f.dst, "max", t.max)
			t.reset(f)
			return
		}
	}
	if ent == nil || (ent.closed != 0 && now-ent.closed > int64(t.linger)) {
		t.dropped++
		t.mu.Unlock()
		if f.flags&tcpRST == 0 {
			t.reset(f) // a flow the NAT does not know (the daemon restarted, say): end it
		}
		return
	}
	ent.last = now
	if f.flags&tcpSYN == 0 {
		ent.acked = true
	}
	switch {
	case f.flags&tcpRST != 0:
		t.close(ent, now)
	case f.flags&tcpFIN != 0:
		ent.finUp = true
		if ent.finDown {
			t.close(ent, now)
		}
	}
	port := ent.port
	t.mu.Unlock()
	l, lp := t.listener(f.v6)
	f.rewrite(netip.AddrPortFrom(fam, port), netip.AddrPortFrom(l, lp))
	t.write(frame[:vnetHdrLen+len(f.ip)])
}

// fromListener rewrites L:lp → F:np back to T:tp → C:cp.
func (t *natTable) fromListener(f *tcpFrame, frame []byte) {
	now := time.Now().UnixNano()
	fam := t.f4
	if f.v6 {
		fam = t.f6
	}
	if f.dst.Addr() != fam {
		t.drop("tcp from the listener to another address", nil)
		return
	}
	t.mu.Lock()
	ent := t.byPort[f.dst.Port()]
	if ent == nil || ent.client.Addr().Is6() != f.v6 {
		t.dropped++
		t.mu.Unlock()
		if f.flags&tcpRST == 0 {
			t.reset(f) // end the listener's side of a flow the NAT forgot
		}
		return
	}
	ent.last = now
	switch {
	case f.flags&tcpRST != 0:
		t.close(ent, now)
	case f.flags&tcpFIN != 0:
		ent.finDown = true
		if ent.finUp {
			t.close(ent, now)
		}
	}
	client, target := ent.client, ent.target
	t.mu.Unlock()
	f.rewrite(target, client)
	t.write(frame[:vnetHdrLen+len(f.ip)])
}

// add maps a new flow, or returns nil when the table is full of open flows.
// Called with mu held.
func (t *natTable) add(key flowKey, now int64) *natEntry {
	t.expire(now, false)
	if len(t.byPort) >= t.max {
		t.expire(now, true)
		if len(t.byPort) >= t.max {
			return nil
		}
	}
	for { // terminates: fewer than 65536-natPortMin ports are taken
		t.next++
		if t.next < natPortMin {
			t.next = natPortMin
		}
		if t.byPort[t.next] == nil {
			break
		}
	}
	ent := &natEntry{client: key.src, target: key.dst, port: t.next, last: now}
	if old := t.byFlow[key]; old != nil && old.closed == 0 {
		t.close(old, now) // unreachable (a SYN maps anew only a closed flow); kept safe
	}
	t.byFlow[key] = ent
	t.byPort[ent.port] = ent
	return ent
}

// close marks a mapping closed; it lingers for natLinger. Called with mu held.
func (t *natTable) close(ent *natEntry, now int64) {
	if ent.closed == 0 {
		ent.closed = now
		t.closing = append(t.closing, ent)
	}
}

// expire forgets closed mappings past their linger (all of them with force) and,
// every natScanEvery or with force, open ones idle too long. Called with mu held.
func (t *natTable) expire(now int64, force bool) {
	n := 0
	for _, ent := range t.closing {
		if !force && now-ent.closed < int64(t.linger) {
			break
		}
		t.forget(ent)
		n++
	}
	if n > 0 {
		clear(t.closing[:n])
		t.closing = t.closing[n:]
		if len(t.closing) == 0 {
			t.closing = nil
		}
	}
	if !force && now-t.lastScan < int64(natScanEvery) {
		return
	}
	t.lastScan = now
	for _, ent := range t.byPort {
		if ent.closed != 0 {
			continue
		}
		idle := now - ent.last
		if idle > int64(t.idle) || (!ent.acked && idle > int64(natSynTimeout)) {
			t.forget(ent)
		}
	}
}

// forget removes a mapping. Called with mu held.
func (t *natTable) forget(ent *natEntry) {
	if t.byPort[ent.port] == ent {
		delete(t.byPort, ent.port)
	}
	key := flowKey{src: ent.client, dst: ent.target}
	if t.byFlow[key] == ent {
		delete(t.byFlow, key)
	}
}

// resolve is the client and target of a connection the listener accepted
// from F:np, while its mapping is open.
func (t *natTable) resolve(c *net.TCPConn) (src, dst netip.AddrPort, ok bool) {
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	if !rok {
		return src, dst, false
	}
	from := ra.AddrPort()
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if from.Addr() != t.f4 && (!t.f6.IsValid() || from.Addr() != t.f6) {
		return src, dst, false // not from the NAT: a connection made to the listener itself
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ent := t.byPort[from.Port()]
	if ent == nil || ent.closed != 0 || ent.client.Addr().Is6() != from.Addr().Is6() {
		return src, dst, false
	}
	return ent.client, ent.target, true
}

// reset answers f with a RST, written into the TUN.
func (t *natTable) reset(f *tcpFrame) {
	t.write(buildRST(t.rstBuf[:], f))
}

// write sends a frame into the TUN; what the kernel refuses is dropped, as a
// router drops.
func (t *natTable) write(frame []byte) {
	if _, err := t.tun.f.Write(frame); err != nil {
		t.mu.Lock()
		t.dropped++
		first := t.dropped == 1
		t.mu.Unlock()
		if first {
			t.e.log.Debug("TUN refused a TCP frame", "err", err)
		}
	}
}

func (t *natTable) drop(why string, err error) {
	t.mu.Lock()
	t.dropped++
	first := t.dropped == 1
	t.mu.Unlock()
	if first {
		t.e.log.Debug("TUN frame dropped", "why", why, "err", err)
	}
}
