package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The idle-memory figures count this process's heap only, so the TLS server of
// these tests runs in a child process: the test binary started again with
// tlsServerEnv set, which serves until its stdin closes.
const tlsServerEnv = "TGTUN_TEST_TLS_ECHO_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(tlsServerEnv) != "" {
		serveTLSEchoChild()
		return
	}
	os.Exit(m.Run())
}

// testCert makes a self-signed ECDSA certificate for name.
func selfSignedCert(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// serveTLSEchoChild is the child process: a TLS 1.3 echo server on loopback
// that skips the Trojan request header (56 hex digits, CRLF, command, address,
// CRLF) and then echoes. It prints its address and serves until stdin closes.
func serveTLSEchoChild() {
	cert, err := selfSignedCert("proxy.test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				if err := skipTrojanHeader(r); err != nil {
					return
				}
				_, _ = io.Copy(c, r)
			}()
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

func skipTrojanHeader(r *bufio.Reader) error {
	if _, err := r.Discard(56 + 2 + 1); err != nil {
		return err
	}
	t, err := r.Peek(1)
	if err != nil {
		return err
	}
	n := map[byte]int{1: 4, 4: 16}[t[0]]
	if n == 0 {
		return fmt.Errorf("address type %d", t[0])
	}
	_, err = r.Discard(1 + n + 2 + 2)
	return err
}

// startTLSEchoChild starts the child server and returns its address.
func startTLSEchoChild(tb testing.TB) netip.AddrPort {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), tlsServerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("TLS server child: %v", err)
	}
	return netip.MustParseAddrPort(strings.TrimSpace(line))
}

// holdIdleTLSConns dials n Trojan conns to the child server, makes one echo on
// each and returns the heap they hold (bytes per conn) and the goroutines they
// keep, measured while they are idle.
func holdIdleTLSConns(tb testing.TB, srv netip.AddrPort, n int) (heapPerConn, goroutinesPerConn float64) {
	tb.Helper()
	d, err := New(Spec{Name: "t", Type: TypeTrojan, Server: srv.Addr().String(), Port: srv.Port(), Password: "pw", SNI: "proxy.test", Insecure: true}, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	// One conn first, so that what every dial shares (uTLS's tables, the pools)
	// is not counted.
	warm, err := d.DialTCP(testCtxTB(tb), testDst)
	if err != nil {
		tb.Fatal(err)
	}
	echoOnce(tb, warm)
	warm.Close()
	heapBefore := heapInUse()
	gBefore := runtime.NumGoroutine()
	open := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range n {
		c, err := d.DialTCP(testCtxTB(tb), testDst)
		if err != nil {
			tb.Fatal(err)
		}
		open = append(open, c)
		echoOnce(tb, c)
	}
	heap := float64(int64(heapInUse())-int64(heapBefore)) / float64(n)
	g := float64(runtime.NumGoroutine()-gBefore) / float64(n)
	runtime.KeepAlive(open)
	return heap, g
}

func echoOnce(tb testing.TB, c net.Conn) {
	tb.Helper()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write([]byte("x")); err != nil {
		tb.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'x' {
		tb.Fatalf("echo: %q, %v", b[:], err)
	}
	_ = c.SetDeadline(time.Time{})
}

func testCtxTB(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// BenchmarkIdleTLSConnMemory holds 200 idle Trojan conns (TLS 1.3, one echo
// each) to a Go TLS server in a child process and reports the heap each holds.
func BenchmarkIdleTLSConnMemory(b *testing.B) {
	srv := startTLSEchoChild(b)
	for range b.N {
		heap, g := holdIdleTLSConns(b, srv, 200)
		b.ReportMetric(heap, "heap-B/conn")
		b.ReportMetric(g, "goroutines/conn")
	}
}
