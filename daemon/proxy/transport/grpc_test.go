package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"

	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// grpcMsg frames a protobuf message body as gRPC does.
func grpcMsg(body []byte) []byte {
	b := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)))
	return append(b, body...)
}

// pbBytes is field num of wire type 2.
func pbBytes(num int, v []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(num<<3|2))
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func TestGRPC(t *testing.T) {
	dial, _ := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/svc.Tunnel/TunMulti" || r.Header.Get("Content-Type") != "application/grpc" || r.Header.Get("Te") != "trailers" || r.Host != "sni.example.org" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		// The client's messages: one data field each.
		var in []byte
		for len(in) < 9 {
			var pre [5]byte
			if _, err := io.ReadFull(r.Body, pre[:]); err != nil {
				return
			}
			msg := make([]byte, binary.BigEndian.Uint32(pre[1:]))
			io.ReadFull(r.Body, msg)
			if msg[0] != 0x0a {
				return
			}
			l, n := binary.Uvarint(msg[1:])
			in = append(in, msg[1+n:1+n+int(l)]...)
		}
		// Back: an unknown varint field and a data field; a MultiHunk with two data
		// fields and an empty one; an unknown bytes field alone.
		var out []byte
		out = append(out, grpcMsg(append([]byte{0x10, 0x96, 0x01}, pbBytes(1, in[:3])...))...)
		out = append(out, grpcMsg(bytes.Join([][]byte{pbBytes(1, in[3:6]), pbBytes(1, nil), pbBytes(1, in[6:])}, nil))...)
		out = append(out, grpcMsg(pbBytes(2, []byte("skip me")))...)
		w.Write(out[:7])
		w.(http.Flusher).Flush()
		w.Write(out[7:])
		w.Header().Set("Grpc-Status", "0")
	}))
	tr, err := newGRPC(Options{Type: GRPC, ServiceName: "svc.Tunnel", Mode: ModeMulti, ServerName: "sni.example.org"}, dial)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tr.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, w := range []string{"abc", "def", "ghi"} {
		if _, err := c.Write([]byte(w)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "abcdefghi" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestGRPCStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"trailers-only unimplemented", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "12")
			w.Header().Set("Grpc-Message", "unknown service")
			w.WriteHeader(http.StatusOK)
		}, "grpc: status 12 (unimplemented: wrong service_name?): unknown service"},
		{"404", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) },
			"grpc: HTTP 404 from the server: no such endpoint: wrong service_name?"},
		{"error in trailers", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
			w.WriteHeader(http.StatusOK)
			w.Write(grpcMsg(pbBytes(1, []byte("x"))))
			w.Header().Set("Grpc-Status", "14")
			w.Header().Set("Grpc-Message", "gone")
		}, "grpc: status 14: gone"},
		{"not grpc", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") },
			"not a gRPC call"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial, _ := h2cServer(t, tc.handler)
			tr, _ := newGRPC(Options{Type: GRPC, ServiceName: "s", ServerName: "x"}, dial)
			c, err := tr.Dial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = io.ReadAll(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			// A writer learns of it too.
			if tc.name != "error in trailers" {
				if _, err := c.Write([]byte("x")); err == nil {
					t.Fatalf("write after a refusal succeeded")
				}
			}
		})
	}
}

// TestGRPCReadDeadline: a read deadline ends a read that waits for data.
func TestGRPCReadDeadline(t *testing.T) {
	dial, _ := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	tr, _ := newGRPC(Options{Type: GRPC, ServiceName: "s", ServerName: "x"}, dial)
	c, err := tr.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = c.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read error %v, want os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the deadline fired after %v", d)
	}
}

func TestGRPCPath(t *testing.T) {
	for _, tc := range []struct {
		svc   string
		multi bool
		want  string
	}{
		{"", false, "//Tun"},
		{"svc.Tunnel", false, "/svc.Tunnel/Tun"},
		{"a b", true, "/a%20b/TunMulti"},
		{"/my/sample/path1|path2", false, "/my/sample/path1"},
		{"/my/sample/path1|path2", true, "/my/sample/path2"},
		{"/my/sample/one", true, "/my/sample/one"},
	} {
		if got := grpcPath(tc.svc, tc.multi); got != tc.want {
			t.Errorf("grpcPath(%q, %v) = %q, want %q", tc.svc, tc.multi, got, tc.want)
		}
	}
}

// FuzzGRPCRead: whatever the server's response body holds, reading ends, never
// panics and never returns more bytes than the body had.
func FuzzGRPCRead(f *testing.F) {
	f.Add(grpcMsg(pbBytes(1, []byte("abc"))))
	f.Add(grpcMsg(append([]byte{0x10, 0x96, 0x01, 0x1d, 1, 2, 3, 4}, pbBytes(1, []byte("x"))...)))
	f.Add([]byte{0, 0, 0, 0, 3, 0x0a, 0x05, 1})
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &respStream{ready: make(chan struct{}), resp: &http.Response{Trailer: http.Header{}}, body: io.NopCloser(bytes.NewReader(data))}
		close(s.ready)
		c := &grpcConn{s: s}
		buf := make([]byte, 64)
		total := 0
		for i := 0; i < len(data)+10; i++ {
			n, err := c.Read(buf)
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

// TestGRPCDecodeSplit: the data comes out the same whatever the read boundaries.
func TestGRPCDecodeSplit(t *testing.T) {
	var in []byte
	in = append(in, grpcMsg(append([]byte{0x10, 0x96, 0x01}, pbBytes(1, []byte("hello "))...))...)
	in = append(in, grpcMsg(bytes.Join([][]byte{pbBytes(1, nil), pbBytes(1, []byte("wor")), pbBytes(3, []byte("xx")), pbBytes(1, []byte("ld"))}, nil))...)
	in = append(in, grpcMsg(nil)...)
	in = append(in, grpcMsg(append([]byte{0x1d, 1, 2, 3, 4, 0x09, 1, 2, 3, 4, 5, 6, 7, 8}, pbBytes(1, bytes.Repeat([]byte{'!'}, 300))...))...)
	want := "hello world" + strings.Repeat("!", 300)
	for step := 1; step <= len(in); step++ {
		var d grpcDecoder
		var got []byte
		for b := bytes.Clone(in); len(b) > 0; {
			k := min(step, len(b))
			m, err := d.decode(b[:k])
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			got = append(got, b[:m]...)
			b = b[k:]
		}
		if string(got) != want || !d.between() {
			t.Fatalf("step %d: got %q (at a boundary: %v)", step, got, d.between())
		}
	}
}
