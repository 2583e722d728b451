package proxy

import (
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/unix"
)

// tgtun's own TLS 1.3 record layer, which carries VLESS and Trojan after the
// uTLS handshake (docs/ARCHITECTURE.md, "VLESS, REALITY, Vision and Trojan"):
// records are sealed and opened in place in pooled buffers, a conn that waits
// holds no buffer and no goroutine, and the engine's poller reads it without
// waiting. The keys come from the handshake's traffic secrets, which uTLS hands
// out through the standard key log callback (Config.KeyLogWriter); keys and IVs
// follow RFC 8446 §7.1 and §7.3.

// Record layer constants (RFC 8446 §5).
const (
	recordHeaderLen = 5
	maxPlaintext    = 1 << 14
	// maxCiphertext is the largest record a TLS 1.3 peer may send (§5.2).
	maxCiphertext = maxPlaintext + 256
	aeadTagLen    = 16
	// maxSealed is the largest record this side sends: header, a full
	// plaintext, the inner content type and the tag.
	maxSealed = recordHeaderLen + maxPlaintext + 1 + aeadTagLen
	// keyUpdateAfter: the records sent under one key before this side updates
	// it (AES-GCM's limit in §5.5 is 2^24.5 full records).
	keyUpdateAfter = 1 << 24
	// maxEmptyRecords in a row are tolerated (Go's crypto/tls allows 16).
	maxEmptyRecords = 16
	// maxHandshakeMsg bounds a post-handshake message (a session ticket).
	maxHandshakeMsg = 64 << 10

	recordTypeAlert     = 21
	recordTypeHandshake = 22
	recordTypeAppData   = 23

	handshakeNewSessionTicket = 4
	handshakeKeyUpdate        = 24

	alertCloseNotify = 0
)

// suite13 is one TLS 1.3 cipher suite: its AEAD and hash.
type suite13 struct {
	id     uint16
	keyLen int
	hash   func() hash.Hash
	aead   func(key []byte) (cipher.AEAD, error)
}

var suites13 = [...]suite13{
	{tls.TLS_AES_128_GCM_SHA256, 16, sha256.New, newGCM},
	{tls.TLS_AES_256_GCM_SHA384, 32, sha512.New384, newGCM},
	{tls.TLS_CHACHA20_POLY1305_SHA256, chacha20poly1305.KeySize, sha256.New, chacha20poly1305.New},
}

func suite13ByID(id uint16) *suite13 {
	for i := range suites13 {
		if suites13[i].id == id {
			return &suites13[i]
		}
	}
	return nil
}

// expandLabel is HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
func expandLabel(h func() hash.Hash, secret []byte, label string, length int) ([]byte, error) {
	info := make([]byte, 0, 2+1+len("tls13 ")+len(label)+1)
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(len("tls13 ")+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0)
	return hkdf.Expand(h, secret, string(info), length)
}

// trafficKeys is one direction's protection: the AEAD under the current traffic
// secret and the record sequence number.
type trafficKeys struct {
	suite  *suite13
	secret []byte
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
	nonce  [12]byte // scratch: a per-conn array, so building it allocates nothing
}

// set derives key and IV from secret (RFC 8446 §7.3) and restarts the sequence.
func (k *trafficKeys) set(s *suite13, secret []byte) error {
	key, err := expandLabel(s.hash, secret, "key", s.keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(s.hash, secret, "iv", len(k.iv))
	if err != nil {
		return err
	}
	aead, err := s.aead(key)
	if err != nil {
		return err
	}
	k.suite, k.secret, k.aead, k.seq = s, secret, aead, 0
	copy(k.iv[:], iv)
	return nil
}

// update moves to the next traffic secret (RFC 8446 §7.2, KeyUpdate).
func (k *trafficKeys) update() error {
	next, err := expandLabel(k.suite.hash, k.secret, "traffic upd", k.suite.hash().Size())
	if err != nil {
		return err
	}
	return k.set(k.suite, next)
}

// nextNonce is the IV XOR the 64-bit sequence number (RFC 8446 §5.3); it counts
// the record.
func (k *trafficKeys) nextNonce() []byte {
	k.nonce = k.iv
	for i := range 8 {
		k.nonce[4+i] ^= byte(k.seq >> (56 - 8*i))
	}
	k.seq++
	return k.nonce[:]
}

// keyLog takes the application traffic secrets from uTLS's key log lines
// ("LABEL <client random> <secret>", NSS's format).
type keyLog struct{ client, server []byte }

func (l *keyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	var dst *[]byte
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = &l.client
	case "SERVER_TRAFFIC_SECRET_0":
		dst = &l.server
	default:
		return len(line), nil
	}
	s := make([]byte, hex.DecodedLen(len(f[2])))
	if _, err := hex.Decode(s, f[2]); err != nil {
		return 0, fmt.Errorf("key log: %w", err)
	}
	*dst = s
	return len(line), nil
}

// recordConn is a TLS 1.3 connection after its handshake: application data in
// records of our own. Reads come from one goroutine at a time, as do writes; a
// read and a write may run together, and Close may be called at any time.
type recordConn struct {
	conn  net.Conn
	src   streamSource
	state tls.ConnectionState // what is left of the handshake: version, suite, ALPN, name

	rmu     sync.Mutex
	in      trafficKeys
	rx      rxBuf
	pending []byte // plaintext opened in rx's buffer, not yet returned
	hs      []byte // a post-handshake message arriving in parts
	empties int    // empty records in a row
	tickets int    // session tickets seen (and dropped)
	rerr    error  // the read side's end: io.EOF, an alert, a broken record
	// oneRecord: a read returns after one record's data (Vision, which must
	// see a switch to the raw connection before the next record is opened).
	oneRecord bool

	wmu      sync.Mutex
	out      trafficKeys
	werr     error
	prefix   []byte      // sent at the front of the first record (a request header)
	alone    *time.Timer // sends prefix without data when none came in time
	updating atomic.Bool // send a KeyUpdate before the next record
	closed   atomic.Bool
}

// newRecordConn takes over a connection whose TLS 1.3 handshake is done: the
// traffic secrets, and early, the bytes uTLS read past the handshake (a session
// ticket a server sends at once, maybe data).
func newRecordConn(conn net.Conn, suite uint16, clientSecret, serverSecret, readAhead []byte, state tls.ConnectionState) (*recordConn, error) {
	s := suite13ByID(suite)
	if s == nil {
		return nil, fmt.Errorf("TLS 1.3 cipher suite %#04x is not one this client offers", suite)
	}
	if len(clientSecret) == 0 || len(serverSecret) == 0 {
		return nil, errors.New("the TLS handshake did not yield its traffic secrets")
	}
	c := &recordConn{conn: conn, src: newStreamSource(conn), state: state}
	if err := c.in.set(s, serverSecret); err != nil {
		return nil, err
	}
	if err := c.out.set(s, clientSecret); err != nil {
		return nil, err
	}
	c.rx.load(readAhead)
	c.openReadAhead()
	return c, nil
}

// setOneRecord turns one-record reads on or off (Vision).
func (c *recordConn) setOneRecord(on bool) {
	c.rmu.Lock()
	c.oneRecord = on
	c.rmu.Unlock()
}

// errHandedOver ends the read side once Vision reads the raw connection.
var errHandedOver = errors.New("TLS: the server's data now comes on the raw connection")

// takeRaw ends the read side: the server sends the rest of its direction
// unencrypted on the TCP connection (Vision's direct mode). It returns what the
// record layer holds: plaintext not returned yet, then bytes read from the
// socket past the last record, which are the raw stream's.
func (c *recordConn) takeRaw() []byte {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	out := append(append([]byte(nil), c.pending...), c.rx.buffered()...)
	c.pending = nil
	c.rx.release()
	c.rerr = errHandedOver
	return out
}

// ConnectionState reports what the handshake settled (HTTP/2 reads the ALPN).
func (c *recordConn) ConnectionState() tls.ConnectionState { return c.state }

// NetConn is the TCP connection under the records.
func (c *recordConn) NetConn() net.Conn { return c.conn }

// RawConns is the socket whose readability means ReadNonblock may have data.
func (c *recordConn) RawConns() ([]syscall.RawConn, error) { return c.src.rawConns() }

// Read returns application data, waiting for it.
func (c *recordConn) Read(p []byte) (int, error) { return c.read(p, true) }

// ReadNonblock returns the application data that the socket and the buffer hold
// now; an error wrapping EAGAIN when there is none.
func (c *recordConn) ReadNonblock(p []byte) (int, error) { return c.read(p, false) }

func (c *recordConn) read(p []byte, wait bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, drained, err := c.readLocked(p, wait)
	c.rx.afterRead(len(c.pending) > 0, drained, c.rerr != nil)
	return n, err
}

func (c *recordConn) readLocked(p []byte, wait bool) (n int, drained bool, err error) {
	for n < len(p) {
		if len(c.pending) > 0 {
			n += takePending(&c.pending, p[n:])
			continue
		}
		if c.rerr != nil || (c.oneRecord && n > 0) {
			break
		}
		need, err := c.frontRecord()
		if err != nil {
			c.rerr = err
			break
		}
		if buf := c.rx.buffered(); len(buf) >= need {
			k, err := c.openRecord(buf[:need], p[n:])
			c.rx.consume(need)
			if err != nil {
				c.rerr = err
				break
			}
			n += k
			continue
		}
		if n > 0 && wait {
			break // a waiting Read returns what it has
		}
		err = c.rx.fill(&c.src, need, wait && n == 0)
		switch {
		case err == nil:
		case errors.Is(err, syscall.EAGAIN):
			if n > 0 {
				return n, true, nil
			}
			return 0, true, errWouldBlock
		case err == io.EOF:
			if len(c.rx.buffered()) > 0 {
				c.rerr = fmt.Errorf("TLS: connection closed inside a record: %w", io.ErrUnexpectedEOF)
			} else {
				c.rerr = io.EOF // closed without close_notify: as Go's crypto/tls does
			}
		case isTimeoutErr(err):
			if n > 0 {
				return n, false, nil
			}
			return 0, false, err // not the stream's end: a later read may succeed
		default:
			c.rerr = err
		}
	}
	if n > 0 {
		return n, false, nil
	}
	return 0, false, c.rerr
}

// frontRecord checks the header of the record at the front of the read buffer
// and returns its length with the header (just the header's while fewer than
// five bytes are there).
func (c *recordConn) frontRecord() (int, error) {
	buf := c.rx.buffered()
	if len(buf) < recordHeaderLen {
		return recordHeaderLen, nil
	}
	if buf[0] != recordTypeAppData {
		return 0, fmt.Errorf("TLS: unexpected record type %d after the handshake", buf[0])
	}
	n := int(binary.BigEndian.Uint16(buf[3:]))
	if n > maxCiphertext {
		return 0, fmt.Errorf("TLS: record of %d bytes, more than %d", n, maxCiphertext)
	}
	return recordHeaderLen + n, nil
}

// openReadAhead opens the complete records uTLS read past the handshake:
// session tickets are dropped at once, so that an idle flow does not keep them.
// Application data (none comes before the request) would wait in pending.
func (c *recordConn) openReadAhead() {
	for len(c.pending) == 0 && c.rerr == nil {
		need, err := c.frontRecord()
		if err != nil {
			c.rerr = err
			break
		}
		buf := c.rx.buffered()
		if len(buf) < need {
			break
		}
		_, err = c.openRecord(buf[:need], nil)
		c.rx.consume(need)
		if err != nil {
			c.rerr = err
		}
	}
	c.rx.settle(len(c.pending) > 0, true)
}

// openRecord decrypts one record. Application data lands in p when p has room
// for the whole plaintext (k bytes), else in place in the read buffer
// (pending). Post-handshake messages and alerts are handled here.
func (c *recordConn) openRecord(rec, p []byte) (k int, err error) {
	ct := rec[recordHeaderLen:]
	if len(ct) < aeadTagLen+1 {
		return 0, errors.New("TLS: record too short to be encrypted")
	}
	dst := ct[:0]
	direct := len(p) >= len(ct)-aeadTagLen
	if direct {
		dst = p[:0]
	}
	plain, err := c.in.aead.Open(dst, c.in.nextNonce(), ct, rec[:recordHeaderLen])
	if err != nil {
		return 0, fmt.Errorf("TLS: cannot decrypt a record from the server (%w)", err)
	}
	// The inner type is the last non-zero byte; zeros after it are padding.
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, errors.New("TLS: record without a content type")
	}
	typ, plain := plain[i], plain[:i]
	if len(plain) > maxPlaintext {
		return 0, fmt.Errorf("TLS: record of %d plaintext bytes, more than %d", len(plain), maxPlaintext)
	}
	if typ != recordTypeHandshake && len(c.hs) > 0 {
		return 0, errors.New("TLS: a handshake message was cut by another record")
	}
	switch typ {
	case recordTypeAppData:
		if len(plain) == 0 {
			if c.empties++; c.empties > maxEmptyRecords {
				return 0, errors.New("TLS: too many empty records")
			}
			return 0, nil
		}
		c.empties = 0
		if direct {
			return len(plain), nil
		}
		c.pending = plain
		return 0, nil
	case recordTypeHandshake:
		return 0, c.handshakeMessages(plain)
	case recordTypeAlert:
		if len(plain) != 2 {
			return 0, errors.New("TLS: malformed alert")
		}
		if plain[1] == alertCloseNotify {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("TLS: the server sent alert %d (%s)", plain[1], alertName(plain[1]))
	}
	return 0, fmt.Errorf("TLS: unexpected content type %d after the handshake", typ)
}

// handshakeMessages handles post-handshake messages: session tickets are
// dropped (no session cache), a KeyUpdate changes the read key and, when the
// server asks, makes this side update its own before its next record.
func (c *recordConn) handshakeMessages(b []byte) error {
	if len(b) == 0 {
		return errors.New("TLS: empty handshake record")
	}
	if len(c.hs) > 0 {
		b = append(c.hs, b...)
	}
	for len(b) >= 4 {
		n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if n > maxHandshakeMsg {
			return fmt.Errorf("TLS: post-handshake message of %d bytes", n)
		}
		if len(b) < 4+n {
			break
		}
		msg := b[4 : 4+n]
		switch b[0] {
		case handshakeNewSessionTicket:
			c.tickets++
		case handshakeKeyUpdate:
			if n != 1 || msg[0] > 1 {
				return errors.New("TLS: malformed KeyUpdate")
			}
			if len(b) > 4+n {
				return errors.New("TLS: data after a KeyUpdate in its record")
			}
			if err := c.in.update(); err != nil {
				return err
			}
			if msg[0] == 1 {
				c.updating.Store(true)
			}
		default:
			return fmt.Errorf("TLS: unexpected post-handshake message type %d", b[0])
		}
		b = b[4+n:]
	}
	if len(b) > 0 {
		c.hs = append(c.hs[:0:0], b...)
	} else {
		c.hs = nil
	}
	return nil
}

func alertName(a byte) string {
	switch a {
	case 10:
		return "unexpected message"
	case 20:
		return "bad record MAC"
	case 22:
		return "record overflow"
	case 40:
		return "handshake failure"
	case 47:
		return "illegal parameter"
	case 50:
		return "decode error"
	case 51:
		return "decrypt error"
	case 80:
		return "internal error"
	case 90:
		return "user canceled"
	}
	return "unknown"
}

// wbufs are the buffers records are sealed into: four full records (a 64 KiB
// write in one system call) and a KeyUpdate.
var wbufs = sync.Pool{New: func() any { b := make([]byte, 0, 4*maxSealed+64); return &b }}

// Write sends p in records of up to 16 KiB of plaintext, as many as fit in one
// system call. The first record carries the pending prefix (the request header)
// in front of p's first bytes.
func (c *recordConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(p)
}

func (c *recordConn) writeLocked(p []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	if len(p) == 0 && c.prefix == nil && !c.updating.Load() {
		return 0, nil
	}
	bp := wbufs.Get().(*[]byte)
	defer wbufs.Put(bp)
	buf := (*bp)[:0]
	sent := 0   // bytes of p in records already written
	queued := 0 // bytes of p in buf
	for {
		if c.updating.Load() || c.out.seq >= keyUpdateAfter {
			buf = c.sealKeyUpdate(buf)
			if err := c.out.update(); err != nil {
				c.werr = err
				return sent, err
			}
			c.updating.Store(false)
		}
		if len(p) == 0 && c.prefix == nil {
			break
		}
		start := len(buf)
		buf = append(buf, recordTypeAppData, 3, 3, 0, 0)
		buf = append(buf, c.prefix...)
		take := min(len(p), maxPlaintext-len(c.prefix))
		if c.prefix != nil {
			c.prefix = nil
			if c.alone != nil {
				c.alone.Stop()
				c.alone = nil
			}
		}
		buf = append(buf, p[:take]...)
		p = p[take:]
		queued += take
		buf = c.seal(buf, start, recordTypeAppData)
		if len(p) > 0 && cap(buf)-len(buf) >= maxSealed+64 {
			continue
		}
		if _, err := c.conn.Write(buf); err != nil {
			c.werr = err
			return sent, err
		}
		sent += queued
		queued = 0
		buf = buf[:0]
		if len(p) == 0 {
			return sent, nil
		}
	}
	if len(buf) > 0 {
		if _, err := c.conn.Write(buf); err != nil {
			c.werr = err
			return sent, err
		}
	}
	return sent, nil
}

// seal encrypts in place the record that starts at buf[start] (a header, then
// its plaintext), appending the inner type and the tag.
func (c *recordConn) seal(buf []byte, start int, typ byte) []byte {
	buf = append(buf, typ)
	plain := buf[start+recordHeaderLen:]
	binary.BigEndian.PutUint16(buf[start+3:], uint16(len(plain)+aeadTagLen))
	sealed := c.out.aead.Seal(plain[:0], c.out.nextNonce(), plain, buf[start:start+recordHeaderLen])
	return buf[:start+recordHeaderLen+len(sealed)]
}

// sealKeyUpdate appends a KeyUpdate (update_not_requested) under the current key.
func (c *recordConn) sealKeyUpdate(buf []byte) []byte {
	start := len(buf)
	buf = append(buf, recordTypeAppData, 3, 3, 0, 0, handshakeKeyUpdate, 0, 0, 1, 0)
	return c.seal(buf, start, recordTypeHandshake)
}

// requestKeyUpdate sends a KeyUpdate that asks the server to update its key too
// (tests; this side updates on its own after keyUpdateAfter records).
func (c *recordConn) requestKeyUpdate() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	buf := make([]byte, 0, recordHeaderLen+5+1+aeadTagLen)
	buf = append(buf, recordTypeAppData, 3, 3, 0, 0, handshakeKeyUpdate, 0, 0, 1, 1)
	buf = c.seal(buf, 0, recordTypeHandshake)
	if _, err := c.conn.Write(buf); err != nil {
		c.werr = err
		return err
	}
	if err := c.out.update(); err != nil {
		c.werr = err
	}
	return c.werr
}

// holdPrefix makes b (a request header) go out in the record of the first
// Write's data, so that it does not travel alone as a record of its own length:
// Xray's clients wait the same way. When no data comes within wait (a protocol
// where the server speaks first) alone runs and sends it.
func (c *recordConn) holdPrefix(b []byte, wait time.Duration, alone func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.prefix = b
	c.alone = time.AfterFunc(wait, func() { _ = alone() })
}

// prefixPending reports whether the held prefix has not gone out yet.
func (c *recordConn) prefixPending() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.prefix != nil
}

// FlushRequest sends a held request header now, alone. The health probe calls it,
// to see at once a server that refuses the header and closes.
func (c *recordConn) FlushRequest() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.prefix == nil {
		return nil
	}
	_, err := c.writeLocked(nil)
	return err
}

// alertRecord is a sealed close_notify.
func (c *recordConn) alertRecord() []byte {
	buf := make([]byte, 0, recordHeaderLen+2+1+aeadTagLen)
	buf = append(buf, recordTypeAppData, 3, 3, 0, 0, 1, alertCloseNotify)
	return c.seal(buf, 0, recordTypeAlert)
}

// errWriteClosed: Write after CloseWrite or Close.
var errWriteClosed = errors.New("TLS: write side closed (close_notify sent)")

// CloseWrite sends close_notify: the server sees the end of the client's data.
// A request header no data joined goes first.
func (c *recordConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return nil
	}
	if c.prefix != nil {
		if _, err := c.writeLocked(nil); err != nil {
			return err
		}
	}
	_, err := c.conn.Write(c.alertRecord())
	c.werr = errWriteClosed
	return err
}

// Close sends close_notify if it can without waiting (a Write in progress, or a
// full socket buffer, and the alert is skipped) and closes the socket.
func (c *recordConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if c.wmu.TryLock() {
		if c.alone != nil {
			c.alone.Stop()
			c.alone = nil
		}
		if c.werr == nil && c.prefix == nil {
			c.writeNow(c.alertRecord())
		}
		c.werr = net.ErrClosed
		c.wmu.Unlock()
	}
	return c.conn.Close()
}

// writeNow writes b only if the socket takes all of it at once.
func (c *recordConn) writeNow(b []byte) {
	if c.src.raw == nil {
		return
	}
	_ = c.src.raw.Write(func(fd uintptr) bool {
		_, _ = unix.SendmsgN(int(fd), b, nil, nil, unix.MSG_DONTWAIT)
		return true
	})
}

func (c *recordConn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *recordConn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *recordConn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *recordConn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *recordConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
