package enginegv

import (
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestReadPoller: a registered socket fires once per arming, level-triggered, so data
// that is still unread when it is re-armed fires again at once; an unregistered token
// fires nothing, and a closed socket cannot be armed.
func TestReadPoller(t *testing.T) {
	p, err := newReadPoller(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("newReadPoller: %v", err)
	}
	defer p.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer server.Close()
	raw, err := server.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatalf("raw conn: %v", err)
	}

	fired := make(chan struct{}, 10)
	token := p.register(func() { fired <- struct{}{} })
	expect := func(what string, want bool) {
		t.Helper()
		select {
		case <-fired:
			if !want {
				t.Fatalf("%s: fired, want no event", what)
			}
		case <-time.After(300 * time.Millisecond):
			if want {
				t.Fatalf("%s: no event", what)
			}
		}
	}
	if err := p.arm(raw, token, true); err != nil {
		t.Fatalf("arm: %v", err)
	}
	expect("armed, nothing to read", false)
	if _, err := client.Write([]byte("ab")); err != nil {
		t.Fatalf("write: %v", err)
	}
	expect("data arrived", true)
	expect("one-shot: still unread but not re-armed", false)
	if err := p.arm(raw, token, false); err != nil {
		t.Fatalf("re-arm: %v", err)
	}
	expect("re-armed with data unread", true)
	buf := make([]byte, 2)
	if _, err := server.Read(buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := p.arm(raw, token, false); err != nil {
		t.Fatalf("re-arm: %v", err)
	}
	expect("re-armed after reading it all", false)
	client.Close()
	expect("peer closed: EOF to read", true)

	p.unregister(token)
	if err := p.arm(raw, token, false); err != nil {
		t.Fatalf("re-arm: %v", err)
	}
	expect("unregistered", false)
	server.Close()
	if err := p.arm(raw, token, false); err == nil {
		t.Error("arming a closed conn succeeded")
	}
}
