package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCert is a certificate and its key; signed by parent (nil: self-signed).
type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCert(t *testing.T, cn string, isCA bool, parent *testCert, names ...string) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: isCA,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: c, key: key}
}

func (c *testCert) sha256() string {
	s := sha256.Sum256(c.cert.Raw)
	return hex.EncodeToString(s[:])
}

func (c *testCert) pemFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsServer accepts TLS connections on loopback with chain (leaf first) and counts
// the application bytes it received.
func tlsServer(t *testing.T, chain ...*testCert) (net.Addr, func() int) {
	t.Helper()
	cert := tls.Certificate{PrivateKey: chain[0].key}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.cert.Raw)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan int, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				buf := make([]byte, 1024)
				n, _ := c.Read(buf)
				got <- n
			}()
		}
	}()
	received := func() int {
		select {
		case n := <-got:
			return n
		case <-time.After(testTimeout):
			t.Fatal("the server saw no connection")
			return 0
		}
	}
	return ln.Addr(), received
}

func TestCertVerifier(t *testing.T) {
	ca := newTestCert(t, "Test CA", true, nil)
	leaf := newTestCert(t, "proxy.test", false, ca, "proxy.test", "127.0.0.1")
	self := newTestCert(t, "proxy.test", true, nil, "proxy.test", "127.0.0.1")
	other := newTestCert(t, "other CA", true, nil)
	later := func() time.Time { return time.Now().Add(48 * time.Hour) }
	tests := []struct {
		name    string
		chain   []*testCert
		sni     string
		pins    []string
		caFile  *testCert
		now     func() time.Time
		wantErr string // a CertError reason, "" for success
		wantMsg string
	}{
		{name: "pinned self-signed", chain: []*testCert{self}, pins: []string{self.sha256()}},
		{name: "pin in OpenSSL form", chain: []*testCert{self}, pins: []string{strings.ToUpper(colons(self.sha256()))}},
		{name: "one of several pins", chain: []*testCert{self}, pins: []string{other.sha256(), self.sha256()}},
		{name: "pinned leaf, any name, expired", chain: []*testCert{self}, sni: "elsewhere.test", pins: []string{self.sha256()}, now: later},
		{name: "wrong pin", chain: []*testCert{self}, pins: []string{other.sha256()}, wantErr: CertPinMismatch,
			wantMsg: "matches no pinned_sha256: the server's is " + self.sha256()},
		{name: "pinned CA in the chain", chain: []*testCert{leaf, ca}, sni: "proxy.test", pins: []string{ca.sha256()}},
		{name: "pinned CA, wrong name", chain: []*testCert{leaf, ca}, sni: "other.test", pins: []string{ca.sha256()}, wantErr: CertWrongName},
		{name: "ca_file", chain: []*testCert{leaf}, sni: "proxy.test", caFile: ca},
		{name: "ca_file, server by address", chain: []*testCert{leaf}, caFile: ca},
		{name: "ca_file of a self-signed server", chain: []*testCert{self}, caFile: self},
		{name: "ca_file, wrong name", chain: []*testCert{leaf}, sni: "other.test", caFile: ca, wantErr: CertWrongName,
			wantMsg: `is not valid for "other.test"`},
		{name: "ca_file, another CA", chain: []*testCert{leaf}, caFile: other, wantErr: CertUnknownAuthority},
		{name: "ca_file, expired", chain: []*testCert{leaf}, caFile: ca, now: later, wantErr: CertExpired, wantMsg: "has expired or is not yet valid"},
		{name: "system roots, self-signed", chain: []*testCert{self}, wantErr: CertUnknownAuthority,
			wantMsg: "is signed by an unknown authority (issuer \"CN=proxy.test\", SHA-256 " + self.sha256() + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, received := tlsServer(t, tt.chain...)
			spec := Spec{Name: "p", Type: TypeTrojan, Server: "127.0.0.1", SNI: tt.sni, PinnedSHA256: tt.pins, Password: "x"}
			if tt.caFile != nil {
				spec.CAFile = tt.caFile.pemFile(t)
			}
			tc, err := newTLSClient(spec)
			if err != nil {
				t.Fatal(err)
			}
			if tt.now != nil {
				tc.certs.now = tt.now
			}
			raw, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			u, err := tc.handshake(testCtx(t), raw)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				if _, err := u.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				if n := received(); n != 5 {
					t.Fatalf("server received %d bytes, want 5", n)
				}
				return
			}
			var ce *CertError
			if !errors.As(err, &ce) || ce.Reason != tt.wantErr {
				t.Fatalf("handshake error = %v, want a CertError %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "TLS certificate") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error %q does not say %q", err, tt.wantMsg)
			}
			// The client refused before sending anything of its own.
			if n := received(); n != 0 {
				t.Fatalf("server received %d application bytes from a client that refused it", n)
			}
		})
	}
}

func colons(h string) string {
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func TestCertVerifierSpecErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	pin := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		spec Spec
		want string
	}{
		{Spec{PinnedSHA256: []string{"abcd"}}, "pinned_sha256 \"abcd\" is not a SHA-256"},
		{Spec{CAFile: filepath.Join(dir, "missing.pem")}, "ca_file: open"},
		{Spec{CAFile: notPEM}, "holds no PEM certificate"},
		{Spec{Insecure: true, PinnedSHA256: []string{pin}}, "insecure skips the certificate check"},
		{Spec{Security: SecurityReality, SNI: "a", PublicKey: "x", PinnedSHA256: []string{pin}}, "apply to security tls only"},
	} {
		tt.spec.Name, tt.spec.Server, tt.spec.Port = "p", "198.51.100.1", 443
		if _, err := newTLSClient(tt.spec); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want %q", tt.spec.PinnedSHA256, err, tt.want)
		}
	}
}

// TestSystemRootsFollowSSLCertFile: without pinned_sha256 or ca_file the system's roots
// decide, as Go reads them: SSL_CERT_FILE included. Go loads them once per process, so
// the check runs in a child process of this test binary.
func TestSystemRootsFollowSSLCertFile(t *testing.T) {
	if path := os.Getenv("TGTUN_CERT_CHILD"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		v, err := newCertVerifier(Spec{}, "proxy.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := v.verify([]*x509.Certificate{leaf}); err != nil {
			t.Fatalf("VERIFY: %v", err)
		}
		return
	}
	self := newTestCert(t, "proxy.test", true, nil, "proxy.test")
	path := self.pemFile(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		certFile string
		wantOK   bool
	}{{path, true}, {filepath.Join(t.TempDir(), "none.pem"), false}} {
		cmd := exec.Command(exe, "-test.run=^TestSystemRootsFollowSSLCertFile$", "-test.count=1")
		cmd.Env = append(os.Environ(), "TGTUN_CERT_CHILD="+path, "SSL_CERT_FILE="+tt.certFile, "SSL_CERT_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if tt.wantOK && err != nil {
			t.Errorf("SSL_CERT_FILE=%s holding the server's certificate: %v\n%s", tt.certFile, err, out)
		}
		if !tt.wantOK && (err == nil || !strings.Contains(string(out), "unknown authority")) {
			t.Errorf("SSL_CERT_FILE without it: %v, want an unknown authority\n%s", err, out)
		}
	}
}
