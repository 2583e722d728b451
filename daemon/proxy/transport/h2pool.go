package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// HTTP/2 for gRPC and XHTTP comes from the standard library's bundled client
// (net/http, already in the binary): http.Transport.NewClientConn over a TLS
// connection this package got from DialFunc, with "unencrypted HTTP/2" as the
// protocol, since the TLS is below the transport's view. No second HTTP/2 stack
// (golang.org/x/net/http2) and no grpc-go.
//
// Flows share connections as Xray's xmux does (muxLimits): up to 8 flows a
// connection by default, each connection retired after 600-900 requests or
// 30-50 minutes, and closed after idleClose without flows.

// idleClose is how long a connection without flows stays open for the next.
const idleClose = 90 * time.Second

// Receive windows: a stream that its reader stops draining (a phone asleep) holds
// at most streamWindow, and a connection's window covers its streams' so that a
// stalled stream never blocks the others.
const (
	streamWindow  = 512 << 10
	maxConnWindow = 16 << 20
)

// h2Pool opens HTTP/2 streams to one server.
type h2Pool struct {
	dial    DialFunc
	alpn    []string // offered; nil keeps the configured list
	reality bool
	name    string // transport name, for errors
	lim     muxLimits
	tr      *http.Transport
	// concurrency and connections are lim's, picked once.
	concurrency, connections int
	// allowHTTP1: a server that chooses http/1.1 is handed back to the caller
	// (XHTTP packet-up); otherwise it is an error.
	allowHTTP1 bool

	mu      sync.Mutex
	conns   []*h2Conn
	dialing []*pendingDial // connections being opened
}

// h2Conn is one shared connection.
type h2Conn struct {
	p        *h2Pool
	cc       *http.ClientConn
	flows    int // open flows
	leftUse  int // flows it may still take; <0 unbounded
	leftReq  int // requests it may still carry; <0 unbounded
	retireAt time.Time
	idle     *time.Timer
	closed   bool
}

// preDialed carries the connection NewClientConn is to use through its context.
type preDialed struct{}

func newH2Pool(name string, dial DialFunc, alpn []string, reality bool, lim muxLimits) *h2Pool {
	p := &h2Pool{dial: dial, alpn: alpn, reality: reality, name: name, lim: lim,
		concurrency: lim.maxConcurrency.pick(), connections: lim.maxConnections.pick()}
	window := streamWindow * max(p.concurrency, 4)
	if p.concurrency == 0 {
		window = maxConnWindow
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	p.tr = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if c, ok := ctx.Value(preDialed{}).(net.Conn); ok {
				return c, nil
			}
			return nil, errors.New("no connection")
		},
		Protocols:          &protos,
		DisableCompression: true,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     streamWindow,
			MaxReceiveBufferPerConnection: min(window, maxConnWindow),
			MaxReadFrameSize:              16 << 10,
		},
	}
	return p
}

// acquire returns a connection with one more flow on it. When the server chose
// http/1.1 and p.allowHTTP1, it returns that TLS connection as h1 instead.
//
// Flows that arrive together (a messenger opens several at once) wait for a
// connection being opened, as many as it can carry, rather than each opening its
// own.
func (p *h2Pool) acquire(ctx context.Context) (c *h2Conn, h1 net.Conn, err error) {
	p.mu.Lock()
	for {
		if c := p.pickLocked(); c != nil {
			c.takeFlowLocked()
			p.mu.Unlock()
			return c, nil, nil
		}
		var d *pendingDial
		if p.connections == 0 {
			for _, x := range p.dialing {
				if x.waiters+1 < max(p.concurrency, 1) {
					d = x
					break
				}
			}
		}
		if d == nil {
			break
		}
		d.waiters++
		p.mu.Unlock()
		select {
		case <-d.done:
		case <-ctx.Done():
			p.mu.Lock()
			d.waiters--
			p.mu.Unlock()
			return nil, nil, ctx.Err()
		}
		p.mu.Lock()
		if d.failed {
			break // each learns why with a dial of its own
		}
	}
	d := &pendingDial{done: make(chan struct{})}
	p.dialing = append(p.dialing, d)
	p.mu.Unlock()
	c, h1, err = p.open(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing = slices.DeleteFunc(p.dialing, func(x *pendingDial) bool { return x == d })
	d.failed = err != nil || h1 != nil
	if err == nil && h1 == nil {
		p.conns = append(p.conns, c)
		c.takeFlowLocked()
	}
	close(d.done)
	return c, h1, err
}

// pendingDial is a connection being opened, which flows may wait for.
type pendingDial struct {
	done    chan struct{}
	waiters int
	failed  bool
}

// pickLocked finds a connection that takes another flow, dropping the dead.
func (p *h2Pool) pickLocked() *h2Conn {
	now := time.Now()
	live := p.conns[:0]
	for _, c := range p.conns {
		if c.closed || c.cc.Err() != nil {
			c.closeLocked()
			continue
		}
		live = append(live, c)
	}
	clear(p.conns[len(live):])
	p.conns = live
	var usable []*h2Conn
	for _, c := range p.conns {
		if c.leftUse == 0 || c.leftReq == 0 || !c.retireAt.IsZero() && now.After(c.retireAt) {
			continue
		}
		if p.connections == 0 && p.concurrency > 0 && c.flows >= p.concurrency {
			continue
		}
		usable = append(usable, c)
	}
	if p.connections > 0 && len(p.conns) < p.connections {
		return nil // spread flows over more connections first
	}
	if len(usable) == 0 {
		return nil
	}
	// The fullest usable connection: the others can then go idle and close.
	best := usable[0]
	for _, c := range usable[1:] {
		if c.flows > best.flows {
			best = c
		}
	}
	if p.connections > 0 {
		best = usable[randIntn(len(usable))]
	}
	return best
}

func (c *h2Conn) takeFlowLocked() {
	c.flows++
	if c.leftUse > 0 {
		c.leftUse--
	}
	if c.idle != nil {
		c.idle.Stop()
		c.idle = nil
	}
}

// release ends one flow on c.
func (c *h2Conn) release() {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	c.flows--
	if c.flows > 0 || c.closed {
		return
	}
	if c.leftUse == 0 || c.leftReq == 0 || !c.retireAt.IsZero() && time.Now().After(c.retireAt) || c.cc.Err() != nil {
		c.closeLocked()
		return
	}
	c.idle = time.AfterFunc(idleClose, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if c.flows == 0 {
			c.closeLocked()
		}
	})
}

func (c *h2Conn) closeLocked() {
	if c.closed {
		return
	}
	c.closed = true
	if c.idle != nil {
		c.idle.Stop()
		c.idle = nil
	}
	go c.cc.Close()
}

// open dials a new connection.
func (p *h2Pool) open(ctx context.Context) (*h2Conn, net.Conn, error) {
	raw, proto, err := p.dial(ctx, p.alpn)
	if err != nil {
		return nil, nil, err
	}
	if !p.reality {
		switch proto {
		case alpnHTTP1:
			if p.allowHTTP1 {
				return nil, raw, nil
			}
			raw.Close()
			return nil, nil, fmt.Errorf("%s: the server chose http/1.1 (ALPN); %s needs HTTP/2: is h2 in the server's alpn?", p.name, p.name)
		case "", alpnH2:
		default:
			raw.Close()
			return nil, nil, fmt.Errorf("%s: the server chose ALPN %q, not h2", p.name, sanitize(proto, 20))
		}
	}
	done := withDeadline(ctx, raw)
	cc, err := p.tr.NewClientConn(context.WithValue(ctx, preDialed{}, net.Conn(&frameSizeClamp{Conn: raw})), "http", "h2.invalid:443")
	done()
	if err != nil {
		raw.Close()
		return nil, nil, fmt.Errorf("%s: start HTTP/2: %w", p.name, ctxErr(ctx, err))
	}
	c := &h2Conn{p: p, cc: cc, leftUse: -1, leftReq: -1}
	if n := p.lim.maxReuse.pick(); n > 0 {
		c.leftUse = n
	}
	if n := p.lim.maxRequests.pick(); n > 0 {
		c.leftReq = n
	}
	if n := p.lim.maxAgeSecs.pick(); n > 0 {
		c.retireAt = time.Now().Add(time.Duration(n) * time.Second)
	}
	return c, nil, nil
}

// roundTrip sends req on c; a connection that broke fails the request.
func (c *h2Conn) roundTrip(req *http.Request) (*http.Response, error) {
	c.p.mu.Lock()
	if c.leftReq > 0 {
		c.leftReq--
	}
	c.p.mu.Unlock()
	return c.cc.RoundTrip(req)
}

// startChecked sends req on c in the background: the response head, checked by
// check, comes to the returned stream; a failure also goes to onErr (which ends
// the request body's writer). The request body, if any, is written by the HTTP/2
// client as the caller writes into it. Nothing waits for the server here, so a
// server that answers only after the first data (sing-box's gRPC) is no deadlock.
func (c *h2Conn) startChecked(req *http.Request, check func(*http.Response) error, onErr func(error)) *respStream {
	s := &respStream{ready: make(chan struct{})}
	go func() {
		resp, err := c.roundTrip(req)
		if err == nil && check != nil {
			if err = check(resp); err != nil {
				resp.Body.Close()
				resp = nil
			}
		}
		s.resp, s.err = resp, err
		if err == nil {
			s.body = resp.Body
		}
		close(s.ready)
		if err != nil && onErr != nil {
			onErr(err)
		}
	}()
	return s
}

// respStream is the response side of a request in flight.
type respStream struct {
	ready chan struct{}
	resp  *http.Response
	err   error
	body  io.ReadCloser
}

// wait waits for the response head.
func (s *respStream) wait() error {
	<-s.ready
	return s.err
}

// failure is the request's failure (a refusal the server answered, a broken
// connection) once its head is there, waiting at most wait for it: a write that
// failed because the stream ended learns why. nil when it went well or did not come.
func (s *respStream) failure(wait time.Duration) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.ready:
		return s.err
	case <-t.C:
		return nil
	}
}

// close releases the response; one still awaited is released when it comes (the
// caller cancels the request, so that is soon).
func (s *respStream) close() {
	select {
	case <-s.ready:
		if s.body != nil {
			s.body.Close()
		}
	default:
		go func() {
			<-s.ready
			if s.body != nil {
				s.body.Close()
			}
		}()
	}
}

// frameSizeClamp rewrites the SETTINGS_MAX_FRAME_SIZE the server announces to the
// protocol's minimum, 16 KiB. The HTTP/2 client holds a scratch buffer of the
// server's frame size (up to 512 KiB; Go servers announce 1 MiB) for each request
// body it streams, for the stream's whole life: 512 KiB per idle gRPC or XHTTP
// stream-one flow. With 16 KiB frames it holds 16 KiB, and sends what browsers
// send. The rewrite keeps every length, so the stream stays valid; a value is
// replaced byte by byte as it passes, whatever the read boundaries.
type frameSizeClamp struct {
	net.Conn
	hdr      [9]byte
	hn       int  // bytes of the current frame header seen
	left     int  // payload bytes left in the current frame
	settings bool // the current frame is a SETTINGS frame (not an ACK)
	pos      int  // position in the current 6-byte setting
	id       uint16
}

// minFrameSize is 16384 as a SETTINGS value.
var minFrameSize = [4]byte{0, 0, 0x40, 0}

const settingMaxFrameSize = 5

func (c *frameSizeClamp) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.scan(p[:n])
	return n, err
}

func (c *frameSizeClamp) scan(b []byte) {
	for len(b) > 0 {
		if c.hn < len(c.hdr) {
			k := copy(c.hdr[c.hn:], b)
			c.hn += k
			b = b[k:]
			if c.hn == len(c.hdr) {
				c.left = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
				c.settings = c.hdr[3] == 4 && c.hdr[4]&1 == 0
				c.pos = 0
				if c.left == 0 {
					c.hn = 0
				}
			}
			continue
		}
		k := min(len(b), c.left)
		if c.settings {
			for i := range k {
				switch c.pos {
				case 0:
					c.id = uint16(b[i]) << 8
				case 1:
					c.id |= uint16(b[i])
				default:
					if c.id == settingMaxFrameSize {
						b[i] = minFrameSize[c.pos-2]
					}
				}
				c.pos = (c.pos + 1) % 6
			}
		}
		b = b[k:]
		c.left -= k
		if c.left == 0 {
			c.hn = 0
		}
	}
}
