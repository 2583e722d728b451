package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// Health checks: what the pool's probe asks of the health target through a member,
// and which answer proves that the path reaches the target. A proxy that hands
// unknown clients to a fallback web site (VLESS, Trojan with a wrong uuid or
// password) completes its own handshake and even carries bytes: only an answer that
// the target alone can give tells it from a working one.
const (
	// CheckMTProto asks a Telegram data centre (the default health_target) for
	// req_pq_multi over MTProto's intermediate transport; only an MTProto server
	// answers resPQ carrying the probe's random nonce.
	CheckMTProto = "mtproto"
	// CheckTLS runs a TLS handshake with the target; its certificate must be
	// valid for Check.Name under the router's CA roots.
	CheckTLS = "tls"
	// CheckConnect only connects (and, through Shadowsocks, waits for any answer):
	// it cannot tell the target from a fallback site.
	CheckConnect = "connect"
)

// Check says how the pool's probe judges a member.
type Check struct {
	Kind string // CheckMTProto, CheckTLS or CheckConnect ("" = CheckConnect)
	// Name is what the target's certificate must be valid for (CheckTLS), also
	// the server name sent.
	Name string
	// Roots verify the certificate (CheckTLS); nil means the system's.
	Roots *x509.CertPool
}

// EndToEnd tells whether the check proves the path to the target.
func (c Check) EndToEnd() bool { return c.Kind == CheckMTProto || c.Kind == CheckTLS }

// ErrNotTarget is wrapped by probe errors when something answered that is not the
// health target (a proxy's fallback web site, a wrong server): certain at once.
var ErrNotTarget = errors.New("the answer did not come from the health target")

// MTProto constants (core.telegram.org/mtproto: transports, auth_key).
const (
	mtprotoIntermediate = 0xeeeeeeee // first int of the intermediate transport
	mtprotoReqPQMulti   = 0xbe7e8ef1
	mtprotoResPQ        = 0x05162463
	// A resPQ message: auth_key_id, msg_id, length, constructor, nonce, server_nonce,
	// pq (at least 4 bytes as a TL string), vector of fingerprints (8 and more).
	mtprotoMinAnswer = 8 + 8 + 4 + 4 + 16 + 16 + 4 + 8
	mtprotoMaxAnswer = 1024
)

// mtprotoRequest is the probe's first bytes: the intermediate transport's tag, then
// one packet holding an unencrypted req_pq_multi with nonce.
func mtprotoRequest(nonce [16]byte, now time.Time) []byte {
	b := make([]byte, 0, 4+4+40)
	b = binary.LittleEndian.AppendUint32(b, mtprotoIntermediate)
	b = binary.LittleEndian.AppendUint32(b, 40)
	b = binary.LittleEndian.AppendUint64(b, 0) // auth_key_id: plain text
	// msg_id: unixtime·2³², the low bits anything divisible by 4.
	var low [4]byte
	_, _ = rand.Read(low[:])
	b = binary.LittleEndian.AppendUint64(b, uint64(now.Unix())<<32|uint64(binary.LittleEndian.Uint32(low[:])&^3))
	b = binary.LittleEndian.AppendUint32(b, 20) // message length
	b = binary.LittleEndian.AppendUint32(b, mtprotoReqPQMulti)
	return append(b, nonce[:]...)
}

// checkResPQ judges the body of the answer packet.
func checkResPQ(msg []byte, nonce [16]byte) error {
	if len(msg) < mtprotoMinAnswer {
		return fmt.Errorf("%w: a %d-byte packet is no resPQ", ErrNotTarget, len(msg))
	}
	if binary.LittleEndian.Uint64(msg) != 0 || binary.LittleEndian.Uint32(msg[20:]) != mtprotoResPQ {
		return fmt.Errorf("%w: the packet is no plain resPQ", ErrNotTarget)
	}
	if !bytes.Equal(msg[24:40], nonce[:]) {
		return fmt.Errorf("%w: resPQ carries another nonce", ErrNotTarget)
	}
	return nil
}

// mtprotoProbe sends req_pq_multi on c and reads the answer packet.
func mtprotoProbe(c net.Conn) error {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	if _, err := c.Write(mtprotoRequest(nonce, time.Now())); err != nil {
		return fmt.Errorf("send req_pq_multi: %w", err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("read answer: %w", noAnswer(err))
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n == 4 {
		// A transport error (a negative int32, e.g. -404): only an MTProto
		// server speaks so; the path reaches one.
		var code [4]byte
		if _, err := io.ReadFull(c, code[:]); err != nil {
			return fmt.Errorf("read answer: %w", noAnswer(err))
		}
		return nil
	}
	if n < mtprotoMinAnswer || n > mtprotoMaxAnswer {
		return fmt.Errorf("%w: answer starts %q, not an MTProto packet", ErrNotTarget, sanitize(string(hdr[:]), 4))
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(c, msg); err != nil {
		return fmt.Errorf("read answer: %w", noAnswer(err))
	}
	return checkResPQ(msg, nonce)
}

// noAnswer names a stream that ended before any answer.
func noAnswer(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("the connection was closed without an answer: %w", err)
	}
	return err
}

// tlsProbe runs a TLS handshake on c; the certificate must be valid for name.
func tlsProbe(ctx context.Context, c net.Conn, name string, roots *x509.CertPool) error {
	tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12})
	err := tc.HandshakeContext(ctx)
	if err == nil {
		return nil
	}
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var inval x509.CertificateInvalidError
	switch {
	case errors.As(err, &inval) && inval.Reason == x509.Expired:
		// A certificate outside its validity: an impostor's, or the router's clock
		// is wrong (no NTP yet): not certain either way.
		return fmt.Errorf("TLS with the health target: %w (is the router's clock right?)", err)
	case errors.As(err, &certErr):
		return fmt.Errorf("%w: TLS certificate: %w", ErrNotTarget, err)
	case errors.As(err, &recErr):
		return fmt.Errorf("%w: not a TLS answer: %w", ErrNotTarget, err)
	}
	return fmt.Errorf("TLS with the health target: %w", noAnswer(err))
}

// connectProbe is CheckConnect: a server that drops the connection right after
// accepting it failed (settle > 0 waits that long for it). With needAnswer
// (Shadowsocks, whose dial proves nothing) the target must then answer a request,
// or close, in time.
func connectProbe(ctx context.Context, c net.Conn, target string, settle time.Duration, needAnswer bool) error {
	if settle > 0 {
		_ = c.SetReadDeadline(time.Now().Add(settle))
		var one [1]byte
		_, err := c.Read(one[:])
		switch {
		case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, io.EOF):
			return fmt.Errorf("connection to %s closed right after it opened", target)
		default:
			return err
		}
	}
	if !needAnswer {
		return nil
	}
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if _, err := io.WriteString(c, probeRequest); err != nil {
		return fmt.Errorf("probe %s: %w", target, err)
	}
	var one [1]byte
	_, err := c.Read(one[:])
	switch {
	case err == nil, errors.Is(err, io.EOF):
		// The target answered or closed: the server decrypted the request.
		return nil
	case errors.Is(err, errSSSilent), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no answer from %s through the proxy: wrong password or cipher?", target)
	default:
		return fmt.Errorf("probe %s: %w", target, err)
	}
}

// probeRequest is what a connect probe through Shadowsocks sends to the probe target
// to get an answer. Shadowsocks has no reply of its own, and ss-server meets a wrong
// key with silence, so only an answer from the target proves the key. Over 64 bytes,
// so a Telegram data centre (whose obfuscated transport reads a 64-byte header first)
// has enough to reject and close; an HTTP or TLS server answers or closes as well.
const probeRequest = "HEAD / HTTP/1.0\r\nUser-Agent: tgtun-health-check\r\nX-Padding: 0123456789abcdef\r\n\r\n"
