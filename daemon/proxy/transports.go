package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	utls "github.com/metacubex/utls"

	"github.com/tgtun/tgtun/daemon/proxy/transport"
)

// The seam between VLESS/Trojan and the transports below them (package
// transport): a transport gets TLS or REALITY connections from tlsDial, which
// runs the dialer's handshake offering the ALPN the transport asks for, and
// never sees uTLS itself.

// newTransport builds the transport spec names under t's TLS, or nil for none.
func newTransport(b *base, t *tlsClient) (transport.Transport, error) {
	s := b.spec
	tr, err := transport.New(transport.Options{
		Type: s.Transport, Path: s.Path, Host: s.Host, ServiceName: s.ServiceName, Mode: s.Mode,
		EarlyData: s.EarlyData, PaddingBytes: s.PaddingBytes, Extra: s.Extra,
		ServerName: t.sni, Reality: t.reality, ALPN: s.ALPN, Fingerprint: s.Fingerprint,
	}, b.tlsDial(t))
	if err != nil {
		return nil, err
	}
	if tr != nil {
		sec := "tls"
		if t.reality {
			sec = "reality"
		}
		b.prefix = fmt.Sprintf("%s+%s+%s %s", s.Type, s.Transport, sec, s.Address())
	}
	return tr, nil
}

// tlsDial is the transports' DialFunc: a connection to the server with t's
// handshake, offering alpn instead of the configured list when not nil, and the
// protocol the server chose.
func (b *base) tlsDial(t *tlsClient) transport.DialFunc {
	return func(ctx context.Context, alpn []string) (net.Conn, string, error) {
		tc := t
		if alpn != nil && !t.reality {
			c := *t
			c.alpn = alpn
			tc = &c
		}
		conn, err := b.dialTLS(ctx, tc)
		if err != nil {
			return nil, "", err
		}
		return conn, negotiatedProtocol(conn), nil
	}
}

// negotiatedProtocol is the ALPN protocol of a TLS conn, whichever TLS layer made it
// (uTLS's conn after TLS 1.2; after TLS 1.3 the record layer's *recordConn, whose
// ConnectionState is crypto/tls's kind); "" when none was chosen.
func negotiatedProtocol(c net.Conn) string {
	switch s := c.(type) {
	case interface{ ConnectionState() utls.ConnectionState }:
		return s.ConnectionState().NegotiatedProtocol
	case interface{ ConnectionState() tls.ConnectionState }:
		return s.ConnectionState().NegotiatedProtocol
	}
	return ""
}

// dialStream opens the protocol's stream through tr, with the dialer's prefix on
// its errors.
func (b *base) dialStream(ctx context.Context, tr transport.Transport) (net.Conn, error) {
	c, err := tr.Dial(ctx)
	if err != nil {
		if strings.HasPrefix(err.Error(), b.prefix+": ") { // from dialTLS
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", b.prefix, handshakeErr(ctx, err))
	}
	return c, nil
}

// heldConn holds a request header (VLESS, Trojan) back for the stream's first
// write, so that it travels in one frame of the transport (a WebSocket frame, a
// gRPC message, an XHTTP upload; with WebSocket early data, in the upgrade
// request) with the client's first bytes, as recordConn.holdPrefix does on a TLS
// connection and Xray's clients do. When no data comes within the wait, the
// header goes alone. Reads wait until it is out: the server sends nothing before
// it has the header, and a transport that upgrades on its first read (ws with
// early data) must not upgrade without it.
type heldConn struct {
	net.Conn
	held    atomic.Bool   // the header is not out yet
	out     chan struct{} // closed once the header is out (or failed), or at Close
	outOnce sync.Once
	alone   *time.Timer // set before the conn is handed out, never changed

	mu  sync.Mutex // the header's write
	hdr []byte     // nil once written
}

// heldFirstMax bounds the first write: the header and at most this much of the
// client's first bytes (the rest follows in a write of its own).
const heldFirstMax = 16 << 10

func newHeldConn(c net.Conn, hdr []byte, wait time.Duration) *heldConn {
	h := &heldConn{Conn: c, hdr: hdr, out: make(chan struct{})}
	h.held.Store(true)
	h.mu.Lock() // the timer's FlushRequest waits for alone to be set
	h.alone = time.AfterFunc(wait, func() { _ = h.FlushRequest() })
	h.mu.Unlock()
	return h
}

// Write sends p, the first time behind the header in one write.
func (h *heldConn) Write(p []byte) (int, error) {
	if !h.held.Load() {
		return h.Conn.Write(p)
	}
	h.mu.Lock()
	if h.hdr == nil {
		h.mu.Unlock()
		return h.Conn.Write(p)
	}
	k := min(len(p), heldFirstMax)
	n, err := h.sendLocked(p[:k])
	h.mu.Unlock()
	if err != nil || k == len(p) {
		return n, err
	}
	m, err := h.Conn.Write(p[k:])
	return n + m, err
}

// sendLocked writes the header with p behind it and reports how much of p went.
func (h *heldConn) sendLocked(p []byte) (int, error) {
	b := make([]byte, 0, len(h.hdr)+len(p))
	b = append(append(b, h.hdr...), p...)
	n, err := h.Conn.Write(b)
	n = max(n-len(h.hdr), 0)
	h.hdr = nil
	h.alone.Stop()
	h.held.Store(false)
	h.outOnce.Do(func() { close(h.out) })
	return n, err
}

// FlushRequest sends the held header now, alone (the health probe; the wait's
// end).
func (h *heldConn) FlushRequest() error {
	if !h.held.Load() {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hdr == nil {
		return nil
	}
	_, err := h.sendLocked(nil)
	return err
}

// Read waits for the header to be out, then reads the stream.
func (h *heldConn) Read(p []byte) (int, error) {
	if h.held.Load() {
		<-h.out
	}
	return h.Conn.Read(p)
}

// CloseWrite sends a header no data joined, then half-closes when the stream can.
func (h *heldConn) CloseWrite() error {
	if err := h.FlushRequest(); err != nil {
		return err
	}
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close stops the wait and closes the stream; a read waiting for the header ends.
func (h *heldConn) Close() error {
	h.alone.Stop()
	h.outOnce.Do(func() { close(h.out) })
	return h.Conn.Close()
}
