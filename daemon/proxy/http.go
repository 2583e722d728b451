package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
)

// Limits on the proxy's response head: a CONNECT reply is short, and a
// hostile server must not make us buffer without bound.
const (
	httpMaxHeadBytes  = 16 << 10
	httpMaxHeadLines  = 100
	httpReadBufSize   = 4 << 10
	httpMaxStatusText = 120
)

// HTTP dials through an HTTP proxy with CONNECT, optionally with Basic
// authentication. It cannot carry UDP.
type HTTP struct {
	base base
}

// DialTCP sends CONNECT dst and returns the tunnel once the proxy answers 2xx.
func (h *HTTP) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, h.base.timeout)
	defer cancel()
	c, err := h.base.dialServer(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	done := handshakeDeadline(ctx, c)
	conn, err := h.handshake(c, dst)
	done()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", h.base.prefix, handshakeErr(ctx, err))
	}
	return conn, nil
}

// DialUDP always fails: CONNECT tunnels only streams.
func (h *HTTP) DialUDP(context.Context, netip.AddrPort) (net.Conn, error) {
	return nil, fmt.Errorf("%s: HTTP CONNECT cannot carry UDP: %w", h.base.prefix, errors.ErrUnsupported)
}

func (h *HTTP) handshake(c net.Conn, dst netip.AddrPort) (net.Conn, error) {
	authority := netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()).String()
	var req bytes.Buffer
	fmt.Fprintf(&req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", authority, authority)
	if user, pass := h.base.spec.Username, h.base.spec.Password; user != "" || pass != "" {
		cred := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		fmt.Fprintf(&req, "Proxy-Authorization: Basic %s\r\n", cred)
	}
	req.WriteString("\r\n")
	if _, err := c.Write(req.Bytes()); err != nil {
		return nil, fmt.Errorf("send CONNECT: %w", err)
	}
	br := bufio.NewReaderSize(c, httpReadBufSize)
	code, status, err := readHTTPResponseHead(br)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// An HTTP proxy answers CONNECT once it reached the destination (or
			// gave up on it): its silence may be the destination's.
			return nil, fmt.Errorf("read CONNECT response: %w: %w", ErrTargetTimeout, err)
		}
		return nil, fmt.Errorf("read CONNECT response: %w", err)
	}
	switch {
	case code == http.StatusProxyAuthRequired, code == http.StatusUnauthorized:
		// tinyproxy answers wrong credentials with 401, missing ones with 407.
		return nil, ErrAuthFailed
	case code < 200 || code > 299:
		return nil, &ReplyError{Dst: dst, Reason: fmt.Sprintf("proxy answered %q", status)}
	}
	if br.Buffered() > 0 {
		// The tunnel's first bytes arrived with the head.
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// readHTTPResponseHead reads a response's status line and headers and
// returns the status code and the sanitised status line. It reads nothing
// past the blank line that ends the head except what r buffers.
func readHTTPResponseHead(r *bufio.Reader) (code int, status string, err error) {
	total := 0
	for lines := 0; ; lines++ {
		if lines >= httpMaxHeadLines {
			return 0, "", fmt.Errorf("more than %d header lines", httpMaxHeadLines)
		}
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, "", fmt.Errorf("header line longer than %d bytes", r.Size())
		}
		if err != nil {
			return 0, "", err
		}
		total += len(line)
		if total > httpMaxHeadBytes {
			return 0, "", fmt.Errorf("response head longer than %d bytes", httpMaxHeadBytes)
		}
		line = bytes.TrimRight(line, "\r\n")
		if lines == 0 {
			code, err = parseHTTPStatusLine(line)
			if err != nil {
				return 0, "", err
			}
			status = sanitize(string(line), httpMaxStatusText)
			continue
		}
		if len(line) == 0 {
			return code, status, nil
		}
	}
}

// parseHTTPStatusLine accepts "HTTP/1.x NNN[ reason]".
func parseHTTPStatusLine(line []byte) (int, error) {
	bad := func() (int, error) {
		return 0, fmt.Errorf("not an HTTP status line: %q", sanitize(string(line), httpMaxStatusText))
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return bad()
	}
	if len(line) > 12 && line[12] != ' ' {
		return bad()
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 || line[9] == '+' || line[9] == '-' {
		return bad()
	}
	return code, nil
}

// bufferedConn reads first what the handshake's reader already buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
