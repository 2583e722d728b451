package proxy

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Shadowsocks AEAD framing (SIP004): a salt, then chunks of
// AEAD(2-byte length) AEAD(payload), each seal with the next nonce.
const (
	ssMaxPayload = 0x3FFF
	ssTagSize    = 16
	ssNonceSize  = 12
	ssSubkeyInfo = "ss-subkey"
)

// errSSNoReply: the server closed before sending a single byte back, which
// is how Shadowsocks servers answer a wrong key (and an unreachable target).
var errSSNoReply = errors.New("server closed the connection without replying (wrong password or cipher? target unreachable?)")

// errSSSilent: data went out and nothing came back in time; ss-libev
// answers a wrong key by reading on in silence.
var errSSSilent = errors.New("server silent (wrong password or cipher?)")

// ssCipher is one AEAD method with the master key derived from the password.
type ssCipher struct {
	name    string
	keySize int // also the salt size for the three SIP004 methods
	newAEAD func(key []byte) (cipher.AEAD, error)
	key     []byte
}

func newSSCipher(method, password string) (*ssCipher, error) {
	c := &ssCipher{name: strings.ToLower(method)}
	switch c.name {
	case "aes-128-gcm":
		c.keySize, c.newAEAD = 16, newGCM
	case "aes-256-gcm":
		c.keySize, c.newAEAD = 32, newGCM
	case "chacha20-ietf-poly1305":
		c.keySize, c.newAEAD = chacha20poly1305.KeySize, chacha20poly1305.New
	default:
		return nil, fmt.Errorf("unknown cipher %q (aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, or a 2022-blake3 one)", method)
	}
	if password == "" {
		return nil, errors.New("password is required")
	}
	c.key = evpBytesToKey(password, c.keySize)
	return c, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// evpBytesToKey is OpenSSL's EVP_BytesToKey with MD5, one iteration and
// no salt: the key derivation every Shadowsocks implementation shares.
func evpBytesToKey(password string, size int) []byte {
	var key, prev []byte
	for len(key) < size {
		h := md5.New()
		h.Write(prev)
		h.Write([]byte(password))
		prev = h.Sum(nil)
		key = append(key, prev...)
	}
	return key[:size]
}

// aead returns the session cipher for one salt.
func (c *ssCipher) aead(salt []byte) (cipher.AEAD, error) {
	sub, err := hkdf.Key(sha1.New, c.key, salt, ssSubkeyInfo, c.keySize)
	if err != nil {
		return nil, err
	}
	return c.newAEAD(sub)
}

func (c *ssCipher) newSalt() ([]byte, error) {
	salt := make([]byte, c.keySize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	return salt, nil
}

// incNonce increments a little-endian counter.
func incNonce(n []byte) {
	for i := range n {
		n[i]++
		if n[i] != 0 {
			return
		}
	}
}

// ssWriter encrypts a stream into chunks; the salt goes out with the first.
// Chunks are sealed into a pooled buffer: a write allocates nothing and a conn
// keeps no buffer between writes.
type ssWriter struct {
	w      io.Writer
	aead   cipher.AEAD
	nonce  []byte
	salt   []byte // still to be sent
	lenBuf [2]byte
	// max is the largest payload of one chunk: ssMaxPayload (SIP004) when 0,
	// ss22MaxPayload for SIP022, whose fewer, larger chunks mean fewer seals.
	max int
}

// ssWriteBufs hold the chunks of one write: five full SIP004 chunks and a salt
// (SIP022: one full chunk and some), so that a 64 KiB write is one system call.
var ssWriteBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 5*(2+ssMaxPayload+2*ssTagSize)+64)
	return &b
}}

func newSSWriter(w io.Writer, c *ssCipher) (*ssWriter, error) {
	salt, err := c.newSalt()
	if err != nil {
		return nil, err
	}
	aead, err := c.aead(salt)
	if err != nil {
		return nil, err
	}
	return &ssWriter{w: w, aead: aead, nonce: make([]byte, ssNonceSize), salt: salt}, nil
}

// Write seals p in chunks of at most s.max and sends them, in as few system
// calls as the buffer allows.
func (s *ssWriter) Write(p []byte) (int, error) {
	bp := ssWriteBufs.Get().(*[]byte)
	defer ssWriteBufs.Put(bp)
	buf := append((*bp)[:0], s.salt...)
	sent := 0
	maxChunk := s.max
	if maxChunk == 0 {
		maxChunk = ssMaxPayload
	}
	for rest := p; len(rest) > 0; {
		n := min(len(rest), maxChunk)
		if len(buf)+2+n+2*ssTagSize > cap(buf) {
			if _, err := s.w.Write(buf); err != nil {
				return sent, err
			}
			s.salt = nil
			sent = len(p) - len(rest)
			buf = buf[:0]
		}
		s.lenBuf = [2]byte{byte(n >> 8), byte(n)}
		buf = s.aead.Seal(buf, s.nonce, s.lenBuf[:], nil)
		incNonce(s.nonce)
		buf = s.aead.Seal(buf, s.nonce, rest[:n], nil)
		incNonce(s.nonce)
		rest = rest[n:]
	}
	if _, err := s.w.Write(buf); err != nil {
		return sent, err
	}
	s.salt = nil
	return len(p), nil
}

// Reader states: what the next unit of the server's stream is.
const (
	ssSalt     = iota // the server's salt
	ss22Header        // SIP022's response header (fixed part)
	ssLength          // a sealed chunk length
	ssChunk           // a sealed chunk of size bytes
)

// ssReader decrypts the server's side of a Shadowsocks stream, SIP004 or SIP022:
// the salt (SIP022: and the response header), then chunks. It reads the socket
// into an rxBuf, which holds a buffer only while a unit is incomplete, opens
// chunks straight into the caller's buffer when they fit, and reads without
// waiting for the engine's poller (ReadNonblock).
type ssReader struct {
	src     streamSource
	cipher  *ssCipher   // SIP004
	m       *ss22Method // SIP022
	reqSalt []byte      // SIP022: our request's salt, which the response names
	aead    cipher.AEAD // nil until the salt has arrived
	nonce   [ssNonceSize]byte
	state   int
	size    int // the next chunk's payload length
	max     int // largest chunk payload
	rx      rxBuf
	pending []byte // plaintext opened in rx's buffer, not yet returned
	rerr    error
	gotSalt bool
	salt    []byte // SIP022: the server's salt until the first chunk is open
}

func newSSReader(r io.Reader, c *ssCipher) *ssReader {
	return &ssReader{src: newStreamSource(r), cipher: c, max: ssMaxPayload}
}

func newSS22Reader(r io.Reader, m *ss22Method, reqSalt []byte) *ssReader {
	return &ssReader{src: newStreamSource(r), m: m, reqSalt: reqSalt, max: ss22MaxPayload}
}

func (s *ssReader) replied() bool { return s.gotSalt }

func (s *ssReader) Read(p []byte) (int, error) { return s.read(p, true) }

func (s *ssReader) keySize() int {
	if s.m != nil {
		return s.m.keySize
	}
	return s.cipher.keySize
}

// unit is the length of the next unit of the stream.
func (s *ssReader) unit() int {
	switch s.state {
	case ssSalt:
		return s.keySize()
	case ss22Header:
		return 1 + 8 + s.m.keySize + 2 + ssTagSize
	case ssLength:
		return 2 + ssTagSize
	}
	return s.size + ssTagSize
}

func (s *ssReader) read(p []byte, wait bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, drained, err := s.readLocked(p, wait)
	s.rx.afterRead(len(s.pending) > 0, drained, s.rerr != nil)
	return n, err
}

func (s *ssReader) readLocked(p []byte, wait bool) (n int, drained bool, err error) {
	for n < len(p) {
		if len(s.pending) > 0 {
			n += takePending(&s.pending, p[n:])
			continue
		}
		if s.rerr != nil {
			break
		}
		need := s.unit()
		if buf := s.rx.buffered(); len(buf) >= need {
			k, err := s.open(buf[:need], p[n:])
			s.rx.consume(need)
			if err != nil {
				s.rerr = err
				break
			}
			n += k
			continue
		}
		if n > 0 && wait {
			break
		}
		err := s.rx.fill(&s.src, need, wait && n == 0)
		switch {
		case err == nil:
		case errors.Is(err, syscall.EAGAIN):
			if n > 0 {
				return n, true, nil
			}
			return 0, true, errWouldBlock
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			s.rerr = s.endError()
		case isTimeoutErr(err):
			if n > 0 {
				return n, false, nil
			}
			return 0, false, err
		default:
			s.rerr = err
		}
	}
	if n > 0 {
		return n, false, nil
	}
	return 0, false, s.rerr
}

// endError says how the stream ended, given where it ended.
func (s *ssReader) endError() error {
	have := len(s.rx.buffered())
	switch {
	case s.state == ssSalt && have == 0 && !s.gotSalt:
		return errSSNoReply
	case s.state == ssSalt:
		return fmt.Errorf("read salt: %w", io.ErrUnexpectedEOF)
	case s.state == ss22Header:
		return fmt.Errorf("read response header: %w", io.ErrUnexpectedEOF)
	case s.state == ssLength && have == 0:
		return io.EOF
	case s.state == ssLength:
		return fmt.Errorf("truncated chunk length: %w", io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("truncated chunk: %w", io.ErrUnexpectedEOF)
}

// open decrypts one unit. A chunk's payload lands in p when it fits (k bytes),
// else in place in the read buffer (pending).
func (s *ssReader) open(b, p []byte) (k int, err error) {
	switch s.state {
	case ssSalt:
		s.gotSalt = true
		if s.m != nil {
			s.salt = append([]byte(nil), b...)
			s.aead, err = s.m.sessionAEAD(b)
			s.state = ss22Header
		} else {
			s.aead, err = s.cipher.aead(b)
			s.state = ssLength
		}
		return 0, err
	case ss22Header:
		return 0, s.openHeader(b)
	case ssLength:
		plain, err := s.aead.Open(b[:0], s.nonce[:], b, nil)
		if err != nil {
			return 0, fmt.Errorf("decrypt chunk length: %w (wrong password or cipher?)", ErrAuthFailed)
		}
		incNonce(s.nonce[:])
		s.size = int(plain[0])<<8 | int(plain[1])
		if s.size > s.max {
			return 0, fmt.Errorf("chunk length %d exceeds %d", s.size, s.max)
		}
		s.state = ssChunk
		return 0, nil
	}
	dst := b[:0]
	direct := len(p) >= s.size
	if direct {
		dst = p[:0:len(p)]
	}
	plain, err := s.aead.Open(dst, s.nonce[:], b, nil)
	if err != nil {
		if s.salt != nil {
			return 0, fmt.Errorf("decrypt first chunk: %w", ErrAuthFailed)
		}
		return 0, fmt.Errorf("decrypt chunk: %w", ErrAuthFailed)
	}
	incNonce(s.nonce[:])
	s.salt = nil
	s.state = ssLength
	if direct {
		return len(plain), nil
	}
	s.pending = plain
	return 0, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Shadowsocks dials through a Shadowsocks AEAD server.
type Shadowsocks struct {
	base   base
	cipher *ssCipher
}

// DialTCP connects and sends the destination header at once. Shadowsocks
// has no reply to a request, so a wrong key or an unreachable target shows
// as the first Read failing.
func (s *Shadowsocks) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.base.timeout)
	defer cancel()
	c, err := s.base.dialServer(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	w, err := newSSWriter(c, s.cipher)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", s.base.prefix, err)
	}
	if err := s.base.sendRequest(ctx, c, w, appendSocksAddr(nil, dst)); err != nil {
		return nil, err
	}
	return &ssConn{Conn: c, r: newSSReader(c, s.cipher), w: w, prefix: s.base.prefix, firstReply: s.base.firstReply}, nil
}

// ssConn is a TCP stream through a Shadowsocks server. It is pollable: the
// engine's poller waits for its socket and ReadNonblock decrypts what is there.
type ssConn struct {
	net.Conn
	prefix     string
	firstReply time.Duration // <0: wait for the server forever
	rmu        sync.Mutex
	r          *ssReader
	wmu        sync.Mutex
	w          *ssWriter
	tmu        sync.Mutex  // not wmu: Close must not wait for a blocked Write
	timer      *time.Timer // first-reply timer, under tmu; stopped by Close
	closed     bool        // under tmu
	replied    atomic.Bool // the server's salt arrived
	silent     atomic.Bool // firstReply passed before it did
}

func (c *ssConn) Read(p []byte) (int, error) { return c.read(p, true) }

// ReadNonblock returns what the server sent and the socket holds now; an error
// wrapping EAGAIN when nothing is there.
func (c *ssConn) ReadNonblock(p []byte) (int, error) { return c.read(p, false) }

// RawConns is the socket for the engine's poller.
func (c *ssConn) RawConns() ([]syscall.RawConn, error) { return c.r.src.rawConns() }

func (c *ssConn) read(p []byte, wait bool) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.r.read(p, wait)
	if c.r.replied() {
		c.replied.Store(true)
	}
	if err == nil || err == io.EOF || errors.Is(err, syscall.EAGAIN) {
		return n, err
	}
	if c.silent.Load() && !c.replied.Load() {
		return n, fmt.Errorf("%s: no reply within %v of sending data: %w", c.prefix, c.firstReply, errSSSilent)
	}
	return n, fmt.Errorf("%s: %w", c.prefix, err)
}

func (c *ssConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.w.Write(p)
	if n > 0 && c.firstReply > 0 && !c.replied.Load() {
		c.tmu.Lock()
		if c.timer == nil && !c.closed {
			c.timer = time.AfterFunc(c.firstReply, c.checkReplied)
		}
		c.tmu.Unlock()
	}
	return n, err
}

// Close stops the first-reply timer, so that a closed conn leaves nothing
// pending (and no reference to itself in the runtime's timers).
func (c *ssConn) Close() error {
	c.tmu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.tmu.Unlock()
	return c.Conn.Close()
}

// checkReplied fails the stream when the server stayed silent: a blocked Read
// through its deadline, the engine's poller by shutting the socket's reading
// side, which makes it readable (the read then reports the silence).
func (c *ssConn) checkReplied() {
	if !c.replied.Load() {
		c.silent.Store(true)
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
		if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
			_ = cr.CloseRead()
		}
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// CloseWrite passes a half-close on to the server, which relays it.
func (c *ssConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// DialUDP returns a datagram conn through the server's UDP relay; each
// datagram is salt + AEAD(address + payload) under a fresh subkey.
func (s *Shadowsocks) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	c, err := s.base.dialUDPServer(ctx)
	if err != nil {
		return nil, err
	}
	return &ssUDPConn{Conn: c, cipher: s.cipher, dst: dst, addr: appendSocksAddr(nil, dst), bufs: s.base.bufs}, nil
}

// ssUDPConn is a datagram conn to one destination through a Shadowsocks
// UDP relay. It holds no buffer between calls.
type ssUDPConn struct {
	net.Conn // connected UDP socket to the server
	cipher   *ssCipher
	dst      netip.AddrPort
	addr     []byte // dst in SOCKS5 format
	bufs     *datagramBufs

	wmu sync.Mutex
	rmu sync.Mutex
}

func (u *ssUDPConn) Write(p []byte) (int, error) {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	bp := u.bufs.get()
	defer u.bufs.put(bp)
	pkt, err := sealSSPacket((*bp)[:0], u.cipher, u.addr, p)
	if err != nil {
		return 0, err
	}
	if _, err := u.Conn.Write(pkt); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read returns the next payload that came from dst; datagrams that fail
// to decrypt or come from elsewhere are dropped.
func (u *ssUDPConn) Read(p []byte) (int, error) {
	u.rmu.Lock()
	defer u.rmu.Unlock()
	return readDatagram(u.bufs, p, u.Conn.Read, u.accept)
}

// ReadNonblock is Read without waiting: an error wrapping syscall.EAGAIN
// means nothing is queued.
func (u *ssUDPConn) ReadNonblock(p []byte) (int, error) {
	raw, err := rawConn(u.Conn)
	if err != nil {
		return 0, err
	}
	u.rmu.Lock()
	defer u.rmu.Unlock()
	return readDatagram(u.bufs, p, func(b []byte) (int, error) { return recvNonblock(raw, b) }, u.accept)
}

// RawConns is the socket whose readability means ReadNonblock has something.
func (u *ssUDPConn) RawConns() ([]syscall.RawConn, error) {
	raw, err := rawConn(u.Conn)
	if err != nil {
		return nil, err
	}
	return []syscall.RawConn{raw}, nil
}

func (u *ssUDPConn) accept(b []byte) ([]byte, bool) {
	src, payload, err := openSSPacket(u.cipher, b)
	if err != nil || src.Host != "" || !sameAddrPort(src.IP, u.dst) {
		return nil, false
	}
	return payload, true
}

func (u *ssUDPConn) RemoteAddr() net.Addr { return udpAddr(u.dst) }

// sealSSPacket appends salt + AEAD(addr + payload) to dst, sealing in place
// (no allocation when dst has room for it).
func sealSSPacket(dst []byte, c *ssCipher, addr, payload []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, c.keySize)...)
	if _, err := rand.Read(dst[start:]); err != nil {
		return nil, err
	}
	aead, err := c.aead(dst[start:])
	if err != nil {
		return nil, err
	}
	plainAt := len(dst)
	dst = append(append(dst, addr...), payload...)
	var nonce [ssNonceSize]byte
	return aead.Seal(dst[:plainAt], nonce[:], dst[plainAt:], nil), nil
}

// openSSPacket decrypts a datagram in place and splits it into source
// address and payload.
func openSSPacket(c *ssCipher, pkt []byte) (socksAddr, []byte, error) {
	if len(pkt) < c.keySize+ssTagSize {
		return socksAddr{}, nil, errors.New("datagram too short")
	}
	aead, err := c.aead(pkt[:c.keySize])
	if err != nil {
		return socksAddr{}, nil, err
	}
	body := pkt[c.keySize:]
	plain, err := aead.Open(body[:0], make([]byte, ssNonceSize), body, nil)
	if err != nil {
		return socksAddr{}, nil, fmt.Errorf("decrypt datagram: %w", ErrAuthFailed)
	}
	src, n, err := parseSocksAddr(plain)
	if err != nil {
		return socksAddr{}, nil, err
	}
	return src, plain[n:], nil
}
