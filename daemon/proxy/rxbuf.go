package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The encrypted streams (TLS records, Shadowsocks chunks) read their server's
// bytes into an rxBuf and decrypt what is complete. A stream holds a buffer only
// while it has bytes that are not decrypted yet: an idle flow, whose last record
// was whole, holds none. While it reads it works in a large buffer (many records
// a system call, a whole Shadowsocks 2022 chunk); when the socket runs dry
// mid-record the few bytes of that record move to a buffer their size.

// Buffer classes: small and mid hold the partial unit an idle-ish stream keeps
// between reads; large is the working buffer, which holds the largest unit (a
// 2022 chunk of 0xFFFF bytes, its tag and the next length block) with room to
// spare.
const (
	rxSmall = 2 << 10
	rxMid   = 17 << 10
	rxLarge = 80 << 10
)

var rxPools = [...]*sync.Pool{
	{New: func() any { b := make([]byte, rxSmall); return &b }},
	{New: func() any { b := make([]byte, rxMid); return &b }},
	{New: func() any { b := make([]byte, rxLarge); return &b }},
}

// rxGet borrows the smallest pooled buffer that holds n bytes (n <= rxLarge).
func rxGet(n int) *[]byte {
	switch {
	case n <= rxSmall:
		return rxPools[0].Get().(*[]byte)
	case n <= rxMid:
		return rxPools[1].Get().(*[]byte)
	default:
		return rxPools[2].Get().(*[]byte)
	}
}

func rxPut(b *[]byte) {
	switch len(*b) {
	case rxSmall:
		rxPools[0].Put(b)
	case rxMid:
		rxPools[1].Put(b)
	case rxLarge:
		rxPools[2].Put(b)
	}
}

// errWouldBlock is what ReadNonblock returns when nothing can be read now.
var errWouldBlock = fmt.Errorf("nothing to read yet: %w", syscall.EAGAIN)

// streamSource reads a stream: waiting (through r, honouring its deadlines) or
// not (a raw read on the socket's descriptor, never parking in the runtime's
// poller: the engine's poller waits instead).
type streamSource struct {
	r   io.Reader
	raw syscall.RawConn // nil when r is not a socket: only waiting reads work
	rd  *rawRead
}

// rawRead is the callback of a raw read and its results, made once per stream:
// a closure made per read would be an allocation per system call.
type rawRead struct {
	b      []byte
	n      int
	err    error
	fn     func(fd uintptr) bool
	peekFn func(fd uintptr) bool // peek, made once too
	peekB  [1]byte
}

func (r *rawRead) read(fd uintptr) bool {
	for {
		r.n, r.err = unix.Read(int(fd), r.b)
		if r.err != unix.EINTR {
			return true // never wait: the caller's poller does
		}
	}
}

// peek reports whether the socket has a byte (or its end, or an error) to read,
// reading nothing; false makes RawConn.Read wait for it.
func (r *rawRead) peek(fd uintptr) bool {
	for {
		_, _, err := unix.Recvfrom(int(fd), r.peekB[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != unix.EINTR {
			return err != unix.EAGAIN
		}
	}
}

// waitReadable waits, holding no buffer, until the socket has something to read
// (bytes, its end or an error), honouring the read deadline; at once when the
// stream is not a socket.
func (s *streamSource) waitReadable() error {
	if s.raw == nil {
		return nil
	}
	return s.raw.Read(s.rd.peekFn)
}

func newStreamSource(r io.Reader) streamSource {
	s := streamSource{r: r}
	if sc, ok := r.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
			s.rd = &rawRead{}
			s.rd.fn = s.rd.read
			s.rd.peekFn = s.rd.peek
		}
	}
	return s
}

// rawConns is the socket for the engine's poller.
func (s *streamSource) rawConns() ([]syscall.RawConn, error) {
	if s.raw == nil {
		return nil, fmt.Errorf("%T is not a socket", s.r)
	}
	return []syscall.RawConn{s.raw}, nil
}

// read reads into b. Without wait, an error wrapping EAGAIN means the socket has
// nothing now. A closed stream is io.EOF either way.
func (s *streamSource) read(b []byte, wait bool) (int, error) {
	if wait {
		n, err := s.r.Read(b)
		if n > 0 {
			return n, nil
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return 0, err
	}
	if s.raw == nil {
		return 0, fmt.Errorf("%T is not a socket: cannot read without waiting", s.r)
	}
	s.rd.b = b
	err := s.raw.Read(s.rd.fn)
	n, rerr := s.rd.n, s.rd.err
	s.rd.b = nil
	switch {
	case err != nil:
		return 0, err
	case errors.Is(rerr, unix.EAGAIN):
		return 0, errWouldBlock
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: rerr}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// rxBuf holds bytes read and not yet consumed: buf[r:w].
type rxBuf struct {
	buf  *[]byte
	r, w int
}

// buffered is what has been read and not consumed.
func (b *rxBuf) buffered() []byte {
	if b.buf == nil {
		return nil
	}
	return (*b.buf)[b.r:b.w]
}

func (b *rxBuf) consume(n int) { b.r += n }

// load starts the buffer with bytes read by someone else (uTLS's read-ahead).
func (b *rxBuf) load(p []byte) {
	if len(p) == 0 {
		return
	}
	b.buf = rxGet(len(p))
	b.r, b.w = 0, copy(*b.buf, p)
}

// fill reads at least one more byte from src, making room for a unit of need
// bytes starting at r first. It never reads into bytes still in use: the caller
// has consumed (or copied out) everything before r.
//
// A waiting fill with nothing buffered first waits for the socket without a
// buffer: a stream that a blocking reader waits on while idle (a transport's
// WebSocket or HTTP/2 reader, a UDP flow's) then holds none, as one the engine
// polls holds none.
func (b *rxBuf) fill(src *streamSource, need int, wait bool) error {
	if wait && b.buf == nil {
		if err := src.waitReadable(); err != nil {
			return err
		}
	}
	switch {
	case b.buf == nil:
		b.buf = rxGet(rxLarge)
		b.r, b.w = 0, 0
	case len(*b.buf) < rxLarge:
		// Back to the working buffer for the read.
		large := rxGet(rxLarge)
		b.w = copy(*large, (*b.buf)[b.r:b.w])
		b.r = 0
		rxPut(b.buf)
		b.buf = large
	case b.r == b.w:
		b.r, b.w = 0, 0
	case b.r+need > len(*b.buf) || b.w == len(*b.buf):
		b.w = copy(*b.buf, (*b.buf)[b.r:b.w])
		b.r = 0
	}
	n, err := src.read((*b.buf)[b.w:], wait)
	b.w += n
	return err
}

// settle runs when a read call ends. An empty buffer goes back to its pool; a
// partial unit left when the socket ran dry (drained) moves to a buffer its size.
// With keep (plaintext still points into the buffer) nothing moves.
func (b *rxBuf) settle(keep, drained bool) {
	if b.buf == nil || keep {
		return
	}
	left := b.w - b.r
	switch {
	case left == 0:
		rxPut(b.buf)
		b.buf = nil
		b.r, b.w = 0, 0
	case drained && len(*b.buf) == rxLarge && left <= rxMid:
		small := rxGet(left)
		copy(*small, (*b.buf)[b.r:b.w])
		rxPut(b.buf)
		b.buf = small
		b.r, b.w = 0, left
	}
}

// release drops the buffer (the stream is over).
// afterRead is what a decrypting stream does once a read is over: pending holds
// plaintext not yet handed out, failed says the stream has ended or broken. The
// working buffer is settled (kept while plaintext waits) and, once a failed stream
// has handed out everything, given back.
func (b *rxBuf) afterRead(pending, drained, failed bool) {
	b.settle(pending, drained || failed)
	if failed && !pending {
		b.release()
	}
}

// takePending copies the front of *pending into p and drops it from *pending
// (nil once empty, so that an idle stream holds no slice of a buffer).
func takePending(pending *[]byte, p []byte) int {
	k := copy(p, *pending)
	if *pending = (*pending)[k:]; len(*pending) == 0 {
		*pending = nil
	}
	return k
}

func (b *rxBuf) release() {
	if b.buf != nil {
		rxPut(b.buf)
		b.buf = nil
		b.r, b.w = 0, 0
	}
}
