package proxy

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
)

var testID = [16]byte{0xb8, 0x31, 0x38, 0x1d, 0x63, 0x24, 0x4d, 0x53, 0xad, 0x4f, 0x8c, 0xda, 0x48, 0xb3, 0x08, 0x11}

func TestAppendVLESSRequest(t *testing.T) {
	id := hex.EncodeToString(testID[:])
	tests := []struct {
		name string
		flow string
		cmd  byte
		dst  netip.AddrPort
		want string // hex
	}{
		{"tcp ipv4", "", vlessCmdTCP, netip.MustParseAddrPort("203.0.113.10:443"),
			"00" + id + "00" + "01" + "01bb" + "01" + "cb00710a"},
		{"udp ipv6", "", vlessCmdUDP, netip.MustParseAddrPort("[2001:db8:3::10]:53"),
			"00" + id + "00" + "02" + "0035" + "03" + "20010db8000300000000000000000010"},
		{"vision tcp, mapped ipv4", FlowVision, vlessCmdTCP, netip.MustParseAddrPort("[::ffff:203.0.113.10]:80"),
			"00" + id + "12" + "0a10" + hex.EncodeToString([]byte(FlowVision)) + "01" + "0050" + "01" + "cb00710a"},
		{"vision mux has no address", FlowVision, vlessCmdMux, netip.MustParseAddrPort("203.0.113.10:7"),
			"00" + id + "12" + "0a10" + hex.EncodeToString([]byte(FlowVision)) + "03"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hex.EncodeToString(appendVLESSRequest(nil, testID, tt.flow, tt.cmd, tt.dst))
			if got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestParseVLESSUUID(t *testing.T) {
	a, err := ParseVLESSUUID("b831381d-6324-4d53-ad4f-8cda48b30811")
	if err != nil || a != testID {
		t.Fatalf("dashed: %x, %v", a, err)
	}
	b, err := ParseVLESSUUID("b831381d63244d53ad4f8cda48b30811")
	if err != nil || b != testID {
		t.Fatalf("undashed: %x, %v", b, err)
	}
	c, err := ParseVLESSUUID("my-user")
	if err != nil || c[6]>>4 != 5 || c[8]&0xc0 != 0x80 {
		t.Fatalf("text: %x, %v; want a version 5 UUID", c, err)
	}
	if d, _ := ParseVLESSUUID("my-user"); d != c {
		t.Fatal("text UUIDs differ between calls")
	}
	for _, bad := range []string{"", strings.Repeat("x", 31)} {
		if _, err := ParseVLESSUUID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReadVLESSResponse(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"\x00\x00data", ""},
		{"\x00\x03abcdata", ""},
		{"", "without answering"},
		{"\x00", "without answering"},
		{"HTTP/1.1 400", "not a VLESS server"},
		{"\x00\x05ab", "addons"},
	}
	for _, tt := range tests {
		// Whole, and byte by byte: the header may come in any pieces.
		for _, step := range []int{len(tt.in) + 1, 1} {
			c := &vlessConn{Conn: &recorder{}}
			c.Conn.(*recorder).WriteString(tt.in)
			var got []byte
			var err error
			for {
				buf := make([]byte, step)
				var n int
				n, err = c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			if tt.wantErr == "" {
				if !errors.Is(err, io.EOF) || string(got) != "data" {
					t.Errorf("%q step %d: read %q, %v; want the payload, then EOF", tt.in, step, got, err)
				}
				continue
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q step %d: error %v, want %q", tt.in, step, err, tt.wantErr)
			}
		}
	}
}

// recorder is a net.Conn that keeps what is written.
type recorder struct {
	net.Conn
	bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) { return r.Buffer.Write(p) }
func (r *recorder) Read(p []byte) (int, error)  { return r.Buffer.Read(p) }

func TestVLESSPacketFraming(t *testing.T) {
	rec := &recorder{}
	c := &vlessPacketConn{Conn: &vlessConn{Conn: rec, resp: vlessResponse{step: 3}}, dst: netip.MustParseAddrPort("203.0.113.10:7")}
	for _, msg := range []string{"one", "", strings.Repeat("x", 2000)} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("read back %q, %v; want %q", buf[:n], err, msg)
		}
	}
	// A datagram longer than the buffer is cut, and the next one is intact.
	_, _ = c.Write([]byte("0123456789"))
	_, _ = c.Write([]byte("next"))
	small := make([]byte, 4)
	if n, err := c.Read(small); err != nil || string(small[:n]) != "0123" {
		t.Fatalf("truncated read %q, %v", small[:n], err)
	}
	if n, err := c.Read(small); err != nil || string(small[:n]) != "next" {
		t.Fatalf("after truncation %q, %v", small[:n], err)
	}
}

func TestXUDPFraming(t *testing.T) {
	dst := netip.MustParseAddrPort("[2001:db8:3::10]:7")
	rec := &recorder{}
	c := &xudpConn{Conn: rec, dst: dst}
	for i, msg := range []string{"first", "second"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		frame := rec.Bytes()
		wantStatus := byte(muxKeep)
		if i == 0 {
			wantStatus = muxNew
		}
		if frame[4] != wantStatus || frame[5] != muxOptData || frame[6] != muxNetUDP {
			t.Fatalf("frame %d header % x", i, frame[:7])
		}
		buf := make([]byte, 64)
		from, n, data, err := readXUDPFrame(rec, make([]byte, 257), buf)
		if err != nil || !data || from != dst || string(buf[:n]) != msg {
			t.Fatalf("frame %d read back %v %q %v %v", i, from, buf[:n], data, err)
		}
	}
	// From another source: skipped by Read; an end frame is EOF.
	other := &xudpConn{Conn: rec, dst: netip.MustParseAddrPort("203.0.113.99:7"), started: true}
	_, _ = other.Write([]byte("not for us"))
	_, _ = c.Write([]byte("ours"))
	rec.Write([]byte{0, 4, 0, 0, muxEnd, 0})
	c.started = true
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ours" {
		t.Fatalf("read %q, %v; want only the datagram from dst", buf[:n], err)
	}
	if _, err := c.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("end frame: %v, want EOF", err)
	}
}

func TestTrojanPacketFraming(t *testing.T) {
	dst := netip.MustParseAddrPort("203.0.113.10:7")
	rec := &recorder{}
	c := &trojanPacketConn{Conn: rec, dst: dst}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(rec.Bytes()), "01cb00710a0007"+"0005"+"0d0a"+hex.EncodeToString([]byte("hello")); got != want {
		t.Fatalf("frame %s, want %s", got, want)
	}
	other := &trojanPacketConn{Conn: rec, dst: netip.MustParseAddrPort("[2001:db8::1]:7")}
	_, _ = other.Write([]byte("stranger"))
	_, _ = c.Write([]byte("again"))
	buf := make([]byte, 64)
	for _, want := range []string{"hello", "again"} {
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
	}
}

// visionFrame builds one server frame.
func visionFrame(withID bool, cmd byte, content string, pad int) []byte {
	var b []byte
	if withID {
		b = append(b, testID[:]...)
	}
	b = append(b, cmd, byte(len(content)>>8), byte(len(content)), byte(pad>>8), byte(pad))
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

func newTestVision() *visionConn {
	return &visionConn{id: testID, filterLeft: visionFilterPackets, padding: true, writeID: true}
}

// TestVisionParse feeds the server's frames split at every possible point.
func TestVisionParse(t *testing.T) {
	stream := append(visionFrame(true, visionContinue, "hello", 7), visionFrame(false, visionContinue, "", 0)...)
	stream = append(stream, visionFrame(false, visionEnd, " world", 3)...)
	stream = append(stream, " plain"...)
	for cut := 0; cut <= len(stream); cut++ {
		c := newTestVision()
		if err := c.parse(stream[:cut]); err != nil {
			t.Fatal(err)
		}
		if err := c.parse(stream[cut:]); err != nil {
			t.Fatal(err)
		}
		if string(c.pending) != "hello world plain" || c.rstate != vrPlain {
			t.Fatalf("cut %d: content %q state %d", cut, c.pending, c.rstate)
		}
	}
	// Byte by byte.
	c := newTestVision()
	for i := range stream {
		if err := c.parse(stream[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if string(c.pending) != "hello world plain" {
		t.Fatalf("byte by byte: %q", c.pending)
	}
	// A server that does not pad.
	c = newTestVision()
	if err := c.parse([]byte("plain data from the start")); err != nil || string(c.pending) != "plain data from the start" {
		t.Fatalf("unpadded: %q, %v", c.pending, err)
	}
	// Unknown command.
	c = newTestVision()
	if err := c.parse(visionFrame(true, 9, "x", 0)); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// TestVisionDirectRead: after a direct frame, what the TLS layer buffered is raw data.
func TestVisionDirectRead(t *testing.T) {
	c := newTestVision()
	c.rc = &recordConn{pending: []byte("decrypted-")}
	c.rc.rx.load([]byte("raw-"))
	if err := c.parse(visionFrame(true, visionDirect, "last ", 2)); err != nil {
		t.Fatal(err)
	}
	if !c.directRead || string(c.pending) != "last decrypted-raw-" || len(c.rc.rx.buffered()) != 0 || len(c.rc.pending) != 0 {
		t.Fatalf("direct %v pending %q, record layer left %q and %q", c.directRead, c.pending, c.rc.pending, c.rc.rx.buffered())
	}
	if _, err := c.rc.read(make([]byte, 8), false); !errors.Is(err, errHandedOver) {
		t.Fatalf("record layer read after the switch: %v, want it handed over", err)
	}
}

// TestVisionWrite: the first write carries the user id and a padded frame; an inner
// TLS 1.3 application record after a TLS 1.3 ServerHello switches to the raw conn.
func TestVisionWrite(t *testing.T) {
	tlsSide, rawSide := &recorder{}, &recorder{}
	c := newTestVision()
	c.tls, c.raw = tlsSide, rawSide
	hello := append([]byte{0x16, 0x03, 0x01, 0x00, 0x10, 0x01}, make([]byte, 16)...)
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	w := tlsSide.Bytes()
	if !bytes.Equal(w[:16], testID[:]) || w[16] != visionContinue || int(w[17])<<8|int(w[18]) != len(hello) {
		t.Fatalf("first frame % x", w[:21])
	}
	if pad := int(w[19])<<8 | int(w[20]); len(w) != 21+len(hello)+pad || pad < 900-len(hello) {
		t.Fatalf("frame length %d with padding %d", len(w), pad)
	}
	// The server's TLS 1.3 ServerHello (cipher 0x1301) seen on the read side.
	sh := make([]byte, 90)
	copy(sh, []byte{0x16, 0x03, 0x03, 0x00, 85, 0x02})
	sh[43] = 0 // session id length
	sh[44], sh[45] = 0x13, 0x01
	copy(sh[60:], tls13Version)
	c.filter(sh)
	if !c.enableDirect {
		t.Fatal("TLS 1.3 ServerHello did not enable direct")
	}
	tlsSide.Reset()
	app := append([]byte{0x17, 0x03, 0x03, 0x00, 0x05}, "hello"...)
	if _, err := c.Write(app); err != nil {
		t.Fatal(err)
	}
	if w := tlsSide.Bytes(); w[0] != visionDirect || !c.directWrite || c.padding {
		t.Fatalf("app data frame % x, direct %v", w[:5], c.directWrite)
	}
	tlsSide.Reset()
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if tlsSide.Len() != 0 || rawSide.String() != "after" {
		t.Fatalf("after direct: tls got %d bytes, raw got %q", tlsSide.Len(), rawSide.String())
	}
}

func FuzzVisionParse(f *testing.F) {
	f.Add(append(visionFrame(true, visionContinue, "hello", 7), visionFrame(false, visionEnd, "x", 1)...))
	f.Add(visionFrame(true, visionDirect, "abc", 0))
	f.Add([]byte("plain"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := newTestVision()
		if err := c.parse(b); err == nil && len(c.pending) > len(b) {
			t.Fatalf("more content (%d) than input (%d)", len(c.pending), len(b))
		}
	})
}

func FuzzReadXUDPFrame(f *testing.F) {
	f.Add([]byte{0, 12, 0, 0, muxKeep, muxOptData, muxNetUDP, 0, 7, 1, 203, 0, 113, 10, 0, 2, 'h', 'i'})
	f.Add([]byte{0, 4, 0, 0, muxEnd, 0})
	f.Add([]byte{0, 4, 0, 0, muxKeepAlive, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p := make([]byte, 16)
		_, n, _, _ := readXUDPFrame(bytes.NewReader(b), make([]byte, 257), p)
		if n > len(p) {
			t.Fatalf("n %d > buffer", n)
		}
	})
}

func FuzzReadTrojanPacket(f *testing.F) {
	f.Add([]byte("\x01\xcb\x00\x71\x0a\x00\x07\x00\x02\r\nhi"))
	f.Add([]byte("\x03\x05a.com\x00\x07\x00\x00\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var hdr [1 + 1 + 255 + 2 + 2 + 2]byte
		p := make([]byte, 16)
		_, n, _ := readTrojanPacket(bytes.NewReader(b), hdr[:], p)
		if n > len(p) {
			t.Fatalf("n %d > buffer", n)
		}
	})
}

func FuzzReadVLESSResponse(f *testing.F) {
	f.Add([]byte("\x00\x00"))
	f.Add([]byte("\x00\x02ab"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r vlessResponse
		n, err := r.feed(b)
		if n > len(b) || (err == nil && !r.done() && n != len(b)) {
			t.Fatalf("consumed %d of %d (done %v, %v)", n, len(b), r.done(), err)
		}
	})
}

// TestVisionDirectTCP: the socket is offered for splicing only once both
// directions went direct and nothing is buffered above it.
func TestVisionDirectTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := newTestVision()
	c.raw = raw
	if c.DirectTCP() != nil {
		t.Fatal("offered before any switch")
	}
	c.directRead = true
	if c.DirectTCP() != nil {
		t.Fatal("offered with only the read side direct")
	}
	c.rawOnly.Store(true)
	c.pending = []byte("raw bytes the record layer had read")
	if c.DirectTCP() != nil {
		t.Fatal("offered while bytes wait above the socket")
	}
	c.pending = nil
	if c.DirectTCP() != raw.(*net.TCPConn) {
		t.Fatal("not offered once both sides are direct and nothing waits")
	}
}
