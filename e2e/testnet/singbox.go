package testnet

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// SingBoxVersion is the sing-box release `make deps` installs (go install -tags
// with_utls, which also enables the REALITY server). The tests check it.
const SingBoxVersion = "1.14.1"

// SingBoxPath finds the sing-box binary: $TGTUN_SINGBOX, then $PATH, then the
// directory `go install` writes to ($GOBIN, $GOPATH/bin, $HOME/go/bin). A missing
// binary is an error naming the make target that installs it: tests using it fail
// loudly rather than skip.
func SingBoxPath() (string, error) {
	if p := os.Getenv("TGTUN_SINGBOX"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("sing-box"); err == nil {
		return p, nil
	}
	if p, ok := goInstalled("sing-box"); ok {
		return p, nil
	}
	return "", fmt.Errorf("sing-box %s not found in $PATH, $GOBIN, $GOPATH/bin or ~/go/bin: run `make deps`", SingBoxVersion)
}

// goInstalled finds an executable `go install` wrote: in $GOBIN, each
// $GOPATH/bin, then ~/go/bin.
func goInstalled(name string) (string, bool) {
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		for _, p := range filepath.SplitList(d) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// SingBoxOptions configures StartSingBox.
type SingBoxOptions struct {
	// Namespace to run in; "" means the proxy host.
	Namespace string
	// Config is the sing-box configuration: a value that encodes to JSON (a map, a
	// struct) or JSON text as []byte / json.RawMessage.
	Config any
	// WaitTCP lists addresses that must accept TCP connections before StartSingBox
	// returns (the inbounds' listen addresses). Empty waits for nothing.
	WaitTCP []netip.AddrPort
}

// StartSingBox writes opts.Config to a file, checks it with `sing-box check`, runs
// `sing-box run` in the namespace and waits until every WaitTCP address accepts
// connections. The process is stopped at cleanup; its output is in Proc.Output.
func (n *Net) StartSingBox(opts SingBoxOptions) (*Proc, error) {
	bin, err := SingBoxPath()
	if err != nil {
		return nil, err
	}
	ns := opts.Namespace
	if ns == "" {
		ns = n.Proxy
	}
	var conf []byte
	switch c := opts.Config.(type) {
	case []byte:
		conf = c
	case json.RawMessage:
		conf = c
	case string:
		conf = []byte(c)
	default:
		conf, err = json.MarshalIndent(c, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("sing-box config: %w", err)
		}
	}
	dir, err := os.MkdirTemp(n.Dir, "sing-box-")
	if err != nil {
		return nil, fmt.Errorf("sing-box dir: %w", err)
	}
	confPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		return nil, fmt.Errorf("sing-box config: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), listenTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "check", "-c", confPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sing-box check: %w: %s\nconfig: %s", err, strings.TrimSpace(string(out)), conf)
	}
	p, err := n.Start(ns, bin, "run", "--disable-color", "-c", confPath)
	if err != nil {
		return nil, err
	}
	for _, a := range opts.WaitTCP {
		if err := n.waitListening(ns, a, p, listenTimeout); err != nil {
			return nil, fmt.Errorf("sing-box: %w", err)
		}
	}
	return p, nil
}

// RealityKeyPair returns a fresh X25519 key pair encoded as sing-box and share links
// write REALITY keys (unpadded base64url): the private key for the server, the
// public key for the client.
func RealityKeyPair() (private, public string, err error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("reality key: %w", err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(k.Bytes()), enc.EncodeToString(k.PublicKey().Bytes()), nil
}

// SelfSignedCert writes a self-signed ECDSA certificate for names (DNS names or IP
// addresses) and its key into the test directory and returns the two paths and the
// certificate in PEM (for a client's CA pool).
func (n *Net) SelfSignedCert(names ...string) (certPath, keyPath string, certPEM []byte, err error) {
	if len(names) == 0 {
		return "", "", nil, errors.New("self-signed cert: no names")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, fmt.Errorf("self-signed cert: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, name := range names {
		if a, err := netip.ParseAddr(name); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, fmt.Errorf("self-signed cert: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", nil, fmt.Errorf("self-signed cert: %w", err)
	}
	dir, err := os.MkdirTemp(n.Dir, "cert-")
	if err != nil {
		return "", "", nil, fmt.Errorf("self-signed cert: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		return "", "", nil, fmt.Errorf("self-signed cert: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", nil, fmt.Errorf("self-signed cert: %w", err)
	}
	return certPath, keyPath, certPEM, nil
}

// TLSSite is a TLS 1.3 server started by StartTLSSite: the "real" site a REALITY
// server imitates. It answers every request with a short HTTP response and counts
// what clients did.
type TLSSite struct {
	Addr netip.AddrPort
	// Handshakes counts completed TLS handshakes, AppBytes the application bytes
	// received after them.
	Handshakes, AppBytes atomic.Int64
}

// StartTLSSite runs a TLS 1.3 server with a self-signed certificate for name on addr
// in namespace ns, inside this process; it stops at cleanup.
func (n *Net) StartTLSSite(ns string, addr netip.AddrPort, name string) (*TLSSite, error) {
	certPath, keyPath, _, err := n.SelfSignedCert(name)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("tls site: %w", err)
	}
	l, err := n.Listen(ns, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	site := &TLSSite{Addr: addr}
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				site.Handshakes.Add(1)
				buf := make([]byte, 4096)
				for {
					k, err := c.Read(buf)
					site.AppBytes.Add(int64(k))
					if err != nil {
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	return site, nil
}
