package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// XHTTP (Xray-core's "xhttp", formerly SplitHTTP): the stream split over HTTP
// requests.
//   - stream-one: one POST whose body is the upload and whose response the download.
//   - stream-up: a GET for the download and a streaming POST for the upload, tied
//     by a session id in the path (or where extra puts it).
//   - packet-up: the GET, and the upload in POSTs of up to scMaxEachPostBytes, at
//     least scMinPostsIntervalMs apart, numbered so the server can reorder them;
//     the only mode a CDN that buffers requests lets through, and the one that
//     works over HTTP/1.1.
//   - auto: stream-one under REALITY, packet-up under TLS (what Xray's client picks).
//
// Every request carries Xray's padding (x_padding of xPaddingBytes 'X's, in the
// Referer's query by default), which the server checks.
type xhttpTransport struct {
	o           Options
	cfg         *xhttpConfig
	mode        string
	host        string
	path, query string // the base path ends in '/'
	pool        *h2Pool
	h1          *h1Pool
	useH1       atomic.Bool // the server chose http/1.1 once: packet-up over HTTP/1.1
}

func newXHTTP(o Options, dial DialFunc) (Transport, error) {
	cfg, _, err := parseExtra(o.Extra, o.PaddingBytes)
	if err != nil {
		return nil, err
	}
	mode := o.Mode
	switch mode {
	case "", ModeAuto:
		mode = ModePacketUp
		if o.Reality {
			mode = ModeStreamOne
		}
	case ModePacketUp, ModeStreamUp, ModeStreamOne:
	default:
		return nil, optErr("mode", "%q is not an XHTTP mode (%s)", sanitize(mode, 20), strings.Join(XHTTPModes, ", "))
	}
	if err := cfg.check(mode); err != nil {
		return nil, err
	}
	if err := checkPath(o.Path); err != nil {
		return nil, &OptionError{Option: "path", Err: err}
	}
	if err := checkHost(o.Host); err != nil {
		return nil, &OptionError{Option: "host", Err: err}
	}
	need := alpnH2
	if mode == ModePacketUp {
		need = "" // h2 or http/1.1
	}
	if need != "" {
		if err := o.checkALPN(need); err != nil {
			return nil, err
		}
	} else if len(o.ALPN) > 0 && !o.Reality && !containsAny(o.ALPN, alpnH2, alpnHTTP1) {
		return nil, optErr("alpn", "transport xhttp needs h2 or http/1.1 in the list")
	}
	t := &xhttpTransport{o: o, cfg: cfg, mode: mode, host: o.host()}
	t.path, t.query = splitPath(o.Path)
	if !strings.HasSuffix(t.path, "/") {
		t.path += "/"
	}
	lim := defaultMux
	if cfg.muxSet {
		lim = cfg.mux
	}
	t.pool = newH2Pool(XHTTP, dial, o.h2ALPN(), o.Reality, lim)
	t.pool.allowHTTP1 = mode == ModePacketUp
	h1alpn := []string{alpnHTTP1}
	if len(o.ALPN) > 0 {
		h1alpn = nil
	}
	t.h1 = &h1Pool{dial: dial, alpn: h1alpn}
	return t, nil
}

func containsAny(list []string, want ...string) bool {
	for _, w := range want {
		for _, l := range list {
			if l == w {
				return true
			}
		}
	}
	return false
}

// Mode is the mode dials use (auto resolved).
func (t *xhttpTransport) Mode() string { return t.mode }

func (t *xhttpTransport) Dial(ctx context.Context) (net.Conn, error) {
	if t.useH1.Load() {
		raw, _, err := t.h1.dialConn(ctx)
		if err != nil {
			return nil, err
		}
		return t.dialH1(ctx, raw)
	}
	cn, h1, err := t.pool.acquire(ctx)
	if err != nil {
		return nil, err
	}
	if h1 != nil {
		t.useH1.Store(true)
		return t.dialH1(ctx, h1)
	}
	c := t.newConn()
	c.cn = cn
	fctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	switch t.mode {
	case ModeStreamOne:
		pr, pw := io.Pipe()
		c.pw = pw
		req := t.request(fctx, t.cfg.method, "", "", pr, true)
		c.down = cn.startChecked(req, t.checkDown, func(err error) { pw.CloseWithError(err) })
	case ModeStreamUp:
		// c.fail, which the download's request may call at once, reads c.pw and c.up:
		// both are set before it starts.
		session := newSession()
		pr, pw := io.Pipe()
		c.pw = pw
		c.down = cn.startChecked(t.request(fctx, http.MethodGet, session, "", nil, false), t.checkDown, c.fail)
		up := cn.startChecked(t.request(fctx, t.cfg.method, session, "", pr, true), t.checkUp, func(err error) { pw.CloseWithError(err) })
		// Xray's server writes padding into the upload's response now and then
		// (keeping CDNs from timing it out): drain it, or it would pile up.
		go func() {
			if up.wait() == nil {
				_, _ = io.Copy(io.Discard, up.body)
				up.body.Close()
			}
		}()
		c.upResp = up
	default: // packet-up
		session := newSession()
		c.up = t.newUploader(func(seq int, data *chunks, written func()) error {
			pctx, cancel := context.WithTimeout(fctx, postTimeout)
			defer cancel()
			req := t.postRequest(pctx, session, seq, data)
			if req.Body != nil {
				req.Body = &signalEOF{r: req.Body, f: written}
			} else {
				written() // the data is in the headers
			}
			resp, err := cn.roundTrip(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return t.checkUp(resp)
		})
		c.down = cn.startChecked(t.request(fctx, http.MethodGet, session, "", nil, false), t.checkDown, c.fail)
	}
	c.dl.kill = c.kill
	return c, nil
}

// postTimeout bounds one upload request.
const postTimeout = 30 * time.Second

func (t *xhttpTransport) newConn() *xhttpConn {
	return &xhttpConn{remote: addr(t.host)}
}

// checkDown accepts the download's response head.
func (t *xhttpTransport) checkDown(r *http.Response) error {
	if r.StatusCode != http.StatusOK {
		return &StatusError{Transport: XHTTP, Code: r.StatusCode, Hint: statusHint(r.StatusCode, "path, host or mode")}
	}
	return nil
}

func (t *xhttpTransport) checkUp(r *http.Response) error {
	if r.StatusCode != http.StatusOK {
		return &StatusError{Transport: XHTTP, Code: r.StatusCode, Hint: statusHint(r.StatusCode, "path, host or mode") + " (upload)"}
	}
	return nil
}

// newSession is a session id as Xray's clients make them: a random UUID.
func newSession() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// request builds an XHTTP request with padding, session and sequence number where
// the configuration puts them. stream marks a streaming upload (gRPC content type).
func (t *xhttpTransport) request(ctx context.Context, method, session, seq string, body io.Reader, stream bool) *http.Request {
	h := http.Header{}
	for k, v := range t.cfg.headers {
		h.Set(k, v)
	}
	browserHeaders(h, t.o.Fingerprint, "fetch")
	u := &url.URL{Scheme: "https", Host: t.host, Path: t.path, RawQuery: t.query}
	req := &http.Request{Method: method, URL: u, Host: t.host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	if body != nil {
		req.Body = io.NopCloser(body)
		if rc, ok := body.(io.ReadCloser); ok {
			req.Body = rc
		}
	}
	t.pad(req)
	t.meta(req, t.cfg.sessPlace, t.cfg.sessKey, session)
	t.meta(req, t.cfg.seqPlace, t.cfg.seqKey, seq)
	if stream && !t.cfg.noGRPCHeader {
		h.Set("Content-Type", "application/grpc")
	}
	return req.WithContext(ctx)
}

// postRequest is packet-up's upload number seq carrying data.
func (t *xhttpTransport) postRequest(ctx context.Context, session string, seq int, data *chunks) *http.Request {
	req := t.request(ctx, t.cfg.method, session, strconv.Itoa(seq), nil, false)
	switch t.cfg.dataPlace {
	case placeHeader, placeCookie:
		enc := base64.RawURLEncoding.EncodeToString(data.bytes())
		for i := 0; len(enc) > 0; i++ {
			k := min(t.cfg.chunk.pick(), len(enc))
			if t.cfg.dataPlace == placeHeader {
				req.Header.Set(t.cfg.dataKey+"-"+strconv.Itoa(i), enc[:k])
			} else {
				req.AddCookie(&http.Cookie{Name: t.cfg.dataKey + "_" + strconv.Itoa(i), Value: enc[:k]})
			}
			enc = enc[k:]
		}
	default:
		req.Body = io.NopCloser(data.reader())
		req.ContentLength = int64(data.n)
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(data.reader()), nil }
	}
	return req
}

// pad adds the padding the server checks.
func (t *xhttpTransport) pad(req *http.Request) {
	c := t.cfg
	n := c.padding.pick()
	value := strings.Repeat("X", n)
	if c.obfs && c.padMethod == "tokenish" {
		value = tokenish(n)
	}
	placement, key, header := placeQueryInHeader, "x_padding", "Referer"
	if c.obfs {
		placement, key, header = c.padPlacement, c.padKey, c.padHeader
	}
	switch placement {
	case placeHeader:
		req.Header.Set(header, value)
	case placeQueryInHeader:
		u := *req.URL
		u.RawQuery = key + "=" + value
		req.Header.Set(header, u.String())
	case placeCookie:
		req.AddCookie(&http.Cookie{Name: key, Value: value})
	case placeQuery:
		q := req.URL.Query()
		q.Set(key, value)
		req.URL.RawQuery = q.Encode()
	}
}

// meta puts a session id or sequence number where placement says.
func (t *xhttpTransport) meta(req *http.Request, placement, key, value string) {
	if value == "" {
		return
	}
	switch placement {
	case placePath:
		if !strings.HasSuffix(req.URL.Path, "/") {
			req.URL.Path += "/"
		}
		req.URL.Path += value
	case placeQuery:
		q := req.URL.Query()
		q.Set(key, value)
		req.URL.RawQuery = q.Encode()
	case placeHeader:
		req.Header.Set(key, value)
	case placeCookie:
		req.AddCookie(&http.Cookie{Name: key, Value: value})
	}
}

// huffmanBits are the lengths of HPACK's Huffman codes (RFC 7541 Appendix B) of
// the base62 digits 0-9, A-Z, a-z: tokenish padding is measured in them.
const (
	base62      = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	huffmanBits = "5556666666" + "67777777777777777777777878" + "56565666577666567655677777"
)

// tokenish is Xray's "tokenish" padding: random base62 whose HPACK Huffman
// encoding is n bytes long (the server allows 2 bytes either way).
func tokenish(n int) string {
	b := make([]byte, 0, n+n/3+2)
	bits := 0
	var r [64]byte
	for (bits+7)/8 < n {
		_, _ = rand.Read(r[:])
		for _, x := range r {
			if (bits+7)/8 >= n {
				break
			}
			if x >= 248 { // 248 = 4*62: keep the choice uniform
				continue
			}
			i := int(x) % len(base62)
			b = append(b, base62[i])
			bits += int(huffmanBits[i] - '0')
		}
	}
	return string(b)
}

// xhttpConn is one flow over XHTTP.
type xhttpConn struct {
	cn     *h2Conn  // HTTP/2: the connection the flow's requests go on
	h1     net.Conn // HTTP/1.1: the download's connection
	cancel context.CancelFunc
	down   *respStream
	downR  io.ReadCloser // HTTP/1.1 download body
	pw     *io.PipeWriter
	upResp *respStream
	up     *uploader
	dl     deadlines
	remote addr

	errMu   sync.Mutex
	downErr error
	once    sync.Once
}

// fail records the download's failure for the writers.
func (c *xhttpConn) fail(err error) {
	c.errMu.Lock()
	if c.downErr == nil {
		c.downErr = err
	}
	c.errMu.Unlock()
	if c.pw != nil {
		c.pw.CloseWithError(err)
	}
	if c.up != nil {
		c.up.fail(err)
	}
}

func (c *xhttpConn) kill() {
	c.fail(errDeadline)
	if c.cancel != nil {
		c.cancel()
	}
	if c.h1 != nil {
		c.h1.Close()
	}
}

func (c *xhttpConn) Read(p []byte) (int, error) {
	var body io.Reader = c.downR
	if c.down != nil {
		if err := c.down.wait(); err != nil {
			return 0, c.dl.readErr(err)
		}
		body = c.down.body
	}
	n, err := body.Read(p)
	if err != nil && n == 0 {
		return 0, c.dl.readErr(err)
	}
	return n, nil
}

func (c *xhttpConn) Write(p []byte) (int, error) {
	var n int
	var err error
	if c.up != nil {
		n, err = c.up.write(p)
	} else {
		n, err = c.pw.Write(p)
	}
	if err != nil {
		c.errMu.Lock()
		if c.downErr != nil {
			err = c.downErr
		}
		c.errMu.Unlock()
		// A refusal of the request explains a failed write best; the HTTP/2 client
		// may end the request body a moment before the refusal is seen.
		for _, s := range []*respStream{c.down, c.upResp} {
			if s == nil {
				continue
			}
			if rerr := s.failure(time.Second); rerr != nil {
				err = rerr
				break
			}
		}
		if err == io.ErrClosedPipe {
			err = net.ErrClosed
		}
		return n, c.dl.writeErr(err)
	}
	return n, nil
}

// CloseWrite ends the upload: a streaming body ends (END_STREAM), packet-up sends
// what is buffered and no more.
func (c *xhttpConn) CloseWrite() error {
	if c.up != nil {
		c.up.closeWrite()
		return nil
	}
	return c.pw.Close()
}

func (c *xhttpConn) Close() error {
	c.once.Do(func() {
		c.dl.stop()
		if c.pw != nil {
			c.pw.CloseWithError(net.ErrClosed)
		}
		if c.up != nil {
			c.up.fail(net.ErrClosed)
		}
		if c.cancel != nil {
			c.cancel()
		}
		if c.down != nil {
			c.down.close()
		}
		if c.upResp != nil {
			c.upResp.close()
		}
		if c.h1 != nil {
			// Closing the connection ends the download: its body's Close would
			// read it to the end.
			c.h1.Close()
		}
		if c.cn != nil {
			c.cn.release()
		}
	})
	return nil
}

func (c *xhttpConn) LocalAddr() net.Addr  { return addr("xhttp") }
func (c *xhttpConn) RemoteAddr() net.Addr { return c.remote }

func (c *xhttpConn) SetDeadline(t time.Time) error {
	c.dl.set(true, true, t)
	return nil
}

func (c *xhttpConn) SetReadDeadline(t time.Time) error {
	c.dl.set(true, false, t)
	return nil
}

func (c *xhttpConn) SetWriteDeadline(t time.Time) error {
	c.dl.set(false, true, t)
	return nil
}

// uploader is packet-up's upload: writes gather in a buffer of up to maxPost
// bytes, which a sender goroutine posts, at least an interval after the last
// post began. As Xray's client, the next post may start once the last one's data is
// written, before its answer (up to maxInflight at once; the server puts them in
// order by their numbers). The sender runs only while there is something to send:
// an idle flow has no goroutine and no buffer.
type uploader struct {
	mu       sync.Mutex
	cond     sync.Cond
	buf      *chunks // nil while nothing waits
	max      int
	interval Range
	seq      int
	sending  bool
	inflight int
	err      error
	last     time.Time
	post     func(seq int, data *chunks, written func()) error
	closed   bool // CloseWrite: no more writes
}

// maxInflight bounds the posts of one flow in flight: with 1 MB posts, what a flow
// uploading at full speed holds.
const maxInflight = 3

func (t *xhttpTransport) newUploader(post func(int, *chunks, func()) error) *uploader {
	u := &uploader{max: t.cfg.maxPost.pick(), interval: t.cfg.interval, post: post}
	u.cond.L = &u.mu
	return u
}

func (u *uploader) write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return 0, net.ErrClosed
	}
	n := 0
	for len(p) > 0 {
		for u.err == nil && u.buf != nil && u.buf.n >= u.max {
			u.cond.Wait()
		}
		if u.err != nil {
			return n, u.err
		}
		if u.buf == nil {
			u.buf = &chunks{}
		}
		k := u.buf.append(p[:min(len(p), u.max-u.buf.n)])
		p = p[k:]
		n += k
		if !u.sending {
			u.sending = true
			go u.run()
		}
	}
	return n, nil
}

// run posts what is buffered until the buffer is empty.
func (u *uploader) run() {
	u.mu.Lock()
	for {
		if u.buf == nil || u.err != nil {
			u.sending = false
			u.cond.Broadcast()
			u.mu.Unlock()
			return
		}
		if wait := time.Until(u.last.Add(time.Duration(u.interval.pick()) * time.Millisecond)); wait > 0 {
			// Let more writes gather into this post.
			u.mu.Unlock()
			time.Sleep(wait)
			u.mu.Lock()
			continue
		}
		if u.inflight >= maxInflight {
			u.cond.Wait()
			continue
		}
		data, seq := u.buf, u.seq
		u.buf = nil
		u.seq++
		u.inflight++
		u.last = time.Now()
		u.cond.Broadcast()
		u.mu.Unlock()
		written := make(chan struct{})
		var once sync.Once
		signal := func() { once.Do(func() { close(written) }) }
		go func() {
			err := u.post(seq, data, signal)
			signal()
			data.release()
			u.mu.Lock()
			u.inflight--
			if err != nil && u.err == nil {
				u.err = err
			}
			u.cond.Broadcast()
			u.mu.Unlock()
		}()
		<-written
		u.mu.Lock()
	}
}

// fail stops the upload with err (buffered data is dropped).
func (u *uploader) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	if u.buf != nil {
		u.buf.release()
		u.buf = nil
	}
	u.cond.Broadcast()
	u.mu.Unlock()
}

// closeWrite lets buffered data go and refuses more.
func (u *uploader) closeWrite() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
}

// chunks hold an upload's data in pooled 64 KiB pieces: a bulk upload reuses them
// instead of growing (and copying, and collecting) a buffer of up to 1 MB a post.
type chunks struct {
	bufs []*[]byte
	n    int
}

const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// append copies as much of p as fits the chunks' room (callers bound the total) and
// says how much.
func (c *chunks) append(p []byte) int {
	n := 0
	for len(p) > 0 {
		if len(c.bufs) == 0 || len(*c.bufs[len(c.bufs)-1]) == chunkSize {
			bp := chunkPool.Get().(*[]byte)
			*bp = (*bp)[:0]
			c.bufs = append(c.bufs, bp)
		}
		last := c.bufs[len(c.bufs)-1]
		k := min(len(p), chunkSize-len(*last))
		*last = append(*last, p[:k]...)
		p = p[k:]
		n += k
	}
	c.n += n
	return n
}

// reader reads the data from the start.
func (c *chunks) reader() io.Reader {
	rs := make([]io.Reader, len(c.bufs))
	for i, b := range c.bufs {
		rs[i] = bytes.NewReader(*b)
	}
	return io.MultiReader(rs...)
}

// bytes is the data in one slice (a copy).
func (c *chunks) bytes() []byte {
	out := make([]byte, 0, c.n)
	for _, b := range c.bufs {
		out = append(out, *b...)
	}
	return out
}

// release gives the pieces back; the chunks are empty after.
func (c *chunks) release() {
	for _, b := range c.bufs {
		chunkPool.Put(b)
	}
	c.bufs, c.n = nil, 0
}

// signalEOF calls f when r is read to its end (the HTTP/2 client wrote the body).
type signalEOF struct {
	r io.ReadCloser
	f func()
}

func (s *signalEOF) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.f()
	}
	return n, err
}

func (s *signalEOF) Close() error { return s.r.Close() }

// dialH1 runs packet-up over HTTP/1.1: the download is a GET on raw (a TLS
// connection whose server chose http/1.1), the upload POSTs on other connections
// of t.h1, kept alive between posts.
func (t *xhttpTransport) dialH1(ctx context.Context, raw net.Conn) (net.Conn, error) {
	if t.mode != ModePacketUp {
		raw.Close()
		return nil, fmt.Errorf("xhttp: the server chose http/1.1 (ALPN); mode %s needs HTTP/2: use mode packet-up or h2", t.mode)
	}
	session := newSession()
	req := t.request(ctx, http.MethodGet, session, "", nil, false)
	done := withDeadline(ctx, raw)
	err := writeRequest(raw, req, nil)
	var resp *http.Response
	br := bufio.NewReaderSize(raw, respReader)
	if err == nil {
		resp, err = readHead(br, req)
	}
	done()
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("xhttp: %w", ctxErr(ctx, err))
	}
	if err := t.checkDown(resp); err != nil {
		resp.Body.Close()
		raw.Close()
		return nil, err
	}
	c := t.newConn()
	c.h1 = raw
	c.downR = resp.Body
	fctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.up = t.newUploader(func(seq int, data *chunks, written func()) error {
		pctx, cancel := context.WithTimeout(fctx, postTimeout)
		defer cancel()
		var body []byte
		if t.cfg.dataPlace != placeHeader && t.cfg.dataPlace != placeCookie {
			body = data.bytes()
		}
		return t.h1.post(pctx, t.postRequest(pctx, session, seq, data), body, t.checkUp, written)
	})
	c.dl.kill = c.kill
	return c, nil
}

// h1Pool keeps HTTP/1.1 connections alive between packet-up's posts.
type h1Pool struct {
	dial DialFunc
	alpn []string
	mu   sync.Mutex
	idle []*h1Conn
}

type h1Conn struct {
	c     net.Conn
	br    *bufio.Reader
	timer *time.Timer
}

// maxIdleH1 bounds the idle upload connections kept.
const maxIdleH1 = 4

func (p *h1Pool) dialConn(ctx context.Context) (net.Conn, string, error) {
	c, proto, err := p.dial(ctx, p.alpn)
	if err != nil {
		return nil, "", err
	}
	if proto == alpnH2 {
		c.Close()
		return nil, "", errors.New("xhttp: the server now chose h2 where it chose http/1.1 before")
	}
	return c, proto, nil
}

func (p *h1Pool) get() *h1Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		hc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if hc.timer.Stop() {
			return hc
		}
	}
	return nil
}

func (p *h1Pool) put(hc *h1Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= maxIdleH1 {
		hc.c.Close()
		return
	}
	hc.timer = time.AfterFunc(idleClose, func() {
		p.mu.Lock()
		for i, x := range p.idle {
			if x == hc {
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		hc.c.Close()
	})
	p.idle = append(p.idle, hc)
}

// post sends one upload request and reads its answer. A kept-alive connection the
// server closed meanwhile is replaced once.
func (p *h1Pool) post(ctx context.Context, req *http.Request, body []byte, check func(*http.Response) error, written func()) error {
	for attempt := 0; ; attempt++ {
		hc := p.get()
		reused := hc != nil
		if hc == nil {
			c, _, err := p.dialConn(ctx)
			if err != nil {
				return err
			}
			hc = &h1Conn{c: c, br: bufio.NewReaderSize(c, respReader)}
		}
		done := withDeadline(ctx, hc.c)
		err := writeRequest(hc.c, req, body)
		var resp *http.Response
		if err == nil {
			written()
			resp, err = readHead(hc.br, req)
		}
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done()
		if err != nil {
			hc.c.Close()
			if reused && attempt == 0 && ctx.Err() == nil {
				continue
			}
			return fmt.Errorf("xhttp upload: %w", ctxErr(ctx, err))
		}
		if err := check(resp); err != nil {
			hc.c.Close()
			return err
		}
		if resp.Close {
			hc.c.Close()
		} else {
			p.put(hc)
		}
		return nil
	}
}
