package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// readConnectRequest reads a CONNECT request head and returns it.
func readConnectRequest(c net.Conn) string {
	br := bufio.NewReader(c)
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if err != nil || line == "\r\n" {
			return head.String()
		}
	}
}

func TestHTTPConnect(t *testing.T) {
	dst6 := netip.MustParseAddrPort("[2001:db8:3::10]:443")
	tests := []struct {
		name      string
		dst       netip.AddrPort
		user      string
		pass      string
		response  string // written after the request head
		wantReq   string // expected request head
		wantErr   string // after the "http host:port: " prefix; "" = success
		wantIs    error
		wantReply bool
	}{
		{
			name:     "200 with tunnel bytes in the same segment",
			dst:      testDst,
			response: "HTTP/1.1 200 Connection established\r\nProxy-Agent: fake\r\n\r\nhello",
			wantReq:  "CONNECT 203.0.113.10:443 HTTP/1.1\r\nHost: 203.0.113.10:443\r\n\r\n",
		},
		{
			name: "ipv6 and basic auth",
			dst:  dst6,
			user: "bob", pass: "pa:ss",
			response: "HTTP/1.0 200 OK\r\n\r\nhello",
			wantReq:  "CONNECT [2001:db8:3::10]:443 HTTP/1.1\r\nHost: [2001:db8:3::10]:443\r\nProxy-Authorization: Basic Ym9iOnBhOnNz\r\n\r\n",
		},
		{
			name: "407",
			dst:  testDst,
			user: "bob", pass: "secret-pw",
			response: "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
			wantErr:  "authentication failed", wantIs: ErrAuthFailed,
		},
		{
			name:      "502",
			dst:       testDst,
			response:  "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\nerror",
			wantErr:   `connect to 203.0.113.10:443: proxy answered "HTTP/1.1 502 Bad Gateway"`,
			wantReply: true,
		},
		{
			name:      "hostile status line is sanitised and bounded",
			dst:       testDst,
			response:  "HTTP/1.1 503 \x1b[31mred\x00" + strings.Repeat("A", 1000) + "\r\n\r\n",
			wantErr:   `connect to 203.0.113.10:443: proxy answered "HTTP/1.1 503 ?[31mred?` + strings.Repeat("A", 120-22) + `..."`,
			wantReply: true,
		},
		{
			name:     "not http",
			dst:      testDst,
			response: "SSH-2.0-OpenSSH_9.2\r\n",
			wantErr:  `read CONNECT response: not an HTTP status line: "SSH-2.0-OpenSSH_9.2"`,
		},
		{
			name:     "bad status code",
			dst:      testDst,
			response: "HTTP/1.1 2x0 OK\r\n\r\n",
			wantErr:  `read CONNECT response: not an HTTP status line: "HTTP/1.1 2x0 OK"`,
		},
		{
			name:     "header line too long",
			dst:      testDst,
			response: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("b", 5000) + "\r\n\r\n",
			wantErr:  "read CONNECT response: header line longer than 4096 bytes",
		},
		{
			name:     "too many headers",
			dst:      testDst,
			response: "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", 200) + "\r\n",
			wantErr:  "read CONNECT response: more than 100 header lines",
		},
		{
			name:     "truncated head",
			dst:      testDst,
			response: "HTTP/1.1 200 OK\r\nX: y",
			wantErr:  "read CONNECT response: EOF",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotReq := make(chan string, 1)
			spec := fakeServer(t, func(c net.Conn) {
				gotReq <- readConnectRequest(c)
				_, _ = c.Write([]byte(tt.response))
				if tt.wantErr == "" {
					time.Sleep(time.Second)
				}
			})
			spec.Type, spec.Username, spec.Password = TypeHTTP, tt.user, tt.pass
			d, err := New(spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.DialTCP(testCtx(t), tt.dst)
			if tt.wantReq != "" {
				if req := <-gotReq; req != tt.wantReq {
					t.Errorf("request\n%q\nwant\n%q", req, tt.wantReq)
				}
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("DialTCP: %v", err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				got := make([]byte, 5)
				if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
					t.Fatalf("first tunnel bytes = %q, %v", got, err)
				}
				return
			}
			want := "http " + spec.Address() + ": " + tt.wantErr
			if err == nil || err.Error() != want {
				t.Fatalf("error = %v\nwant    %s", err, want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error does not wrap %v", tt.wantIs)
			}
			var re *ReplyError
			if errors.As(err, &re) != tt.wantReply {
				t.Errorf("errors.As ReplyError = %v, want %v", !tt.wantReply, tt.wantReply)
			}
			if tt.pass != "" && strings.Contains(err.Error(), tt.pass) {
				t.Errorf("error contains the password")
			}
		})
	}
}

func FuzzReadHTTPResponseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 Connection established\r\n\r\ndata"))
	f.Add([]byte("HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200\n\n"))
	f.Add([]byte("HTTP/1.1 -99 x\r\n\r\n"))
	f.Add([]byte("HTTP/2 200\r\n\r\n"))
	f.Add([]byte("\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), httpReadBufSize)
		code, status, err := readHTTPResponseHead(br)
		if err != nil {
			return
		}
		if code < 100 || code > 999 {
			t.Fatalf("code %d accepted", code)
		}
		if len(status) > httpMaxStatusText+3 {
			t.Fatalf("status %d bytes long", len(status))
		}
		for _, c := range []byte(status) {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("unsanitised status %q", status)
			}
		}
	})
}
