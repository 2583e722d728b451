package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fakeServer accepts one connection on loopback and runs serve on it; dial is a
// DialFunc to it whose server "chose" proto.
func fakeServer(t *testing.T, proto string, serve func(c net.Conn, br *bufio.Reader) error) DialFunc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		errc <- serve(c, bufio.NewReader(c))
	}()
	t.Cleanup(func() {
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server did not finish")
		}
	})
	return func(ctx context.Context, alpn []string) (net.Conn, string, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		return c, proto, err
	}
}

// serverFrame is a frame as a server writes it (unmasked unless mask is set).
func serverFrame(fin bool, op byte, payload []byte, mask bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if mask {
		key := [4]byte{1, 2, 3, 4}
		b = append(b, key[:]...)
		p := bytes.Clone(payload)
		maskBytes(key, 0, p)
		return append(b, p...)
	}
	return append(b, payload...)
}

// readClientFrame reads one frame a client sent; it must be masked.
func readClientFrame(br *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 == 0 {
		return 0, nil, errors.New("client frame not masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		io.ReadFull(br, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		io.ReadFull(br, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	var key [4]byte
	if _, err := io.ReadFull(br, key[:]); err != nil {
		return 0, nil, err
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	maskBytes(key, 0, payload)
	return h[0] & 0x0f, payload, nil
}

// acceptUpgrade reads the upgrade request, checks it, and answers 101.
func acceptUpgrade(c net.Conn, br *bufio.Reader, check func(*http.Request) error) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	if check != nil {
		if err := check(req); err != nil {
			return err
		}
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + wsGUID))
	_, err = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
		base64.StdEncoding.EncodeToString(sum[:])+"\r\n\r\n")
	return err
}

func TestWebSocket(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 7000) // a 16-bit and a 64-bit length
	dial := fakeServer(t, alpnHTTP1, func(c net.Conn, br *bufio.Reader) error {
		err := acceptUpgrade(c, br, func(r *http.Request) error {
			switch {
			case r.URL.RequestURI() != "/ws/path?x=1":
				return errors.New("path " + r.URL.RequestURI())
			case r.Host != "cdn.example.org":
				return errors.New("host " + r.Host)
			case r.Header.Get("Sec-WebSocket-Version") != "13" || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
				return errors.New("not an upgrade")
			case r.Header.Get("Sec-WebSocket-Protocol") != "":
				return errors.New("early data without ed")
			case !strings.Contains(r.Header.Get("User-Agent"), "Firefox"):
				return errors.New("user agent " + r.Header.Get("User-Agent"))
			}
			return nil
		})
		if err != nil {
			return err
		}
		// A ping first (with the first data in the same packet), then data in two
		// fragments, one masked.
		var out []byte
		out = append(out, serverFrame(true, wsPing, []byte("p1"), false)...)
		out = append(out, serverFrame(false, wsBinary, []byte("hello "), false)...)
		out = append(out, serverFrame(true, wsContinuation, []byte("world"), true)...)
		out = append(out, serverFrame(true, wsBinary, big, false)...)
		if _, err := c.Write(out); err != nil {
			return err
		}
		op, p, err := readClientFrame(br)
		if err != nil || op != wsPong || string(p) != "p1" {
			return errors.New("no pong with the ping's payload")
		}
		var got []byte
		for len(got) < 11+len(big) {
			op, p, err := readClientFrame(br)
			if err != nil {
				return err
			}
			if op != wsBinary {
				return errors.New("client data frame not binary")
			}
			got = append(got, p...)
		}
		if string(got) != "hello world"+string(big) {
			return errors.New("client sent other data")
		}
		if _, err := c.Write(serverFrame(true, wsClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}, false)); err != nil {
			return err
		}
		op, p, err = readClientFrame(br)
		if err != nil || op != wsClose || !bytes.Equal(p, []byte{0x03, 0xe8}) {
			return errors.New("close not echoed")
		}
		return nil
	})
	tr, err := newWebSocket(Options{Type: WS, Path: "ws/path?x=1", Host: "cdn.example.org", ServerName: "sni.example.org", Fingerprint: "firefox"}, dial)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tr.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 11+len(big))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello world"+string(big) {
		t.Fatalf("read other data")
	}
	if _, err := c.Write(got); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(got); err != io.EOF {
		t.Fatalf("after the close frame: %d, %v; want EOF", n, err)
	}
}

func TestWebSocketEarlyData(t *testing.T) {
	dial := fakeServer(t, alpnHTTP1, func(c net.Conn, br *bufio.Reader) error {
		err := acceptUpgrade(c, br, func(r *http.Request) error {
			ed, err := base64.RawURLEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Protocol"))
			if err != nil || string(ed) != "first write" {
				return errors.New("early data missing: " + r.Header.Get("Sec-WebSocket-Protocol"))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if _, p, err := readClientFrame(br); err != nil || string(p) != "second" {
			return errors.New("second write not framed")
		}
		_, err = c.Write(serverFrame(true, wsBinary, []byte("answer"), false))
		return err
	})
	tr, err := newWebSocket(Options{Type: WS, EarlyData: 64, ServerName: "x"}, dial)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tr.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, w := range []string{"first write", "second"} {
		if _, err := c.Write([]byte(w)); err != nil {
			t.Fatal(err)
		}
	}
	b := make([]byte, 6)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "answer" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestWebSocketRefused(t *testing.T) {
	for _, tc := range []struct {
		name, answer, want string
	}{
		{"404", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "ws: HTTP 404 from the server: no such endpoint: wrong path or host?"},
		{"bad accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n", "does not accept this WebSocket key"},
		{"not http", "SSH-2.0-OpenSSH\r\n", "ws: read the HTTP response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial := fakeServer(t, alpnHTTP1, func(c net.Conn, br *bufio.Reader) error {
				if _, err := http.ReadRequest(br); err != nil {
					return err
				}
				_, err := io.WriteString(c, tc.answer)
				return err
			})
			tr, _ := newWebSocket(Options{Type: WS, ServerName: "x"}, dial)
			_, err := tr.Dial(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// fakeConn serves data to reads and takes every write.
type fakeConn struct {
	net.Conn
	r io.Reader
}

func (c *fakeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *fakeConn) Close() error                { return nil }

// FuzzWebSocketRead: whatever the server sends after the 101, reading ends (with
// data or an error), never panics, never returns more than asked.
func FuzzWebSocketRead(f *testing.F) {
	f.Add(serverFrame(true, wsBinary, []byte("abc"), false))
	f.Add(append(serverFrame(true, wsPing, []byte("x"), false), serverFrame(false, wsText, []byte("y"), true)...))
	f.Add(serverFrame(true, wsBinary, bytes.Repeat([]byte{1}, 70000), false))
	f.Add([]byte{0x88, 0x02, 0x03, 0xe8})
	f.Add([]byte{0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &wsConn{Conn: &fakeConn{r: bytes.NewReader(data)}}
		buf := make([]byte, 100)
		total := 0
		for i := 0; i < len(data)+10; i++ {
			n, err := c.Read(buf)
			if n < 0 || n > len(buf) {
				t.Fatalf("read %d", n)
			}
			total += n
			if err != nil {
				break
			}
		}
		if total > len(data) {
			t.Fatalf("returned %d bytes from %d", total, len(data))
		}
	})
}
