package engine

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// splice(2) moves a plain proxy socket's bytes to the client's socket and back
// inside the kernel: socket → pipe → socket, no copy through user space. A
// direction borrows a pipe while it moves data and gives it back empty; an idle
// flow holds none.

// spliceChunk is the most one splice asks for: a pipe's default capacity.
const spliceChunk = 64 << 10

// pipesKept is how many idle pipes the pool keeps open (two descriptors each).
const pipesKept = 8

// errSpliceUnsupported means the kernel cannot splice these sockets: the flow
// copies through a buffer instead.
var errSpliceUnsupported = errors.New("splice not supported")

type pipe struct {
	r, w int
	n    int // bytes in the pipe
}

type pipePool struct {
	mu   sync.Mutex
	free []*pipe
}

func (pp *pipePool) get() (*pipe, error) {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p, nil
	}
	pp.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// put returns p; one that still holds bytes (its flow broke) is closed.
func (pp *pipePool) put(p *pipe) {
	if p.n == 0 {
		pp.mu.Lock()
		if len(pp.free) < pipesKept {
			pp.free = append(pp.free, p)
			pp.mu.Unlock()
			return
		}
		pp.mu.Unlock()
	}
	p.close()
}

func (pp *pipePool) drain() {
	pp.mu.Lock()
	free := pp.free
	pp.free = nil
	pp.mu.Unlock()
	for _, p := range free {
		p.close()
	}
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// splicePump moves what src has to dst through p until src has nothing more
// (EAGAIN: it never waits for src) or ends (eof). It waits for dst to take
// the bytes (back-pressure). moved is called after each chunk.
func splicePump(src, dst syscall.RawConn, p *pipe, moved func(int)) (eof bool, err error) {
	for {
		if p.n == 0 {
			n, serr := spliceIn(src, p)
			switch {
			case serr == unix.EAGAIN:
				return false, nil
			case serr == unix.EINVAL || serr == unix.ENOSYS:
				return false, errSpliceUnsupported
			case serr != nil:
				return false, serr
			case n == 0:
				return true, nil
			}
			p.n = n
		}
		n := p.n
		if err := spliceOut(dst, p); err != nil {
			return false, err
		}
		moved(n)
	}
}

// spliceIn fills the empty pipe from src without waiting.
func spliceIn(src syscall.RawConn, p *pipe) (int, error) {
	var n int64
	var serr error
	err := src.Read(func(fd uintptr) bool {
		for {
			// int64 on 64-bit systems, int on 32-bit ones.
			m, err := unix.Splice(int(fd), nil, p.w, nil, spliceChunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			n, serr = int64(m), err
			if serr != unix.EINTR {
				return true // never wait in the runtime's poller: ours does
			}
		}
	})
	if err != nil {
		return 0, err
	}
	return int(n), serr
}

// spliceOut empties the pipe into dst, waiting in the runtime's poller while
// dst's send buffer is full.
func spliceOut(dst syscall.RawConn, p *pipe) error {
	var serr error
	err := dst.Write(func(fd uintptr) bool {
		for p.n > 0 {
			n, err := unix.Splice(p.r, nil, int(fd), nil, p.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // dst is full: wait until it is writable
			case err != nil:
				serr = err
				return true
			case n == 0:
				serr = errors.New("splice to socket moved nothing")
				return true
			}
			p.n -= int(n)
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}
