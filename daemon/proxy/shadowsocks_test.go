package proxy

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

var ssMethods = []string{"aes-128-gcm", "aes-256-gcm", "chacha20-ietf-poly1305"}

func TestEVPBytesToKey(t *testing.T) {
	// openssl enc -aes-256-cbc -k test-pass -nosalt -P -md md5
	want := "380e5dc89564f30713ad54bf06aacea83c9628ba7c67ab0e9ac498be42c79195"
	if got := hex.EncodeToString(evpBytesToKey("test-pass", 32)); got != want {
		t.Fatalf("key = %s, want %s", got, want)
	}
	if got := hex.EncodeToString(evpBytesToKey("test-pass", 16)); got != want[:32] {
		t.Fatalf("16-byte key = %s", got)
	}
}

func TestNewSSCipherErrors(t *testing.T) {
	for _, tt := range []struct{ method, pass, want string }{
		{"aes-256-cfb", "pw", `unknown cipher "aes-256-cfb"`},
		{"2022-blake3-aes-256-gcm", "pw", `unknown cipher`},
		{"aes-128-gcm", "", "password is required"},
	} {
		if _, err := newSSCipher(tt.method, tt.pass); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("newSSCipher(%q) = %v, want %q", tt.method, err, tt.want)
		}
	}
}

// ssStream encrypts the given writes into one stream, as a server would.
func ssStream(t testing.TB, c *ssCipher, writes ...[]byte) []byte {
	var out bytes.Buffer
	w, err := newSSWriter(&out, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range writes {
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

func TestSSStreamRoundTrip(t *testing.T) {
	for _, method := range ssMethods {
		c, err := newSSCipher(method, "pw")
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, ssMaxPayload, ssMaxPayload + 1, 100_000} {
			msg := bytes.Repeat([]byte{byte(size)}, size)
			stream := ssStream(t, c, msg, []byte("tail"))
			chunks := (size+ssMaxPayload-1)/ssMaxPayload + 1
			if want := c.keySize + chunks*(2+2*ssTagSize) + size + 4; len(stream) != want {
				t.Errorf("%s %d: stream %d bytes, want %d", method, size, len(stream), want)
			}
			got, err := io.ReadAll(newSSReader(bytes.NewReader(stream), c))
			if err != nil {
				t.Fatalf("%s %d: %v", method, size, err)
			}
			if !bytes.Equal(got, append(msg, "tail"...)) {
				t.Fatalf("%s %d: round trip differs", method, size)
			}
		}
	}
}

func TestSSReaderErrors(t *testing.T) {
	c, _ := newSSCipher("aes-256-gcm", "pw")
	other, _ := newSSCipher("aes-256-gcm", "other-pw")
	stream := ssStream(t, c, []byte("hello world"))
	// A chunk whose sealed length says 0x3FFF+1.
	w, _ := newSSWriter(io.Discard, c)
	oversized := w.aead.Seal(append([]byte(nil), w.salt...), w.nonce, []byte{0x40, 0x00}, nil)

	tests := []struct {
		name   string
		cipher *ssCipher
		data   []byte
		want   string
		wantIs error
	}{
		{"no reply", c, nil, "without replying", errSSNoReply},
		{"half salt", c, stream[:10], "read salt: unexpected EOF", nil},
		{"salt only", c, stream[:32], "", io.EOF},
		{"truncated length", c, stream[:32+5], "truncated chunk length", nil},
		{"truncated payload", c, stream[:len(stream)-1], "truncated chunk: unexpected EOF", nil},
		{"wrong password", other, stream, "decrypt chunk length", ErrAuthFailed},
		{"oversized chunk", c, oversized, "chunk length 16384 exceeds 16383", nil},
		{"corrupt payload", c, append(stream[:len(stream)-1:len(stream)-1], stream[len(stream)-1]^1), "decrypt chunk", ErrAuthFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := io.ReadAll(newSSReader(bytes.NewReader(tt.data), tt.cipher))
			if tt.wantIs == io.EOF {
				if err != nil {
					t.Fatalf("ReadAll = %v, want clean EOF", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error does not wrap %v", tt.wantIs)
			}
		})
	}
}

func TestSSPacket(t *testing.T) {
	for _, method := range ssMethods {
		c, _ := newSSCipher(method, "pw")
		other, _ := newSSCipher(method, "other")
		pkt, err := sealSSPacket(nil, c, appendSocksAddr(nil, testDst), []byte("payload"))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := openSSPacket(other, bytes.Clone(pkt)); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s: wrong key: %v", method, err)
		}
		if _, _, err := openSSPacket(c, pkt[:c.keySize+ssTagSize-1]); err == nil {
			t.Errorf("%s: short packet accepted", method)
		}
		src, payload, err := openSSPacket(c, pkt)
		if err != nil || src.IP != testDst || string(payload) != "payload" {
			t.Errorf("%s: open = %v %q %v", method, src, payload, err)
		}
	}
}

// The server's first bytes count as a reply only once decrypted; a server
// that closes at once is reported, not mistaken for a clean end.
func TestShadowsocksServerClosesAtOnce(t *testing.T) {
	spec := fakeServer(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 1024)) })
	spec.Type, spec.Password, spec.Cipher = TypeShadowsocks, "pw", "aes-128-gcm"
	d, err := New(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.DialTCP(testCtx(t), testDst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	_, err = c.Read(make([]byte, 10))
	if !errors.Is(err, errSSNoReply) || !strings.HasPrefix(err.Error(), "shadowsocks "+spec.Address()+": ") {
		t.Fatalf("Read = %v, want %v", err, errSSNoReply)
	}
}

// The request header is the first chunk, sealed under the client's salt.
func TestShadowsocksRequestHeader(t *testing.T) {
	c, _ := newSSCipher("chacha20-ietf-poly1305", "pw")
	got := make(chan []byte, 1)
	spec := fakeServer(t, func(conn net.Conn) {
		r := newSSReader(conn, c)
		buf := make([]byte, 100)
		n, _ := r.Read(buf)
		got <- buf[:n]
	})
	spec.Type, spec.Password, spec.Cipher = TypeShadowsocks, "pw", "chacha20-ietf-poly1305"
	d, err := New(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("[2001:db8:3::1]:80")
	conn, err := d.DialTCP(testCtx(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, appendSocksAddr(nil, dst)) {
			t.Fatalf("header % x", b)
		}
	case <-time.After(testTimeout):
		t.Fatal("no header")
	}
}

func FuzzSSReader(f *testing.F) {
	c, _ := newSSCipher("aes-128-gcm", "fuzz")
	stream := ssStream(f, c, []byte("hello"), bytes.Repeat([]byte{1}, 20000))
	f.Add(stream)
	f.Add(stream[:40])
	f.Add(stream[:16])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		n, _ := io.Copy(io.Discard, newSSReader(bytes.NewReader(data), c))
		if n > int64(len(data)) {
			t.Fatalf("decrypted %d bytes from %d", n, len(data))
		}
	})
}

func FuzzOpenSSPacket(f *testing.F) {
	c, _ := newSSCipher("chacha20-ietf-poly1305", "fuzz")
	pkt, _ := sealSSPacket(nil, c, appendSocksAddr(nil, testDst), []byte("x"))
	f.Add(pkt)
	f.Add(pkt[:40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, payload, err := openSSPacket(c, data)
		if err == nil && len(payload) > len(data) {
			t.Fatal("payload longer than packet")
		}
	})
}

// Close stops the first-reply timer: a closed conn leaves nothing pending.
func TestShadowsocksCloseStopsFirstReplyTimer(t *testing.T) {
	spec := fakeServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	spec.Type, spec.Password, spec.Cipher = TypeShadowsocks, "pw", "aes-128-gcm"
	d, err := New(spec, Options{FirstReplyTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := d.DialTCP(testCtx(t), testDst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	c := conn.(*ssConn)
	conn.Close()
	c.tmu.Lock()
	timer := c.timer
	c.tmu.Unlock()
	if timer == nil {
		t.Fatal("no first-reply timer armed by the write")
	}
	if timer.Stop() {
		t.Error("first-reply timer still pending after Close")
	}
}

// TestSSStreamNoAllocs: sealing and opening full chunks allocates nothing, and a
// drained reader holds no buffer.
func TestSSStreamNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, _ := newSSCipher("chacha20-ietf-poly1305", "pw")
	w, err := newSSWriter(a, c)
	if err != nil {
		t.Fatal(err)
	}
	r := newSSReader(b, c)
	data := bytes.Repeat([]byte{7}, 64<<10)
	got := make([]byte, 64<<10)
	round := func() {
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(data); {
			k, err := r.read(got, false)
			if errors.Is(err, syscall.EAGAIN) {
				continue // spin: waiting in the poller would allocate
			}
			if err != nil {
				t.Fatal(err)
			}
			n += k
		}
	}
	round()
	if allocs := testing.AllocsPerRun(20, round); allocs > 0 {
		t.Errorf("%.1f allocations per 64 KiB written and read, want 0", allocs)
	}
	if r.rx.buf != nil || r.pending != nil {
		t.Error("a drained reader holds a buffer")
	}
}
