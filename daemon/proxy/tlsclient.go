package proxy

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"

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
	t := &tlsClient{sni: spec.SNI, alpn: spec.ALPN, insecure: spec.Insecure}
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

// dialTLS connects to the server and runs t's handshake within ctx's time
// (Trojan, VLESS). It returns the raw conn too: Vision reads it under the
// TLS layer.
func (b *base) dialTLS(ctx context.Context, t *tlsClient) (raw net.Conn, tc *utls.UConn, err error) {
	raw, err = b.dialServer(ctx, "tcp")
	if err != nil {
		return nil, nil, err
	}
	done := handshakeDeadline(ctx, raw)
	tc, err = t.handshake(ctx, raw)
	done()
	if err != nil {
		raw.Close()
		return nil, nil, fmt.Errorf("%s: %w", b.prefix, handshakeErr(ctx, err))
	}
	return raw, tc, nil
}

// handshake runs the TLS or REALITY handshake on raw, bounded by ctx.
func (t *tlsClient) handshake(ctx context.Context, raw net.Conn) (*utls.UConn, error) {
	conf := &utls.Config{
		ServerName:         t.sni,
		NextProtos:         t.alpn,
		InsecureSkipVerify: t.insecure,
		// As sing-box: a REALITY hello offers no ticket. A TLS hello keeps the
		// browser's (with no session cache, tickets are not stored).
		SessionTicketsDisabled: t.reality,
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
	if err := u.BuildHandshakeState(); err != nil {
		return nil, fmt.Errorf("TLS client hello: %w", err)
	}
	if len(t.alpn) > 0 {
		for _, ext := range u.Extensions {
			if a, ok := ext.(*utls.ALPNExtension); ok {
				a.AlpnProtocols = t.alpn
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
		if err := u.BuildHandshakeState(); err != nil {
			return nil, fmt.Errorf("TLS client hello: %w", err)
		}
		var err error
		if authKey, err = t.sealRealityHello(u); err != nil {
			return nil, err
		}
	} else if len(t.alpn) > 0 {
		if err := u.BuildHandshakeState(); err != nil {
			return nil, fmt.Errorf("TLS client hello: %w", err)
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
	// The hello, its extensions and the key shares (an ML-KEM key is over 7 KiB)
	// are not needed once the handshake is done: an idle flow should not keep them.
	u.HandshakeState = utls.PubClientHandshakeState{}
	u.Extensions = nil
	return u, nil
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
