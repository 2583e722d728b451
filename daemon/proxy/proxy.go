// Package proxy dials outbound connections through the configured proxy
// servers (SOCKS5, HTTP CONNECT, Shadowsocks AEAD, or direct) and keeps a
// health-checked pool of them. Shadowsocks covers SIP004 AEAD and the
// 2022 (SIP022) ciphers.
//
// Every socket towards a proxy server carries the bypass firewall mark so
// that the daemon's own traffic never loops back into its TUN device.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proxy types accepted in Spec.Type.
const (
	TypeSOCKS5      = "socks5"
	TypeHTTP        = "http"
	TypeShadowsocks = "shadowsocks"
	TypeDirect      = "direct"
	TypeVLESS       = "vless"
	TypeTrojan      = "trojan"
)

// DefaultDialTimeout bounds a whole dial (connect plus handshake) when
// Options.DialTimeout is zero.
const DefaultDialTimeout = 10 * time.Second

// DefaultFirstReplyTimeout is Options.FirstReplyTimeout when zero.
const DefaultFirstReplyTimeout = 15 * time.Second

var (
	// ErrAuthFailed is wrapped by errors reporting that the proxy refused
	// the credentials.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrNoHealthyProxy is wrapped by Pool dial errors when no member is
	// healthy; the caller should reset the flow at once.
	ErrNoHealthyProxy = errors.New("no healthy proxy")
	// ErrTargetTimeout is wrapped by dial errors that came while a proxy that had
	// answered (SOCKS5: its greeting; HTTP: the connection) was still reaching the
	// destination: the destination's silence, not proof that the proxy is down.
	ErrTargetTimeout = errors.New("the proxy took the request; the destination did not answer in time")
)

// ConnectTimeout bounds the TCP connect to a proxy server (with the lookup of its
// name), within the whole dial's DialTimeout: a server that does not complete a TCP
// handshake in this time (the kernel has sent the SYN three times by then) is most
// likely gone, and a pool tries the next member while the flow still has time left.
const ConnectTimeout = 4 * time.Second

// Spec describes one proxy. It mirrors config.Proxy field by field so the
// caller converts with a plain struct conversion or literal; this package
// does not import daemon/config.
type Spec struct {
	Name     string
	Type     string // socks5 | http | shadowsocks | vless | trojan | direct
	Server   string // host name or IP address, without port
	Port     uint16
	Username string
	Password string
	Cipher   string // shadowsocks only
	UDP      bool   // relay UDP through this proxy
	Priority int
	Line     int // line of the config section, for messages

	// VLESS and Trojan (Trojan uses Password and the TLS fields).
	UUID        string   // vless: the user id
	Flow        string   // vless: "" or FlowVision
	Security    string   // vless: SecurityTLS (default) or SecurityReality; trojan: always TLS
	SNI         string   // TLS server name; default Server (tls), required (reality)
	Fingerprint string   // browser ClientHello to imitate (Fingerprints); default chrome
	PublicKey   string   // reality: the server's X25519 public key, base64url
	ShortID     string   // reality: hex, up to 16 digits
	ALPN        []string // TLS ALPN protocols; empty keeps the fingerprint's
	Insecure    bool     // tls only: skip certificate verification
	// PinnedSHA256 (hex SHA-256 of the server's certificate) and CAFile replace the
	// system's roots in checking a TLS server (certverify.go).
	PinnedSHA256 []string
	CAFile       string

	// The transport under VLESS or Trojan (transports.go): "" or "tcp" for none,
	// else ws, httpupgrade, grpc or xhttp, with its settings.
	Transport    string
	Path         string // ws, httpupgrade, xhttp
	Host         string // HTTP Host (gRPC :authority)
	ServiceName  string // grpc
	Mode         string // grpc: gun, multi; xhttp: auto, packet-up, stream-up, stream-one
	EarlyData    int    // ws: bytes of the first write sent with the upgrade; httpupgrade: > 0 does not wait for the 101
	PaddingBytes string // xhttp: x_padding_bytes, "100-1000"
	Extra        string // xhttp: the JSON of share links' extra=

	Interface string // interface: a device or netifd interface name
}

// Address is "server:port" (brackets around IPv6), never with credentials.
func (s Spec) Address() string {
	if s.Type == TypeInterface {
		return s.Interface
	}
	return net.JoinHostPort(s.Server, strconv.Itoa(int(s.Port)))
}

// String keeps the password out of every %v, %+v and %s.
func (s Spec) String() string {
	return fmt.Sprintf("%s %s %s", s.Name, s.Type, s.Address())
}

// GoString keeps the password out of %#v.
func (s Spec) GoString() string { return "proxy.Spec{" + s.String() + "}" }

// LogValue keeps the password out of slog output.
func (s Spec) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", s.Name),
		slog.String("type", s.Type),
		slog.String("server", s.Address()),
	)
}

// Options are the settings shared by every dialer.
type Options struct {
	// BypassMark is set as SO_MARK on every socket to a proxy server; 0
	// leaves sockets unmarked.
	BypassMark uint32
	// DialTimeout bounds connect plus handshake; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// FirstReplyTimeout is how long a Shadowsocks stream waits for the
	// server's first byte after data was sent before it fails: servers
	// answer a wrong key with silence. 0 means DefaultFirstReplyTimeout,
	// negative waits forever.
	FirstReplyTimeout time.Duration
	// Resolver resolves proxy server host names. Nil means a pure-Go
	// resolver whose DNS sockets also carry BypassMark.
	Resolver *net.Resolver
	// Devices readies interface proxies' devices; nil leaves them as they are.
	Devices DevicePreparer
}

// Dialer opens connections to a destination through one proxy.
type Dialer interface {
	// DialTCP returns a stream to dst through the proxy.
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// DialUDP returns a datagram conn to dst through the proxy: each Write
	// sends one datagram, each Read returns one payload from dst only.
	// Errors wrap errors.ErrUnsupported when the proxy cannot carry UDP.
	DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
}

// New builds the dialer for spec.Type.
func New(spec Spec, opts Options) (Dialer, error) {
	base := newBaseDialer(spec, opts)
	switch spec.Type {
	case TypeDirect:
		return &Direct{base: base}, nil
	case TypeInterface:
		return newInterface(base, spec, opts)
	case TypeSOCKS5, TypeHTTP, TypeShadowsocks, TypeVLESS, TypeTrojan:
	default:
		return nil, fmt.Errorf("proxy %q: unknown type %q (socks5, http, shadowsocks, vless, trojan, interface, direct)", spec.Name, spec.Type)
	}
	if spec.Server == "" || spec.Port == 0 {
		return nil, fmt.Errorf("proxy %q: server and port are required", spec.Name)
	}
	switch spec.Type {
	case TypeSOCKS5:
		if len(spec.Username) > 255 || len(spec.Password) > 255 {
			return nil, fmt.Errorf("%s: username and password must be at most 255 bytes each", base.prefix)
		}
		return &SOCKS5{base: base}, nil
	case TypeHTTP:
		return &HTTP{base: base}, nil
	case TypeVLESS:
		return newVLESS(base)
	case TypeTrojan:
		return newTrojan(base)
	default:
		if isSS2022(spec.Cipher) {
			m, err := newSS22Method(spec.Cipher, spec.Password)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", base.prefix, err)
			}
			return &Shadowsocks2022{base: base, m: m}, nil
		}
		c, err := newSSCipher(spec.Cipher, spec.Password)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", base.prefix, err)
		}
		return &Shadowsocks{base: base, cipher: c}, nil
	}
}

// base holds what every dialer needs to reach its server.
type base struct {
	spec    Spec
	prefix  string // "socks5 198.51.100.6:1080", used in every error
	timeout time.Duration
	// firstReply: see Options.FirstReplyTimeout; <0 disables.
	firstReply time.Duration
	net        net.Dialer
	bufs       *datagramBufs // for UDP conns
}

func newBaseDialer(spec Spec, opts Options) base {
	b := base{
		spec:    spec,
		prefix:  spec.Type + " " + spec.Address(),
		timeout: opts.DialTimeout,
		bufs:    newDatagramBufs(),
	}
	if spec.Type == TypeDirect {
		b.prefix = "direct"
	}
	if b.timeout <= 0 {
		b.timeout = DefaultDialTimeout
	}
	b.firstReply = opts.FirstReplyTimeout
	if b.firstReply == 0 {
		b.firstReply = DefaultFirstReplyTimeout
	}
	b.net.Control = markControl(opts.BypassMark)
	b.net.Timeout = min(ConnectTimeout, b.timeout)
	// No keep-alive probes of our own (Go's default sends one every 15 s on an idle
	// socket): a relayed flow carries its client's keep-alives end to end, and a
	// thousand idle messenger flows must not wake the router 67 times a second.
	b.net.KeepAlive = -1
	b.net.Resolver = opts.Resolver
	if b.net.Resolver == nil {
		dnsDialer := &net.Dialer{Control: markControl(opts.BypassMark)}
		b.net.Resolver = &net.Resolver{PreferGo: true, Dial: dnsDialer.DialContext}
	}
	return b
}

// dialServer connects to the proxy server over network ("tcp" or "udp").
func (b *base) dialServer(ctx context.Context, network string) (net.Conn, error) {
	w, _ := ctx.Value(connectWatchKey{}).(*connectWatch)
	if w != nil {
		w.started.Store(true)
	}
	c, err := b.net.DialContext(ctx, network, b.spec.Address())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.prefix, err)
	}
	if w != nil {
		w.connected.Store(true)
	}
	return c, nil
}

// connectWatch tells a Pool how far a dial got: whether it started connecting to the
// proxy server, and whether that connection is up (the rest of a dial, e.g. a SOCKS5
// server reaching the destination, may take long for reasons not the proxy's).
type connectWatch struct {
	started, connected atomic.Bool
}

type connectWatchKey struct{}

func withConnectWatch(ctx context.Context, w *connectWatch) context.Context {
	return context.WithValue(ctx, connectWatchKey{}, w)
}

// handshakeDeadline makes every read and write on c during a handshake end
// no later than ctx: at its deadline, or at once when it is cancelled. The
// returned func clears the deadline and must be called after the handshake.
func handshakeDeadline(ctx context.Context, c net.Conn) (done func()) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = c.SetDeadline(time.Time{})
	}
}

// sendRequest writes a handshake's request to c (through w, which may wrap
// it) within ctx's time. On failure it closes c and says the request failed.
func (b *base) sendRequest(ctx context.Context, c net.Conn, w io.Writer, req []byte) error {
	done := handshakeDeadline(ctx, c)
	_, err := w.Write(req)
	done()
	if err != nil {
		c.Close()
		return fmt.Errorf("%s: send request: %w", b.prefix, handshakeErr(ctx, err))
	}
	return nil
}

// dialUDPServer opens the socket to a server's UDP relay, which has no
// handshake; it is refused when UDP is off for the proxy.
func (b *base) dialUDPServer(ctx context.Context) (net.Conn, error) {
	if !b.spec.UDP {
		return nil, fmt.Errorf("%s: udp is disabled for this proxy: %w", b.prefix, errors.ErrUnsupported)
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.dialServer(ctx, "udp")
}

// handshakeErr reports the context's error rather than an i/o timeout when
// the handshake ran out of time because of ctx.
// A wait for the destination (ErrTargetTimeout) stays recognisable.
func handshakeErr(ctx context.Context, err error) error {
	cause := ctx.Err()
	// The socket's deadline is the context's: it may fire a moment
	// before the context's own timer does.
	if cause == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		cause = context.DeadlineExceeded
	}
	switch {
	case cause == nil:
		return err
	case errors.Is(err, ErrTargetTimeout):
		return fmt.Errorf("%w: %w (%v)", ErrTargetTimeout, cause, err)
	default:
		return fmt.Errorf("%w (%v)", cause, err)
	}
}

// markControl sets SO_MARK before connect so the kernel routes the socket
// around the TUN.
func markControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("set SO_MARK %#x: %w", mark, err)
		}
		return nil
	}
}

// ReplyError is a proxy's refusal to reach the destination after it
// accepted the client: the proxy works, the target does not.
type ReplyError struct {
	Dst    netip.AddrPort
	Reason string
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("connect to %s: %s", e.Dst, e.Reason)
}

// udpAddr converts an AddrPort for net.Conn.RemoteAddr.
func udpAddr(ap netip.AddrPort) *net.UDPAddr { return net.UDPAddrFromAddrPort(ap) }

// sameAddrPort compares ignoring IPv4-in-IPv6 mapping.
func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// sanitize makes text from a server safe to put in a log line or error:
// printable ASCII only, at most max bytes.
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
