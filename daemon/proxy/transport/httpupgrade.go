package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// HTTPUpgrade (Xray-core's "httpupgrade", sing-box's "httpupgrade"): an HTTP/1.1
// GET with "Upgrade: websocket"; after the server's 101 the connection carries
// the stream as it is, without WebSocket framing.
type httpUpgrade struct {
	o           Options
	dial        DialFunc
	path, query string
}

func newHTTPUpgrade(o Options, dial DialFunc) (Transport, error) {
	if err := checkPath(o.Path); err != nil {
		return nil, &OptionError{Option: "path", Err: err}
	}
	if err := checkHost(o.Host); err != nil {
		return nil, &OptionError{Option: "host", Err: err}
	}
	if o.EarlyData < 0 {
		return nil, optErr("early_data", "must not be negative")
	}
	if err := o.checkALPN(alpnHTTP1); err != nil {
		return nil, err
	}
	t := &httpUpgrade{o: o, dial: dial}
	t.path, t.query = splitPath(o.Path)
	return t, nil
}

func (t *httpUpgrade) Dial(ctx context.Context) (net.Conn, error) {
	c, proto, err := t.dial(ctx, t.o.http1ALPN())
	if err != nil {
		return nil, err
	}
	if proto == alpnH2 && !t.o.Reality {
		c.Close()
		return nil, fmt.Errorf("httpupgrade: the server chose HTTP/2 (ALPN h2); httpupgrade needs http/1.1: remove h2 from alpn")
	}
	h := http.Header{}
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	browserHeaders(h, t.o.Fingerprint, "ws")
	req := newRequest(http.MethodGet, t.o.host(), t.path, t.query, h)
	done := withDeadline(ctx, c)
	err = writeRequest(c, req, nil)
	done()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("httpupgrade: %w", ctxErr(ctx, err))
	}
	uc := &upgradeConn{Conn: c, req: req}
	if t.o.EarlyData > 0 {
		// The stream's first bytes follow the request at once; the 101 is read
		// before the first bytes from the server.
		return uc, nil
	}
	done = withDeadline(ctx, c)
	err = uc.handshake()
	done()
	if err != nil {
		c.Close()
		return nil, ctxErr(ctx, err)
	}
	return uc, nil
}

// upgradeConn reads the server's 101 before the stream.
type upgradeConn struct {
	net.Conn
	hmu  sync.Mutex
	req  *http.Request
	up   bool
	err  error
	rest []byte
}

// handshake reads the response to the upgrade request.
func (c *upgradeConn) handshake() error {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.up || c.err != nil {
		return c.err
	}
	br := bufio.NewReaderSize(c.Conn, respReader)
	resp, err := readHead(br, c.req)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			// Xray's server closes on a wrong path or host without a word.
			c.err = errors.New("httpupgrade: the server closed the connection instead of answering the upgrade: wrong path or host?")
			return c.err
		}
		c.err = fmt.Errorf("httpupgrade: %w", err)
		return c.err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		c.err = &StatusError{Transport: HTTPUpgrade, Code: resp.StatusCode, Hint: statusHint(resp.StatusCode, "path or host")}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			c.err = fmt.Errorf("httpupgrade: the server switched to %q, not websocket", sanitize(resp.Header.Get("Upgrade"), 30))
		}
		return c.err
	}
	c.rest = leftover(br)
	c.up = true
	c.req = nil
	return nil
}

func (c *upgradeConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		if len(c.rest) == 0 {
			c.rest = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// Write sends on the stream; a write that fails before the 101 was read (early
// data) reports the server's answer rather than a broken pipe.
func (c *upgradeConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.hmu.Lock()
		up := c.up
		c.hmu.Unlock()
		if !up {
			if herr := c.handshake(); herr != nil {
				return n, herr
			}
		}
	}
	return n, err
}

// CloseWrite half-closes the stream when the TLS connection can.
func (c *upgradeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
