package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestWaitingFillHoldsNoBuffer: a waiting read of an idle stream takes its buffer only
// once the socket has bytes. A blocking reader waits so on a stream for the flow's
// life (a transport's WebSocket or HTTP/2 reader over the TLS record layer, a UDP
// flow's): with the 80 KiB working buffer taken first, every idle ws flow held it
// (BenchmarkTransportIdleFlow: 89 KiB of heap per idle ws flow, 5.5 without).
func TestWaitingFillHoldsNoBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	src := newStreamSource(c)
	var rx rxBuf
	// Nothing to read: the wait ends at the deadline, without a buffer.
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	if err := rx.fill(&src, recordHeaderLen, true); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("fill on an idle socket: %v, want the deadline", err)
	}
	if rx.buf != nil {
		t.Fatal("a waiting fill took a buffer before the socket had bytes")
	}
	// Bytes come: the same wait reads them into the working buffer.
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := rx.fill(&src, recordHeaderLen, true); err != nil || string(rx.buffered()) != "hello" {
		t.Fatalf("fill: %q, %v; want the peer's bytes", rx.buffered(), err)
	}
	rx.consume(5)
	rx.settle(false, true)
	if rx.buf != nil {
		t.Fatal("the buffer was kept after everything was consumed")
	}
	// The peer's end is readable too: the read that follows reports it.
	peer.Close()
	if err := rx.fill(&src, recordHeaderLen, true); err == nil {
		t.Fatal("fill after the peer closed: no error")
	}
	rx.release()
}
