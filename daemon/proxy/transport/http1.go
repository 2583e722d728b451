package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// HTTP/1.1 on a connection the transport owns: the upgrade requests of ws and
// httpupgrade, and XHTTP's packet-up when the server chose http/1.1. The request
// and the response head are written and read here, on the TLS connection, with
// no goroutine and no buffer left behind.

// newRequest builds a request for host and path?query (the query may be empty).
func newRequest(method, host, path, query string, h http.Header) *http.Request {
	u := &url.URL{Scheme: "https", Host: host, Path: path, RawQuery: query}
	if h == nil {
		h = http.Header{}
	}
	return &http.Request{Method: method, URL: u, Host: host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}

// writeRequest sends req (and body, when not nil) on c in one write.
func writeRequest(c net.Conn, req *http.Request, body []byte) error {
	var b bytes.Buffer
	b.Grow(512 + len(body))
	if body != nil {
		req.ContentLength = int64(len(body))
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	if err := req.Write(&b); err != nil {
		return fmt.Errorf("build %s request: %w", req.Method, err)
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		return fmt.Errorf("send %s request: %w", req.Method, err)
	}
	return nil
}

// respReader is the size of the reader of a response head: heads are short, and
// the stream's own reads bypass it once it is drained.
const respReader = 1024

// readHead reads a response head from br (for an upgrade: the status line and
// headers; the body, if any, stays in br).
func readHead(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("read the HTTP response: %w", err)
	}
	return resp, nil
}

// leftover takes what br read beyond the response head: the first bytes of the
// stream.
func leftover(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	rest := make([]byte, n)
	_, _ = io.ReadFull(br, rest)
	return rest
}
