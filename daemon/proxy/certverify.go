package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	utls "github.com/metacubex/utls"
)

// Why a server's TLS certificate was refused, for CertError.Reason. Status and check
// turn each into its own hint.
const (
	CertUnknownAuthority = "unknown authority" // no chain to a trusted root (self-signed?)
	CertWrongName        = "wrong name"        // valid, but not for the name checked (sni)
	CertExpired          = "expired"           // outside its validity (or the router's clock is off)
	CertPinMismatch      = "pin mismatch"      // matches no pinned_sha256
	CertInvalid          = "invalid"           // anything else x509 refuses
)

// CertError is a refused server certificate: why (one of the Cert* reasons) and what
// was seen. Its text starts with "TLS certificate", names the reason in words, and for
// a pin mismatch gives the SHA-256 the server presented, to compare with the pin.
type CertError struct {
	Reason string
	Detail string
	Err    error // x509's error, when it found the problem
}

func (e *CertError) Error() string {
	return "TLS certificate " + e.Detail
}

func (e *CertError) Unwrap() error { return e.Err }

// certVerifier checks the certificate of a TLS (not REALITY) server the way Spec asks.
//
//   - pinned_sha256 (Xray's pinnedPeerCertSha256, pcs in links): the SHA-256 of the
//     server's leaf certificate (DER) must be one of them; then nothing else is checked
//     (a pinned self-signed certificate works, expired or not). A pin that matches a CA
//     certificate in the chain instead makes that CA the only root, checked with the name.
//   - ca_file: the chain must lead to one of its certificates, for the name.
//   - neither: the chain must lead to a root of the system's pool (Go's: SSL_CERT_FILE,
//     SSL_CERT_DIR, /etc/ssl/certs ...), for the name.
//
// The name is sni (or the server when sni is empty).
type certVerifier struct {
	name  string
	pins  [][sha256.Size]byte
	roots *x509.CertPool // nil: the system's
	// now is the clock certificates are checked against (tests set it).
	now func() time.Time
}

// newCertVerifier reads spec's pins and CA file. The CA file is read now (at start and
// reload), so a missing or unreadable one is a configuration error at its section.
func newCertVerifier(spec Spec, name string) (*certVerifier, error) {
	v := &certVerifier{name: name, now: time.Now}
	for _, p := range spec.PinnedSHA256 {
		raw, err := hex.DecodeString(strings.ReplaceAll(p, ":", ""))
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("pinned_sha256 %q is not a SHA-256 in hex (64 digits)", sanitize(p, 100))
		}
		v.pins = append(v.pins, [sha256.Size]byte(raw))
	}
	if spec.CAFile != "" {
		pem, err := os.ReadFile(spec.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		v.roots = x509.NewCertPool()
		if !v.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", spec.CAFile)
		}
	}
	return v, nil
}

// apply makes conf verify the server with v: Go's own chain check is replaced by v's
// (its errors say which check failed, so the hint can name the cause).
func (v *certVerifier) apply(conf *utls.Config) {
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs utls.ConnectionState) error { return v.verify(cs.PeerCertificates) }
}

// verify checks a chain as the server sent it, leaf first.
func (v *certVerifier) verify(certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return &CertError{Reason: CertInvalid, Detail: "missing: the server sent no certificate"}
	}
	roots := v.roots
	if len(v.pins) > 0 {
		leaf := sha256.Sum256(certs[0].Raw)
		if v.pinned(leaf) {
			return nil
		}
		var ca *x509.Certificate
		for _, c := range certs[1:] {
			if c.IsCA && v.pinned(sha256.Sum256(c.Raw)) {
				ca = c
				break
			}
		}
		if ca == nil {
			return &CertError{Reason: CertPinMismatch,
				Detail: fmt.Sprintf("matches no pinned_sha256: the server's is %x (a new certificate, or someone in between)", leaf)}
		}
		roots = x509.NewCertPool()
		roots.AddCert(ca)
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: v.name, CurrentTime: v.now(), Intermediates: x509.NewCertPool()}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return classifyCertError(err, certs[0], v.name, v.now())
	}
	return nil
}

func (v *certVerifier) pinned(sum [sha256.Size]byte) bool {
	for _, p := range v.pins {
		if subtle.ConstantTimeCompare(p[:], sum[:]) == 1 {
			return true
		}
	}
	return false
}

// classifyCertError wraps x509's verdict in a CertError naming the reason.
func classifyCertError(err error, leaf *x509.Certificate, name string, now time.Time) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknown):
		return &CertError{Reason: CertUnknownAuthority, Err: err,
			Detail: fmt.Sprintf("is signed by an unknown authority (issuer %q, SHA-256 %x): self-signed? pin it (pinned_sha256) or trust its CA (ca_file)",
				sanitize(leaf.Issuer.String(), 80), sha256.Sum256(leaf.Raw))}
	case errors.As(err, &hostname):
		return &CertError{Reason: CertWrongName, Err: err,
			Detail: fmt.Sprintf("is not valid for %q (%s)", sanitize(name, 80), sanitize(hostname.Error(), 160))}
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return &CertError{Reason: CertExpired, Err: err,
			Detail: fmt.Sprintf("has expired or is not yet valid (valid %s to %s; the router's clock says %s)",
				leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	default:
		return &CertError{Reason: CertInvalid, Err: err, Detail: "is not valid: " + sanitize(err.Error(), 160)}
	}
}

// verifyCerts sets up t's certificate check for a TLS server (none with insecure).
func (t *tlsClient) verifyCerts(spec Spec) error {
	if t.insecure {
		if len(spec.PinnedSHA256) > 0 || spec.CAFile != "" {
			return errors.New("insecure skips the certificate check that pinned_sha256 and ca_file ask for; remove one")
		}
		return nil
	}
	var err error
	t.certs, err = newCertVerifier(spec, t.sni)
	return err
}
