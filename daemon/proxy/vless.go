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
)

// FlowVision is the VLESS flow that pads the first packets and lets an inner TLS
// 1.3 stream bypass the outer encryption (XTLS Vision).
const FlowVision = "xtls-rprx-vision"

// VLESS commands and address types.
const (
	vlessVersion = 0
	vlessCmdTCP  = 1
	vlessCmdUDP  = 2
	vlessIPv4    = 1
	vlessIPv6    = 3
)

// VLESS dials through a VLESS server over TLS or REALITY, optionally with the
// Vision flow. UDP uses VLESS's own packet command: one destination per
// connection, each datagram prefixed by its 16-bit length (what sing-box and Xray
// servers accept without a mux).
type VLESS struct {
	base base
	id   [16]byte
	flow string
	tls  *tlsClient
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
	return &VLESS{base: b, id: id, flow: b.spec.Flow, tls: t}, nil
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

// dial connects to the server, makes the TLS/REALITY handshake and sends the
// VLESS request header for cmd and dst.
func (v *VLESS) dial(ctx context.Context, cmd byte, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, v.base.timeout)
	defer cancel()
	raw, err := v.base.dialServer(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	done := handshakeDeadline(ctx, raw)
	tc, err := v.tls.handshake(ctx, raw)
	done()
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("%s: %w", v.base.prefix, handshakeErr(ctx, err))
	}
	flow := ""
	if cmd == vlessCmdTCP {
		flow = v.flow
	}
	hdr := appendVLESSRequest(nil, v.id, flow, cmd, dst)
	c := &vlessConn{Conn: tc, dst: dst}
	if flow == FlowVision {
		vc, err := newVisionConn(tc, raw, v.id)
		if err != nil {
			tc.Close()
			return nil, fmt.Errorf("%s: %w", v.base.prefix, err)
		}
		// Vision sends the header with the first (padded) data.
		vc.header = hdr
		c.Conn = vc
		return c, nil
	}
	done = handshakeDeadline(ctx, tc)
	_, err = tc.Write(hdr)
	done()
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("%s: send request: %w", v.base.prefix, handshakeErr(ctx, err))
	}
	return c, nil
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
	c, err := v.dial(ctx, vlessCmdUDP, dst)
	if err != nil {
		return nil, err
	}
	return &vlessPacketConn{vlessConn: c.(*vlessConn)}, nil
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
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	ip := dst.Addr().Unmap()
	if ip.Is4() {
		b = append(b, vlessIPv4)
	} else {
		b = append(b, vlessIPv6)
	}
	return append(b, ip.AsSlice()...)
}

// readVLESSResponse reads the response header: version 0 and addons to skip.
func readVLESSResponse(r io.Reader) error {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("server closed the connection without answering: wrong uuid or flow? (%w)", io.EOF)
		}
		return fmt.Errorf("read response: %w", err)
	}
	if h[0] != vlessVersion {
		return fmt.Errorf("response version %d, want %d: not a VLESS server?", h[0], vlessVersion)
	}
	if h[1] > 0 {
		if _, err := io.CopyN(io.Discard, r, int64(h[1])); err != nil {
			return fmt.Errorf("read response addons: %w", err)
		}
	}
	return nil
}

// vlessConn reads the response header before the first payload byte.
type vlessConn struct {
	net.Conn
	dst      netip.AddrPort
	respOnce sync.Once
	respErr  error
}

func (c *vlessConn) response() error {
	c.respOnce.Do(func() { c.respErr = readVLESSResponse(c.Conn) })
	return c.respErr
}

func (c *vlessConn) Read(p []byte) (int, error) {
	if err := c.response(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes when the transport can (the TLS layer sends close_notify).
func (c *vlessConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// vlessPacketConn frames datagrams with a 16-bit length.
type vlessPacketConn struct {
	*vlessConn
	rmu sync.Mutex
	wmu sync.Mutex
}

func (c *vlessPacketConn) RemoteAddr() net.Addr { return udpAddr(c.dst) }

func (c *vlessPacketConn) Write(p []byte) (int, error) {
	if len(p) > 0xffff {
		return 0, fmt.Errorf("datagram of %d bytes is too large", len(p))
	}
	b := make([]byte, 2, 2+len(p))
	binary.BigEndian.PutUint16(b, uint16(len(p)))
	b = append(b, p...)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.Conn.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read returns one datagram; a longer one than p is truncated.
func (c *vlessPacketConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := c.response(); err != nil {
		return 0, err
	}
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
