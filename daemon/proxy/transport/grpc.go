package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// gRPC as Xray-core's "gun" transport (and sing-box's grpc, also without its
// with_grpc build tag) use it: one bidirectional streaming call, POST
// /SERVICE/Tun over HTTP/2, whose messages are protobuf Hunk{bytes data = 1}.
// Multi mode (POST /SERVICE/TunMulti) sends MultiHunk{repeated bytes data = 1};
// this client reads both and sends one data field a message.
//
// The messages are framed here (a 5-byte gRPC prefix, a tag, a varint length): no
// grpc-go, whose mipsel cost is several MiB.
type grpcTransport struct {
	o    Options
	pool *h2Pool
	path string
}

func newGRPC(o Options, dial DialFunc) (Transport, error) {
	mode := o.Mode
	if mode == "" {
		mode = ModeGun
	}
	if mode != ModeGun && mode != ModeMulti {
		return nil, optErr("mode", "%q is not a gRPC mode (%s)", sanitize(mode, 20), strings.Join(GRPCModes, ", "))
	}
	if err := checkHost(o.Host); err != nil {
		return nil, &OptionError{Option: "host", Err: err}
	}
	if len(o.ServiceName) > 512 || strings.ContainsFunc(o.ServiceName, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return nil, optErr("service_name", "not a service name (printable ASCII without spaces)")
	}
	if err := o.checkALPN(alpnH2); err != nil {
		return nil, err
	}
	return &grpcTransport{
		o:    o,
		pool: newH2Pool(GRPC, dial, o.h2ALPN(), o.Reality, defaultMux),
		path: grpcPath(o.ServiceName, mode == ModeMulti),
	}, nil
}

// grpcPath is the call's path: /SERVICE/Tun (TunMulti), or, for a service name
// that starts with '/', Xray's custom form "/a/b/NAME": the service "a/b" and the
// method NAME (the part before '|', which servers use to name the multi method).
func grpcPath(service string, multi bool) string {
	if !strings.HasPrefix(service, "/") {
		m := "Tun"
		if multi {
			m = "TunMulti"
		}
		return "/" + url.PathEscape(service) + "/" + m
	}
	last := strings.LastIndex(service, "/")
	svc := service[1:max(last, 1)]
	parts := strings.Split(svc, "/")
	for i := range parts {
		parts[i] = url.PathEscape(parts[i])
	}
	names := strings.Split(service[last+1:], "|")
	name := names[0]
	if multi && len(names) > 1 {
		name = names[1]
	}
	return "/" + strings.Join(parts, "/") + "/" + url.PathEscape(name)
}

func (t *grpcTransport) Dial(ctx context.Context) (net.Conn, error) {
	cn, _, err := t.pool.acquire(ctx)
	if err != nil {
		return nil, err
	}
	host := t.o.host()
	h := http.Header{}
	h.Set("Content-Type", "application/grpc")
	h.Set("Te", "trailers")
	h.Set("User-Agent", chromeUA)
	sctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	unescaped, _ := url.PathUnescape(t.path)
	req := (&http.Request{
		Method: http.MethodPost,
		URL:    &url.URL{Scheme: "https", Host: host, Path: unescaped, RawPath: t.path},
		Host:   host,
		Header: h,
		Body:   pr,
	}).WithContext(sctx)
	c := &grpcConn{cn: cn, pw: pw, cancel: cancel, remote: addr(host)}
	c.dl.kill = func() {
		cancel()
		pw.CloseWithError(errDeadline)
	}
	c.s = cn.startChecked(req, checkGRPC, func(err error) { pw.CloseWithError(err) })
	return c, nil
}

var errDeadline = errors.New("deadline exceeded")

// checkGRPC accepts a call's response head: 200, a gRPC content type, and no
// error status already in the head (a trailers-only answer: an unknown service).
func checkGRPC(r *http.Response) error {
	if r.StatusCode != http.StatusOK {
		return &StatusError{Transport: GRPC, Code: r.StatusCode, Hint: statusHint(r.StatusCode, "service_name")}
	}
	if st := r.Header.Get("Grpc-Status"); st != "" && st != "0" {
		return grpcStatusErr(st, r.Header.Get("Grpc-Message"))
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc") {
		return fmt.Errorf("grpc: the server answered %q, not a gRPC call (wrong service_name, or not a gRPC endpoint?)", sanitize(ct, 40))
	}
	return nil
}

func grpcStatusErr(code, msg string) error {
	hint := ""
	switch code {
	case "12":
		hint = " (unimplemented: wrong service_name?)"
	case "16", "7":
		hint = " (refused)"
	}
	return fmt.Errorf("grpc: status %s%s: %s", sanitize(code, 6), hint, sanitize(msg, 80))
}

// grpcConn is one call carrying a stream.
type grpcConn struct {
	cn     *h2Conn
	s      *respStream
	pw     *io.PipeWriter
	cancel context.CancelFunc
	dl     deadlines
	remote addr

	// Read state.
	msgLeft  int // bytes of the current message not yet parsed
	dataLeft int // bytes of the current data field not yet returned
	one      [1]byte
	prefix   [5]byte

	wmu       sync.Mutex
	closeOnce sync.Once
}

// grpcMaxWrite bounds the data of one message this client sends.
const grpcMaxWrite = 32 << 10

var grpcBufs = sync.Pool{New: func() any { b := make([]byte, 0, 5+1+3+grpcMaxWrite); return &b }}

func (c *grpcConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for len(p) > 0 {
		k := min(len(p), grpcMaxWrite)
		bp := grpcBufs.Get().(*[]byte)
		b := (*bp)[:5]
		b[0] = 0
		b = append(b, 0x0a)
		b = binary.AppendUvarint(b, uint64(k))
		binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5+k))
		b = append(b, p[:k]...)
		_, err := c.pw.Write(b)
		*bp = b[:0]
		grpcBufs.Put(bp)
		if err != nil {
			return n, c.dl.writeErr(c.streamErr(err))
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// streamErr prefers the response's error (a refusal) to the pipe's: the HTTP/2
// client may end the request body a moment before the refusal is seen.
func (c *grpcConn) streamErr(err error) error {
	if rerr := c.s.failure(time.Second); rerr != nil {
		return rerr
	}
	if err == io.ErrClosedPipe {
		return net.ErrClosed
	}
	return err
}

func (c *grpcConn) Read(p []byte) (int, error) {
	if err := c.s.wait(); err != nil {
		return 0, c.dl.readErr(err)
	}
	for c.dataLeft == 0 {
		if err := c.nextData(); err != nil {
			return 0, c.dl.readErr(err)
		}
	}
	n, err := c.s.body.Read(p[:min(len(p), c.dataLeft)])
	c.dataLeft -= n
	c.msgLeft -= n
	if err == io.EOF {
		if c.dataLeft > 0 {
			err = io.ErrUnexpectedEOF
		} else if n > 0 {
			err = nil
		}
	}
	if err != nil && n == 0 {
		return 0, c.dl.readErr(err)
	}
	return n, nil
}

// nextData reads message prefixes and protobuf fields up to the next data field.
func (c *grpcConn) nextData() error {
	for {
		if c.msgLeft == 0 {
			if _, err := io.ReadFull(c.s.body, c.prefix[:]); err != nil {
				if err == io.EOF {
					return c.trailerErr()
				}
				return noEOF(err)
			}
			if c.prefix[0] != 0 {
				return errors.New("grpc: the server sent a compressed message (not asked for)")
			}
			c.msgLeft = int(binary.BigEndian.Uint32(c.prefix[1:]))
			if c.msgLeft > 16<<20 {
				return fmt.Errorf("grpc: message of %d bytes", c.msgLeft)
			}
			continue
		}
		tag, err := c.varint()
		if err != nil {
			return err
		}
		switch tag & 7 {
		case 0:
			if _, err := c.varint(); err != nil {
				return err
			}
		case 1, 5:
			if err := c.skip(map[uint64]int{1: 8, 5: 4}[tag&7]); err != nil {
				return err
			}
		case 2:
			l, err := c.varint()
			if err != nil {
				return err
			}
			if l > uint64(c.msgLeft) {
				return errors.New("grpc: a field longer than its message")
			}
			if tag>>3 == 1 {
				c.dataLeft = int(l)
				if l > 0 {
					return nil
				}
				continue
			}
			if err := c.skip(int(l)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("grpc: protobuf wire type %d in a Hunk", tag&7)
		}
	}
}

// varint reads a protobuf varint within the current message.
func (c *grpcConn) varint() (uint64, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		if c.msgLeft == 0 {
			return 0, errors.New("grpc: a field runs past its message")
		}
		if _, err := io.ReadFull(c.s.body, c.one[:]); err != nil {
			return 0, noEOF(err)
		}
		c.msgLeft--
		v |= uint64(c.one[0]&0x7f) << (7 * i)
		if c.one[0] < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("grpc: malformed varint")
}

func (c *grpcConn) skip(n int) error {
	if n > c.msgLeft {
		return errors.New("grpc: a field runs past its message")
	}
	if _, err := io.CopyN(io.Discard, c.s.body, int64(n)); err != nil {
		return noEOF(err)
	}
	c.msgLeft -= n
	return nil
}

// trailerErr is the end of the call: io.EOF when its status is OK.
func (c *grpcConn) trailerErr() error {
	st := c.s.resp.Trailer.Get("Grpc-Status")
	if st == "" || st == "0" {
		return io.EOF
	}
	return grpcStatusErr(st, c.s.resp.Trailer.Get("Grpc-Message"))
}

// CloseWrite ends the request stream (END_STREAM): the server reads EOF.
func (c *grpcConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.pw.Close()
}

func (c *grpcConn) Close() error {
	c.closeOnce.Do(func() {
		c.dl.stop()
		c.pw.CloseWithError(net.ErrClosed)
		c.cancel()
		c.s.close()
		c.cn.release()
	})
	return nil
}

func (c *grpcConn) LocalAddr() net.Addr  { return addr("grpc") }
func (c *grpcConn) RemoteAddr() net.Addr { return c.remote }

func (c *grpcConn) SetDeadline(t time.Time) error {
	c.dl.set(true, true, t)
	return nil
}

func (c *grpcConn) SetReadDeadline(t time.Time) error {
	c.dl.set(true, false, t)
	return nil
}

func (c *grpcConn) SetWriteDeadline(t time.Time) error {
	c.dl.set(false, true, t)
	return nil
}
