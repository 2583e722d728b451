package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// h2frame appends an HTTP/2 frame.
func h2frame(b []byte, typ, flags byte, stream uint32, payload []byte) []byte {
	b = append(b, byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload)), typ, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	return append(b, payload...)
}

func setting(id uint16, v uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint16(nil, id), v)
}

// TestFrameSizeClamp: every SETTINGS_MAX_FRAME_SIZE the server sends becomes
// 16384, whatever the read boundaries, and nothing else changes (a DATA frame
// whose bytes look like a setting included).
func TestFrameSizeClamp(t *testing.T) {
	var in []byte
	in = h2frame(in, 4, 0, 0, append(append(setting(3, 250), setting(5, 1<<20)...), setting(4, 1<<20)...))
	in = h2frame(in, 4, 1, 0, nil) // ACK
	in = h2frame(in, 0, 0, 1, append(setting(5, 1<<20), bytes.Repeat([]byte{9}, 300)...))
	in = h2frame(in, 6, 0, 0, make([]byte, 8)) // PING
	in = h2frame(in, 4, 0, 0, setting(5, 65536))
	want := bytes.Clone(in)
	// The two MAX_FRAME_SIZE values of SETTINGS frames, at their offsets.
	copy(want[9+6+2:], []byte{0, 0, 0x40, 0})
	last := len(in) - 4
	copy(want[last:], []byte{0, 0, 0x40, 0})
	for split := range 40 {
		got := bytes.Clone(in)
		c := &frameSizeClamp{}
		r := rand.New(rand.NewPCG(uint64(split), 1))
		for b := got; len(b) > 0; {
			n := min(len(b), 1+r.IntN(split+1))
			if split == 0 {
				n = 1
			}
			c.scan(b[:n])
			b = b[n:]
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("split %d:\n got %x\nwant %x", split, got, want)
		}
	}
}

// h2cServer runs an HTTP/2 server without TLS on loopback; dial connects to it as
// a DialFunc would (proto h2), counting the connections.
func h2cServer(t *testing.T, h http.Handler) (dial DialFunc, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	conns = &atomic.Int64{}
	return func(ctx context.Context, alpn []string) (net.Conn, string, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err == nil {
			conns.Add(1)
		}
		return c, alpnH2, err
	}, conns
}

// TestH2PoolShares: flows share connections up to maxConcurrency, a connection
// retired by its flow count takes no new flows, and an idle one closes.
func TestH2PoolShares(t *testing.T) {
	dial, conns := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	p := newH2Pool("test", dial, nil, false, muxLimits{maxConcurrency: Range{3, 3}, maxReuse: Range{5, 5}})
	ctx := context.Background()
	var held []*h2Conn
	for range 6 {
		c, h1, err := p.acquire(ctx)
		if err != nil || h1 != nil {
			t.Fatal(err, h1)
		}
		held = append(held, c)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("6 flows with maxConcurrency 3 opened %d connections, want 2", n)
	}
	if held[0] != held[2] || held[0] == held[3] {
		t.Fatalf("flows were not packed onto the first connection")
	}
	// Each connection took 3 of its 5 flows; ending them frees room.
	held[0].release()
	c, _, _ := p.acquire(ctx)
	if c != held[0] {
		t.Fatalf("a freed slot was not reused")
	}
	held[1].release()
	c2, _, _ := p.acquire(ctx) // the fifth flow of the first connection
	if c2 != held[0] {
		t.Fatalf("second reuse went elsewhere")
	}
	held[2].release()
	held[3].release()
	c3, _, _ := p.acquire(ctx) // the first is used up: the second (its 4th flow)
	if c3 != held[3] {
		t.Fatalf("a used-up connection took another flow")
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want still 2", n)
	}
	// The used-up connection closes when its last flow ends.
	for range 2 {
		held[0].release()
	}
	p.mu.Lock()
	closed := held[0].closed
	p.mu.Unlock()
	if !closed {
		t.Fatalf("a used-up connection without flows stayed open")
	}
}

// TestH2PoolRequests: a request that fails on a connection the server closed
// reports it, and the pool opens a new connection for the next flow.
func TestH2PoolReopens(t *testing.T) {
	var mu sync.Mutex
	var serverConns []net.Conn
	dial, conns := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	wrapped := func(ctx context.Context, alpn []string) (net.Conn, string, error) {
		c, p, err := dial(ctx, alpn)
		mu.Lock()
		serverConns = append(serverConns, c)
		mu.Unlock()
		return c, p, err
	}
	p := newH2Pool("test", wrapped, nil, false, defaultMux)
	c, _, err := p.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://x/", nil)
	resp, err := c.roundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.release()
	mu.Lock()
	serverConns[0].Close()
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for c.cc.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c2, _, err := p.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c || conns.Load() != 2 {
		t.Fatalf("a broken connection was reused (connections %d)", conns.Load())
	}
}

// recordingListener keeps what clients sent.
type recordingListener struct {
	net.Listener
	mu  sync.Mutex
	got bytes.Buffer
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, l: l}, nil
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.got.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

// TestStreamedBodyFrames: a streamed request body goes in DATA frames of at most
// 16 KiB although the Go server announces 1 MiB frames: the client's scratch
// buffer per streaming flow is 16 KiB, not 512 KiB.
func TestStreamedBodyFrames(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: ln}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	done := make(chan int64, 1)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		done <- n
	})}
	go srv.Serve(rl)
	t.Cleanup(func() { srv.Close() })
	dial := func(ctx context.Context, _ []string) (net.Conn, string, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		return c, alpnH2, err
	}
	p := newH2Pool("test", dial, nil, false, defaultMux)
	c, _, err := p.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, "https://x/", pr)
	s := c.startChecked(req, nil, nil)
	const total = 1 << 20
	chunk := make([]byte, 256<<10)
	for sent := 0; sent < total; sent += len(chunk) {
		if _, err := pw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	pw.Close()
	if n := <-done; n != total {
		t.Fatalf("server read %d bytes, want %d", n, total)
	}
	if err := s.wait(); err != nil {
		t.Fatal(err)
	}
	rl.mu.Lock()
	b := bytes.Clone(rl.got.Bytes())
	rl.mu.Unlock()
	b = b[len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):]
	largest, data := 0, 0
	for len(b) >= 9 {
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if b[3] == 0 { // DATA
			largest = max(largest, n)
			data += n
		}
		b = b[min(len(b), 9+n):]
	}
	if data < total {
		t.Fatalf("parsed %d bytes of DATA, want %d", data, total)
	}
	if largest > 16<<10 {
		t.Fatalf("a DATA frame of %d bytes: the server's frame size was not clamped", largest)
	}
}

// FuzzFrameSizeClamp: whatever the server sends and however it is split, the
// rewrite keeps the length and changes bytes only into 16384's (0x00, 0x40), and
// splitting differently gives the same result.
func FuzzFrameSizeClamp(f *testing.F) {
	var in []byte
	in = h2frame(in, 4, 0, 0, append(setting(5, 1<<20), setting(3, 100)...))
	f.Add(in, uint8(3))
	f.Add([]byte{0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 5, 0, 1}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		whole := bytes.Clone(data)
		(&frameSizeClamp{}).scan(whole)
		split := bytes.Clone(data)
		c := &frameSizeClamp{}
		n := int(step%16) + 1
		for b := split; len(b) > 0; {
			k := min(n, len(b))
			c.scan(b[:k])
			b = b[k:]
		}
		if !bytes.Equal(whole, split) {
			t.Fatalf("split reads give another result")
		}
		for i := range data {
			if whole[i] != data[i] && whole[i] != 0 && whole[i] != 0x40 {
				t.Fatalf("byte %d became %#x", i, whole[i])
			}
		}
	})
}

// TestH2PoolBurst: flows that start together share the connection being opened
// instead of opening one each.
func TestH2PoolBurst(t *testing.T) {
	dial, conns := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	slow := func(ctx context.Context, alpn []string) (net.Conn, string, error) {
		time.Sleep(100 * time.Millisecond) // a TLS handshake
		return dial(ctx, alpn)
	}
	p := newH2Pool("test", slow, nil, false, muxLimits{maxConcurrency: Range{8, 8}})
	var wg sync.WaitGroup
	got := make(chan *h2Conn, 16)
	for range 16 {
		wg.Go(func() {
			c, _, err := p.acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			got <- c
		})
	}
	wg.Wait()
	close(got)
	per := map[*h2Conn]int{}
	for c := range got {
		per[c]++
	}
	if n := conns.Load(); n != 2 || len(per) != 2 {
		t.Fatalf("16 flows at once opened %d connections (%d used), want 2 of 8 flows", n, len(per))
	}
}
