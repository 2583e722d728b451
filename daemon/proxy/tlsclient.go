package proxy

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	utls "github.com/metacubex/utls"
	"golang.org/x/crypto/hkdf"
)

// TLS security modes of VLESS (Spec.Security).
const (
	SecurityTLS     = "tls"
	SecurityReality = "reality"
)

// ErrRealityAuth is wrapped by dial errors when a REALITY server did not prove that
// it holds the private key of public_key: a wrong key or short_id (the server then
// hands the connection to its camouflage site), or a man in the middle. Nothing of
// the client's data was sent.
var ErrRealityAuth = errors.New("REALITY handshake failed: server did not prove the key — wrong public_key or short_id?")

// Fingerprints lists the accepted Spec.Fingerprint values: the browser whose
// ClientHello the TLS handshake imitates. "random" picks one of the browsers once
// per dialer; "randomized" builds a random (non-browser) hello per connection.
var Fingerprints = []string{"chrome", "firefox", "safari", "ios", "edge", "android", "360", "qq", "random", "randomized"}

// DefaultFingerprint is used when Spec.Fingerprint is empty.
const DefaultFingerprint = "chrome"

func helloID(name string) (utls.ClientHelloID, error) {
	switch name {
	case "", "chrome":
		return utls.HelloChrome_Auto, nil
	case "firefox":
		return utls.HelloFirefox_Auto, nil
	case "safari":
		return utls.HelloSafari_Auto, nil
	case "ios":
		return utls.HelloIOS_Auto, nil
	case "edge":
		return utls.HelloEdge_Auto, nil
	case "android":
		return utls.HelloAndroid_11_OkHttp, nil
	case "360":
		return utls.Hello360_Auto, nil
	case "qq":
		return utls.HelloQQ_Auto, nil
	case "random":
		browsers := []string{"chrome", "firefox", "safari", "ios", "edge"}
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(browsers))))
		if err != nil {
			return utls.ClientHelloID{}, err
		}
		return helloID(browsers[n.Int64()])
	case "randomized":
		return utls.HelloRandomized, nil
	}
	return utls.ClientHelloID{}, fmt.Errorf("unknown fingerprint %q (allowed: %s)", name, strings.Join(Fingerprints, ", "))
}

// tlsClient makes the TLS (or REALITY) handshake of VLESS and Trojan with a
// browser's ClientHello (uTLS).
type tlsClient struct {
	reality  bool
	sni      string
	alpn     []string
	insecure bool
	hello    utls.ClientHelloID
	// TLS only: how the server's certificate is checked (certverify.go); nil with insecure.
	certs *certVerifier
	// aesHW: AES-GCM runs on AES instructions here; without them a
	// BoringSSL-family hello lists ChaCha20-Poly1305 first (tlscipher.go).
	aesHW bool
	// REALITY only.
	serverKey *ecdh.PublicKey
	shortID   [8]byte
}

// ParseRealityPublicKey decodes a REALITY public key as share links and servers
// write it: 32 bytes in base64url, with or without padding (standard base64 is
// accepted too).
func ParseRealityPublicKey(s string) (*ecdh.PublicKey, error) {
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if raw, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("public_key %q is not a base64 X25519 key of 32 bytes", sanitize(s, 64))
	}
	return ecdh.X25519().NewPublicKey(raw)
}

// ParseShortID decodes a REALITY short_id: up to 16 hex digits, an even number.
func ParseShortID(s string) ([8]byte, error) {
	var id [8]byte
	if len(s) > 16 || len(s)%2 != 0 {
		return id, fmt.Errorf("short_id %q is not hex of up to 8 bytes (an even number of up to 16 digits)", sanitize(s, 32))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("short_id %q is not hex of up to 8 bytes (an even number of up to 16 digits)", sanitize(s, 32))
	}
	return id, nil
}

func newTLSClient(spec Spec) (*tlsClient, error) {
	t := &tlsClient{sni: spec.SNI, alpn: spec.ALPN, insecure: spec.Insecure, aesHW: aesHardware()}
	var err error
	if t.hello, err = helloID(spec.Fingerprint); err != nil {
		return nil, err
	}
	switch spec.Security {
	case "", SecurityTLS:
		if t.sni == "" {
			t.sni = spec.Server
		}
		if err := t.verifyCerts(spec); err != nil {
			return nil, err
		}
	case SecurityReality:
		t.reality = true
		if t.insecure || len(spec.PinnedSHA256) > 0 || spec.CAFile != "" {
			return nil, errors.New("insecure, pinned_sha256 and ca_file apply to security tls only; REALITY authenticates the server by its public_key")
		}
		if t.sni == "" {
			return nil, errors.New("sni is required with REALITY (a server name the server accepts, e.g. the site it imitates)")
		}
		if t.serverKey, err = ParseRealityPublicKey(spec.PublicKey); err != nil {
			return nil, err
		}
		if t.shortID, err = ParseShortID(spec.ShortID); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown security %q (tls, reality)", spec.Security)
	}
	return t, nil
}

// dialTLS connects to the server and runs t's handshake within ctx's time. It is
// the seam every TLS-based dialer uses (Trojan, VLESS, and transports above
// them). The conn it returns carries the application data: after a TLS 1.3
// handshake tgtun's own record layer (*recordConn: pollable, no buffer held while
// idle; its ConnectionState has the ALPN), after TLS 1.2 uTLS's conn itself.
//
// A REALITY server that does not prove the key is asked once more on a new
// connection: Xray's REALITY server can fall back to its target for an authentic
// hello when it is loaded (seen in CI with three handshakes at once), and the
// flow waiting for this dial should not pay for it. A wrong key fails both.
func (b *base) dialTLS(ctx context.Context, t *tlsClient) (net.Conn, error) {
	c, err := b.dialTLSOnce(ctx, t)
	if t.reality && errors.Is(err, ErrRealityAuth) && ctx.Err() == nil {
		c, err = b.dialTLSOnce(ctx, t)
	}
	return c, err
}

func (b *base) dialTLSOnce(ctx context.Context, t *tlsClient) (net.Conn, error) {
	raw, err := b.dialServer(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	done := handshakeDeadline(ctx, raw)
	c, err := t.handshake(ctx, raw)
	done()
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("%s: %w", b.prefix, handshakeErr(ctx, err))
	}
	return c, nil
}

// handshake runs the TLS or REALITY handshake on raw, bounded by ctx, and hands
// the connection over to the record layer (TLS 1.3).
func (t *tlsClient) handshake(ctx context.Context, raw net.Conn) (net.Conn, error) {
	var secrets keyLog
	conf := &utls.Config{
		ServerName:         t.sni,
		NextProtos:         t.alpn,
		InsecureSkipVerify: t.insecure,
		// As sing-box: a REALITY hello offers no ticket. A TLS hello keeps the
		// browser's (with no session cache, tickets are not stored).
		SessionTicketsDisabled: t.reality,
		// The traffic secrets, for the record layer that takes over.
		KeyLogWriter: &secrets,
	}
	if t.certs != nil {
		t.certs.apply(conf)
	}
	var authKey []byte
	if t.reality {
		// Chain verification is replaced by the REALITY proof below; nothing is
		// accepted without it.
		conf.InsecureSkipVerify = true
		conf.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			if !realityCertProves(rawCerts, authKey) {
				return ErrRealityAuth
			}
			return nil
		}
	}
	u := utls.UClient(raw, conf, t.hello)
	if err := t.buildHello(u); err != nil {
		return nil, err
	}
	if t.reality {
		var err error
		if authKey, err = t.sealRealityHello(u); err != nil {
			return nil, err
		}
	}
	if err := u.HandshakeContext(ctx); err != nil {
		if errors.Is(err, ErrRealityAuth) {
			return nil, ErrRealityAuth
		}
		if t.reality {
			return nil, fmt.Errorf("REALITY handshake: %w", err)
		}
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return takeOver(u, raw, &secrets)
}

// takeOver hands a handshaken uTLS connection to the record layer (TLS 1.3);
// after TLS 1.2 it keeps uTLS's conn.
func takeOver(u *utls.UConn, raw net.Conn, secrets *keyLog) (net.Conn, error) {
	st := u.ConnectionState()
	if st.Version != utls.VersionTLS13 {
		// TLS 1.2 (plain TLS servers only: REALITY is 1.3): uTLS's own conn
		// carries the data, read by a blocking reader. The hello, its extensions
		// and key shares are not needed any more: an idle flow should not keep them.
		u.HandshakeState = utls.PubClientHandshakeState{}
		u.Extensions = nil
		return u, nil
	}
	readAhead, err := utlsReadAhead(u)
	if err != nil {
		return nil, err
	}
	rc, err := newRecordConn(raw, st.CipherSuite, secrets.client, secrets.server, readAhead, tls.ConnectionState{
		Version:            st.Version,
		HandshakeComplete:  true,
		CipherSuite:        st.CipherSuite,
		NegotiatedProtocol: st.NegotiatedProtocol,
		ServerName:         st.ServerName,
	})
	if err != nil {
		return nil, fmt.Errorf("TLS record layer: %w", err)
	}
	return rc, nil
}

// buildHello builds the fingerprint's ClientHello with tgtun's changes: the ALPN
// of the link, no hybrid post-quantum share for REALITY, ChaCha20 first on a CPU
// without AES instructions.
func (t *tlsClient) buildHello(u *utls.UConn) error {
	if err := u.BuildHandshakeState(); err != nil {
		return fmt.Errorf("TLS client hello: %w", err)
	}
	changed := false
	if len(t.alpn) > 0 {
		for _, ext := range u.Extensions {
			if a, ok := ext.(*utls.ALPNExtension); ok {
				a.AlpnProtocols = t.alpn
				changed = true
			}
		}
	}
	if t.reality {
		// REALITY servers derive the key from the X25519 share: offer no hybrid
		// post-quantum share whose X25519 part they might not use.
		for _, ext := range u.Extensions {
			switch e := ext.(type) {
			case *utls.SupportedCurvesExtension:
				e.Curves = slices.DeleteFunc(e.Curves, func(c utls.CurveID) bool { return c == utls.X25519MLKEM768 })
			case *utls.KeyShareExtension:
				e.KeyShares = slices.DeleteFunc(e.KeyShares, func(s utls.KeyShare) bool { return s.Group == utls.X25519MLKEM768 })
			}
		}
		changed = true
	}
	if !t.aesHW && boringSSLFamily(t.hello) {
		preferChaCha20(u)
		changed = true
	}
	if changed {
		if err := u.BuildHandshakeState(); err != nil {
			return fmt.Errorf("TLS client hello: %w", err)
		}
	}
	return nil
}

// utlsBuffers are the offsets of utls.Conn's read buffers. When the handshake
// returns, uTLS may have read more from the socket than the server's Finished:
// a Go server sends its session tickets right after it, in the same segment.
// Those bytes (rawInput) are records the record layer takes over; nothing may be
// decrypted and waiting (input, hand). Computed once; a uTLS without these
// fields makes TLS dials fail rather than lose data.
var utlsBuffers = sync.OnceValues(func() (utlsOffsets, error) {
	t := reflect.TypeFor[utls.Conn]()
	in, ok1 := t.FieldByName("input")
	raw, ok2 := t.FieldByName("rawInput")
	hand, ok3 := t.FieldByName("hand")
	if !ok1 || !ok2 || !ok3 || in.Type != reflect.TypeFor[bytes.Reader]() ||
		raw.Type != reflect.TypeFor[bytes.Buffer]() || hand.Type != reflect.TypeFor[bytes.Buffer]() {
		return utlsOffsets{}, errors.New("this uTLS version does not have the expected read buffers")
	}
	return utlsOffsets{input: in.Offset, rawInput: raw.Offset, hand: hand.Offset}, nil
})

type utlsOffsets struct{ input, rawInput, hand uintptr }

// utlsReadAhead returns the bytes uTLS read past the handshake, not decrypted.
func utlsReadAhead(u *utls.UConn) ([]byte, error) {
	offs, err := utlsBuffers()
	if err != nil {
		return nil, fmt.Errorf("TLS record layer: %w", err)
	}
	base := unsafe.Pointer(u.Conn)
	input := (*bytes.Reader)(unsafe.Add(base, offs.input))
	rawInput := (*bytes.Buffer)(unsafe.Add(base, offs.rawInput))
	hand := (*bytes.Buffer)(unsafe.Add(base, offs.hand))
	if input.Len() > 0 || hand.Len() > 0 {
		return nil, fmt.Errorf("TLS record layer: uTLS holds %d bytes of data and %d of handshake after the handshake", input.Len(), hand.Len())
	}
	return rawInput.Bytes(), nil
}

// sealRealityHello writes the REALITY authentication into the ClientHello's
// session id: version, time and short id, encrypted with AES-GCM under a key
// derived from ECDH between our key share and the server's public key. It returns
// that key, with which the server signs its temporary certificate.
func (t *tlsClient) sealRealityHello(u *utls.UConn) ([]byte, error) {
	hello := u.HandshakeState.Hello
	// The session id sits after type(1) length(3) version(2) random(32) and its
	// length byte: offset 39.
	const sidOff = 39
	if len(hello.Raw) < sidOff+32 || hello.Raw[sidOff-1] != 32 || len(hello.Random) != 32 {
		return nil, errors.New("REALITY: the fingerprint's ClientHello has no 32-byte session id")
	}
	keys := u.HandshakeState.State13.KeyShareKeys
	if keys == nil || keys.Ecdhe == nil {
		return nil, errors.New("REALITY: the fingerprint's ClientHello has no X25519 key share")
	}
	shared, err := keys.Ecdhe.ECDH(t.serverKey)
	if err != nil {
		return nil, fmt.Errorf("REALITY key agreement: %w", err)
	}
	authKey := make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, shared, hello.Random[:20], []byte("REALITY")), authKey); err != nil {
		return nil, fmt.Errorf("REALITY key derivation: %w", err)
	}
	sid := make([]byte, 16, 32)
	sid[0], sid[1], sid[2] = 1, 8, 1 // client version the servers expect (Xray-core 1.8.1)
	binary.BigEndian.PutUint32(sid[4:], uint32(time.Now().Unix()))
	copy(sid[8:], t.shortID[:])
	// The additional data is the hello with a zero session id.
	clear(hello.Raw[sidOff : sidOff+32])
	block, err := aes.NewCipher(authKey)
	if err != nil {
		return nil, fmt.Errorf("REALITY: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("REALITY: %w", err)
	}
	sealed := aead.Seal(sid[:0], hello.Random[20:], sid[:16], hello.Raw)
	hello.SessionId = sealed
	copy(hello.Raw[sidOff:], sealed)
	return authKey, nil
}

// realityCertProves reports whether the server's leaf certificate is REALITY's
// temporary one: an ed25519 key whose "signature" is HMAC-SHA512(authKey, key).
func realityCertProves(rawCerts [][]byte, authKey []byte) bool {
	if len(rawCerts) == 0 || len(authKey) == 0 {
		return false
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return false
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return false
	}
	mac := hmac.New(sha512.New, authKey)
	mac.Write(pub)
	return hmac.Equal(mac.Sum(nil), cert.Signature)
}
