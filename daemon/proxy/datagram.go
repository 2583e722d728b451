package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxDatagram is the largest UDP datagram (IPv4's limit; IPv6 jumbograms are
// not relayed). A buffer this size holds any datagram whole.
const maxDatagram = 65535

// datagramBufs lends the buffers UDP conns read whole datagrams into, so that
// a flow holds none while it waits. One pool per dialer.
type datagramBufs struct{ pool sync.Pool }

func newDatagramBufs() *datagramBufs {
	b := &datagramBufs{}
	b.pool.New = func() any {
		buf := make([]byte, maxDatagram)
		return &buf
	}
	return b
}

func (b *datagramBufs) get() *[]byte  { return b.pool.Get().(*[]byte) }
func (b *datagramBufs) put(p *[]byte) { b.pool.Put(p) }

// writeFramed sends p as one datagram over a stream (Trojan, VLESS): header
// appends the datagram's header to the buffer it is given, which has room
// for headerMax bytes of it and p, and the whole frame goes out in one Write
// under mu, so that the frames of concurrent writers do not interleave.
func writeFramed(w io.Writer, mu *sync.Mutex, p []byte, headerMax int, header func([]byte) []byte) (int, error) {
	if len(p) > 0xffff {
		return 0, fmt.Errorf("datagram of %d bytes is too large", len(p))
	}
	b := header(make([]byte, 0, headerMax+len(p)))
	b = append(b, p...)
	mu.Lock()
	defer mu.Unlock()
	if _, err := w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// readDatagram reads datagrams with read until accept finds one to return: it
// returns where, within the buffer read into, the payload lies. It reads
// straight into p when p holds any datagram, else into a borrowed buffer, and
// copies the payload to the start of p (truncated to len(p), as a UDP socket
// would). A datagram longer than the buffer (n > len) is dropped.
func readDatagram(bufs *datagramBufs, p []byte, read func([]byte) (int, error), accept func([]byte) (payload []byte, ok bool)) (int, error) {
	buf := p
	if len(p) < maxDatagram {
		bp := bufs.get()
		defer bufs.put(bp)
		buf = *bp
	}
	for {
		n, err := read(buf)
		if err != nil {
			return 0, err
		}
		if n > len(buf) {
			continue // cut short: never pass on part of a datagram
		}
		if payload, ok := accept(buf[:n]); ok {
			return copy(p, payload), nil
		}
	}
}

// rawConn returns the socket under c, which must be a plain socket conn.
func rawConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T is not a socket", c)
	}
	return sc.SyscallConn()
}

// recvNonblock reads one datagram from raw without waiting. An error wrapping
// syscall.EAGAIN means none is queued. n is the datagram's full length, more
// than len(b) when it did not fit (MSG_TRUNC).
func recvNonblock(raw syscall.RawConn, b []byte) (int, error) {
	var n int
	var rerr error
	err := raw.Read(func(fd uintptr) bool {
		for {
			n, _, rerr = unix.Recvfrom(int(fd), b, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			if rerr != unix.EINTR {
				return true // never wait: the caller's poller does
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, fmt.Errorf("read datagram: %w", rerr)
	}
	return n, nil
}

// streamClosed reads and drops whatever raw's stream holds, without waiting, and
// reports io.EOF once the peer has closed it: a SOCKS5 control connection carries
// nothing after its reply, only its end matters.
func streamClosed(raw syscall.RawConn) error {
	var buf [64]byte
	var n int
	var rerr error
	err := raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), buf[:])
			if rerr == unix.EINTR || (rerr == nil && n > 0) {
				continue
			}
			return true
		}
	})
	switch {
	case err != nil:
		return err
	case rerr == nil: // n == 0
		return io.EOF
	case errors.Is(rerr, unix.EAGAIN):
		return nil
	default:
		return fmt.Errorf("control connection: %w", rerr)
	}
}

// publicAddr reports whether a UDP relay may sit at ip: not loopback, private,
// link-local, multicast or shared (CGNAT) space, where a hostile or misconfigured
// server could point the daemon's datagrams at the router itself or the LAN.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsGlobalUnicast() && !ip.IsPrivate() && !sharedSpace.Contains(ip)
}

var sharedSpace = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598
