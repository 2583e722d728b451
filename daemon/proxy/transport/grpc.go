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

	dec grpcDecoder

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

// Read reads the response body into p and keeps only the data fields, in place:
// the framing (message prefixes, tags, lengths, other fields) is parsed as it
// passes, so a read takes what the HTTP/2 stream holds at once (fewer reads, and
// fewer WINDOW_UPDATEs, which the client sends once per read) and no buffer is
// held while the flow waits.
func (c *grpcConn) Read(p []byte) (int, error) {
	if err := c.s.wait(); err != nil {
		return 0, c.dl.readErr(err)
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := c.s.body.Read(p)
		m, derr := c.dec.decode(p[:n])
		if derr != nil {
			return 0, derr
		}
		if m > 0 {
			return m, nil
		}
		if err == io.EOF {
			if !c.dec.between() {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, c.dl.readErr(c.trailerErr())
		}
		if err != nil {
			return 0, c.dl.readErr(err)
		}
	}
}

// grpcDecoder parses gRPC messages of protobuf Hunks (or MultiHunks) as they
// stream past, keeping the bytes of field 1.
type grpcDecoder struct {
	state   int // one of the dec* states
	msgLeft int // bytes of the current message not yet parsed
	need    int // bytes left of the prefix, data or skipped field
	pre     [5]byte
	v       uint64 // varint being read
	shift   uint
	tag     uint64
}

const (
	decPrefix = iota // the 5-byte message prefix
	decTag           // a field's tag (varint)
	decLen           // a bytes field's length (varint)
	decData          // field 1's bytes: kept
	decSkip          // another field's bytes
	decVarint        // a varint field's value, skipped
)

// between reports whether the stream may end here: at a message boundary.
func (d *grpcDecoder) between() bool { return d.state == decPrefix && d.need == 0 }

// decode moves the data bytes of b to its front and says how many there are.
func (d *grpcDecoder) decode(b []byte) (int, error) {
	out := 0
	for i := 0; i < len(b); {
		switch d.state {
		case decPrefix:
			d.pre[d.need] = b[i]
			d.need++
			i++
			if d.need < len(d.pre) {
				continue
			}
			d.need = 0
			if d.pre[0] != 0 {
				return 0, errors.New("grpc: the server sent a compressed message (not asked for)")
			}
			d.msgLeft = int(binary.BigEndian.Uint32(d.pre[1:]))
			if d.msgLeft > 16<<20 {
				return 0, fmt.Errorf("grpc: message of %d bytes", d.msgLeft)
			}
			if d.msgLeft > 0 {
				d.state, d.v, d.shift = decTag, 0, 0
			}
		case decTag, decLen, decVarint:
			x := b[i]
			i++
			d.msgLeft--
			if d.shift > 63 {
				return 0, errors.New("grpc: malformed varint")
			}
			d.v |= uint64(x&0x7f) << d.shift
			d.shift += 7
			if x >= 0x80 {
				if d.msgLeft == 0 {
					return 0, errors.New("grpc: a field runs past its message")
				}
				continue
			}
			v := d.v
			d.v, d.shift = 0, 0
			switch d.state {
			case decTag:
				d.tag = v
				switch v & 7 {
				case 0:
					d.state = decVarint
				case 1:
					d.state, d.need = decSkip, 8
				case 5:
					d.state, d.need = decSkip, 4
				case 2:
					d.state = decLen
				default:
					return 0, fmt.Errorf("grpc: protobuf wire type %d in a Hunk", v&7)
				}
				if d.state != decSkip && d.msgLeft == 0 {
					return 0, errors.New("grpc: a field runs past its message")
				}
			case decLen:
				if v > uint64(d.msgLeft) {
					return 0, errors.New("grpc: a field longer than its message")
				}
				d.need = int(v)
				d.state = decSkip
				if d.tag>>3 == 1 {
					d.state = decData
				}
				if d.need == 0 {
					d.state = decTag
				}
			case decVarint:
				d.state = decTag
			}
			if d.state == decSkip && d.need > d.msgLeft {
				return 0, errors.New("grpc: a field runs past its message")
			}
		case decData, decSkip:
			k := min(d.need, len(b)-i)
			if d.state == decData {
				copy(b[out:], b[i:i+k])
				out += k
			}
			i += k
			d.need -= k
			d.msgLeft -= k
			if d.need == 0 {
				d.state = decTag
			}
		}
		if d.state == decTag && d.msgLeft == 0 {
			d.state, d.need = decPrefix, 0
		}
	}
	// A message that ends on a tag boundary also ends after a prefix of length 0.
	if d.state == decTag && d.msgLeft == 0 {
		d.state, d.need = decPrefix, 0
	}
	return out, nil
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
