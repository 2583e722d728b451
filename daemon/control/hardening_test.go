package control

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// emfileListener fails its first Accepts with EMFILE, as a daemon out of descriptors sees.
type emfileListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptRetriesEMFILE: running out of descriptors for a moment must not end the
// control socket (and with it the daemon).
func TestAcceptRetriesEMFILE(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln := &emfileListener{Listener: inner}
	ln.failures.Store(5)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveListener(ctx, ln, testTable(), slog.New(slog.DiscardHandler)) }()

	callCtx, callCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer callCancel()
	if _, err := Call(callCtx, path, "status", nil); err != nil {
		t.Fatalf("status after EMFILE: %v", err)
	}
	select {
	case err := <-served:
		t.Fatalf("the control socket stopped on EMFILE: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serveListener after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveListener did not return after cancel")
	}
}

type fakeRlimit struct {
	cur     unix.Rlimit
	maxSet  uint64 // the highest hard limit Set may give (the process's privilege)
	setErrs int
}

func (f *fakeRlimit) Get() (unix.Rlimit, error) { return f.cur, nil }

func (f *fakeRlimit) Set(r unix.Rlimit) error {
	if r.Max > f.maxSet || r.Cur > r.Max {
		f.setErrs++
		return syscall.EPERM
	}
	f.cur = r
	return nil
}

func TestFitDescriptors(t *testing.T) {
	tests := []struct {
		name        string
		cur, max    uint64
		maxSet      uint64
		flows       int
		wantFlows   int
		wantCur     uint64
		wantWarning bool
	}{
		{"enough already", 65536, 65536, 65536, 4096, 4096, 65536, false},
		{"soft raised to need", 1024, 65536, 65536, 4096, 4096, 4096*2 + fdReserve, false},
		{"hard raised (root)", 1024, 4096, 1 << 20, 4096, 4096, 4096*2 + fdReserve, false},
		{"clamped to the hard limit", 1024, 4096, 4096, 4096, (4096 - fdReserve) / 2, 4096, true},
		{"tiny limit", 64, 64, 64, 4096, 1, 64, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := &fakeRlimit{cur: unix.Rlimit{Cur: tt.cur, Max: tt.max}, maxSet: tt.maxSet}
			got, warning := fitDescriptors(rl, tt.flows)
			if got != tt.wantFlows || rl.cur.Cur != tt.wantCur || (warning != "") != tt.wantWarning {
				t.Errorf("fitDescriptors = %d, %q with limit %d; want %d flows, limit %d, warning %t",
					got, warning, rl.cur.Cur, tt.wantFlows, tt.wantCur, tt.wantWarning)
			}
			if tt.wantWarning && !strings.Contains(warning, fmt.Sprint(tt.wantFlows)) {
				t.Errorf("warning %q does not name the max_flows in force (%d)", warning, tt.wantFlows)
			}
		})
	}
}

// TestSecondInstanceRefused: the lock is taken once per network namespace; a second
// taker gets a clear message; the lock frees with its holder.
func TestSecondInstanceRefused(t *testing.T) {
	name := fmt.Sprintf("@tgtun-test-%d", os.Getpid())
	first, err := lockInstance(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockInstance(name); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second lock: %v, want 'already running'", err)
	}
	first.Close()
	again, err := lockInstance(name)
	if err != nil {
		t.Fatalf("lock after the first holder closed: %v", err)
	}
	again.Close()
}
