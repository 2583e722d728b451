package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	utls "github.com/metacubex/utls"
	"golang.org/x/sys/unix"
)

// goTLSServer runs a crypto/tls server (TLS 1.3 only) on loopback; handle gets
// each connection after its handshake.
func goTLSServer(t *testing.T, conf *tls.Config, handle func(*tls.Conn)) net.Addr {
	t.Helper()
	cert, err := selfSignedCert("proxy.test")
	if err != nil {
		t.Fatal(err)
	}
	if conf == nil {
		conf = &tls.Config{}
	}
	conf.Certificates = []tls.Certificate{cert}
	conf.MinVersion = tls.VersionTLS13
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				handle(tc)
			}()
		}
	}()
	return ln.Addr()
}

// dialSuite makes a uTLS (Chrome) handshake that offers one TLS 1.3 suite, and
// hands the connection to the record layer as dialTLS does.
func dialSuite(t *testing.T, addr net.Addr, suite uint16, alpn ...string) *recordConn {
	t.Helper()
	raw, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	var secrets keyLog
	u := utls.UClient(raw, &utls.Config{ServerName: "proxy.test", InsecureSkipVerify: true, KeyLogWriter: &secrets, NextProtos: alpn}, utls.HelloCustom)
	spec, err := utls.UTLSIdToSpec(utls.HelloChrome_Auto)
	if err != nil {
		t.Fatal(err)
	}
	spec.CipherSuites = []uint16{suite, utls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	if len(alpn) > 0 {
		for _, ext := range spec.Extensions {
			if a, ok := ext.(*utls.ALPNExtension); ok {
				a.AlpnProtocols = alpn
			}
		}
	}
	if err := u.ApplyPreset(&spec); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(testTimeout))
	if err := u.Handshake(); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Time{})
	c, err := takeOver(u, raw, &secrets)
	if err != nil {
		t.Fatal(err)
	}
	rc, ok := c.(*recordConn)
	if !ok {
		t.Fatalf("%T after TLS 1.3", c)
	}
	t.Cleanup(func() { rc.Close() })
	if got := rc.ConnectionState().CipherSuite; got != suite {
		t.Fatalf("negotiated %s, want %s", tls.CipherSuiteName(got), tls.CipherSuiteName(suite))
	}
	return rc
}

// readNonblockFull reads len(p) bytes with ReadNonblock, waiting for the socket
// between EAGAINs as the engine's poller would.
func readNonblockFull(t *testing.T, c *recordConn, p []byte) {
	t.Helper()
	raws, err := c.RawConns()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testTimeout)
	for n := 0; n < len(p); {
		k, err := c.ReadNonblock(p[n:])
		n += k
		switch {
		case errors.Is(err, syscall.EAGAIN):
			if k != 0 {
				t.Fatalf("EAGAIN with %d bytes", k)
			}
			if time.Now().After(deadline) {
				t.Fatalf("read %d of %d bytes before the deadline", n, len(p))
			}
			waitReadable(t, raws[0])
		case err != nil:
			t.Fatalf("ReadNonblock after %d of %d bytes: %v", n, len(p), err)
		}
	}
}

// waitReadable waits (in the runtime's poller) until raw's socket is readable. The
// callback looks at the socket each time: RawConn.Read resets the poller's readiness
// before it calls it, so bytes that came before the call made no new edge, and a
// callback that only said "wait" then waited for bytes that were already there (a hang
// seen in CI, with the echo complete and the peer waiting).
func waitReadable(t testing.TB, raw syscall.RawConn) {
	var peek [1]byte
	err := raw.Read(func(fd uintptr) bool {
		for {
			_, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err != unix.EINTR {
				return err != unix.EAGAIN
			}
		}
	})
	if err != nil && t != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// TestRecordConnGoServer: against Go's crypto/tls server, for each TLS 1.3
// suite, data of every size both ways through Write and through Read and
// ReadNonblock; the server's session tickets (taken over from uTLS's read-ahead
// or read later) are dropped; KeyUpdates both ways; the server's close_notify is
// EOF.
func TestRecordConnGoServer(t *testing.T) {
	addr := goTLSServer(t, nil, func(c *tls.Conn) { _, _ = io.Copy(c, c) })
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256} {
		t.Run(tls.CipherSuiteName(suite), func(t *testing.T) {
			c := dialSuite(t, addr, suite)
			for i, size := range []int{1, 100, maxPlaintext - 1, maxPlaintext, maxPlaintext + 1, 100_000, 1 << 20} {
				data := randomBytes(size)
				errc := make(chan error, 1)
				go func() {
					_, err := c.Write(data)
					errc <- err
				}()
				got := make([]byte, size)
				if i%2 == 0 {
					readNonblockFull(t, c, got)
				} else if _, err := io.ReadFull(c, got); err != nil {
					t.Fatalf("%d bytes: read: %v", size, err)
				}
				if err := <-errc; err != nil {
					t.Fatalf("%d bytes: write: %v", size, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%d bytes: the echo differs", size)
				}
			}
			if c.tickets == 0 {
				t.Error("no session ticket from the Go server was seen")
			}
			// Drained: ReadNonblock says EAGAIN and the conn holds no buffer.
			if n, err := c.ReadNonblock(make([]byte, 64)); n != 0 || !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("drained ReadNonblock = %d, %v; want EAGAIN", n, err)
			}
			if c.rx.buf != nil || c.pending != nil || c.hs != nil {
				t.Fatalf("idle conn holds a buffer: rx %v, pending %d, hs %d", c.rx.buf != nil, len(c.pending), len(c.hs))
			}
			// Our KeyUpdate asks the server to update too: Go's server answers
			// with its own before its next record; data flows on under the new keys.
			if err := c.requestKeyUpdate(); err != nil {
				t.Fatal(err)
			}
			inSecret := append([]byte(nil), c.in.secret...)
			for range 3 {
				msg := randomBytes(5000)
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("after KeyUpdate: %v", err)
				}
			}
			if bytes.Equal(inSecret, c.in.secret) {
				t.Error("the server's KeyUpdate did not change the read key")
			}
		})
	}
	t.Run("close_notify", func(t *testing.T) {
		addr := goTLSServer(t, nil, func(c *tls.Conn) {
			_, _ = c.Write([]byte("bye"))
			c.Close()
		})
		c := dialSuite(t, addr, tls.TLS_AES_128_GCM_SHA256)
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "bye" {
			t.Fatalf("ReadAll = %q, %v; want bye and a clean EOF", got, err)
		}
	})
	t.Run("CloseWrite", func(t *testing.T) {
		done := make(chan []byte, 1)
		addr := goTLSServer(t, nil, func(c *tls.Conn) {
			b, _ := io.ReadAll(c) // ends at our close_notify
			done <- b
			_, _ = c.Write([]byte("after"))
		})
		c := dialSuite(t, addr, tls.TLS_CHACHA20_POLY1305_SHA256)
		if _, err := c.Write([]byte("all of it")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if b := <-done; string(b) != "all of it" {
			t.Fatalf("server read %q", b)
		}
		if _, err := c.Write([]byte("x")); err == nil {
			t.Fatal("Write after CloseWrite succeeded")
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "after" {
			t.Fatalf("read after CloseWrite: %q, %v", got, err)
		}
	})
}

// TestRecordConnHTTP2: the record layer carries an HTTP/2 client (the transports
// above TLS need it), with the ALPN it negotiated.
func TestRecordConnHTTP2(t *testing.T) {
	body := randomBytes(1 << 20)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "not HTTP/2", http.StatusBadRequest)
			return
		}
		in, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", fmt.Sprint(len(in)))
		_, _ = w.Write(body)
	})}
	cert, err := selfSignedCert("proxy.test")
	if err != nil {
		t.Fatal(err)
	}
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close() })

	c := dialSuite(t, ln.Addr(), tls.TLS_CHACHA20_POLY1305_SHA256, "h2")
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	// net/http speaks HTTP/2 over a conn it is handed as "unencrypted" HTTP/2:
	// the encryption is the record layer's.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	var dials atomic.Int32
	tr := &http.Transport{Protocols: &protos, DialContext: func(context.Context, string, string) (net.Conn, error) {
		if dials.Add(1) > 1 {
			return nil, errors.New("a second connection: the requests should share the first")
		}
		return c, nil
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	// One request makes the connection; then four streams share it at once.
	resp, err := client.Get("http://proxy.test/")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(resp.Body); resp.ProtoMajor != 2 || !bytes.Equal(got, body) {
		t.Fatalf("first request: HTTP/%d, %d bytes", resp.ProtoMajor, len(got))
	}
	resp.Body.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Go(func() {
			upload := strings.Repeat("u", 100_000*i)
			resp, err := client.Post("http://proxy.test/", "application/octet-stream", strings.NewReader(upload))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			switch {
			case err != nil:
				errs <- err
			case resp.StatusCode != 200 || !bytes.Equal(got, body):
				errs <- fmt.Errorf("stream %d: status %d, %d bytes", i, resp.StatusCode, len(got))
			case resp.Header.Get("X-Got") != fmt.Sprint(len(upload)):
				errs <- fmt.Errorf("stream %d: server got %s bytes, sent %d", i, resp.Header.Get("X-Got"), len(upload))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// recordPair is a client record conn and a "server" one over loopback TCP with
// the same secrets the other way round: the server's records are written by the
// test, record by record.
func recordPair(t *testing.T, suite uint16) (client, server *recordConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cs, ss := randomBytes(32), randomBytes(32)
	if suite == tls.TLS_AES_256_GCM_SHA384 {
		cs, ss = randomBytes(48), randomBytes(48)
	}
	if client, err = newRecordConn(cc, suite, cs, ss, nil, tls.ConnectionState{}); err != nil {
		t.Fatal(err)
	}
	if server, err = newRecordConn(sc, suite, ss, cs, nil, tls.ConnectionState{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// sealed is one record of type typ (content type inside) with content, plus
// padding zeros, sealed by the server side.
func (c *recordConn) sealed(typ byte, content []byte, padding int) []byte {
	buf := make([]byte, 0, recordHeaderLen+len(content)+1+padding+aeadTagLen)
	buf = append(buf, recordTypeAppData, 3, 3, 0, 0)
	buf = append(buf, content...)
	buf = append(buf, typ)
	buf = append(buf, make([]byte, padding)...)
	plain := buf[recordHeaderLen:]
	buf[3], buf[4] = byte((len(plain)+aeadTagLen)>>8), byte(len(plain)+aeadTagLen)
	sealed := c.out.aead.Seal(plain[:0], c.out.nextNonce(), plain, buf[:recordHeaderLen])
	return buf[:recordHeaderLen+len(sealed)]
}

func handshakeMsg(typ byte, body []byte) []byte {
	return append([]byte{typ, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

// TestRecordConnServerRecords: what a server may send after the handshake.
func TestRecordConnServerRecords(t *testing.T) {
	ticket := handshakeMsg(handshakeNewSessionTicket, randomBytes(200))
	tests := []struct {
		name    string
		records func(s *recordConn) [][]byte
		want    string // data read before the end
		wantErr string // "" for a clean EOF
	}{
		{"data, padded and empty records", func(s *recordConn) [][]byte {
			return [][]byte{s.sealed(recordTypeAppData, []byte("one "), 0), s.sealed(recordTypeAppData, nil, 0),
				s.sealed(recordTypeAppData, []byte("two"), 300), s.sealed(recordTypeAlert, []byte{1, alertCloseNotify}, 0)}
		}, "one two", ""},
		{"a ticket split over two records, and two in one", func(s *recordConn) [][]byte {
			return [][]byte{s.sealed(recordTypeHandshake, ticket[:10], 0), s.sealed(recordTypeHandshake, ticket[10:], 0),
				s.sealed(recordTypeHandshake, append(append([]byte(nil), ticket...), ticket...), 0),
				s.sealed(recordTypeAppData, []byte("data"), 0)}
		}, "data", "EOF"},
		{"a ticket cut by data", func(s *recordConn) [][]byte {
			return [][]byte{s.sealed(recordTypeHandshake, ticket[:10], 0), s.sealed(recordTypeAppData, []byte("x"), 0)}
		}, "", "cut by another record"},
		{"an alert", func(s *recordConn) [][]byte {
			return [][]byte{s.sealed(recordTypeAppData, []byte("before"), 0), s.sealed(recordTypeAlert, []byte{2, 40}, 0)}
		}, "before", "alert 40 (handshake failure)"},
		{"a post-handshake certificate request", func(s *recordConn) [][]byte {
			return [][]byte{s.sealed(recordTypeHandshake, handshakeMsg(13, []byte{0, 0, 0}), 0)}
		}, "", "unexpected post-handshake message type 13"},
		{"a plaintext record", func(s *recordConn) [][]byte {
			return [][]byte{{recordTypeHandshake, 3, 3, 0, 1, 0}}
		}, "", "unexpected record type 22"},
		{"an oversized record", func(s *recordConn) [][]byte {
			return [][]byte{{recordTypeAppData, 3, 3, 0x41, 0x01}}
		}, "", "more than 16640"},
		{"a record that does not decrypt", func(s *recordConn) [][]byte {
			r := s.sealed(recordTypeAppData, []byte("data"), 0)
			r[len(r)-1] ^= 1
			return [][]byte{r}
		}, "", "cannot decrypt"},
		{"too many empty records", func(s *recordConn) [][]byte {
			var rs [][]byte
			for range maxEmptyRecords + 1 {
				rs = append(rs, s.sealed(recordTypeAppData, nil, 0))
			}
			return rs
		}, "", "too many empty records"},
		{"cut inside a record", func(s *recordConn) [][]byte {
			r := s.sealed(recordTypeAppData, []byte("data"), 0)
			return [][]byte{r[:len(r)-3]}
		}, "", "closed inside a record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, nonblock := range []bool{false, true} {
				c, s := recordPair(t, tls.TLS_CHACHA20_POLY1305_SHA256)
				for _, r := range tt.records(s) {
					if _, err := s.conn.Write(r); err != nil {
						t.Fatal(err)
					}
				}
				s.conn.(*net.TCPConn).CloseWrite()
				var got []byte
				var err error
				buf := make([]byte, 3) // small: data also goes through pending
				for {
					var n int
					if nonblock {
						n, err = c.ReadNonblock(buf)
						if errors.Is(err, syscall.EAGAIN) {
							raws, _ := c.RawConns()
							waitReadable(t, raws[0])
							continue
						}
					} else {
						n, err = c.Read(buf)
					}
					got = append(got, buf[:n]...)
					if err != nil {
						break
					}
				}
				if string(got) != tt.want {
					t.Errorf("nonblock %v: read %q, want %q", nonblock, got, tt.want)
				}
				switch {
				case tt.wantErr == "" && err != io.EOF:
					t.Errorf("nonblock %v: ended with %v, want io.EOF", nonblock, err)
				case tt.wantErr != "" && !strings.Contains(fmt.Sprint(err), tt.wantErr):
					t.Errorf("nonblock %v: ended with %v, want %q", nonblock, err, tt.wantErr)
				}
				if c.rx.buf != nil {
					t.Errorf("nonblock %v: the ended conn still holds its read buffer", nonblock)
				}
			}
		})
	}
}

// TestRecordConnKeyUpdate: a KeyUpdate from the server changes the read key;
// with update_requested this side sends its own before its next record.
func TestRecordConnKeyUpdate(t *testing.T) {
	c, s := recordPair(t, tls.TLS_AES_256_GCM_SHA384)
	var w []byte
	w = append(w, s.sealed(recordTypeAppData, []byte("old key "), 0)...)
	w = append(w, s.sealed(recordTypeHandshake, handshakeMsg(handshakeKeyUpdate, []byte{1}), 0)...)
	if err := s.out.update(); err != nil {
		t.Fatal(err)
	}
	w = append(w, s.sealed(recordTypeAppData, []byte("new key"), 0)...)
	if _, err := s.conn.Write(w); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("old key new key"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "old key new key" {
		t.Fatalf("read %q, %v", got, err)
	}
	if !c.updating.Load() {
		t.Fatal("update_requested did not schedule this side's KeyUpdate")
	}
	// Our next Write sends the KeyUpdate first; the server side (our own reader,
	// which handles a KeyUpdate the same way) reads on under the new key.
	if _, err := c.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, 5)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "reply" {
		t.Fatalf("server read %q, %v", got, err)
	}
	if c.out.seq != 1 || s.in.seq != 1 || c.updating.Load() {
		t.Fatalf("after the update: client seq %d, server seq %d, updating %v", c.out.seq, s.in.seq, c.updating.Load())
	}
	// A KeyUpdate followed by more in its record is refused.
	c2, s2 := recordPair(t, tls.TLS_AES_128_GCM_SHA256)
	bad := append(handshakeMsg(handshakeKeyUpdate, []byte{0}), handshakeMsg(handshakeNewSessionTicket, nil)...)
	if _, err := s2.conn.Write(s2.sealed(recordTypeHandshake, bad, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Read(make([]byte, 8)); err == nil || !strings.Contains(err.Error(), "after a KeyUpdate") {
		t.Fatalf("KeyUpdate with more in its record: %v", err)
	}
}

// TestRecordConnReadAhead: records uTLS read past the handshake are taken over:
// tickets dropped at once, data kept for the first read, a partial record
// completed from the socket.
func TestRecordConnReadAhead(t *testing.T) {
	_, s := recordPair(t, tls.TLS_CHACHA20_POLY1305_SHA256)
	ticket := s.sealed(recordTypeHandshake, handshakeMsg(handshakeNewSessionTicket, randomBytes(100)), 0)
	data := s.sealed(recordTypeAppData, []byte("early"), 0)
	next := s.sealed(recordTypeAppData, []byte(" and late"), 0)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	readAhead := append(append(append([]byte(nil), ticket...), data...), next[:4]...)
	c, err := newRecordConn(cc, tls.TLS_CHACHA20_POLY1305_SHA256, randomBytes(32), s.out.secret, readAhead, tls.ConnectionState{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// newRecordConn used the server's secret at its sequence 0; the pair's server
	// sealed three records from 0 too.
	if c.tickets != 1 || string(c.pending) != "early" {
		t.Fatalf("taking over: %d tickets, pending %q", c.tickets, c.pending)
	}
	if _, err := sc.Write(next[4:]); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("early and late"))
	readNonblockFull(t, c, got)
	if string(got) != "early and late" {
		t.Fatalf("read %q", got)
	}
}

// TestRecordConnFirstRecord: a held prefix goes out in the first record with
// the first Write's data; with no Write it goes alone after the wait.
func TestRecordConnFirstRecord(t *testing.T) {
	c, s := recordPair(t, tls.TLS_AES_128_GCM_SHA256)
	s.oneRecord = true
	c.holdPrefix([]byte("HEADER|"), time.Hour, c.FlushRequest)
	if _, err := c.Write([]byte("payload")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != "HEADER|payload" {
		t.Fatalf("first record %q, %v; want header and payload in one", buf[:n], err)
	}
	// A write larger than a record: the first record is full (header + the most
	// of the data that fits), the rest follows.
	c2, s2 := recordPair(t, tls.TLS_AES_128_GCM_SHA256)
	s2.oneRecord = true
	c2.holdPrefix([]byte("HEADER|"), time.Hour, c2.FlushRequest)
	big := randomBytes(3 * maxPlaintext)
	go func() { _, _ = c2.Write(big) }()
	first := make([]byte, 2*maxPlaintext)
	n, err = s2.Read(first)
	if err != nil || n != maxPlaintext || string(first[:7]) != "HEADER|" || !bytes.Equal(first[7:n], big[:maxPlaintext-7]) {
		t.Fatalf("first record of a large write: %d bytes, %v", n, err)
	}
	// No data within the wait: the header goes alone.
	c3, s3 := recordPair(t, tls.TLS_AES_128_GCM_SHA256)
	c3.holdPrefix([]byte("HEADER"), 50*time.Millisecond, c3.FlushRequest)
	_ = s3.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, 6)
	if _, err := io.ReadFull(s3, got); err != nil || string(got) != "HEADER" {
		t.Fatalf("header alone: %q, %v", got, err)
	}
	if c3.prefixPending() {
		t.Fatal("prefix still pending after it was sent")
	}
}

// TestRecordConnNoAllocs: sealing and opening full records allocates nothing.
func TestRecordConnNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	c, s := recordPair(t, tls.TLS_CHACHA20_POLY1305_SHA256)
	data := randomBytes(4 * maxPlaintext)
	got := make([]byte, 64<<10)
	round := func() {
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(data); {
			k, err := s.ReadNonblock(got)
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
	if a := testing.AllocsPerRun(20, round); a > 0 {
		t.Errorf("%.1f allocations per 64 KiB written and read, want 0", a)
	}
}

func FuzzRecordConn(f *testing.F) {
	f.Add([]byte{recordTypeAppData, 'h', 'i', 0, 0}, false, uint8(0))
	f.Add(append([]byte{recordTypeHandshake}, handshakeMsg(handshakeKeyUpdate, []byte{1})...), false, uint8(1))
	f.Add([]byte{recordTypeAlert, 2, 40}, false, uint8(0))
	f.Add([]byte{recordTypeAppData, 3, 3, 0, 4, 1, 2, 3, 4}, true, uint8(7))
	// content: records to seal, each a type byte and then its content up to the
	// next 0xff byte; or (raw) the bytes the server sends as they are. split cuts
	// what the server sends into reads.
	f.Fuzz(func(t *testing.T, content []byte, raw bool, split uint8) {
		var stream []byte
		s := &recordConn{}
		key := bytes.Repeat([]byte{7}, 32)
		if err := s.out.set(suite13ByID(tls.TLS_CHACHA20_POLY1305_SHA256), key); err != nil {
			t.Fatal(err)
		}
		if raw {
			stream = content
		} else {
			for _, part := range bytes.Split(content, []byte{0xff}) {
				if len(part) == 0 || len(part) > maxPlaintext {
					continue
				}
				stream = append(stream, s.sealed(part[0], part[1:], int(split)%3)...)
			}
		}
		c := &recordConn{src: streamSource{r: &chunkReader{b: stream, n: int(split)%17 + 1}}}
		if err := c.in.set(suite13ByID(tls.TLS_CHACHA20_POLY1305_SHA256), key); err != nil {
			t.Fatal(err)
		}
		total := 0
		buf := make([]byte, 1+int(split)%64)
		for {
			n, err := c.Read(buf)
			total += n
			if n > len(buf) || total > len(stream) {
				t.Fatalf("read %d (total %d) from %d bytes", n, total, len(stream))
			}
			if err != nil {
				break
			}
		}
		if c.rx.buf != nil {
			t.Fatal("read buffer held after the end")
		}
	})
}

// chunkReader returns at most n bytes a Read.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[k:]
	return k, nil
}

// BenchmarkTLSDownload reads what a Go TLS 1.3 server (in this process) sends,
// 64 KiB at a time, through tgtun's record layer with the engine's non-blocking
// reads, and through uTLS's conn as before it; and writes the same way.
func BenchmarkTLSDownload(b *testing.B) {
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_CHACHA20_POLY1305_SHA256} {
		for _, layer := range []string{"record-layer", "utls"} {
			b.Run(tls.CipherSuiteName(suite)+"/"+layer, func(b *testing.B) {
				benchTLS(b, suite, layer, true)
			})
		}
	}
}

func BenchmarkTLSUpload(b *testing.B) {
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_CHACHA20_POLY1305_SHA256} {
		for _, layer := range []string{"record-layer", "utls"} {
			b.Run(tls.CipherSuiteName(suite)+"/"+layer, func(b *testing.B) {
				benchTLS(b, suite, layer, false)
			})
		}
	}
}

func benchTLS(b *testing.B, suite uint16, layer string, down bool) {
	const chunk = 64 << 10
	total := int64(b.N) * chunk
	cert, err := selfSignedCert("proxy.test")
	if err != nil {
		b.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if down {
			buf := make([]byte, chunk)
			for sent := int64(0); sent < total; sent += chunk {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
			return
		}
		_, _ = io.CopyN(io.Discard, c, total)
		_, _ = c.Write([]byte{1})
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	var secrets keyLog
	u := utls.UClient(raw, &utls.Config{ServerName: "proxy.test", InsecureSkipVerify: true, KeyLogWriter: &secrets}, utls.HelloCustom)
	spec, _ := utls.UTLSIdToSpec(utls.HelloChrome_Auto)
	spec.CipherSuites = []uint16{suite}
	if err := u.ApplyPreset(&spec); err != nil {
		b.Fatal(err)
	}
	if err := u.Handshake(); err != nil {
		b.Fatal(err)
	}
	var c net.Conn = u
	if layer == "record-layer" {
		if c, err = takeOver(u, raw, &secrets); err != nil {
			b.Fatal(err)
		}
	}
	defer c.Close()
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	// CPU time (this process: the server's side too, the same in both layers)
	// moves less with the machine's load than the rate does.
	cpu0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(total)*(1<<30)/1e9, "cpu-s/GiB") }()
	buf := make([]byte, chunk)
	if !down {
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			b.Fatal(err)
		}
		return
	}
	rc, _ := c.(*recordConn)
	for got := int64(0); got < total; {
		var n int
		if rc != nil {
			n, err = rc.ReadNonblock(buf)
			if errors.Is(err, syscall.EAGAIN) {
				raws, _ := rc.RawConns()
				waitReadable(nil, raws[0])
				continue
			}
		} else {
			n, err = c.Read(buf)
		}
		if err != nil {
			b.Fatal(err)
		}
		got += int64(n)
	}
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestTLS12KeepsUTLS: a plain TLS server that answers TLS 1.2 still carries
// Trojan and VLESS (on uTLS's own conn, read by a blocking reader); Vision,
// whose direct mode needs an outer TLS 1.3, is refused with a clear error.
func TestTLS12KeepsUTLS(t *testing.T) {
	cert, err := selfSignedCert("proxy.test")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				if err := skipTrojanHeader(r); err != nil {
					return
				}
				_, _ = io.Copy(c, r)
			}()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	d, err := New(Spec{Name: "t", Type: TypeTrojan, Server: "127.0.0.1", Port: uint16(addr.Port), Password: "pw", SNI: "proxy.test", Insecure: true}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.DialTCP(testCtx(t), testDst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*recordConn); ok {
		t.Fatal("the record layer took a TLS 1.2 connection")
	}
	roundTripTCP(t, c, 100_000)

	v, err := New(Spec{Name: "v", Type: TypeVLESS, Server: "127.0.0.1", Port: uint16(addr.Port), UUID: "b831381d-6324-4d53-ad4f-8cda48b30811",
		Flow: FlowVision, SNI: "proxy.test", Insecure: true}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.DialTCP(testCtx(t), testDst); err == nil || !strings.Contains(err.Error(), "Vision flow needs TLS 1.3") {
		t.Fatalf("Vision over TLS 1.2: %v, want a refusal that says why", err)
	}
}

// TestRealityAskedOnceMore: a server that does not prove the REALITY key (here a
// plain TLS site, as a REALITY server's fallback to its target looks) is asked once
// more on a new connection before the dial fails: a loaded Xray server can fall
// back for an authentic hello. A wrong key fails both, with the REALITY error.
func TestRealityAskedOnceMore(t *testing.T) {
	cert, err := selfSignedCert("www.example.com")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				_ = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
			}()
		}
	}()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(Spec{Name: "v", Type: TypeVLESS, Server: "127.0.0.1", Port: uint16(ln.Addr().(*net.TCPAddr).Port),
		UUID: "b831381d-6324-4d53-ad4f-8cda48b30811", Security: SecurityReality, SNI: "www.example.com",
		PublicKey: base64.RawURLEncoding.EncodeToString(key.PublicKey().Bytes()), ShortID: "0123abcd"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.DialTCP(testCtx(t), testDst)
	if !errors.Is(err, ErrRealityAuth) {
		t.Fatalf("dial through a server that does not prove the key: %v, want ErrRealityAuth", err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("the server saw %d connections, want 2 (the handshake asked once more)", n)
	}
}
