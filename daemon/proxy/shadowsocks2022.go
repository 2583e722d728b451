package proxy

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"lukechampine.com/blake3"
)

// Shadowsocks 2022 (SIP022) framing, written here on golang.org/x/crypto
// and lukechampine.com/blake3 (see docs/ARCHITECTURE.md for why not a
// library). TCP: salt, identity headers (multi-PSK), then AEAD chunks
// whose nonce counts on from the request's two header chunks; UDP: a
// block-encrypted session/packet header (AES) or an XChaCha20 nonce, then
// one sealed body.
const (
	ss22MaxPayload    = 0xFFFF
	ss22MaxPadding    = 900
	ss22TimeWindow    = 30 * time.Second // |their clock - ours| allowed
	ss22SaltTTL       = 60 * time.Second // how long seen salts are kept
	ss22HeaderClient  = 0
	ss22HeaderServer  = 1
	ss22XNonceSize    = chacha20poly1305.NonceSizeX
	ss22SessionSubkey = "shadowsocks 2022 session subkey"
	ss22IdentitySub   = "shadowsocks 2022 identity subkey"
)

var (
	errSS22Replay    = errors.New("replayed server salt")
	errSS22Timestamp = errors.New("server clock differs by more than 30s (check the router's time)")
)

// ss22Method is one 2022 cipher with its keys.
type ss22Method struct {
	name    string
	keySize int // also the salt size
	psks    [][]byte
	// pskHash[i] is BLAKE3(psks[i+1])[:16], the identity of the next key.
	pskHash [][]byte
	newAEAD func(key []byte) (cipher.AEAD, error)
	// UDP: AES ciphers encrypt the 16-byte packet header with the first
	// key and decrypt the server's with the user (last) key; chacha seals
	// whole packets with XChaCha20-Poly1305 under the key itself.
	udpEnc, udpDec cipher.Block
	udpX           cipher.AEAD
	salts          *saltPool
	now            func() time.Time
}

func isSS2022(method string) bool { return strings.HasPrefix(strings.ToLower(method), "2022-") }

// newSS22Method decodes the base64 key(s) in password: one key, or
// identity keys and the user key joined by ':' (AES ciphers only).
func newSS22Method(method, password string) (*ss22Method, error) {
	m := &ss22Method{name: strings.ToLower(method), salts: &saltPool{seen: map[string]time.Time{}}, now: time.Now}
	switch m.name {
	case "2022-blake3-aes-128-gcm":
		m.keySize, m.newAEAD = 16, newGCM
	case "2022-blake3-aes-256-gcm":
		m.keySize, m.newAEAD = 32, newGCM
	case "2022-blake3-chacha20-poly1305":
		m.keySize, m.newAEAD = chacha20poly1305.KeySize, chacha20poly1305.New
	default:
		return nil, fmt.Errorf("unknown cipher %q (2022-blake3-aes-128-gcm, 2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305)", method)
	}
	if password == "" {
		return nil, errors.New("password is required (the base64 key)")
	}
	for i, part := range strings.Split(password, ":") {
		k, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			k, err = base64.RawStdEncoding.DecodeString(part)
		}
		if err != nil || len(k) != m.keySize {
			return nil, fmt.Errorf("password: key %d is not a base64 key of %d bytes, as %s needs", i+1, m.keySize, m.name)
		}
		m.psks = append(m.psks, k)
	}
	for _, k := range m.psks[1:] {
		h := blake3.Sum512(k)
		m.pskHash = append(m.pskHash, h[:aes.BlockSize])
	}
	var err error
	if m.name == "2022-blake3-chacha20-poly1305" {
		if len(m.psks) > 1 {
			return nil, errors.New("password: several keys (identity headers) work only with the AES 2022 ciphers")
		}
		m.udpX, err = chacha20poly1305.NewX(m.psks[0])
	} else {
		if m.udpEnc, err = aes.NewCipher(m.psks[0]); err == nil {
			m.udpDec, err = aes.NewCipher(m.userKey())
		}
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (m *ss22Method) userKey() []byte { return m.psks[len(m.psks)-1] }

// sessionAEAD derives the session cipher from the user key and a salt
// (TCP) or a session id (UDP).
func (m *ss22Method) sessionAEAD(salt []byte) (cipher.AEAD, error) {
	material := append(append(make([]byte, 0, m.keySize+len(salt)), m.userKey()...), salt...)
	key := make([]byte, m.keySize)
	blake3.DeriveKey(key, ss22SessionSubkey, material)
	return m.newAEAD(key)
}

// timeOK checks a peer's timestamp against our clock.
func (m *ss22Method) timeOK(ts uint64) bool {
	d := m.now().Sub(time.Unix(int64(ts), 0))
	return d <= ss22TimeWindow && d >= -ss22TimeWindow
}

// saltPool remembers the server salts of the last ss22SaltTTL: a salt seen
// twice is a replay.
type saltPool struct {
	mu        sync.Mutex
	seen      map[string]time.Time
	lastPrune time.Time
}

// add records salt and reports whether it was new.
func (p *saltPool) add(salt []byte, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.lastPrune) > time.Second {
		for k, t := range p.seen {
			if now.Sub(t) > ss22SaltTTL {
				delete(p.seen, k)
			}
		}
		p.lastPrune = now
	}
	if t, ok := p.seen[string(salt)]; ok && now.Sub(t) <= ss22SaltTTL {
		return false
	}
	p.seen[string(salt)] = now
	return true
}

// Shadowsocks2022 dials through a Shadowsocks 2022 server.
type Shadowsocks2022 struct {
	base base
	m    *ss22Method
}

// DialTCP connects and sends the request header (with padding, as no
// payload is there yet) at once.
func (s *Shadowsocks2022) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.base.timeout)
	defer cancel()
	c, err := s.base.dialServer(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	req, w, salt, err := s.m.request(c, dst)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", s.base.prefix, err)
	}
	if err := s.base.sendRequest(ctx, c, c, req); err != nil {
		return nil, err
	}
	return &ssConn{Conn: c, r: newSS22Reader(c, s.m, salt), w: w, prefix: s.base.prefix, firstReply: s.base.firstReply}, nil
}

// request builds the request's first bytes and the writer for the rest.
func (m *ss22Method) request(c io.Writer, dst netip.AddrPort) (req []byte, w *ssWriter, salt []byte, err error) {
	salt = make([]byte, m.keySize)
	if _, err := rand.Read(salt); err != nil {
		return nil, nil, nil, err
	}
	aead, err := m.sessionAEAD(salt)
	if err != nil {
		return nil, nil, nil, err
	}
	req = append(req, salt...)
	for i, h := range m.pskHash { // one identity header per identity key
		material := append(append(make([]byte, 0, 2*m.keySize), m.psks[i]...), salt...)
		sub := make([]byte, m.keySize)
		blake3.DeriveKey(sub, ss22IdentitySub, material)
		b, err := aes.NewCipher(sub)
		if err != nil {
			return nil, nil, nil, err
		}
		eih := make([]byte, aes.BlockSize)
		b.Encrypt(eih, h)
		req = append(req, eih...)
	}
	pad := 1 + mrand.IntN(ss22MaxPadding)
	addr := appendSocksAddr(nil, dst)
	varHdr := make([]byte, 0, len(addr)+2+pad)
	varHdr = append(varHdr, addr...)
	varHdr = binary.BigEndian.AppendUint16(varHdr, uint16(pad))
	varHdr = append(varHdr, make([]byte, pad)...)
	fixed := []byte{ss22HeaderClient}
	fixed = binary.BigEndian.AppendUint64(fixed, uint64(m.now().Unix()))
	fixed = binary.BigEndian.AppendUint16(fixed, uint16(len(varHdr)))
	nonce := make([]byte, ssNonceSize)
	req = aead.Seal(req, nonce, fixed, nil)
	incNonce(nonce)
	req = aead.Seal(req, nonce, varHdr, nil)
	incNonce(nonce)
	return req, &ssWriter{w: c, aead: aead, nonce: nonce, max: ss22MaxPayload}, salt, nil
}

// openHeader checks SIP022's response header: its type, the server's time, our
// request's salt in it, and that the server's salt is not a replay. It gives the
// length of the first chunk.
func (s *ssReader) openHeader(b []byte) error {
	m := s.m
	plain, err := s.aead.Open(b[:0], s.nonce[:], b, nil)
	if err != nil {
		return fmt.Errorf("decrypt response header: %w (wrong key or cipher?)", ErrAuthFailed)
	}
	incNonce(s.nonce[:])
	switch {
	case plain[0] != ss22HeaderServer:
		return fmt.Errorf("response header type %d, want %d", plain[0], ss22HeaderServer)
	case !m.timeOK(binary.BigEndian.Uint64(plain[1:9])):
		return errSS22Timestamp
	case !bytes.Equal(plain[9:9+m.keySize], s.reqSalt):
		return errors.New("response is not for our request (request salt differs)")
	case !m.salts.add(s.salt, m.now()):
		return errSS22Replay
	}
	s.size = int(binary.BigEndian.Uint16(plain[9+m.keySize:]))
	s.state = ssChunk
	return nil
}

// DialUDP returns a datagram conn to dst through the server's UDP relay:
// one client session per conn.
func (s *Shadowsocks2022) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	c, err := s.base.dialUDPServer(ctx)
	if err != nil {
		return nil, err
	}
	u := &ss22UDPConn{Conn: c, m: s.m, dst: dst, addr: appendSocksAddr(nil, dst), session: mrand.Uint64(), bufs: s.base.bufs}
	if s.m.udpX == nil {
		var id [8]byte
		binary.BigEndian.PutUint64(id[:], u.session)
		if u.aead, err = s.m.sessionAEAD(id[:]); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", s.base.prefix, err)
		}
	}
	return u, nil
}

// ss22UDPConn is one client session to one destination. It holds no buffer
// between calls (pooled ones while reading and writing) and is pollable.
type ss22UDPConn struct {
	net.Conn
	m       *ss22Method
	dst     netip.AddrPort
	addr    []byte
	session uint64
	aead    cipher.AEAD // AES ciphers: our session's
	bufs    *datagramBufs

	wmu    sync.Mutex
	packet uint64

	rmu     sync.Mutex
	srv     uint64 // the server's session id, 0 until its first packet
	srvAEAD cipher.AEAD
	srvSeen time.Time
	window  replayWindow
}

func (u *ss22UDPConn) Write(p []byte) (int, error) {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	bp := u.bufs.get()
	defer u.bufs.put(bp)
	pkt, err := u.m.sealPacket((*bp)[:0], u.session, u.packet, u.aead, u.addr, u.dst.Port(), p)
	if err != nil {
		return 0, err
	}
	u.packet++
	if _, err := u.Conn.Write(pkt); err != nil {
		return 0, err
	}
	return len(p), nil
}

// sealPacket appends one client datagram to dst, sealing in place (nothing is
// allocated when dst has room).
func (m *ss22Method) sealPacket(dst []byte, session, packet uint64, aead cipher.AEAD, addr []byte, port uint16, payload []byte) ([]byte, error) {
	pad := 0
	if port == 53 && len(payload) < ss22MaxPadding {
		pad = 1 + mrand.IntN(ss22MaxPadding-len(payload))
	}
	start := len(dst)
	if m.udpX != nil {
		// nonce, then XChaCha20-Poly1305 over the header and the body.
		dst = append(dst, make([]byte, ss22XNonceSize)...)
		if _, err := rand.Read(dst[start:]); err != nil {
			return nil, err
		}
	}
	hdrAt := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, session)
	dst = binary.BigEndian.AppendUint64(dst, packet)
	if m.udpX == nil {
		for i, h := range m.pskHash {
			var eih [aes.BlockSize]byte
			for j := range eih {
				eih[j] = h[j] ^ dst[hdrAt+j]
			}
			b, err := aes.NewCipher(m.psks[i])
			if err != nil {
				return nil, err
			}
			b.Encrypt(eih[:], eih[:])
			dst = append(dst, eih[:]...)
		}
	}
	bodyAt := len(dst)
	if m.udpX != nil {
		bodyAt = hdrAt // the header is sealed with the body
	}
	dst = append(dst, ss22HeaderClient)
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.now().Unix()))
	dst = binary.BigEndian.AppendUint16(dst, uint16(pad))
	dst = append(dst, make([]byte, pad)...)
	dst = append(append(dst, addr...), payload...)
	if m.udpX != nil {
		return m.udpX.Seal(dst[:bodyAt], dst[start:hdrAt], dst[bodyAt:], nil), nil
	}
	dst = aead.Seal(dst[:bodyAt], dst[hdrAt+4:hdrAt+16], dst[bodyAt:], nil)
	m.udpEnc.Encrypt(dst[hdrAt:hdrAt+16], dst[hdrAt:hdrAt+16])
	return dst, nil
}

// Read returns the next payload from dst; datagrams that fail to decrypt,
// replay a packet id, carry a stale time or come from elsewhere are dropped.
func (u *ss22UDPConn) Read(p []byte) (int, error) {
	u.rmu.Lock()
	defer u.rmu.Unlock()
	return readDatagram(u.bufs, p, u.Conn.Read, u.open)
}

// ReadNonblock is Read without waiting: an error wrapping syscall.EAGAIN
// means nothing is queued.
func (u *ss22UDPConn) ReadNonblock(p []byte) (int, error) {
	raw, err := rawConn(u.Conn)
	if err != nil {
		return 0, err
	}
	u.rmu.Lock()
	defer u.rmu.Unlock()
	return readDatagram(u.bufs, p, func(b []byte) (int, error) { return recvNonblock(raw, b) }, u.open)
}

// RawConns is the socket whose readability means ReadNonblock has something.
func (u *ss22UDPConn) RawConns() ([]syscall.RawConn, error) {
	raw, err := rawConn(u.Conn)
	if err != nil {
		return nil, err
	}
	return []syscall.RawConn{raw}, nil
}

// open checks and decrypts one server datagram in place.
func (u *ss22UDPConn) open(pkt []byte) ([]byte, bool) {
	m := u.m
	var session, packet uint64
	var aead cipher.AEAD
	var body []byte
	if m.udpX != nil {
		if len(pkt) < ss22XNonceSize+16+ssTagSize {
			return nil, false
		}
		plain, err := m.udpX.Open(pkt[ss22XNonceSize:ss22XNonceSize], pkt[:ss22XNonceSize], pkt[ss22XNonceSize:], nil)
		if err != nil || len(plain) < 16 {
			return nil, false
		}
		session, packet = binary.BigEndian.Uint64(plain), binary.BigEndian.Uint64(plain[8:])
		body = plain[16:]
	} else {
		if len(pkt) < 16+ssTagSize {
			return nil, false
		}
		m.udpDec.Decrypt(pkt[:16], pkt[:16])
		session, packet = binary.BigEndian.Uint64(pkt), binary.BigEndian.Uint64(pkt[8:])
		aead = u.srvAEAD
		if session != u.srv || aead == nil {
			var err error
			if aead, err = m.sessionAEAD(pkt[:8]); err != nil {
				return nil, false
			}
		}
		plain, err := aead.Open(pkt[16:16], pkt[4:16], pkt[16:], nil)
		if err != nil {
			return nil, false
		}
		body = plain
	}
	now := m.now()
	newSession := session != u.srv
	switch {
	case newSession && u.srv != 0 && now.Sub(u.srvSeen) < ss22SaltTTL:
		return nil, false // a second server session while the first is alive
	case !newSession && !u.window.check(packet):
		return nil, false
	}
	// type, timestamp, client session id, padding length
	if len(body) < 1+8+8+2 || body[0] != ss22HeaderServer || !m.timeOK(binary.BigEndian.Uint64(body[1:])) ||
		binary.BigEndian.Uint64(body[9:]) != u.session {
		return nil, false
	}
	pad := int(binary.BigEndian.Uint16(body[17:]))
	rest := body[19:]
	if pad > len(rest) {
		return nil, false
	}
	src, n, err := parseSocksAddr(rest[pad:])
	if err != nil || src.Host != "" || !sameAddrPort(src.IP, u.dst) {
		return nil, false
	}
	if newSession {
		u.srv, u.srvAEAD, u.window = session, aead, replayWindow{}
	}
	u.srvSeen = now
	u.window.add(packet)
	return rest[pad+n:], true
}

func (u *ss22UDPConn) RemoteAddr() net.Addr { return udpAddr(u.dst) }

// replayWindow accepts each packet id once, within the last 1024.
type replayWindow struct {
	top  uint64 // highest id seen + 1; 0 = none yet
	bits [16]uint64
}

const replayWindowSize = 16 * 64

func (w *replayWindow) check(id uint64) bool {
	switch {
	case id >= w.top:
		return true
	case w.top-id > replayWindowSize:
		return false
	}
	i := id % replayWindowSize
	return w.bits[i/64]&(1<<(i%64)) == 0
}

func (w *replayWindow) add(id uint64) {
	if id >= w.top {
		if id-w.top >= replayWindowSize {
			w.bits = [16]uint64{}
		} else {
			for x := w.top; x <= id; x++ {
				i := x % replayWindowSize
				w.bits[i/64] &^= 1 << (i % 64)
			}
		}
		w.top = id + 1
	}
	i := id % replayWindowSize
	w.bits[i/64] |= 1 << (i % 64)
}
