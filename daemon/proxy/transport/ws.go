package transport

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// WebSocket (RFC 6455) as Xray-core's and sing-box's "ws" transport use it: one
// binary message stream after an HTTP/1.1 upgrade. With early data ("ed") the
// first write, when it fits, travels base64url-encoded in the upgrade request's
// Sec-WebSocket-Protocol header and the upgrade waits for it.
//
// The client framing is written here rather than taken from a library: the
// smallest served one (github.com/gobwas/ws) added 128 KiB to the stripped mipsel
// binary, gorilla/websocket 256 KiB and coder/websocket 896 KiB, against ~10 KiB
// for the few frame types a tunnel uses; and none holds no buffer while idle.
type webSocket struct {
	o           Options
	dial        DialFunc
	path, query string
}

func newWebSocket(o Options, dial DialFunc) (Transport, error) {
	if err := checkPath(o.Path); err != nil {
		return nil, &OptionError{Option: "path", Err: err}
	}
	if err := checkHost(o.Host); err != nil {
		return nil, &OptionError{Option: "host", Err: err}
	}
	if o.EarlyData < 0 || o.EarlyData > maxEarlyData {
		return nil, optErr("early_data", "out of range 0-%d", maxEarlyData)
	}
	if err := o.checkALPN(alpnHTTP1); err != nil {
		return nil, err
	}
	t := &webSocket{o: o, dial: dial}
	t.path, t.query = splitPath(o.Path)
	return t, nil
}

// maxEarlyData bounds ed: base64 of it must fit an HTTP header line.
const maxEarlyData = 8192

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// WebSocket opcodes.
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xa
)

// wsMaxFrame bounds the payload of one frame this client sends; larger writes go
// in several frames.
const wsMaxFrame = 32 << 10

func (t *webSocket) Dial(ctx context.Context) (net.Conn, error) {
	c, proto, err := t.dial(ctx, t.o.http1ALPN())
	if err != nil {
		return nil, err
	}
	if proto == alpnH2 && !t.o.Reality {
		c.Close()
		return nil, errors.New("ws: the server chose HTTP/2 (ALPN h2); WebSocket needs http/1.1: remove h2 from alpn")
	}
	wc := &wsConn{Conn: c, t: t}
	if t.o.EarlyData > 0 {
		// The upgrade goes out with the first write; reads wait for it.
		wc.upgraded = make(chan struct{})
		return wc, nil
	}
	done := withDeadline(ctx, c)
	err = wc.upgrade(nil)
	done()
	if err != nil {
		c.Close()
		return nil, ctxErr(ctx, err)
	}
	return wc, nil
}

// wsConn is one WebSocket client connection carrying a byte stream. Reads come
// from one goroutine at a time; writes may come from several (the reader answers
// pings).
type wsConn struct {
	net.Conn
	t *webSocket

	// Early data: upgraded is closed once the upgrade finished (upErr says how).
	upOnce   sync.Once
	upgraded chan struct{}
	upErr    error

	wmu sync.Mutex // one frame at a time

	// Read state: the rest of the current data frame, and bytes read with the
	// upgrade's response head.
	left   int64
	mask   [4]byte
	masked bool
	mpos   int
	rest   []byte
	eof    bool
	hdr    [14]byte
}

// upgrade sends the upgrade request (with early data ed, when not nil) and reads
// the 101 answer.
func (c *wsConn) upgrade(ed []byte) error {
	t := c.t
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	h := http.Header{}
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Key", k)
	if ed != nil {
		h.Set("Sec-WebSocket-Protocol", base64.RawURLEncoding.EncodeToString(ed))
	}
	browserHeaders(h, t.o.Fingerprint, "ws")
	req := newRequest(http.MethodGet, t.o.host(), t.path, t.query, h)
	if err := writeRequest(c.Conn, req, nil); err != nil {
		return fmt.Errorf("ws: %w", err)
	}
	br := bufio.NewReaderSize(c.Conn, respReader)
	resp, err := readHead(br, req)
	if err != nil {
		return fmt.Errorf("ws: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return &StatusError{Transport: WS, Code: resp.StatusCode, Hint: statusHint(resp.StatusCode, "path or host")}
	}
	sum := sha1.Sum([]byte(k + wsGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return errors.New("ws: the server's 101 does not accept this WebSocket key (not a WebSocket server?)")
	}
	c.rest = leftover(br)
	return nil
}

// earlyUpgrade runs the delayed upgrade once, with p as early data when it fits.
// It reports whether p went with it.
func (c *wsConn) earlyUpgrade(p []byte) (sent bool, err error) {
	c.upOnce.Do(func() {
		var ed []byte
		if len(p) > 0 && len(p) <= c.t.o.EarlyData {
			ed = p
			sent = true
		}
		c.upErr = c.upgrade(ed)
		close(c.upgraded)
	})
	return sent, c.upErr
}

func (c *wsConn) Write(p []byte) (int, error) {
	if c.upgraded != nil {
		select {
		case <-c.upgraded:
			if c.upErr != nil {
				return 0, c.upErr
			}
		default:
			sent, err := c.earlyUpgrade(p)
			if err != nil {
				return 0, err
			}
			if sent {
				return len(p), nil
			}
		}
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), wsMaxFrame)
		if err := c.writeFrame(wsBinary, p[:k]); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

var wsFrameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 14+wsMaxFrame); return &b }}

// writeFrame sends one final frame with a fresh mask, header and payload in one
// write.
func (c *wsConn) writeFrame(op byte, p []byte) error {
	bp := wsFrameBufs.Get().(*[]byte)
	defer wsFrameBufs.Put(bp)
	b := appendFrame((*bp)[:0], op, p)
	*bp = b[:0]
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.Conn.Write(b)
	return err
}

// appendFrame appends a masked client frame of opcode op with payload p.
func appendFrame(b []byte, op byte, p []byte) []byte {
	b = append(b, 0x80|op)
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, p...)
	maskBytes(key, 0, b[start:])
	return b
}

// maskBytes XORs b with key, starting at key position pos; it returns the next
// position.
func maskBytes(key [4]byte, pos int, b []byte) int {
	// Eight bytes at a time once aligned to the key.
	for len(b) > 0 && pos&3 != 0 {
		b[0] ^= key[pos&3]
		b = b[1:]
		pos++
	}
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= key[(pos+i)&3]
	}
	return pos + len(b)
}

func (c *wsConn) Read(p []byte) (int, error) {
	if c.upgraded != nil {
		select {
		case <-c.upgraded:
		default:
			// Nothing was written yet: the server cannot have sent anything, but a
			// read deadline (a health probe) must still work. Upgrade now.
			if _, err := c.earlyUpgrade(nil); err != nil {
				return 0, err
			}
		}
		if c.upErr != nil {
			return 0, c.upErr
		}
	}
	for c.left == 0 {
		if c.eof {
			return 0, io.EOF
		}
		if err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.read(p)
	if c.masked {
		c.mpos = maskBytes(c.mask, c.mpos, p[:n])
	}
	c.left -= int64(n)
	if err == io.EOF && c.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if n > 0 {
		err = nil
	}
	return n, err
}

// read reads from the bytes left from the upgrade, then from the connection.
func (c *wsConn) read(p []byte) (int, error) {
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

func (c *wsConn) readFull(p []byte) error {
	for len(p) > 0 {
		n, err := c.read(p)
		p = p[n:]
		if err != nil {
			if err == io.EOF && len(p) > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// maxControl is the largest control frame payload (RFC 6455 5.5).
const maxControl = 125

// nextFrame reads frame headers until a data frame with payload starts, answering
// pings and closes on the way.
func (c *wsConn) nextFrame() error {
	h := c.hdr[:2]
	if err := c.readFull(h); err != nil {
		return err
	}
	op := h[0] & 0x0f
	if h[0]&0x70 != 0 {
		return errors.New("ws: the server sent a frame with reserved bits (an extension this client did not ask for)")
	}
	masked := h[1]&0x80 != 0
	n := int64(h[1] & 0x7f)
	switch n {
	case 126:
		if err := c.readFull(c.hdr[2:4]); err != nil {
			return noEOF(err)
		}
		n = int64(binary.BigEndian.Uint16(c.hdr[2:4]))
	case 127:
		if err := c.readFull(c.hdr[2:10]); err != nil {
			return noEOF(err)
		}
		u := binary.BigEndian.Uint64(c.hdr[2:10])
		if u > 1<<62 {
			return errors.New("ws: frame length out of range")
		}
		n = int64(u)
	}
	var key [4]byte
	if masked {
		if err := c.readFull(key[:]); err != nil {
			return noEOF(err)
		}
	}
	switch op {
	case wsContinuation, wsText, wsBinary:
		c.left, c.mask, c.masked, c.mpos = n, key, masked, 0
		return nil
	case wsClose, wsPing, wsPong:
		if n > maxControl || h[0]&0x80 == 0 {
			return errors.New("ws: malformed control frame")
		}
		var buf [maxControl]byte
		pl := buf[:n]
		if err := c.readFull(pl); err != nil {
			return noEOF(err)
		}
		if masked {
			maskBytes(key, 0, pl)
		}
		switch op {
		case wsPing:
			return c.writeFrame(wsPong, pl)
		case wsClose:
			// Echo the status code, as RFC 6455 5.5.1 asks, then end the stream.
			code := pl
			if len(code) > 2 {
				code = code[:2]
			}
			_ = c.writeFrame(wsClose, code)
			c.eof = true
		}
		return nil
	}
	return fmt.Errorf("ws: unknown opcode %d", op)
}

// Close sends a close frame (normal closure) when no write is stuck, and closes
// the connection.
func (c *wsConn) Close() error {
	if (c.upgraded == nil || isClosedChan(c.upgraded) && c.upErr == nil) && c.wmu.TryLock() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Conn.Write(appendFrame(nil, wsClose, []byte{0x03, 0xe8}))
		c.wmu.Unlock()
	}
	return c.Conn.Close()
}

func isClosedChan(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
