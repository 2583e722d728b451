package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// XTLS Vision (flow xtls-rprx-vision) on a VLESS connection, client side.
//
// Both directions start "padded": each write becomes a frame
//
//	[user id, first frame only] command(1) content length(2) padding length(2) content padding
//
// which hides the lengths of the inner TLS handshake. Command continue keeps
// padding; end stops it (the rest flows plainly through the outer TLS); direct
// stops it and moves the rest of that direction to the raw TCP connection, so an
// inner TLS 1.3 stream is not encrypted twice. The client watches the first
// packets of both directions: an inner ClientHello makes the stream "TLS"; a
// TLS 1.3 ServerHello with a usual cipher allows direct. Its first inner
// application-data record then goes out with command direct (or end).

const (
	visionContinue = 0
	visionEnd      = 1
	visionDirect   = 2

	// visionChunk bounds the content of one frame (a frame fits one TLS record
	// with its header and padding).
	visionChunk = 8192 - 21
	// visionFilterPackets is how many packets (both directions) are inspected
	// for the inner TLS handshake.
	visionFilterPackets = 8
)

var (
	tlsAppDataPrefix = []byte{0x17, 0x03, 0x03}
	tls13Version     = []byte{0x00, 0x2b, 0x00, 0x02, 0x03, 0x04} // supported_versions: TLS 1.3
)

// visionConn is a VLESS stream with the Vision flow. Reads must come from one
// goroutine at a time, as do writes; a read and a write may run together. It is
// pollable like the record layer under it, and once both directions went
// direct it is the plain TCP socket (DirectTCP), which the engine may splice.
type visionConn struct {
	tls net.Conn    // the outer TLS connection, for writes (rc, but for tests)
	rc  *recordConn // the outer TLS connection, for reads; its prefix is the VLESS header
	raw net.Conn    // the TCP connection under it
	src streamSource
	id  [16]byte

	// Inner-TLS detection, shared by both directions.
	fmu             sync.Mutex
	filterLeft      int
	isTLS           bool
	isTLS12OrAbove  bool
	enableDirect    bool
	serverHelloLeft int
	cipher          uint16

	// Write side.
	wmu         sync.Mutex
	padding     bool
	writeID     bool
	directWrite bool
	// rawOnly is set with directWrite, for Close (which must not take wmu).
	rawOnly atomic.Bool

	// Read side, under rmu.
	rmu         sync.Mutex
	resp        vlessResponse // the VLESS response header, before the frames
	rstate      int
	hdr         [16]byte // partial user id or frame header
	hdrLen      int
	cmd         byte
	contentLeft int
	paddingLeft int
	pending     []byte // content ready for Read
	directRead  bool
}

// Read states.
const (
	vrID      = iota // expecting the server's user id (or plain data)
	vrHeader         // expecting a frame header
	vrContent        // inside a frame's content
	vrPadding        // inside a frame's padding
	vrPlain          // padding over: plain data through the outer TLS
)

// newVisionConn runs Vision over rc, whose held prefix is the VLESS request
// header: it goes out with the first padded frame, or with an empty one (as
// Xray's client sends) when the client has nothing to say within wait.
func newVisionConn(rc *recordConn, hdr []byte, id [16]byte, wait time.Duration) *visionConn {
	c := &visionConn{
		tls:        rc,
		rc:         rc,
		raw:        rc.NetConn(),
		src:        newStreamSource(rc.NetConn()),
		id:         id,
		filterLeft: visionFilterPackets,
		padding:    true,
		writeID:    true,
	}
	// Until the padding ends a read returns one record's data, so that nothing
	// after a switch to direct is taken for a record.
	rc.oneRecord = true
	rc.holdPrefix(hdr, wait, c.FlushRequest)
	return c
}

// FlushRequest sends the VLESS header now if no data took it along, with an
// empty padded frame after it (what Xray's client does when the server is to
// speak first). The health probe calls it.
func (c *visionConn) FlushRequest() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.rc == nil || !c.rc.prefixPending() || !c.padding {
		return nil
	}
	c.fmu.Lock()
	isTLS := c.isTLS
	c.fmu.Unlock()
	_, err := c.tls.Write(c.appendFrame(nil, nil, visionContinue, isTLS))
	return err
}

// filter inspects one packet of either direction for the inner TLS handshake.
func (c *visionConn) filter(b []byte) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.filterLeft <= 0 {
		return
	}
	c.filterLeft--
	if len(b) > 6 {
		switch {
		case b[0] == 0x16 && b[1] == 0x03 && b[2] == 0x03 && b[5] == 2: // ServerHello
			c.isTLS = true
			c.isTLS12OrAbove = true
			c.serverHelloLeft = int(b[3])<<8 | int(b[4]) + 5
			if len(b) >= 79 && c.serverHelloLeft >= 79 {
				sidLen := int(b[43])
				if 43+sidLen+3 <= len(b) {
					c.cipher = binary.BigEndian.Uint16(b[43+sidLen+1:])
				}
			}
		case b[0] == 0x16 && b[1] == 0x03 && b[5] == 1: // ClientHello
			c.isTLS = true
		}
	}
	if c.serverHelloLeft > 0 {
		end := min(c.serverHelloLeft, len(b))
		c.serverHelloLeft -= end
		if bytes.Contains(b[:end], tls13Version) {
			// TLS 1.3 with any cipher but AES-128-CCM-8 may go direct.
			c.enableDirect = c.cipher >= 0x1301 && c.cipher <= 0x1304
			c.filterLeft = 0
		} else if c.serverHelloLeft == 0 {
			c.filterLeft = 0 // TLS 1.2: stays inside
		}
	}
}

// Write pads while the inner handshake runs, then writes plainly or directly.
func (c *visionConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := len(p)
	c.filter(p)
	if !c.padding {
		if c.directWrite {
			return c.raw.Write(p)
		}
		return c.tls.Write(p)
	}
	var out, rest []byte
	for len(p) > 0 || out == nil {
		chunk := p[:min(len(p), visionChunk)]
		p = p[len(chunk):]
		c.fmu.Lock()
		isTLS, tls12, direct, filterLeft := c.isTLS, c.isTLS12OrAbove, c.enableDirect, c.filterLeft
		c.fmu.Unlock()
		var cmd byte = visionContinue
		switch {
		case isTLS && len(chunk) > 6 && bytes.HasPrefix(chunk, tlsAppDataPrefix):
			cmd = visionEnd
			if direct {
				cmd = visionDirect
				c.directWrite = true
				c.rawOnly.Store(true)
			}
		case !tls12 && filterLeft <= 1:
			cmd = visionEnd
		}
		out = c.appendFrame(out, chunk, cmd, isTLS)
		if cmd != visionContinue {
			c.padding = false
			rest = p
			break
		}
	}
	if !c.directWrite {
		out = append(out, rest...)
		rest = nil
	}
	if _, err := c.tls.Write(out); err != nil {
		return 0, err
	}
	if len(rest) > 0 {
		if _, err := c.raw.Write(rest); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// appendFrame appends one padded frame with content b.
func (c *visionConn) appendFrame(out, b []byte, cmd byte, isTLS bool) []byte {
	var pad int
	if len(b) < 900 && isTLS {
		pad = randInt(500) + 900 - len(b)
	} else {
		pad = randInt(256)
	}
	if c.writeID {
		out = append(out, c.id[:]...)
		c.writeID = false
	}
	out = append(out, cmd, byte(len(b)>>8), byte(len(b)), byte(pad>>8), byte(pad))
	out = append(out, b...)
	return append(out, make([]byte, pad)...)
}

func randInt(n int64) int {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		return 0
	}
	return int(v.Int64())
}

// Read returns content from the server's frames, then plain or direct data.
func (c *visionConn) Read(p []byte) (int, error) { return c.read(p, true) }

// ReadNonblock is Read without waiting: an error wrapping EAGAIN when nothing is
// there.
func (c *visionConn) ReadNonblock(p []byte) (int, error) { return c.read(p, false) }

// RawConns is the TCP socket: the outer TLS's, and the direct data's.
func (c *visionConn) RawConns() ([]syscall.RawConn, error) { return c.src.rawConns() }

func (c *visionConn) read(p []byte, wait bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			if len(c.pending) == 0 {
				c.pending = nil // an idle flow keeps no buffer
			}
			return n, nil
		}
		if c.directRead {
			return c.src.read(p, wait)
		}
		n, err := c.rc.read(p, wait)
		if err != nil {
			if errors.Is(err, io.EOF) && !c.resp.done() {
				return 0, c.resp.eofError()
			}
			return 0, err
		}
		b := p[:n]
		if !c.resp.done() {
			// The VLESS response header comes before the frames, outside them.
			k, err := c.resp.feed(b)
			if err != nil {
				return 0, err
			}
			b = b[k:]
		}
		if c.rstate == vrPlain {
			c.filter(b)
			if n = copy(p, b); n > 0 {
				return n, nil
			}
			continue
		}
		if err := c.parse(b); err != nil {
			return 0, err
		}
		if c.rstate == vrPlain && !c.directRead {
			c.rc.setOneRecord(false) // no switch can come any more
		}
	}
}

// DirectTCP returns the TCP connection once both directions carry raw bytes and
// nothing is buffered above it (ReadNonblock returned it all): from then on the
// conn is that socket, and the engine may splice it. Nil before.
func (c *visionConn) DirectTCP() *net.TCPConn {
	if !c.rawOnly.Load() {
		return nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if !c.directRead || len(c.pending) > 0 {
		return nil
	}
	tc, _ := c.raw.(*net.TCPConn)
	return tc
}

// parse consumes bytes read through the outer TLS, adding content to pending.
func (c *visionConn) parse(b []byte) error {
	for {
		switch c.rstate {
		case vrID:
			k := copy(c.hdr[c.hdrLen:16], b)
			c.hdrLen += k
			b = b[k:]
			if c.hdrLen == 16 {
				c.hdrLen = 0
				if c.hdr != c.id {
					// The server does not pad: all of it is plain data.
					c.rstate = vrPlain
					c.content(append([]byte(nil), c.hdr[:]...))
				} else {
					c.rstate = vrHeader
				}
			}
		case vrHeader:
			k := copy(c.hdr[c.hdrLen:5], b)
			c.hdrLen += k
			b = b[k:]
			if c.hdrLen == 5 {
				c.hdrLen = 0
				c.cmd = c.hdr[0]
				if c.cmd > visionDirect {
					return fmt.Errorf("vision: unknown command %d from the server", c.cmd)
				}
				c.contentLeft = int(binary.BigEndian.Uint16(c.hdr[1:]))
				c.paddingLeft = int(binary.BigEndian.Uint16(c.hdr[3:]))
				c.rstate = vrContent
			}
		case vrContent:
			k := min(c.contentLeft, len(b))
			if k > 0 {
				c.content(append([]byte(nil), b[:k]...))
				c.contentLeft -= k
				b = b[k:]
			}
		case vrPadding:
			k := min(c.paddingLeft, len(b))
			c.paddingLeft -= k
			b = b[k:]
		case vrPlain:
			if len(b) > 0 {
				c.content(append([]byte(nil), b...))
			}
			return nil
		}
		if c.rstate == vrContent && c.contentLeft == 0 {
			c.rstate = vrPadding
		}
		if c.rstate == vrPadding && c.paddingLeft == 0 {
			c.frameDone(&b)
		}
		if len(b) == 0 || c.directRead {
			return nil
		}
	}
}

// frameDone acts on the command of the frame that just ended.
func (c *visionConn) frameDone(rest *[]byte) {
	switch c.cmd {
	case visionContinue:
		c.rstate = vrHeader
	case visionEnd:
		c.rstate = vrPlain
	case visionDirect:
		// Everything after this frame was sent on the raw connection: what the TLS
		// layer holds of it (decrypted or not) is raw data.
		c.rstate = vrPlain
		c.directRead = true
		if len(*rest) > 0 {
			c.pending = append(c.pending, *rest...)
			*rest = nil
		}
		if c.rc != nil {
			c.pending = append(c.pending, c.rc.takeRaw()...)
		}
	}
}

// content queues frame content for Read and shows it to the filter.
func (c *visionConn) content(b []byte) {
	c.filter(b)
	c.pending = append(c.pending, b...)
}

// CloseWrite half-closes the direction's current carrier.
func (c *visionConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var conn net.Conn = c.tls
	if c.directWrite {
		conn = c.raw
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the connection. Once this side writes directly, a TLS close_notify
// would land inside the raw stream the server forwards: only the socket is closed.
func (c *visionConn) Close() error {
	if c.rawOnly.Load() {
		if c.rc != nil {
			c.rc.closed.Store(true)
		}
		return c.raw.Close()
	}
	return c.tls.Close()
}

func (c *visionConn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *visionConn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *visionConn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *visionConn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *visionConn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }
