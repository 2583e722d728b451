package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// SOCKS5 protocol constants (RFC 1928, RFC 1929).
const (
	socksVersion          = 5
	socksAuthNone         = 0
	socksAuthPassword     = 2
	socksAuthNoAcceptable = 0xFF
	socksCmdConnect       = 1
	socksCmdUDP           = 3
	socksMaxUDPHeader     = 3 + 1 + 1 + 255 + 2
)

// SOCKS5 dials through a SOCKS5 server, with no authentication or with
// username/password.
type SOCKS5 struct {
	base base
}

// DialTCP sends CONNECT dst and returns the stream once the server agrees.
func (s *SOCKS5) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.base.timeout)
	defer cancel()
	c, err := s.base.dialServer(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	done := handshakeDeadline(ctx, c)
	_, err = s.handshake(c, socksCmdConnect, dst)
	done()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", s.base.prefix, handshakeErr(ctx, err))
	}
	return c, nil
}

// DialUDP sends UDP ASSOCIATE on a control connection that lives as long
// as the returned conn, and relays datagrams through the address the
// server names.
func (s *SOCKS5) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if !s.base.spec.UDP {
		return nil, fmt.Errorf("%s: udp is disabled for this proxy: %w", s.base.prefix, errors.ErrUnsupported)
	}
	ctx, cancel := context.WithTimeout(ctx, s.base.timeout)
	defer cancel()
	ctrl, err := s.base.dialServer(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	done := handshakeDeadline(ctx, ctrl)
	// The client's own UDP address is not known before the relay is
	// known; all zeros asks the server to accept the first datagram's.
	relay, err := s.handshake(ctrl, socksCmdUDP, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	done()
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("%s: %w", s.base.prefix, handshakeErr(ctx, err))
	}
	relayAddr, err := s.relayAddr(ctrl, relay)
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("%s: udp associate: %w", s.base.prefix, err)
	}
	udp, err := s.base.net.DialContext(ctx, "udp", relayAddr.String())
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("%s: udp relay %s: %w", s.base.prefix, relayAddr, err)
	}
	uc := &socksUDPConn{Conn: udp, ctrl: ctrl, dst: dst, bufs: s.base.bufs}
	uc.header = appendSocksAddr([]byte{0, 0, 0}, dst)
	return uc, nil
}

// relayAddr is where datagrams go: the server's answer, or the server's
// own address when it answered with an unspecified address.
func (s *SOCKS5) relayAddr(ctrl net.Conn, relay socksAddr) (netip.AddrPort, error) {
	if relay.Host != "" {
		return netip.AddrPort{}, fmt.Errorf("relay address %s is a name, not an IP address", relay)
	}
	if relay.Port == 0 {
		return netip.AddrPort{}, errors.New("server named relay port 0")
	}
	server, err := netip.ParseAddrPort(ctrl.RemoteAddr().String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip := relay.IP.Addr().Unmap()
	switch {
	case ip.IsUnspecified():
		ip = server.Addr().Unmap()
	case ip != server.Addr().Unmap() && !publicAddr(ip):
		// Datagrams for the targets would go to the router itself or the LAN.
		return netip.AddrPort{}, fmt.Errorf("relay address %s is in loopback, private or link-local space and not the server's own address: refused", ip)
	}
	return netip.AddrPortFrom(ip, relay.Port), nil
}

// handshake negotiates authentication and sends one request; it returns
// the bound address of the reply.
func (s *SOCKS5) handshake(c net.Conn, cmd byte, dst netip.AddrPort) (socksAddr, error) {
	user, pass := s.base.spec.Username, s.base.spec.Password
	greeting := []byte{socksVersion, 1, socksAuthNone}
	if user != "" || pass != "" {
		greeting = []byte{socksVersion, 2, socksAuthNone, socksAuthPassword}
	}
	if _, err := c.Write(greeting); err != nil {
		return socksAddr{}, fmt.Errorf("send greeting: %w", err)
	}
	var buf [2]byte
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		return socksAddr{}, fmt.Errorf("read method choice: %w", err)
	}
	if buf[0] != socksVersion {
		return socksAddr{}, fmt.Errorf("not a SOCKS5 server (version %d in reply)", buf[0])
	}
	switch buf[1] {
	case socksAuthNone:
	case socksAuthPassword:
		if user == "" && pass == "" {
			return socksAddr{}, errors.New("server chose username/password authentication that was not offered")
		}
		req := make([]byte, 0, 3+len(user)+len(pass))
		req = append(req, 1, byte(len(user)))
		req = append(req, user...)
		req = append(req, byte(len(pass)))
		req = append(req, pass...)
		if _, err := c.Write(req); err != nil {
			return socksAddr{}, fmt.Errorf("send credentials: %w", err)
		}
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			return socksAddr{}, fmt.Errorf("read authentication reply: %w", err)
		}
		if buf[1] != 0 {
			return socksAddr{}, ErrAuthFailed
		}
	case socksAuthNoAcceptable:
		if user == "" && pass == "" {
			return socksAddr{}, fmt.Errorf("server requires authentication, none configured: %w", ErrAuthFailed)
		}
		return socksAddr{}, fmt.Errorf("server accepts none of the offered methods: %w", ErrAuthFailed)
	default:
		return socksAddr{}, fmt.Errorf("server chose authentication method %d that was not offered", buf[1])
	}

	req := appendSocksAddr([]byte{socksVersion, cmd, 0}, dst)
	if _, err := c.Write(req); err != nil {
		return socksAddr{}, fmt.Errorf("send request: %w", err)
	}
	rep, bound, err := readSocksReply(c)
	if err != nil {
		if cmd == socksCmdConnect && errors.Is(err, os.ErrDeadlineExceeded) {
			// The server answered the greeting: it is waiting for the destination.
			return socksAddr{}, fmt.Errorf("read reply: %w: %w", ErrTargetTimeout, err)
		}
		return socksAddr{}, fmt.Errorf("read reply: %w", err)
	}
	if rep != 0 {
		if cmd == socksCmdUDP {
			return socksAddr{}, fmt.Errorf("udp associate refused: %s", socksReplyText(rep))
		}
		return socksAddr{}, &ReplyError{Dst: dst, Reason: socksReplyText(rep)}
	}
	return bound, nil
}

// readSocksReply reads exactly one reply (VER REP RSV ATYP ADDR PORT) so
// that no byte of the relayed stream is consumed.
func readSocksReply(r io.Reader) (rep byte, bound socksAddr, err error) {
	var buf [4 + 1 + 255 + 2]byte
	if _, err := io.ReadFull(r, buf[:5]); err != nil {
		return 0, socksAddr{}, err
	}
	if buf[0] != socksVersion {
		return 0, socksAddr{}, fmt.Errorf("bad version %d in reply", buf[0])
	}
	n, err := socksAddrLen(buf[3:5])
	if err != nil {
		return 0, socksAddr{}, err
	}
	if _, err := io.ReadFull(r, buf[5:3+n]); err != nil {
		return 0, socksAddr{}, err
	}
	bound, _, err = parseSocksAddr(buf[3 : 3+n])
	if err != nil {
		return 0, socksAddr{}, err
	}
	return buf[1], bound, nil
}

func socksReplyText(rep byte) string {
	var text string
	switch rep {
	case 1:
		text = "general failure of proxy"
	case 2:
		text = "not allowed by proxy's rules"
	case 3:
		text = "network unreachable from proxy"
	case 4:
		text = "host unreachable from proxy"
	case 5:
		text = "connection refused by proxy"
	case 6:
		text = "TTL expired at proxy"
	case 7:
		text = "command not supported by proxy"
	case 8:
		text = "address type not supported by proxy"
	default:
		text = "refused by proxy"
	}
	return fmt.Sprintf("%s (reply %d)", text, rep)
}

// parseSocksUDP splits a datagram from the relay into its source address
// and payload (RFC 1928 section 7).
func parseSocksUDP(b []byte) (frag byte, src socksAddr, payload []byte, err error) {
	if len(b) < 4 {
		return 0, socksAddr{}, nil, errors.New("datagram shorter than its header")
	}
	src, n, err := parseSocksAddr(b[3:])
	if err != nil {
		return 0, socksAddr{}, nil, err
	}
	return b[2], src, b[3+n:], nil
}

// socksUDPConn is a datagram conn to one destination through a SOCKS5
// UDP relay. It holds no buffer between calls: an idle flow costs its two
// sockets and this struct.
type socksUDPConn struct {
	net.Conn // connected UDP socket to the relay
	ctrl     net.Conn
	dst      netip.AddrPort
	header   []byte // RSV RSV FRAG ATYP ADDR PORT for dst
	bufs     *datagramBufs

	wmu       sync.Mutex
	rmu       sync.Mutex
	watchOnce sync.Once
	closeOnce sync.Once
}

// watchControl ends the UDP flow when the server closes the control
// connection, which ends the association on its side too. It runs once a
// blocking Read is made; ReadNonblock checks the connection itself.
func (u *socksUDPConn) watchControl() {
	var b [1]byte
	for {
		if _, err := u.ctrl.Read(b[:]); err != nil {
			u.Close()
			return
		}
	}
}

func (u *socksUDPConn) Write(p []byte) (int, error) {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	bp := u.bufs.get()
	defer u.bufs.put(bp)
	pkt := append(append((*bp)[:0], u.header...), p...)
	if _, err := u.Conn.Write(pkt); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read returns the next payload that came from dst, unfragmented; the
// rest is dropped as a UDP socket would.
func (u *socksUDPConn) Read(p []byte) (int, error) {
	u.watchOnce.Do(func() { go u.watchControl() })
	u.rmu.Lock()
	defer u.rmu.Unlock()
	return readDatagram(u.bufs, p, u.Conn.Read, u.accept)
}

// ReadNonblock is Read without waiting: an error wrapping syscall.EAGAIN
// means nothing is queued. io.EOF means the server closed the control
// connection, which ended the association.
func (u *socksUDPConn) ReadNonblock(p []byte) (int, error) {
	raws, err := u.RawConns()
	if err != nil {
		return 0, err
	}
	if err := streamClosed(raws[1]); err != nil {
		return 0, err
	}
	u.rmu.Lock()
	defer u.rmu.Unlock()
	return readDatagram(u.bufs, p, func(b []byte) (int, error) { return recvNonblock(raws[0], b) }, u.accept)
}

// RawConns are the sockets whose readability means ReadNonblock has something
// to say: the datagram socket and the control connection.
func (u *socksUDPConn) RawConns() ([]syscall.RawConn, error) {
	udp, err := rawConn(u.Conn)
	if err != nil {
		return nil, err
	}
	ctrl, err := rawConn(u.ctrl)
	if err != nil {
		return nil, err
	}
	return []syscall.RawConn{udp, ctrl}, nil
}

func (u *socksUDPConn) accept(b []byte) ([]byte, bool) {
	frag, src, payload, err := parseSocksUDP(b)
	if err != nil || frag != 0 || src.Host != "" || !sameAddrPort(src.IP, u.dst) {
		return nil, false
	}
	return payload, true
}

func (u *socksUDPConn) RemoteAddr() net.Addr { return udpAddr(u.dst) }

func (u *socksUDPConn) Close() error {
	var err error
	u.closeOnce.Do(func() {
		err = u.Conn.Close()
		u.ctrl.Close()
	})
	return err
}

// SetDeadline applies to the datagram socket only: the control connection
// must stay open for the life of the flow.
func (u *socksUDPConn) SetDeadline(t time.Time) error { return u.Conn.SetDeadline(t) }
