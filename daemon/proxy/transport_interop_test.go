package proxy

import (
	"bytes"
	"cmp"
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
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Interop of the transports (ws, httpupgrade, grpc, xhttp) under VLESS and Trojan
// with a real Xray-core server on loopback, over TLS and REALITY. The e2e tests run
// the same through the daemon in the test network; these are quick and show the
// transport's own errors.

// xrayPath finds Xray-core: $TGTUN_XRAY, $PATH, then where `go install` writes.
func xrayPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TGTUN_XRAY"); p != "" {
		return p
	}
	if p, err := exec.LookPath("xray"); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "xray")
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatal("xray (Xray-core) not found in $TGTUN_XRAY, $PATH or go's bin directory: run `make deps`")
	return ""
}

const (
	ixUUID     = "b831381d-6324-4d53-ad4f-8cda48b30811"
	ixTrojan   = "trojan-secret"
	ixSNI      = "www.example.com"
	ixShortID  = "0123abcd"
	ixCertName = "proxy.test"
)

// xrayLab is one Xray process with an inbound per case.
type xrayLab struct {
	certFile, keyFile string
	realityPriv       string
	realityPub        string
	site              netip.AddrPort // the TLS site REALITY imitates
	inbounds          []any
}

func newXrayLab(t testing.TB) *xrayLab {
	t.Helper()
	dir := t.TempDir()
	l := &xrayLab{}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: ixCertName},
		DNSNames: []string{ixCertName, ixSNI}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	l.certFile, l.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(l.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	// The site REALITY imitates.
	cert, err := tls.LoadX509KeyPair(l.certFile, l.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	l.site = netip.MustParseAddrPort(ln.Addr().String())
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	l.realityPriv = base64.RawURLEncoding.EncodeToString(k.Bytes())
	l.realityPub = base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes())
	return l
}

// inbound adds an inbound of protocol (vless, trojan) with stream settings
// network+settings over security (tls, reality) on a free port.
func (l *xrayLab) inbound(t testing.TB, protocol, security, network string, settings map[string]any) uint16 {
	return l.inboundALPN(t, protocol, security, network, settings, nil)
}

// inboundALPN is inbound with the server's TLS ALPN list (nil: Xray's default).
func (l *xrayLab) inboundALPN(t testing.TB, protocol, security, network string, settings map[string]any, alpn []string) uint16 {
	t.Helper()
	port := freePortTB(t)
	stream := map[string]any{"network": network, "security": security}
	if settings != nil {
		stream[network+"Settings"] = settings
	}
	switch security {
	case "tls":
		tls := map[string]any{
			"certificates": []any{map[string]any{"certificateFile": l.certFile, "keyFile": l.keyFile}},
		}
		if alpn != nil {
			tls["alpn"] = alpn
		}
		stream["tlsSettings"] = tls
	case "reality":
		stream["realitySettings"] = map[string]any{
			"target": l.site.String(), "serverNames": []string{ixSNI},
			"privateKey": l.realityPriv, "shortIds": []string{ixShortID},
		}
	}
	clients := []any{map[string]any{"id": ixUUID}}
	s := map[string]any{"clients": clients, "decryption": "none"}
	if protocol == "trojan" {
		s = map[string]any{"clients": []any{map[string]any{"password": ixTrojan}}}
	}
	l.inbounds = append(l.inbounds, map[string]any{
		"listen": "127.0.0.1", "port": port, "protocol": protocol, "settings": s, "streamSettings": stream,
	})
	return port
}

// start runs Xray with every inbound added and waits until all listen.
func (l *xrayLab) start(t testing.TB) {
	t.Helper()
	conf, err := json.MarshalIndent(map[string]any{
		"log":       map[string]any{"loglevel": "warning"},
		"inbounds":  l.inbounds,
		"outbounds": []any{map[string]any{"protocol": "freedom"}},
	}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "xray.json")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(xrayPath(t), "run", "-c", path)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start xray: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("xray output:\n%s", out.String())
		}
		_ = cmd.Process.Kill()
		<-exited
	})
	for _, in := range l.inbounds {
		port := in.(map[string]any)["port"].(uint16)
		deadline := time.Now().Add(testTimeout)
		for {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				t.Fatalf("xray exited: %s", out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("xray does not listen on %d: %s", port, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// freePortTB is a TCP port free on loopback.
func freePortTB(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// spec is a VLESS or Trojan proxy on port with a transport.
func (l *xrayLab) spec(protocol, security string, port uint16, tr Spec) Spec {
	s := tr
	s.Name, s.Type, s.Server, s.Port, s.UDP = "x", protocol, "127.0.0.1", port, true
	switch security {
	case "tls":
		s.SNI, s.Insecure = ixCertName, true
	case "reality":
		s.Security, s.SNI, s.PublicKey, s.ShortID = SecurityReality, ixSNI, l.realityPub, ixShortID
	}
	if protocol == TypeVLESS {
		s.UUID = ixUUID
	} else {
		s.Password = ixTrojan
	}
	return s
}

type transportCase struct {
	name       string
	protocol   string
	security   string
	network    string         // Xray's name
	server     map[string]any // Xray's <network>Settings
	serverALPN []string       // the server's TLS ALPN (nil: Xray's default)
	client     Spec           // tgtun's transport settings
	bulk       int            // bytes each way per flow (0: 1 MiB)
}

func transportCases() []transportCase {
	var cases []transportCase
	for range 2 {
		cases = append(cases,
			transportCase{name: "ws", network: "ws", server: map[string]any{"path": "/ws"},
				client: Spec{Transport: "ws", Path: "/ws"}},
			transportCase{name: "ws-ed", network: "ws", server: map[string]any{"path": "/wsed"},
				client: Spec{Transport: "ws", Path: "/wsed", EarlyData: 2048}},
			transportCase{name: "httpupgrade", network: "httpupgrade", server: map[string]any{"path": "/hu", "host": "cdn.example.org"},
				client: Spec{Transport: "httpupgrade", Path: "/hu", Host: "cdn.example.org"}},
			transportCase{name: "httpupgrade-ed", network: "httpupgrade", server: map[string]any{"path": "/hued"},
				client: Spec{Transport: "httpupgrade", Path: "/hued", EarlyData: 1}},
			transportCase{name: "grpc", network: "grpc", server: map[string]any{"serviceName": "svc.Tunnel"},
				client: Spec{Transport: "grpc", ServiceName: "svc.Tunnel"}},
			transportCase{name: "grpc-multi", network: "grpc", server: map[string]any{"serviceName": "multi"},
				client: Spec{Transport: "grpc", ServiceName: "multi", Mode: "multi"}},
			transportCase{name: "xhttp-auto", network: "xhttp", server: map[string]any{"path": "/xh"},
				client: Spec{Transport: "xhttp", Path: "/xh"}},
			transportCase{name: "xhttp-packet-up", network: "xhttp", server: map[string]any{"path": "/xp", "mode": "packet-up"},
				client: Spec{Transport: "xhttp", Path: "/xp", Mode: "packet-up"}},
			transportCase{name: "xhttp-stream-up", network: "xhttp", server: map[string]any{"path": "/xu", "mode": "stream-up"},
				client: Spec{Transport: "xhttp", Path: "/xu", Mode: "stream-up"}},
			transportCase{name: "xhttp-stream-one", network: "xhttp", server: map[string]any{"path": "/xo", "mode": "stream-one"},
				client: Spec{Transport: "xhttp", Path: "/xo", Mode: "stream-one"}},
		)
	}
	for i := range cases {
		cases[i].protocol = TypeVLESS
		cases[i].security = []string{"tls", "reality"}[i/(len(cases)/2)]
	}
	// Xray's REALITY serves RAW, XHTTP and gRPC only.
	cases = slices.DeleteFunc(cases, func(c transportCase) bool {
		return c.security == "reality" && (c.network == "ws" || c.network == "httpupgrade")
	})
	cases = append(cases,
		// A server that speaks HTTP/1.1 only: packet-up goes over HTTP/1.1.
		transportCase{name: "xhttp-packet-up-http1.1", protocol: TypeVLESS, security: "tls", network: "xhttp",
			server: map[string]any{"path": "/x1", "mode": "packet-up"}, serverALPN: []string{"http/1.1"},
			client: Spec{Transport: "xhttp", Path: "/x1"}},
		// Everything extra moves: padding as tokenish in a header, the session id in a
		// header, the sequence number in the query, the data in headers of GETs.
		transportCase{name: "xhttp-extra-obfs", protocol: TypeVLESS, security: "reality", network: "xhttp",
			server: map[string]any{"path": "/xe", "mode": "packet-up", "xPaddingBytes": "200-300", "xPaddingObfsMode": true,
				"xPaddingMethod": "tokenish", "xPaddingPlacement": "header", "xPaddingHeader": "X-Pad",
				"sessionPlacement": "header", "seqPlacement": "query", "uplinkDataPlacement": "header",
				"uplinkHTTPMethod": "GET", "scMaxEachPostBytes": 3000, "scMinPostsIntervalMs": 1},
			client: Spec{Transport: "xhttp", Path: "/xe", Mode: "packet-up", PaddingBytes: "200-300",
				Extra: `{"xPaddingObfsMode":true,"xPaddingMethod":"tokenish","xPaddingPlacement":"header","xPaddingHeader":"X-Pad","sessionPlacement":"header","seqPlacement":"query","uplinkDataPlacement":"header","uplinkHTTPMethod":"GET","scMaxEachPostBytes":3000,"scMinPostsIntervalMs":1,"xmux":{"maxConnections":2}}`},
			bulk: 64 << 10},
		transportCase{name: "xhttp-extra-cookies", protocol: TypeVLESS, security: "tls", network: "xhttp",
			server: map[string]any{"path": "/xc", "mode": "packet-up", "xPaddingObfsMode": true, "xPaddingPlacement": "cookie",
				"xPaddingKey": "pad", "sessionPlacement": "cookie", "seqPlacement": "header", "uplinkDataPlacement": "cookie",
				"scMaxEachPostBytes": 2000, "scMinPostsIntervalMs": 1, "headers": map[string]string{"X-Test": "1"}},
			client: Spec{Transport: "xhttp", Path: "/xc", Mode: "packet-up",
				Extra: `{"xPaddingObfsMode":true,"xPaddingPlacement":"cookie","xPaddingKey":"pad","sessionPlacement":"cookie","seqPlacement":"header","uplinkDataPlacement":"cookie","scMaxEachPostBytes":2000,"scMinPostsIntervalMs":1,"headers":{"X-Test":"1"},"noGRPCHeader":true}`},
			bulk: 32 << 10},
	)
	// Trojan (TLS) over each transport.
	for _, c := range []transportCase{
		{name: "trojan-ws", network: "ws", server: map[string]any{"path": "/tws"}, client: Spec{Transport: "ws", Path: "/tws"}},
		{name: "trojan-grpc", network: "grpc", server: map[string]any{"serviceName": "tg"}, client: Spec{Transport: "grpc", ServiceName: "tg"}},
		{name: "trojan-xhttp", network: "xhttp", server: map[string]any{"path": "/tx"}, client: Spec{Transport: "xhttp", Path: "/tx"}},
		{name: "trojan-httpupgrade", network: "httpupgrade", server: map[string]any{"path": "/thu"}, client: Spec{Transport: "httpupgrade", Path: "/thu"}},
	} {
		c.protocol, c.security = TypeTrojan, "tls"
		cases = append(cases, c)
	}
	return cases
}

func TestTransportsInteropXray(t *testing.T) {
	lab := newXrayLab(t)
	cases := transportCases()
	ports := make([]uint16, len(cases))
	for i, c := range cases {
		ports[i] = lab.inboundALPN(t, c.protocol, c.security, c.network, c.server, c.serverALPN)
	}
	lab.start(t)
	echo := tcpEcho(t, "127.0.0.1")
	uecho := udpEcho(t, "127.0.0.1")
	for i, c := range cases {
		t.Run(c.protocol+"-"+c.security+"-"+c.name, func(t *testing.T) {
			d, err := New(lab.spec(c.protocol, c.security, ports[i], c.client), Options{})
			if err != nil {
				t.Fatal(err)
			}
			// Several flows at once: they share HTTP/2 connections.
			errc := make(chan error, 3)
			for range 3 {
				go func() {
					conn, err := d.DialTCP(testCtx(t), echo)
					if err != nil {
						errc <- err
						return
					}
					defer conn.Close()
					errc <- echoBulk(conn, cmp.Or(c.bulk, 1<<20))
				}()
			}
			for range 3 {
				if err := <-errc; err != nil {
					t.Fatalf("TCP: %v", err)
				}
			}
			u, err := d.DialUDP(testCtx(t), uecho)
			if err != nil {
				t.Fatalf("DialUDP: %v", err)
			}
			defer u.Close()
			for k := range 3 {
				msg := []byte(fmt.Sprintf("datagram %d over %s", k, c.name))
				if _, err := u.Write(msg); err != nil {
					t.Fatalf("UDP write: %v", err)
				}
				_ = u.SetReadDeadline(time.Now().Add(testTimeout))
				buf := make([]byte, 2048)
				n, err := u.Read(buf)
				if err != nil || !bytes.Equal(buf[:n], msg) {
					t.Fatalf("UDP echo %q, %v; want %q", buf[:n], err, msg)
				}
				_ = u.SetReadDeadline(time.Time{})
			}
		})
	}
}

// echoBulk sends size random bytes through c to an echo server and checks what
// comes back.
func echoBulk(c net.Conn, size int) error {
	data := make([]byte, size)
	_, _ = rand.Read(data)
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("the echo differs from what was sent")
	}
	return nil
}

// TestTransportsInteropXrayRefusals: a wrong path, service name, mode or user is
// reported with what is most likely wrong, at dial time or at the first read (an
// HTTP/2 request is answered while the flow already runs), as the health probe
// sees it.
func TestTransportsInteropXrayRefusals(t *testing.T) {
	lab := newXrayLab(t)
	ws := lab.inbound(t, TypeVLESS, "tls", "ws", map[string]any{"path": "/ws"})
	hu := lab.inbound(t, TypeVLESS, "tls", "httpupgrade", map[string]any{"path": "/hu"})
	grpc := lab.inbound(t, TypeVLESS, "reality", "grpc", map[string]any{"serviceName": "svc"})
	xh := lab.inbound(t, TypeVLESS, "tls", "xhttp", map[string]any{"path": "/xh", "mode": "packet-up"})
	h1 := lab.inboundALPN(t, TypeVLESS, "tls", "xhttp", map[string]any{"path": "/h1"}, []string{"http/1.1"})
	lab.start(t)
	echo := tcpEcho(t, "127.0.0.1")
	cases := []struct {
		name     string
		security string
		port     uint16
		client   Spec
		uuid     string
		want     []string
	}{
		{"ws wrong path", "tls", ws, Spec{Transport: "ws", Path: "/nope"}, "", []string{"vless+ws+tls 127.0.0.1:", "ws: HTTP 404 from the server: no such endpoint: wrong path or host?"}},
		{"httpupgrade wrong path", "tls", hu, Spec{Transport: "httpupgrade", Path: "/nope"}, "", []string{"vless+httpupgrade+tls", "httpupgrade: the server closed the connection instead of answering the upgrade: wrong path or host?"}},
		{"httpupgrade-ed wrong path", "tls", hu, Spec{Transport: "httpupgrade", Path: "/nope", EarlyData: 1}, "", []string{"httpupgrade: the server closed", "wrong path or host?"}},
		{"grpc wrong service", "reality", grpc, Spec{Transport: "grpc", ServiceName: "other"}, "", []string{"grpc: status 12 (unimplemented: wrong service_name?)"}},
		{"xhttp wrong path", "tls", xh, Spec{Transport: "xhttp", Path: "/nope"}, "", []string{"xhttp: HTTP 404", "wrong path, host or mode?"}},
		{"xhttp wrong mode", "tls", xh, Spec{Transport: "xhttp", Path: "/xh", Mode: "stream-one"}, "", []string{"xhttp: HTTP 400", "mode"}},
		{"xhttp stream-one over http/1.1", "tls", h1, Spec{Transport: "xhttp", Path: "/h1", Mode: "stream-one"}, "", []string{"the server chose http/1.1", "needs HTTP/2"}},
		{"grpc wrong uuid", "reality", grpc, Spec{Transport: "grpc", ServiceName: "svc"}, "00000000-0000-4000-8000-000000000000", []string{"closed"}},
		{"xhttp wrong uuid", "tls", xh, Spec{Transport: "xhttp", Path: "/xh"}, "00000000-0000-4000-8000-000000000000", []string{"closed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := lab.spec(TypeVLESS, c.security, c.port, c.client)
			if c.uuid != "" {
				spec.UUID = c.uuid
			}
			d, err := New(spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = dialAndRead(testCtx(t), d, echo)
			if err == nil {
				t.Fatal("the flow worked")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if time.Since(start) > fastFail {
				t.Errorf("the refusal took %v", time.Since(start))
			}
		})
	}
}

// dialAndRead dials dst through d, sends a line and reads the answer, as a flow
// and a health probe do.
func dialAndRead(ctx context.Context, d Dialer, dst netip.AddrPort) error {
	c, err := d.DialTCP(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return err
	}
	var b [6]byte
	_, err = io.ReadFull(c, b[:])
	return err
}

// BenchmarkTransportIdleFlow: what a held, idle VLESS flow costs in the daemon with
// each transport against Xray on loopback: heap and goroutine stacks after a full GC,
// per flow, with one goroutine blocked in Read per flow as the engine keeps for a
// conn it cannot poll (none for one it polls). A flow made one round trip first (its connection and, for
// HTTP/2, its stream are set up). go test -run '^$' -bench TransportIdleFlow ./daemon/proxy
func BenchmarkTransportIdleFlow(b *testing.B) {
	const flows = 200
	lab := newXrayLab(b)
	type bc struct {
		name, security, network string
		server                  map[string]any
		client                  Spec
	}
	cases := []bc{
		{"tcp-reality", "reality", "raw", nil, Spec{}},
		{"tcp-tls", "tls", "raw", nil, Spec{}},
		{"ws-tls", "tls", "ws", map[string]any{"path": "/ws"}, Spec{Transport: "ws", Path: "/ws"}},
		{"httpupgrade-tls", "tls", "httpupgrade", map[string]any{"path": "/hu"}, Spec{Transport: "httpupgrade", Path: "/hu"}},
		{"grpc-reality", "reality", "grpc", map[string]any{"serviceName": "s"}, Spec{Transport: "grpc", ServiceName: "s"}},
		{"xhttp-packet-up-tls", "tls", "xhttp", map[string]any{"path": "/xp", "mode": "packet-up"}, Spec{Transport: "xhttp", Path: "/xp", Mode: "packet-up"}},
		{"xhttp-stream-up-reality", "reality", "xhttp", map[string]any{"path": "/xu", "mode": "stream-up"}, Spec{Transport: "xhttp", Path: "/xu", Mode: "stream-up"}},
		{"xhttp-stream-one-reality", "reality", "xhttp", map[string]any{"path": "/xo", "mode": "stream-one"}, Spec{Transport: "xhttp", Path: "/xo", Mode: "stream-one"}},
	}
	ports := make([]uint16, len(cases))
	for i, c := range cases {
		ports[i] = lab.inbound(b, TypeVLESS, c.security, c.network, c.server)
	}
	lab.start(b)
	// The echo server is another process (socat), so that only the client side counts.
	echoPort := freePortTB(b)
	echo := exec.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", echoPort), "PIPE")
	if err := echo.Start(); err != nil {
		b.Fatalf("socat: %v", err)
	}
	defer func() { _ = echo.Process.Kill(); _ = echo.Wait() }()
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), echoPort)
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", dst.String()); err == nil {
			c.Close()
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("socat does not listen: %v", err)
		}
	}
	for i, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				d, err := New(lab.spec(TypeVLESS, c.security, ports[i], c.client), Options{})
				if err != nil {
					b.Fatal(err)
				}
				heap0, stack0, g0 := memNow()
				conns := make([]net.Conn, 0, flows)
				done := make(chan struct{})
				for range flows {
					conn, err := d.DialTCP(context.Background(), dst)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := conn.Write([]byte("x")); err != nil {
						b.Fatal(err)
					}
					one := make([]byte, 1)
					if _, err := io.ReadFull(conn, one); err != nil {
						b.Fatal(err)
					}
					conns = append(conns, conn)
					// A conn the engine polls (VLESS on the record layer) has no reader
					// while idle; one it cannot poll (the transports) has one, here
					// without its buffer.
					if nb, ok := conn.(interface {
						RawConns() ([]syscall.RawConn, error)
					}); ok {
						if _, err := nb.RawConns(); err == nil {
							continue
						}
					}
					go func() {
						var p [1]byte
						_, _ = conn.Read(p[:])
						<-done
					}()
				}
				time.Sleep(500 * time.Millisecond)
				heap1, stack1, g1 := memNow()
				b.ReportMetric(float64(int64(heap1)-int64(heap0))/flows/1024, "heap-KiB/flow")
				b.ReportMetric(float64(int64(stack1)-int64(stack0))/flows/1024, "stack-KiB/flow")
				b.ReportMetric(float64(g1-g0)/flows, "goroutines/flow")
				for _, c := range conns {
					c.Close()
				}
				close(done)
			}
		})
	}
}

func memNow() (heap, stack uint64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
}
