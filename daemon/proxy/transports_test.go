package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/proxy/transport"
)

// writesConn records every Write as one frame of the transport would carry it;
// Read waits for data pushed by the test or for Close.
type writesConn struct {
	net.Conn // nil: only what is overridden is used
	mu       sync.Mutex
	writes   [][]byte
	wrote    chan struct{} // a signal per Write
	in       chan []byte
	closed   chan struct{}
	once     sync.Once
}

func newWritesConn() *writesConn {
	return &writesConn{wrote: make(chan struct{}, 16), in: make(chan []byte, 4), closed: make(chan struct{})}
}

func (c *writesConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	c.wrote <- struct{}{}
	return len(p), nil
}

func (c *writesConn) Read(p []byte) (int, error) {
	select {
	case b := <-c.in:
		return copy(p, b), nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *writesConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *writesConn) got() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

// TestHeldConnFirstWrite: over a transport the request header goes in one write
// with the client's first bytes (one WebSocket frame, gRPC message, XHTTP upload),
// never alone when data comes within the wait; a large first write takes at most
// heldFirstMax of the data along.
func TestHeldConnFirstWrite(t *testing.T) {
	hdr := []byte("HEADER")
	for _, size := range []int{5, heldFirstMax, heldFirstMax + 1000} {
		w := newWritesConn()
		h := newHeldConn(w, hdr, time.Hour)
		data := bytes.Repeat([]byte("d"), size)
		n, err := h.Write(data)
		if err != nil || n != size {
			t.Fatalf("Write(%d bytes) = %d, %v", size, n, err)
		}
		if _, err := h.Write([]byte("second")); err != nil {
			t.Fatal(err)
		}
		got := w.got()
		want := [][]byte{append(bytes.Clone(hdr), data[:min(size, heldFirstMax)]...)}
		if size > heldFirstMax {
			want = append(want, data[heldFirstMax:])
		}
		want = append(want, []byte("second"))
		if len(got) != len(want) {
			t.Fatalf("%d bytes: %d writes, want %d", size, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("%d bytes: write %d is %d bytes %.12q, want %d bytes %.12q", size, i, len(got[i]), got[i], len(want[i]), want[i])
			}
		}
		if err := h.FlushRequest(); err != nil || len(w.got()) != len(want) {
			t.Errorf("FlushRequest after the header went: %v, %d writes", err, len(w.got()))
		}
		h.Close()
	}
}

// TestHeldConnAlone: without data within the wait the header goes alone; a read
// waits for it (the server answers nothing before it); FlushRequest sends it at once
// (the health probe); CloseWrite sends it first; Close ends a waiting read.
func TestHeldConnAlone(t *testing.T) {
	hdr := []byte("HEADER")
	t.Run("after the wait", func(t *testing.T) {
		w := newWritesConn()
		start := time.Now()
		h := newHeldConn(w, hdr, 100*time.Millisecond)
		defer h.Close()
		read := make(chan error, 1)
		go func() {
			b := make([]byte, 8)
			n, err := h.Read(b)
			if err == nil && string(b[:n]) != "answer" {
				err = errors.New("read " + string(b[:n]))
			}
			read <- err
		}()
		w.in <- []byte("answer") // there before the header: a read must still wait for it
		select {
		case err := <-read:
			t.Fatalf("a read returned (%v) before the header went", err)
		case <-w.wrote:
		}
		if el := time.Since(start); el < 100*time.Millisecond {
			t.Errorf("the header went alone after %v, before the wait", el)
		}
		if got := w.got(); len(got) != 1 || !bytes.Equal(got[0], hdr) {
			t.Fatalf("writes %q, want the header alone", got)
		}
		if err := <-read; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("FlushRequest", func(t *testing.T) {
		w := newWritesConn()
		h := newHeldConn(w, hdr, time.Hour)
		defer h.Close()
		if err := h.FlushRequest(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		if got := w.got(); len(got) != 2 || !bytes.Equal(got[0], hdr) || string(got[1]) != "data" {
			t.Fatalf("writes %q, want the header, then the data", got)
		}
	})
	t.Run("CloseWrite", func(t *testing.T) {
		w := newWritesConn()
		h := newHeldConn(w, hdr, time.Hour)
		defer h.Close()
		if err := h.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := w.got(); len(got) != 1 || !bytes.Equal(got[0], hdr) {
			t.Fatalf("writes %q, want the header", got)
		}
	})
	t.Run("Close", func(t *testing.T) {
		w := newWritesConn()
		h := newHeldConn(w, hdr, time.Hour)
		read := make(chan error, 1)
		go func() {
			_, err := h.Read(make([]byte, 8))
			read <- err
		}()
		waitBlockedIn(t, "proxy.(*heldConn).Read")
		h.Close()
		select {
		case err := <-read:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("read after Close: %v", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Close did not end a read waiting for the header")
		}
		if got := w.got(); len(got) != 0 {
			t.Errorf("writes %q after Close, want none", got)
		}
	})
}

// TestHeldConnWebSocketEarlyData: through the ws transport with early data, the
// header and the client's first bytes travel together in the upgrade request's
// Sec-WebSocket-Protocol, as Xray's client sends them, even when the engine's
// reader starts reading before the client wrote (a read must not upgrade alone).
func TestHeldConnWebSocketEarlyData(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	_ = client.SetDeadline(time.Now().Add(testTimeout))
	_ = server.SetDeadline(time.Now().Add(testTimeout))
	tr, err := transport.New(transport.Options{Type: transport.WS, Path: "/ws", EarlyData: 2048, ServerName: "proxy.test"},
		func(context.Context, []string) (net.Conn, string, error) { return client, "http/1.1", nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream, err := tr.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte("VLESS-HEADER")
	h := newHeldConn(stream, hdr, time.Hour)
	defer h.Close()
	protocol := make(chan string, 1)
	go func() {
		req, err := http.ReadRequest(bufio.NewReader(server))
		if err != nil {
			protocol <- "read request: " + err.Error()
			return
		}
		protocol <- req.Header.Get("Sec-WebSocket-Protocol")
		sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		_, _ = io.WriteString(server, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			base64.StdEncoding.EncodeToString(sum[:])+"\r\n\r\n")
		_, _ = server.Write([]byte{0x82, 2, 'o', 'k'}) // a binary frame: the answer
		_, _ = io.Copy(io.Discard, server)
	}()
	read := make(chan string, 1)
	go func() { // the engine's blocking reader, started before any data
		b := make([]byte, 8)
		n, err := h.Read(b)
		if err != nil {
			read <- err.Error()
			return
		}
		read <- string(b[:n])
	}()
	waitBlockedIn(t, "proxy.(*heldConn).Read")
	if _, err := h.Write([]byte("first bytes")); err != nil {
		t.Fatal(err)
	}
	got := <-protocol
	ed, err := base64.RawURLEncoding.DecodeString(got)
	if err != nil || string(ed) != "VLESS-HEADERfirst bytes" {
		t.Fatalf("Sec-WebSocket-Protocol %q (%q, %v), want the header and the first bytes", got, ed, err)
	}
	if s := <-read; s != "ok" {
		t.Fatalf("read %q, want the server's answer", s)
	}
}

// waitBlockedIn waits until some goroutine's stack shows fn (a read that waits).
func waitBlockedIn(t *testing.T, fn string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	buf := make([]byte, 1<<20)
	for !strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn) {
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine in %s", fn)
		}
		time.Sleep(time.Millisecond)
	}
}
