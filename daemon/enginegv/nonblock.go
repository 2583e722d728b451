package enginegv

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollableConn is a proxy conn whose pending data shows as readability of
// its sockets, so that the engine's poller, not a parked goroutine, waits for
// it. The proxy package's SOCKS5 and Shadowsocks UDP conns implement it; a
// plain TCP or UDP socket gets plainSocket.
type pollableConn interface {
	// RawConns are the sockets to watch.
	RawConns() ([]syscall.RawConn, error)
	// ReadNonblock reads what is there without waiting: an error wrapping
	// syscall.EAGAIN means nothing is, io.EOF that the stream (or the
	// association) ended. For datagrams n > len(p) means one was cut short.
	ReadNonblock(p []byte) (int, error)
}

// asPollable returns a pollable view of conn, or nil when only a blocking
// Read can tell that it has data. Only the exact socket types count as plain:
// a wrapper that embeds one but reads differently must implement
// pollableConn itself.
func asPollable(conn net.Conn) pollableConn {
	var sc syscall.Conn
	stream := false
	switch c := conn.(type) {
	case pollableConn:
		return c
	case *net.TCPConn:
		sc, stream = c, true
	case *net.UDPConn:
		sc = c
	default:
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &plainSocket{raw: raw, stream: stream}
}

// plainSocket reads a socket without waiting.
type plainSocket struct {
	raw    syscall.RawConn
	stream bool
}

func (s *plainSocket) RawConns() ([]syscall.RawConn, error) { return []syscall.RawConn{s.raw}, nil }

func (s *plainSocket) ReadNonblock(p []byte) (int, error) {
	var n int
	var rerr error
	err := s.raw.Read(func(fd uintptr) bool {
		for {
			if s.stream {
				n, rerr = unix.Read(int(fd), p)
			} else {
				n, _, rerr = unix.Recvfrom(int(fd), p, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			}
			if rerr != unix.EINTR {
				return true // never wait in the runtime's poller: ours does
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case s.stream && n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// flowKey is a UDP flow's (client, destination) pair.
type flowKey struct{ src, dst netip.AddrPort }

// dialBackoff remembers pairs whose proxy dial failed, so that their next
// datagrams are dropped for a while instead of each dialling again (a call's
// 50 datagrams a second were 50 connects a second to a failing proxy). The
// wait doubles with every failure in a row, from first up to last.
type dialBackoff struct {
	first, last time.Duration
	limit       int // entries kept at most

	mu      sync.Mutex
	entries map[flowKey]backoffEntry // guarded by mu
}

type backoffEntry struct {
	until    time.Time
	failures int
}

func newDialBackoff(first, last time.Duration, limit int) *dialBackoff {
	return &dialBackoff{first: first, last: last, limit: limit, entries: make(map[flowKey]backoffEntry)}
}

// blocked reports whether k is still waiting after a failure.
func (b *dialBackoff) blocked(k flowKey, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[k]
	return ok && now.Before(e.until)
}

// failed records a failed dial for k; wait, when positive, replaces the
// doubling wait (a proxy that cannot carry UDP at all).
func (b *dialBackoff) failed(k flowKey, now time.Time, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[k]
	if !ok && len(b.entries) >= b.limit {
		b.sweep(now)
		if len(b.entries) >= b.limit {
			return // full of live entries: this pair dials again, as before
		}
	}
	e.failures++
	if wait <= 0 {
		wait = b.first << min(e.failures-1, 16)
		wait = min(wait, b.last)
	}
	e.until = now.Add(wait)
	b.entries[k] = e
}

// succeeded forgets k.
func (b *dialBackoff) succeeded(k flowKey) {
	b.mu.Lock()
	delete(b.entries, k)
	b.mu.Unlock()
}

// sweep drops the entries whose wait is over (their next failure starts again
// from first).
func (b *dialBackoff) sweep(now time.Time) {
	for k, e := range b.entries {
		if !now.Before(e.until) {
			delete(b.entries, k)
		}
	}
}
