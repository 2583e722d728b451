package proxy

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/daemon/proxy/transport"
)

// FlowVision is the VLESS flow that pads the first packets and lets an inner TLS
// 1.3 stream bypass the outer encryption (XTLS Vision).
const FlowVision = "xtls-rprx-vision"

// VLESS commands and address types.
const (
	vlessVersion = 0
	vlessCmdTCP  = 1
	vlessCmdUDP  = 2
	vlessCmdMux  = 3
	vlessIPv4    = 1
	vlessDomain  = 2
	vlessIPv6    = 3
)

// VLESS dials through a VLESS server over TLS or REALITY, optionally with the
// Vision flow. UDP uses VLESS's own packet command: one destination per
// connection, each datagram prefixed by its 16-bit length (what sing-box and Xray
// servers accept without a mux). Servers refuse that command to Vision users:
// their UDP goes as XUDP (one Mux.Cool session) inside a Vision stream.
type VLESS struct {
	base base
	id   [16]byte
	flow string
	tls  *tlsClient
	tr   transport.Transport // nil: the stream is the TLS connection itself
}

func newVLESS(b base) (*VLESS, error) {
	id, err := ParseVLESSUUID(b.spec.UUID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.prefix, err)
	}
	switch b.spec.Flow {
	case "", FlowVision:
	default:
		return nil, fmt.Errorf("%s: unknown flow %q ('' or %s)", b.prefix, sanitize(b.spec.Flow, 40), FlowVision)
	}
	t, err := newTLSClient(b.spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.prefix, err)
	}
	if b.spec.Security == SecurityReality {
		b.prefix = TypeVLESS + "+reality " + b.spec.Address()
	}
	v := &VLESS{base: b, id: id, flow: b.spec.Flow, tls: t}
	if v.tr, err = newTransport(&v.base, t); err != nil {
		return nil, err
	}
	if v.tr != nil && v.flow == FlowVision {
		return nil, fmt.Errorf("%s: flow %s needs transport tcp (Xray refuses Vision over %s)", v.base.prefix, FlowVision, b.spec.Transport)
	}
	return v, nil
}

// ParseVLESSUUID reads a VLESS user id: a UUID (with or without dashes), or, as
// Xray and sing-box accept, any other text of 1 to 30 bytes, which maps to the
// name-based UUID (version 5) of that text in the nil namespace.
func ParseVLESSUUID(s string) ([16]byte, error) {
	var id [16]byte
	h := strings.ReplaceAll(s, "-", "")
	if len(h) == 32 {
		if _, err := hex.Decode(id[:], []byte(h)); err == nil {
			return id, nil
		}
	}
	if len(s) == 0 || len(s) > 30 {
		return id, errors.New("uuid is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) nor a text of 1-30 bytes")
	}
	sum := sha1.Sum(append(make([]byte, 16), s...))
	copy(id[:], sum[:16])
	id[6] = id[6]&0x0f | 0x50
	id[8] = id[8]&0x3f | 0x80
	return id, nil
}

// vlessFirstWait is how long the VLESS header waits for the client's first bytes
// to travel in its record, as Xray's client waits (500 ms since Xray-core 1.7:
// before, it waited for them indefinitely, which stalled protocols where the
// server speaks first).
const vlessFirstWait = 500 * time.Millisecond

// dial connects to the server, makes the TLS/REALITY handshake and prepares the
// VLESS request header for cmd and dst: it goes out with the client's first
// bytes, in one record (docs/ARCHITECTURE.md, "First record").
func (v *VLESS) dial(ctx context.Context, cmd byte, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, v.base.timeout)
	defer cancel()
	if v.tr != nil {
		// A transport's stream (never Vision: newVLESS refuses it). The header goes
		// in the stream's first frame with the client's first bytes.
		c, err := v.base.dialStream(ctx, v.tr)
		if err != nil {
			return nil, err
		}
		hc := newHeldConn(c, appendVLESSRequest(nil, v.id, "", cmd, dst), vlessFirstWait)
		return &vlessConn{Conn: hc, held: hc, dst: dst}, nil
	}
	c, err := v.base.dialTLS(ctx, v.tls)
	if err != nil {
		return nil, err
	}
	flow := ""
	if cmd != vlessCmdUDP {
		flow = v.flow
	}
	hdr := appendVLESSRequest(nil, v.id, flow, cmd, dst)
	rc, _ := c.(*recordConn)
	if flow == FlowVision {
		if rc == nil {
			c.Close()
			return nil, fmt.Errorf("%s: the Vision flow needs TLS 1.3 and the server negotiated TLS 1.2", v.base.prefix)
		}
		// The request and response headers are outside Vision's frames.
		return newVisionConn(rc, hdr, v.id, vlessFirstWait), nil
	}
	if rc == nil {
		// TLS 1.2: uTLS's conn, the header at once.
		if err := v.base.sendRequest(ctx, c, c, hdr); err != nil {
			return nil, err
		}
		return &vlessConn{Conn: c, dst: dst}, nil
	}
	rc.holdPrefix(hdr, vlessFirstWait, rc.FlushRequest)
	return &vlessConn{Conn: rc, rc: rc, dst: dst}, nil
}

// DialTCP returns a stream to dst through the server.
func (v *VLESS) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return v.dial(ctx, vlessCmdTCP, dst)
}

// DialUDP returns a datagram conn to dst through the server.
func (v *VLESS) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if !v.base.spec.UDP {
		return nil, fmt.Errorf("%s: udp is off for this proxy: %w", v.base.prefix, errors.ErrUnsupported)
	}
	if v.flow == FlowVision {
		c, err := v.dial(ctx, vlessCmdMux, dst)
		if err != nil {
			return nil, err
		}
		return &xudpConn{Conn: c, dst: dst}, nil
	}
	c, err := v.dial(ctx, vlessCmdUDP, dst)
	if err != nil {
		return nil, err
	}
	return &vlessPacketConn{Conn: c, dst: dst}, nil
}

// appendVLESSRequest appends the request header: version, user id, addons (the
// flow, as protobuf field 1), command, port and address.
func appendVLESSRequest(b []byte, id [16]byte, flow string, cmd byte, dst netip.AddrPort) []byte {
	b = append(b, vlessVersion)
	b = append(b, id[:]...)
	if flow == "" {
		b = append(b, 0)
	} else {
		b = append(b, byte(2+len(flow)), 0x0a, byte(len(flow)))
		b = append(b, flow...)
	}
	b = append(b, cmd)
	if cmd == vlessCmdMux {
		return b // the sessions carry the addresses
	}
	return appendVLESSAddr(b, dst)
}

// appendVLESSAddr appends port, type and address as VLESS and Mux.Cool write them.
func appendVLESSAddr(b []byte, dst netip.AddrPort) []byte {
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	ip := dst.Addr().Unmap()
	if ip.Is4() {
		b = append(b, vlessIPv4)
	} else {
		b = append(b, vlessIPv6)
	}
	return append(b, ip.AsSlice()...)
}

// vlessResponse reads the response header off the front of the server's data:
// version 0, the length of the addons, the addons (skipped).
type vlessResponse struct {
	step   int // 0: version, 1: addons length, 2: addons, 3: done
	addons int
}

func (r *vlessResponse) done() bool { return r.step == 3 }

// feed consumes header bytes from the front of b and says how many.
func (r *vlessResponse) feed(b []byte) (int, error) {
	i := 0
	for i < len(b) && r.step < 3 {
		switch r.step {
		case 0:
			if b[i] != vlessVersion {
				return i, fmt.Errorf("response version %d, want %d: not a VLESS server?", b[i], vlessVersion)
			}
			r.step = 1
			i++
		case 1:
			r.addons = int(b[i])
			r.step = 2
			i++
		case 2:
			k := min(r.addons, len(b)-i)
			i += k
			r.addons -= k
		}
		if r.step == 2 && r.addons == 0 {
			r.step = 3
		}
	}
	return i, nil
}

// eofError is the error for a stream that ended inside the header.
func (r *vlessResponse) eofError() error {
	if r.step < 2 {
		return fmt.Errorf("server closed the connection without answering: wrong uuid or flow? (%w)", io.EOF)
	}
	return fmt.Errorf("read response addons: %w", io.ErrUnexpectedEOF)
}

// vlessConn reads the response header before the first payload byte. Over
// tgtun's record layer (rc) it is pollable.
type vlessConn struct {
	net.Conn             // the TLS conn: rc, or uTLS's after TLS 1.2; or held
	rc       *recordConn // nil after TLS 1.2 and over a transport
	held     *heldConn   // over a transport: its stream, holding the header
	dst      netip.AddrPort
	rmu      sync.Mutex
	resp     vlessResponse
}

func (c *vlessConn) Read(p []byte) (int, error) { return c.read(p, true) }

// ReadNonblock returns what the server sent and the socket holds now; an error
// wrapping EAGAIN when nothing is there.
func (c *vlessConn) ReadNonblock(p []byte) (int, error) {
	if c.rc == nil {
		return 0, errVLESSNotPollable
	}
	return c.read(p, false)
}

// errVLESSNotPollable: the stream is uTLS's conn (TLS 1.2) or a transport's,
// which only a blocking Read can drive.
var errVLESSNotPollable = errors.New("vless over TLS 1.2 or a transport is read by a blocking reader")

// RawConns is the socket the poller watches (none after TLS 1.2 or over a
// transport: the engine then reads with a blocking reader).
func (c *vlessConn) RawConns() ([]syscall.RawConn, error) {
	if c.rc == nil {
		return nil, errVLESSNotPollable
	}
	return c.rc.RawConns()
}

// FlushRequest sends the held request header now (the health probe).
func (c *vlessConn) FlushRequest() error {
	switch {
	case c.rc != nil:
		return c.rc.FlushRequest()
	case c.held != nil:
		return c.held.FlushRequest()
	}
	return nil
}

func (c *vlessConn) read(p []byte, wait bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		var n int
		var err error
		if c.rc != nil {
			n, err = c.rc.read(p, wait)
		} else {
			n, err = c.Conn.Read(p)
		}
		if n > 0 && !c.resp.done() {
			k, ferr := c.resp.feed(p[:n])
			if ferr != nil {
				return 0, ferr
			}
			n = copy(p, p[k:n])
		}
		if n > 0 {
			return n, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) && !c.resp.done() {
				return 0, c.resp.eofError()
			}
			return 0, err
		}
	}
}

// CloseWrite half-closes when the transport can (the TLS layer sends close_notify).
func (c *vlessConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// vlessPacketConn frames datagrams with a 16-bit length. Its Conn is the
// *vlessConn as a plain net.Conn: the stream's non-blocking reads are not this
// datagram conn's.
type vlessPacketConn struct {
	net.Conn
	dst netip.AddrPort
	rmu sync.Mutex
	wmu sync.Mutex
}

func (c *vlessPacketConn) RemoteAddr() net.Addr { return udpAddr(c.dst) }

func (c *vlessPacketConn) Write(p []byte) (int, error) {
	return writeFramed(c.Conn, &c.wmu, p, 2, func(b []byte) []byte {
		return binary.BigEndian.AppendUint16(b, uint16(len(p)))
	})
}

// Read returns one datagram; a longer one than p is truncated.
func (c *vlessPacketConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return readLengthPacket(c.Conn, p)
}

// readLengthPacket reads a 16-bit length and that many bytes into p, dropping
// what does not fit.
func readLengthPacket(r io.Reader, p []byte) (int, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	m := min(n, len(p))
	if _, err := io.ReadFull(r, p[:m]); err != nil {
		return 0, noEOF(err)
	}
	if n > m {
		if _, err := io.CopyN(io.Discard, r, int64(n-m)); err != nil {
			return 0, noEOF(err)
		}
	}
	return m, nil
}

// Mux.Cool frame status and options, as XUDP uses them.
const (
	muxNew       = 1
	muxKeep      = 2
	muxEnd       = 3
	muxKeepAlive = 4
	muxOptData   = 1
	muxOptError  = 2
	muxNetUDP    = 2
)

// xudpConn is one UDP session in Mux.Cool framing (XUDP): each datagram is a frame
//
//	metadata length(2) session(2) status(1) option(1) network(1) port(2) type(1) address
//	data length(2) data
//
// with status new on the first datagram and keep afterwards.
type xudpConn struct {
	net.Conn
	dst     netip.AddrPort
	wmu     sync.Mutex
	started bool
	rmu     sync.Mutex
	meta    [2 + 255]byte
}

func (c *xudpConn) RemoteAddr() net.Addr { return udpAddr(c.dst) }

func (c *xudpConn) Write(p []byte) (int, error) {
	if len(p) > 0xffff {
		return 0, fmt.Errorf("datagram of %d bytes is too large", len(p))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	status := byte(muxKeep)
	if !c.started {
		status = muxNew
	}
	b := make([]byte, 2, 2+5+19+2+len(p))
	b = append(b, 0, 0, status, muxOptData, muxNetUDP)
	b = appendVLESSAddr(b, c.dst)
	binary.BigEndian.PutUint16(b, uint16(len(b)-2))
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	b = append(b, p...)
	if _, err := c.Conn.Write(b); err != nil {
		return 0, err
	}
	c.started = true
	return len(p), nil
}

// Read returns the next datagram from dst; a longer one than p is truncated.
func (c *xudpConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		from, n, data, err := readXUDPFrame(c.Conn, c.meta[:], p)
		if err != nil {
			return 0, err
		}
		if data && (!from.IsValid() || sameAddrPort(from, c.dst)) {
			return n, nil
		}
	}
}

// readXUDPFrame reads one Mux.Cool frame from r, using meta as scratch space, and
// copies its data into p. from is the datagram's source when the frame names one;
// data tells whether the frame carried a datagram.
func readXUDPFrame(r io.Reader, meta, p []byte) (from netip.AddrPort, n int, data bool, err error) {
	if _, err := io.ReadFull(r, meta[:2]); err != nil {
		return from, 0, false, err
	}
	ml := int(binary.BigEndian.Uint16(meta[:2]))
	if ml < 4 || ml > len(meta)-2 {
		return from, 0, false, fmt.Errorf("xudp: frame metadata of %d bytes", ml)
	}
	m := meta[2 : 2+ml]
	if _, err := io.ReadFull(r, m); err != nil {
		return from, 0, false, noEOF(err)
	}
	status, opt := m[2], m[3]
	switch status {
	case muxEnd:
		return from, 0, false, io.EOF
	case muxKeep, muxKeepAlive, muxNew:
	default:
		return from, 0, false, fmt.Errorf("xudp: unknown frame status %d", status)
	}
	if opt&muxOptError != 0 {
		return from, 0, false, errors.New("xudp: the server closed the session with an error")
	}
	if ml > 5 {
		from, err = parseVLESSAddr(m[5:])
		if err != nil {
			return from, 0, false, fmt.Errorf("xudp: %w", err)
		}
	}
	if opt&muxOptData == 0 {
		return from, 0, false, nil
	}
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return from, 0, false, noEOF(err)
	}
	dl := int(binary.BigEndian.Uint16(l[:]))
	k := min(dl, len(p))
	if _, err := io.ReadFull(r, p[:k]); err != nil {
		return from, 0, false, noEOF(err)
	}
	if dl > k {
		if _, err := io.CopyN(io.Discard, r, int64(dl-k)); err != nil {
			return from, 0, false, noEOF(err)
		}
	}
	return from, k, true, nil
}

// parseVLESSAddr reads port, type and address. A domain name yields an invalid
// AddrPort with no error (the caller cannot compare it).
func parseVLESSAddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 3 {
		return netip.AddrPort{}, errShortAddr
	}
	port := binary.BigEndian.Uint16(b)
	switch b[2] {
	case vlessIPv4:
		if len(b) < 3+4 {
			return netip.AddrPort{}, errShortAddr
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[3:7])), port), nil
	case vlessIPv6:
		if len(b) < 3+16 {
			return netip.AddrPort{}, errShortAddr
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[3:19])), port), nil
	case vlessDomain:
		return netip.AddrPort{}, nil
	}
	return netip.AddrPort{}, fmt.Errorf("unknown address type %d", b[2])
}
