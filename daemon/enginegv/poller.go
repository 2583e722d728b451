package enginegv

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readPoller says when proxy sockets have something to read, so that an idle
// flow needs no goroutine parked in Read: a messenger keeps its connections open
// for pushes, so most flows are idle, and two parked goroutines (their stacks
// grown by the netstack's call chains) were 12 of the 20 KiB an idle flow cost.
// One epoll instance and one goroutine serve the whole engine. Sockets are armed
// one-shot and level-triggered: an event fires once, the flow reads what is there
// and re-arms, and data that arrived in between fires again at once.
//
// The epoll descriptor itself waits in the Go runtime's poller (an epoll set is
// readable while it has events), not in a blocking epoll_wait: a goroutine started
// from a thread blocked in a system call sat on that thread's processor until the
// runtime took it back, which added 130 µs to every wake-up.
type readPoller struct {
	epfd  int // for epoll_ctl; owned by epoll
	epoll *os.File
	raw   syscall.RawConn
	log   *slog.Logger
	done  chan struct{}

	mu        sync.Mutex
	lastToken uint32
	subs      map[uint32]func() // guarded by mu
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newReadPoller(log *slog.Logger) (*readPoller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it on the runtime's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	epoll := os.NewFile(uintptr(epfd), "epoll")
	raw, err := epoll.SyscallConn()
	if err != nil {
		epoll.Close()
		return nil, fmt.Errorf("epoll raw conn: %w", err)
	}
	p := &readPoller{epfd: epfd, epoll: epoll, raw: raw, log: log, done: make(chan struct{}), subs: make(map[uint32]func())}
	go p.loop()
	return p, nil
}

func (p *readPoller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 64)
	for {
		var n int
		var waitErr error
		// The runtime watches the epoll descriptor edge-triggered: it is read
		// until empty before the goroutine parks again.
		err := p.raw.Read(func(fd uintptr) bool {
			n, waitErr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || (waitErr != nil && !errors.Is(waitErr, unix.EINTR))
		})
		if err != nil {
			return // closed
		}
		if waitErr != nil {
			// Not expected with valid arguments; a pause keeps it from spinning.
			p.log.Error("epoll_wait on proxy sockets", "err", waitErr)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, ev := range events[:n] {
			p.mu.Lock()
			ready := p.subs[uint32(ev.Fd)]
			p.mu.Unlock()
			if ready != nil {
				ready()
			}
		}
	}
}

// register reserves a token whose events call ready, in the poller's goroutine:
// ready must not block.
func (p *readPoller) register(ready func()) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		p.lastToken++
		if _, used := p.subs[p.lastToken]; !used {
			break
		}
	}
	p.subs[p.lastToken] = ready
	return p.lastToken
}

// unregister drops token. The socket itself leaves the epoll set when it is closed.
func (p *readPoller) unregister(token uint32) {
	p.mu.Lock()
	delete(p.subs, token)
	p.mu.Unlock()
}

// arm asks for one event when raw's socket is readable (data, EOF or an error);
// first adds it to the set, later calls re-arm it. It runs under raw's own
// reference to the descriptor, so a socket closed meanwhile fails here instead of
// arming whatever socket reuses its number.
func (p *readPoller) arm(raw syscall.RawConn, token uint32, first bool) error {
	op := unix.EPOLL_CTL_MOD
	if first {
		op = unix.EPOLL_CTL_ADD
	}
	var ctlErr error
	err := raw.Control(func(fd uintptr) {
		ctlErr = unix.EpollCtl(p.epfd, op, int(fd), &unix.EpollEvent{Events: pollEvents, Fd: int32(token)})
	})
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		return fmt.Errorf("poll proxy socket: %w", err)
	}
	return nil
}

// close ends the loop and releases the epoll instance; no ready func runs after it.
func (p *readPoller) close() {
	p.epoll.Close()
	<-p.done
}
