package proxy

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"lukechampine.com/blake3"
)

var ss22Methods = []string{"2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm", "2022-blake3-chacha20-poly1305"}

func ss22Key(t testing.TB, n int) string {
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func ss22KeySize(method string) int {
	if strings.Contains(method, "128") {
		return 16
	}
	return 32
}

func TestNewSS22MethodErrors(t *testing.T) {
	k16, k32 := ss22Key(t, 16), ss22Key(t, 32)
	for _, tt := range []struct{ method, pass, want string }{
		{"2022-blake3-aes-256-gcm", "", "password is required"},
		{"2022-blake3-aes-256-gcm", k16, "key 1 is not a base64 key of 32 bytes"},
		{"2022-blake3-aes-128-gcm", k16 + ":" + k32, "key 2 is not a base64 key of 16 bytes"},
		{"2022-blake3-aes-128-gcm", "not base64!", "key 1 is not a base64 key"},
		{"2022-blake3-chacha20-poly1305", k32 + ":" + k32, "only with the AES 2022 ciphers"},
		{"2022-blake3-rc4", k32, "unknown cipher"},
	} {
		if _, err := newSS22Method(tt.method, tt.pass); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("newSS22Method(%s) = %v, want %q", tt.method, err, tt.want)
		}
		if err := func() error { _, err := newSS22Method(tt.method, tt.pass); return err }(); err != nil && strings.Contains(err.Error(), tt.pass) && tt.pass != "" {
			t.Errorf("error shows the key: %v", err)
		}
	}
}

// ss22Server is the server's side of the protocol, for the tests: it reads a
// request and writes responses.
type ss22Server struct {
	t *testing.T
	m *ss22Method
}

// readRequest checks the identity headers and the two header chunks and
// returns the request salt and the destination.
func (s ss22Server) readRequest(req []byte) (salt []byte, dst socksAddr) {
	t, m := s.t, s.m
	salt, req = req[:m.keySize], req[m.keySize:]
	for i := range m.pskHash {
		material := append(append([]byte{}, m.psks[i]...), salt...)
		sub := make([]byte, m.keySize)
		blake3.DeriveKey(sub, ss22IdentitySub, material)
		b, _ := aes.NewCipher(sub)
		got := make([]byte, 16)
		b.Decrypt(got, req[:16])
		want := blake3.Sum512(m.psks[i+1])
		if !bytes.Equal(got, want[:16]) {
			t.Fatalf("identity header %d does not name the next key", i)
		}
		req = req[16:]
	}
	aead, err := m.sessionAEAD(salt)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, ssNonceSize)
	fixed, err := aead.Open(nil, nonce, req[:11+16], nil)
	if err != nil {
		t.Fatalf("open fixed header: %v", err)
	}
	incNonce(nonce)
	if fixed[0] != ss22HeaderClient || !m.timeOK(binary.BigEndian.Uint64(fixed[1:])) {
		t.Fatalf("fixed header %x", fixed)
	}
	n := int(binary.BigEndian.Uint16(fixed[9:]))
	req = req[11+16:]
	varHdr, err := aead.Open(nil, nonce, req[:n+16], nil)
	if err != nil {
		t.Fatalf("open variable header: %v", err)
	}
	dst, l, err := parseSocksAddr(varHdr)
	if err != nil {
		t.Fatal(err)
	}
	pad := int(binary.BigEndian.Uint16(varHdr[l:]))
	if pad < 1 || pad > ss22MaxPadding || l+2+pad != len(varHdr) {
		t.Fatalf("padding %d in a header of %d bytes", pad, len(varHdr))
	}
	return salt, dst
}

// response is the server's first bytes: salt, header, a first chunk.
func (s ss22Server) response(salt, reqSalt []byte, ts time.Time, payload []byte) []byte {
	m := s.m
	aead, err := m.sessionAEAD(salt)
	if err != nil {
		s.t.Fatal(err)
	}
	hdr := []byte{ss22HeaderServer}
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(ts.Unix()))
	hdr = append(hdr, reqSalt...)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(payload)))
	nonce := make([]byte, ssNonceSize)
	out := aead.Seal(append([]byte{}, salt...), nonce, hdr, nil)
	incNonce(nonce)
	out = aead.Seal(out, nonce, payload, nil)
	incNonce(nonce)
	var more bytes.Buffer
	w := &ssWriter{w: &more, aead: aead, nonce: nonce}
	if _, err := w.Write([]byte(" and more")); err != nil {
		s.t.Fatal(err)
	}
	return append(out, more.Bytes()...)
}

func TestSS22StreamRoundTrip(t *testing.T) {
	dst := netip.MustParseAddrPort("[2001:db8::5]:443")
	for _, method := range ss22Methods {
		keys := []string{ss22Key(t, ss22KeySize(method))}
		if strings.Contains(method, "aes") {
			keys = append(keys, ss22Key(t, ss22KeySize(method)), ss22Key(t, ss22KeySize(method)))
		}
		for n := 1; n <= len(keys); n++ {
			m, err := newSS22Method(method, strings.Join(keys[:n], ":"))
			if err != nil {
				t.Fatal(err)
			}
			var sent bytes.Buffer
			req, w, reqSalt, err := m.request(&sent, dst)
			if err != nil {
				t.Fatal(err)
			}
			srv := ss22Server{t, m}
			gotSalt, gotDst := srv.readRequest(req)
			if !bytes.Equal(gotSalt, reqSalt) || gotDst.IP != dst {
				t.Fatalf("%s: server read salt/dst %v, want %v", method, gotDst, dst)
			}
			if _, err := w.Write([]byte("ping")); err != nil || sent.Len() != 2+16+4+16 {
				t.Fatalf("%s: chunk after the header: %d bytes, %v", method, sent.Len(), err)
			}
			// SIP022 chunks carry up to 0xFFFF bytes: 64 KiB is two chunks, not five.
			sent.Reset()
			if _, err := w.Write(make([]byte, 64<<10)); err != nil || sent.Len() != (2+16+0xFFFF+16)+(2+16+1+16) {
				t.Fatalf("%s: 64 KiB written as %d bytes (want two chunks: %d), %v", method, sent.Len(), (2+16+0xFFFF+16)+(2+16+1+16), err)
			}
			salt := make([]byte, m.keySize)
			rand.Read(salt)
			r := newSS22Reader(bytes.NewReader(srv.response(salt, reqSalt, time.Now(), []byte("hello"))), m, reqSalt)
			got, err := io.ReadAll(r)
			if err != nil || string(got) != "hello and more" {
				t.Fatalf("%s with %d keys: read %q, %v", method, n, got, err)
			}
		}
	}
}

func TestSS22ResponseChecks(t *testing.T) {
	m, err := newSS22Method("2022-blake3-aes-128-gcm", ss22Key(t, 16))
	if err != nil {
		t.Fatal(err)
	}
	srv := ss22Server{t, m}
	reqSalt := bytes.Repeat([]byte{1}, 16)
	newSalt := func() []byte { s := make([]byte, 16); rand.Read(s); return s }
	read := func(resp []byte) error {
		_, err := io.ReadAll(newSS22Reader(bytes.NewReader(resp), m, reqSalt))
		return err
	}
	if err := read(srv.response(newSalt(), reqSalt, time.Now().Add(-31*time.Second), nil)); !errors.Is(err, errSS22Timestamp) {
		t.Errorf("stale server time: %v, want %v", err, errSS22Timestamp)
	}
	if err := read(srv.response(newSalt(), reqSalt, time.Now().Add(31*time.Second), nil)); !errors.Is(err, errSS22Timestamp) {
		t.Errorf("future server time: %v, want %v", err, errSS22Timestamp)
	}
	if err := read(srv.response(newSalt(), bytes.Repeat([]byte{2}, 16), time.Now(), nil)); err == nil || !strings.Contains(err.Error(), "request salt differs") {
		t.Errorf("response to another request: %v", err)
	}
	resp := srv.response(newSalt(), reqSalt, time.Now(), []byte("x"))
	if err := read(resp); err != nil {
		t.Fatalf("first response: %v", err)
	}
	if err := read(resp); !errors.Is(err, errSS22Replay) {
		t.Errorf("replayed response: %v, want %v", err, errSS22Replay)
	}
	other, _ := newSS22Method("2022-blake3-aes-128-gcm", ss22Key(t, 16))
	if err := read(ss22Server{t, other}.response(newSalt(), reqSalt, time.Now(), nil)); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("response under another key: %v, want %v", err, ErrAuthFailed)
	}
	if err := read(nil); !errors.Is(err, errSSNoReply) {
		t.Errorf("closed at once: %v, want %v", err, errSSNoReply)
	}
}

// ss22ServerPacket seals a server datagram as a 2022 server does.
func ss22ServerPacket(t *testing.T, m *ss22Method, srvSession, packet, client uint64, ts time.Time, src netip.AddrPort, payload []byte) []byte {
	var hdr [16]byte
	binary.BigEndian.PutUint64(hdr[:], srvSession)
	binary.BigEndian.PutUint64(hdr[8:], packet)
	body := []byte{ss22HeaderServer}
	body = binary.BigEndian.AppendUint64(body, uint64(ts.Unix()))
	body = binary.BigEndian.AppendUint64(body, client)
	body = binary.BigEndian.AppendUint16(body, 3)
	body = append(body, 0, 0, 0)
	body = append(appendSocksAddr(body, src), payload...)
	if m.udpX != nil {
		nonce := make([]byte, ss22XNonceSize)
		rand.Read(nonce)
		return m.udpX.Seal(nonce, nonce, append(hdr[:], body...), nil)
	}
	aead, err := m.sessionAEAD(hdr[:8])
	if err != nil {
		t.Fatal(err)
	}
	out := aead.Seal(append([]byte{}, hdr[:]...), hdr[4:16], body, nil)
	b, _ := aes.NewCipher(m.userKey())
	b.Encrypt(out[:16], hdr[:])
	return out
}

func TestSS22Packets(t *testing.T) {
	dst := netip.MustParseAddrPort("203.0.113.5:5000")
	for _, method := range ss22Methods {
		m, err := newSS22Method(method, ss22Key(t, ss22KeySize(method)))
		if err != nil {
			t.Fatal(err)
		}
		u := &ss22UDPConn{m: m, dst: dst, addr: appendSocksAddr(nil, dst), session: 77}
		if m.udpX == nil {
			var id [8]byte
			binary.BigEndian.PutUint64(id[:], u.session)
			u.aead, _ = m.sessionAEAD(id[:])
		}
		// What we send opens on the server's side with the right session.
		pkt, err := m.sealPacket(nil, u.session, 5, u.aead, u.addr, dst.Port(), []byte("q"))
		if err != nil {
			t.Fatal(err)
		}
		if m.udpX != nil {
			if _, err := m.udpX.Open(nil, pkt[:ss22XNonceSize], pkt[ss22XNonceSize:], nil); err != nil {
				t.Fatalf("%s: server cannot open our packet: %v", method, err)
			}
		} else {
			var hdr [16]byte
			m.udpEnc.Decrypt(hdr[:], pkt[:16])
			if binary.BigEndian.Uint64(hdr[:]) != 77 || binary.BigEndian.Uint64(hdr[8:]) != 5 {
				t.Fatalf("%s: header %x", method, hdr)
			}
			if _, err := u.aead.Open(nil, hdr[4:16], pkt[16:], nil); err != nil {
				t.Fatalf("%s: server cannot open our packet: %v", method, err)
			}
		}

		now := time.Now()
		for _, tt := range []struct {
			name    string
			pkt     []byte
			want    string // "" = dropped
			replays bool
		}{
			{"first", ss22ServerPacket(t, m, 9, 0, 77, now, dst, []byte("a")), "a", true},
			{"next", ss22ServerPacket(t, m, 9, 1, 77, now, dst, []byte("b")), "b", false},
			{"reordered", ss22ServerPacket(t, m, 9, 3, 77, now, dst, []byte("d")), "d", false},
			{"late but new", ss22ServerPacket(t, m, 9, 2, 77, now, dst, []byte("c")), "c", true},
			{"stale time", ss22ServerPacket(t, m, 9, 4, 77, now.Add(-time.Minute), dst, []byte("x")), "", false},
			{"other client", ss22ServerPacket(t, m, 9, 5, 78, now, dst, []byte("x")), "", false},
			{"other source", ss22ServerPacket(t, m, 9, 6, 77, now, netip.MustParseAddrPort("203.0.113.6:5000"), []byte("x")), "", false},
			{"second server session", ss22ServerPacket(t, m, 10, 0, 77, now, dst, []byte("x")), "", false},
		} {
			saved := append([]byte{}, tt.pkt...)
			got, ok := u.open(tt.pkt)
			if ok != (tt.want != "") || string(got) != tt.want {
				t.Errorf("%s %s: open = %q %v, want %q", method, tt.name, got, ok, tt.want)
			}
			if tt.replays {
				if _, ok := u.open(saved); ok {
					t.Errorf("%s %s: a replayed datagram was accepted", method, tt.name)
				}
			}
		}
	}
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	for _, id := range []uint64{0, 1, 5, 3, 2000, 1500, 2001} {
		if !w.check(id) {
			t.Fatalf("new id %d refused", id)
		}
		w.add(id)
		if w.check(id) {
			t.Fatalf("id %d accepted twice", id)
		}
	}
	for _, id := range []uint64{5, 900} { // behind the window
		if w.check(id) {
			t.Errorf("id %d behind the window accepted", id)
		}
	}
	if !w.check(1999) {
		t.Error("unseen id inside the window refused")
	}
}

// FuzzSS22Server feeds what a server (or anyone on the path) sends to the 2022 stream
// reader and the datagram opener: never a panic, never data that did not authenticate.
func FuzzSS22Server(f *testing.F) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 16))
	m, err := newSS22Method("2022-blake3-aes-128-gcm", key)
	if err != nil {
		f.Fatal(err)
	}
	mx, err := newSS22Method("2022-blake3-chacha20-poly1305", base64.StdEncoding.EncodeToString(make([]byte, 32)))
	if err != nil {
		f.Fatal(err)
	}
	reqSalt := make([]byte, 16)
	f.Add([]byte{}, false)
	f.Add(make([]byte, 100), true)
	f.Add(bytes.Repeat([]byte{0xff}, 300), false)
	f.Fuzz(func(t *testing.T, data []byte, chacha bool) {
		r := newSS22Reader(bytes.NewReader(data), m, reqSalt)
		if got, err := io.ReadAll(r); err == nil && len(got) > 0 {
			t.Fatalf("random bytes authenticated as %q", got)
		}
		meth := m
		if chacha {
			meth = mx
		}
		dst := netip.MustParseAddrPort("203.0.113.5:5000")
		u := &ss22UDPConn{m: meth, dst: dst, addr: appendSocksAddr(nil, dst), session: 1}
		if _, ok := u.open(append([]byte{}, data...)); ok {
			t.Fatal("a random datagram was accepted")
		}
	})
}

// TestSSReaderIdleHoldsNoBuffer: once a chunk's plaintext is returned, the stream gives
// its read buffer back, so an idle Shadowsocks flow (waiting for the server) holds
// none; one still returning a chunk keeps it.
func TestSSReaderIdleHoldsNoBuffer(t *testing.T) {
	c, err := newSSCipher("aes-128-gcm", "pw")
	if err != nil {
		t.Fatal(err)
	}
	r := newSSReader(bytes.NewReader(ssStream(t, c, []byte("hello"), []byte{})), c)
	p := make([]byte, 3)
	if n, err := r.Read(p); err != nil || n != 3 || r.rx.buf == nil {
		t.Fatalf("first Read: %d %v, buffer held %v; want 3 bytes and the buffer still held", n, err, r.rx.buf != nil)
	}
	if n, err := r.Read(p); err != nil || n != 2 || r.rx.buf != nil || r.pending != nil {
		t.Fatalf("second Read: %d %v, buffer held %v; want the rest and the buffer given back", n, err, r.rx.buf != nil)
	}
}
