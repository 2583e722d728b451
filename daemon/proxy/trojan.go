package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tgtun/tgtun/daemon/proxy/transport"
)

// Trojan commands.
const (
	trojanCmdConnect = 1
	trojanCmdUDP     = 3
)

// Trojan dials through a Trojan server: TLS with a browser's ClientHello, then the
// hex SHA-224 of the password, the command and the destination. The server does
// not answer; a wrong password makes it close the connection (or hand it to its
// fallback web site). UDP is Trojan's UDP ASSOCIATE: each datagram carries its
// address and a 16-bit length; one destination per connection here.
type Trojan struct {
	base base
	key  [56]byte // hex(SHA-224(password))
	tls  *tlsClient
	tr   transport.Transport // nil: the stream is the TLS connection itself
}

func newTrojan(b base) (*Trojan, error) {
	if b.spec.Password == "" {
		return nil, fmt.Errorf("%s: password is required", b.prefix)
	}
	if b.spec.Security == SecurityReality {
		return nil, fmt.Errorf("%s: trojan runs over TLS only, not REALITY", b.prefix)
	}
	spec := b.spec
	spec.Security = SecurityTLS
	t, err := newTLSClient(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.prefix, err)
	}
	tr := &Trojan{base: b, tls: t}
	sum := sha256.Sum224([]byte(b.spec.Password))
	hex.Encode(tr.key[:], sum[:])
	if tr.tr, err = newTransport(&tr.base, t); err != nil {
		return nil, err
	}
	return tr, nil
}

// trojanFirstWait is how long the Trojan header waits for the client's first
// bytes to travel in its record (what Xray's Trojan client waits).
const trojanFirstWait = 100 * time.Millisecond

func (t *Trojan) dial(ctx context.Context, cmd byte, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.base.timeout)
	defer cancel()
	var c net.Conn
	var err error
	if t.tr != nil {
		c, err = t.base.dialStream(ctx, t.tr)
	} else {
		c, err = t.base.dialTLS(ctx, t.tls)
	}
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, 0, 56+2+1+19+2)
	hdr = append(hdr, t.key[:]...)
	hdr = append(hdr, '\r', '\n', cmd)
	hdr = appendSocksAddr(hdr, dst)
	hdr = append(hdr, '\r', '\n')
	if t.tr != nil {
		// A transport's stream: the header goes in its first frame with the
		// client's first bytes.
		return newHeldConn(c, hdr, trojanFirstWait), nil
	}
	if rc, ok := c.(*recordConn); ok {
		rc.holdPrefix(hdr, trojanFirstWait, rc.FlushRequest)
		return rc, nil
	}
	// TLS 1.2: uTLS's conn, the header at once.
	if err := t.base.sendRequest(ctx, c, c, hdr); err != nil {
		return nil, err
	}
	return c, nil
}

// DialTCP returns a stream to dst through the server.
func (t *Trojan) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return t.dial(ctx, trojanCmdConnect, dst)
}

// DialUDP returns a datagram conn to dst through the server.
func (t *Trojan) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if !t.base.spec.UDP {
		return nil, fmt.Errorf("%s: udp is off for this proxy: %w", t.base.prefix, errors.ErrUnsupported)
	}
	c, err := t.dial(ctx, trojanCmdUDP, dst)
	if err != nil {
		return nil, err
	}
	return &trojanPacketConn{Conn: c, dst: dst}, nil
}

// trojanPacketConn frames each datagram as address, length, CRLF, payload.
type trojanPacketConn struct {
	net.Conn
	dst netip.AddrPort
	rmu sync.Mutex
	wmu sync.Mutex
	buf [1 + 1 + 255 + 2 + 2 + 2]byte // the largest header
}

func (c *trojanPacketConn) RemoteAddr() net.Addr { return udpAddr(c.dst) }

func (c *trojanPacketConn) Write(p []byte) (int, error) {
	return writeFramed(c.Conn, &c.wmu, p, 19+4, func(b []byte) []byte {
		b = appendSocksAddr(b, c.dst)
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		return append(b, '\r', '\n')
	})
}

// Read returns the next datagram from dst (others are dropped); a longer one
// than p is truncated.
func (c *trojanPacketConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		from, n, err := readTrojanPacket(c.Conn, c.buf[:], p)
		if err != nil {
			return 0, err
		}
		if from.Host == "" && sameAddrPort(from.IP, c.dst) {
			return n, nil
		}
	}
}

// readTrojanPacket reads one framed datagram from r into p using hdr as scratch
// space for its header. It returns the source address and the payload length
// kept (the rest of a longer payload is discarded).
func readTrojanPacket(r io.Reader, hdr, p []byte) (socksAddr, int, error) {
	if _, err := io.ReadFull(r, hdr[:2]); err != nil {
		return socksAddr{}, 0, err
	}
	need, err := socksAddrLen(hdr[:2])
	if err != nil {
		return socksAddr{}, 0, fmt.Errorf("trojan packet: %w", err)
	}
	total := need + 4 // address, length, CRLF
	if _, err := io.ReadFull(r, hdr[2:total]); err != nil {
		return socksAddr{}, 0, noEOF(err)
	}
	from, _, err := parseSocksAddr(hdr[:need])
	if err != nil {
		return socksAddr{}, 0, fmt.Errorf("trojan packet: %w", err)
	}
	if hdr[need+2] != '\r' || hdr[need+3] != '\n' {
		return socksAddr{}, 0, errors.New("trojan packet: missing CRLF after the length")
	}
	n := int(binary.BigEndian.Uint16(hdr[need : need+2]))
	m := min(n, len(p))
	if _, err := io.ReadFull(r, p[:m]); err != nil {
		return socksAddr{}, 0, noEOF(err)
	}
	if n > m {
		if _, err := io.CopyN(io.Discard, r, int64(n-m)); err != nil {
			return socksAddr{}, 0, noEOF(err)
		}
	}
	return from, m, nil
}
