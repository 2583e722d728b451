// Package transport carries a VLESS or Trojan stream to its server over one of
// the transports Xray-core defines above TLS and REALITY: WebSocket, HTTPUpgrade,
// gRPC ("gun") and XHTTP (SplitHTTP). Each transport is one file and one entry of
// the table in New, as Xray-core keeps a folder per transport under one dialer
// registry. The protocol above writes and reads its own framing through the
// net.Conn a Transport returns, unchanged.
//
// A transport gets its TLS (or REALITY) connections from one function of the
// proxy package, DialFunc, and never looks under it: the TLS layer may change
// without the transports noticing.
package transport

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Names of the transports (Options.Type). TCP is no transport at all: the
// protocol's stream is the TLS connection itself.
const (
	TCP         = "tcp"
	WS          = "ws"
	HTTPUpgrade = "httpupgrade"
	GRPC        = "grpc"
	XHTTP       = "xhttp"
)

// Names lists the values of Options.Type, TCP first.
var Names = []string{TCP, WS, HTTPUpgrade, GRPC, XHTTP}

// Modes of gRPC and XHTTP (Options.Mode).
const (
	ModeGun       = "gun"
	ModeMulti     = "multi"
	ModeAuto      = "auto"
	ModePacketUp  = "packet-up"
	ModeStreamUp  = "stream-up"
	ModeStreamOne = "stream-one"
)

// GRPCModes and XHTTPModes are the modes each transport accepts; the first is
// the default.
var (
	GRPCModes  = []string{ModeGun, ModeMulti}
	XHTTPModes = []string{ModeAuto, ModePacketUp, ModeStreamUp, ModeStreamOne}
)

// ALPN protocol ids.
const (
	alpnH2    = "h2"
	alpnHTTP1 = "http/1.1"
)

// DialFunc connects to the proxy server and makes the TLS or REALITY handshake.
// alpn is what the ClientHello offers (nil keeps the configured list or the
// fingerprint's); proto is the application protocol the server chose ("" when
// none). Under REALITY the server speaks HTTP/2 or HTTP/1.1 whatever was chosen.
type DialFunc func(ctx context.Context, alpn []string) (c net.Conn, proto string, err error)

// Options configure a transport; they mirror the proxy's options.
type Options struct {
	Type        string
	Path        string // ws, httpupgrade, xhttp: the request path, "/" by default
	Host        string // HTTP Host (:authority); default ServerName
	ServiceName string // grpc
	Mode        string // grpc: gun, multi; xhttp: auto, packet-up, stream-up, stream-one
	// EarlyData is ws's "ed": a first write of at most this many bytes travels in
	// the upgrade request. For httpupgrade, > 0 sends data without waiting for the
	// server's 101.
	EarlyData int
	// PaddingBytes is XHTTP's xPaddingBytes ("100-1000"); it may also come in Extra.
	PaddingBytes string
	// Extra is XHTTP's "extra" JSON object, as share links carry it.
	Extra string

	ServerName  string   // the TLS server name: the default Host
	Reality     bool     // the stream is REALITY's: HTTP/2 without asking for it
	ALPN        []string // the configured ALPN list (kept when set)
	Fingerprint string   // the browser the ClientHello imitates: its HTTP headers match
}

// Transport opens streams to the proxy server.
type Transport interface {
	// Dial returns a stream to the server. Its deadlines end the stream when
	// they pass during a read or write that cannot otherwise be interrupted.
	Dial(ctx context.Context) (net.Conn, error)
}

// New builds the transport o.Type names. It starts nothing (no goroutine, no
// socket): config check builds transports to validate them. A TCP (or empty)
// type has no transport: New returns nil, nil.
func New(o Options, dial DialFunc) (Transport, error) {
	if o.Type == "" || o.Type == TCP {
		return nil, nil
	}
	for _, t := range transports {
		if t.name == o.Type {
			return t.build(o, dial)
		}
	}
	return nil, &OptionError{Option: "transport", Err: fmt.Errorf("unknown transport %q (%s)", sanitize(o.Type, 20), strings.Join(Names, ", "))}
}

// transports is the dialer registry: a new transport is one file and one line here.
var transports = [...]struct {
	name  string
	build func(Options, DialFunc) (Transport, error)
}{
	{WS, newWebSocket},
	{HTTPUpgrade, newHTTPUpgrade},
	{GRPC, newGRPC},
	{XHTTP, newXHTTP},
}

// OptionError is a setting a transport cannot use. Option names the proxy
// option it came from, so that config check reports it at that option's line.
type OptionError struct {
	Option string
	Err    error
}

func (e *OptionError) Error() string      { return e.Option + ": " + e.Err.Error() }
func (e *OptionError) Unwrap() error      { return e.Err }
func (e *OptionError) OptionName() string { return e.Option }

func optErr(option, format string, args ...any) error {
	return &OptionError{Option: option, Err: fmt.Errorf(format, args...)}
}

// StatusError is an HTTP answer other than the one a transport needs: the
// server is there but this is not its transport endpoint (a wrong path, host or
// service name), or it refused.
type StatusError struct {
	Transport string
	Code      int
	Hint      string
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s: HTTP %d from the server", e.Transport, e.Code)
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

// statusHint says what a status most likely means for a transport endpoint.
func statusHint(code int, what string) string {
	switch code {
	case 404:
		return "no such endpoint: wrong " + what + "?"
	case 400:
		return "the server refused the request: a different mode, padding range or " + what + "?"
	case 403, 401:
		return "refused"
	case 101, 200:
		return ""
	}
	if code >= 500 {
		return "server error"
	}
	return ""
}

// path normalizes a request path as Xray does: a leading "/", and the query
// (after '?') kept apart.
func splitPath(p string) (path, query string) {
	path, query, _ = strings.Cut(p, "?")
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return path, query
}

// host is the HTTP Host of the requests: the configured one, else the TLS server name.
func (o *Options) host() string {
	if o.Host != "" {
		return o.Host
	}
	return o.ServerName
}

// checkHost accepts a host name or address with an optional port.
func checkHost(h string) error {
	if h == "" {
		return nil
	}
	if len(h) > 255 || strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r > '~' || strings.ContainsRune("/?#@\\\"'", r) }) {
		return errors.New("not a host name (letters, digits, '-', '.', an optional :port)")
	}
	return nil
}

// checkPath accepts what may follow the host in a request line.
func checkPath(p string) error {
	if len(p) > 1024 || strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r > '~' || r == '#' }) {
		return errors.New("not a URL path (printable ASCII without spaces or '#', at most 1024 characters)")
	}
	return nil
}

// Range is an inclusive range of integers, as Xray writes them: "N" or "N-M".
type Range struct{ From, To int }

// parseRange reads "N" or "N-M" (0 <= N <= M <= max).
func parseRange(s string, max int) (Range, error) {
	a, b, dash := strings.Cut(strings.TrimSpace(s), "-")
	from, err1 := strconv.Atoi(strings.TrimSpace(a))
	to := from
	var err2 error
	if dash {
		to, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || from < 0 || to < from || to > max {
		return Range{}, fmt.Errorf("%q is not a range N or N-M within 0-%d", sanitize(s, 24), max)
	}
	return Range{from, to}, nil
}

// pick returns a random value of r.
func (r Range) pick() int {
	if r.To <= r.From {
		return r.From
	}
	return r.From + randIntn(r.To-r.From+1)
}

func (r Range) String() string {
	if r.From == r.To {
		return strconv.Itoa(r.From)
	}
	return strconv.Itoa(r.From) + "-" + strconv.Itoa(r.To)
}

// deadlines gives a stream that cannot time out a single read or write (an
// HTTP/2 stream) net.Conn's deadlines: when one passes, kill ends the stream
// and the reads or writes it concerns fail with os.ErrDeadlineExceeded. Every
// user of deadlines on proxy conns gives up the stream after a timeout, so the
// stream need not survive it. Timers run only while a deadline is set.
type deadlines struct {
	mu         sync.Mutex
	kill       func()
	rt, wt     *time.Timer
	rExp, wExp bool
}

func (d *deadlines) set(read, write bool, t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if read {
		d.rt = d.arm(d.rt, t, &d.rExp)
	}
	if write {
		d.wt = d.arm(d.wt, t, &d.wExp)
	}
}

// arm replaces timer tm with one for t; the caller holds d.mu.
func (d *deadlines) arm(tm *time.Timer, t time.Time, expired *bool) *time.Timer {
	if tm != nil {
		tm.Stop()
	}
	if t.IsZero() {
		return nil
	}
	if *expired {
		return nil // the stream is gone already
	}
	wait := time.Until(t)
	if wait <= 0 {
		*expired = true
		go d.kill()
		return nil
	}
	return time.AfterFunc(wait, func() {
		d.mu.Lock()
		*expired = true
		d.mu.Unlock()
		d.kill()
	})
}

// stop clears the timers (on close).
func (d *deadlines) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range []*time.Timer{d.rt, d.wt} {
		if t != nil {
			t.Stop()
		}
	}
	d.rt, d.wt = nil, nil
}

// readErr and writeErr turn the error of a stream a deadline ended into
// os.ErrDeadlineExceeded.
func (d *deadlines) readErr(err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rExp {
		return os.ErrDeadlineExceeded
	}
	return err
}

func (d *deadlines) writeErr(err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wExp {
		return os.ErrDeadlineExceeded
	}
	return err
}

// sanitize makes text safe and short for an error.
func sanitize(s string, max int) string {
	b := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(b) < max; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b = append(b, c)
	}
	if len(s) > max {
		return string(b) + "..."
	}
	return string(b)
}

// withDeadline makes reads and writes on c end no later than ctx (at its deadline,
// or at once when it is cancelled) until the returned func is called.
func withDeadline(ctx context.Context, c net.Conn) (done func()) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = c.SetDeadline(time.Time{})
	}
}

// ctxErr reports the context's error rather than the i/o timeout it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && err != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// http1ALPN is what an HTTP/1.1 transport (ws, httpupgrade) offers: http/1.1
// only, as Xray's clients do, unless the configuration chose the list (or
// REALITY, whose hello is the fingerprint's).
func (o *Options) http1ALPN() []string {
	if len(o.ALPN) > 0 || o.Reality {
		return nil
	}
	return []string{alpnHTTP1}
}

// h2ALPN is what an HTTP/2 transport (grpc, xhttp) offers: a browser's list,
// h2 first, unless the configuration chose one.
func (o *Options) h2ALPN() []string {
	if len(o.ALPN) > 0 || o.Reality {
		return nil
	}
	return []string{alpnH2, alpnHTTP1}
}

// checkALPN refuses a configured ALPN list without what the transport needs.
func (o *Options) checkALPN(need string) error {
	if len(o.ALPN) == 0 || o.Reality || slices.Contains(o.ALPN, need) {
		return nil
	}
	return optErr("alpn", "transport %s needs %s in the list", o.Type, need)
}

// randIntn returns a random int in [0, n): padding lengths and intervals, which
// need no cryptographic randomness.
func randIntn(n int) int { return rand.IntN(n) }

// addr is the net.Addr of a stream's ends when the transport hides the socket.
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }
