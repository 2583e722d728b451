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
type ssWriter struct {
	w     io.Writer
	aead  cipher.AEAD
	nonce []byte
	salt  []byte // still to be sent
	buf   []byte
}

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

// Write seals p in chunks of at most ssMaxPayload and sends them in one
// write.
func (s *ssWriter) Write(p []byte) (int, error) {
	s.buf = append(s.buf[:0], s.salt...)
	for rest := p; len(rest) > 0; {
		n := min(len(rest), ssMaxPayload)
		s.buf = s.aead.Seal(s.buf, s.nonce, []byte{byte(n >> 8), byte(n)}, nil)
		incNonce(s.nonce)
		s.buf = s.aead.Seal(s.buf, s.nonce, rest[:n], nil)
		incNonce(s.nonce)
		rest = rest[n:]
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return 0, err
	}
	s.salt = nil
	return len(p), nil
}

// ssBodies holds chunk buffers (large enough for a 2022 chunk). A stream borrows one
// from a chunk's length to the end of returning its plaintext, so a stream that waits
// for the server (most of them: messengers idle) holds none.
var ssBodies = sync.Pool{New: func() any { b := make([]byte, ss22MaxPayload+ssTagSize); return &b }}

// ssReader decrypts the server's stream: its salt, then chunks.
type ssReader struct {
	r       io.Reader
	cipher  *ssCipher
	aead    cipher.AEAD // nil until the salt has arrived
	nonce   []byte
	lenBuf  [2 + ssTagSize]byte
	body    *[]byte // borrowed from ssBodies while pending is in it
	pending []byte  // decrypted, not yet returned
	max     int     // largest chunk payload; 0 means ssMaxPayload
}

// release gives the chunk buffer back once pending is used up.
func (s *ssReader) release() {
	if s.body != nil && len(s.pending) == 0 {
		ssBodies.Put(s.body)
		s.body = nil
	}
}

func (s *ssReader) replied() bool { return s.aead != nil }

func newSSReader(r io.Reader, c *ssCipher) *ssReader {
	return &ssReader{r: r, cipher: c, nonce: make([]byte, ssNonceSize)}
}

func (s *ssReader) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		if err := s.readChunk(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	s.release()
	return n, nil
}

// readChunk decrypts the next chunk into pending. A clean end between
// chunks is io.EOF; anything cut short is an error.
func (s *ssReader) readChunk() error {
	if s.aead == nil {
		salt := make([]byte, s.cipher.keySize)
		if n, err := io.ReadFull(s.r, salt); err != nil {
			if n == 0 && errors.Is(err, io.EOF) {
				return errSSNoReply
			}
			return fmt.Errorf("read salt: %w", err)
		}
		aead, err := s.cipher.aead(salt)
		if err != nil {
			return err
		}
		s.aead = aead
	}
	lenBuf := s.lenBuf[:]
	if n, err := io.ReadFull(s.r, lenBuf); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("truncated chunk length: %w", err)
	}
	plainLen, err := s.aead.Open(lenBuf[:0], s.nonce, lenBuf, nil)
	if err != nil {
		return fmt.Errorf("decrypt chunk length: %w (wrong password or cipher?)", ErrAuthFailed)
	}
	incNonce(s.nonce)
	size := int(plainLen[0])<<8 | int(plainLen[1])
	limit := s.max
	if limit == 0 {
		limit = ssMaxPayload
	}
	if size > limit {
		return fmt.Errorf("chunk length %d exceeds %d", size, limit)
	}
	if s.body == nil {
		s.body = ssBodies.Get().(*[]byte)
	}
	body := (*s.body)[:size+ssTagSize]
	if _, err := io.ReadFull(s.r, body); err != nil {
		return fmt.Errorf("truncated chunk: %w", noEOF(err))
	}
	payload, err := s.aead.Open(body[:0], s.nonce, body, nil)
	if err != nil {
		return fmt.Errorf("decrypt chunk: %w", ErrAuthFailed)
	}
	incNonce(s.nonce)
	s.pending = payload
	s.release() // an empty chunk
	return nil
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

// ssReplyReader decrypts the server's side of a stream; replied reports
// whether the server has sent anything yet.
type ssReplyReader interface {
	io.Reader
	replied() bool
}

// ssConn is a TCP stream through a Shadowsocks server.
type ssConn struct {
	net.Conn
	prefix     string
	firstReply time.Duration // <0: wait for the server forever
	rmu        sync.Mutex
	r          ssReplyReader
	wmu        sync.Mutex
	w          *ssWriter
	tmu        sync.Mutex  // not wmu: Close must not wait for a blocked Write
	timer      *time.Timer // first-reply timer, under tmu; stopped by Close
	closed     bool        // under tmu
	replied    atomic.Bool // the server's salt arrived
	silent     atomic.Bool // firstReply passed before it did
}

func (c *ssConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.r.Read(p)
	if c.r.replied() {
		c.replied.Store(true)
	}
	if err == nil || err == io.EOF {
		return n, err
	}
	if c.silent.Load() && isTimeoutErr(err) {
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

// checkReplied fails a pending Read when the server stayed silent.
func (c *ssConn) checkReplied() {
	if !c.replied.Load() {
		c.silent.Store(true)
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
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
