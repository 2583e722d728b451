package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tgtun/tgtun/bench/mips/wire"
)

// setSiteAES, when the guest is built with -tags mipsbench_aes (tlsaes.go), makes
// crypto/tls choose as on a CPU with AES instructions; nil otherwise.
var setSiteAES func(bool)

// tlsSite is the site a REALITY server imitates: each connection is one TLS handshake
// of a client (the REALITY server forwards the client's hello here and answers with
// this site's choices); it counts them and the cipher suites it picked.
type tlsSite struct {
	hellos   atomic.Int64
	suiteCnt counter
}

func startTLSSite(ns string, s wire.TLSSite) (*tlsSite, error) {
	cert, err := tls.LoadX509KeyPair(s.Cert, s.Key)
	if err != nil {
		return nil, err
	}
	if setSiteAES != nil {
		setSiteAES(s.AES)
	} else if s.AES {
		progress("tls site: built without -tags mipsbench_aes: it chooses suites as Go on a core without AES")
	}
	site := &tlsSite{}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	err = serve(ns, s.Addr, func(c net.Conn) {
		defer c.Close()
		site.hellos.Add(1)
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		tc := tls.Server(&helloSniffer{Conn: c, site: site}, conf)
		if err := tc.Handshake(); err != nil {
			return
		}
		buf := make([]byte, 4096)
		for {
			if _, err := tc.Read(buf); err != nil {
				return
			}
			_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	if err != nil {
		return nil, err
	}
	return site, nil
}

// helloSniffer records the cipher suite of the ServerHello the site writes: a REALITY
// server completes no handshake with the site for its own clients, it only reads the
// site's answer to the client's hello and answers with the same choices.
type helloSniffer struct {
	net.Conn
	site *tlsSite
	seen bool
}

func (h *helloSniffer) Write(p []byte) (int, error) {
	if !h.seen {
		h.seen = true
		h.site.suiteCnt.add(serverHelloSuite(p))
	}
	return h.Conn.Write(p)
}

// serverHelloSuite reads the cipher suite of a ServerHello record at the start of p.
func serverHelloSuite(p []byte) string {
	// record header (5), handshake type (1) and length (3), version (2), random (32)
	const sidAt = 5 + 4 + 2 + 32
	if len(p) < sidAt+1 || p[0] != 22 || p[5] != 2 {
		return "not-a-server-hello"
	}
	at := sidAt + 1 + int(p[sidAt])
	if len(p) < at+2 {
		return "short-server-hello"
	}
	return tls.CipherSuiteName(uint16(p[at])<<8 | uint16(p[at+1]))
}

// suites lists the cipher suites the site chose, with their counts.
func (s *tlsSite) suites() string {
	s.suiteCnt.mu.Lock()
	defer s.suiteCnt.mu.Unlock()
	var out []string
	for k, v := range s.suiteCnt.m {
		out = append(out, fmt.Sprintf("%s×%d", k, v))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}
