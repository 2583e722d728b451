package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The exchange of core.telegram.org/mtproto/samples-auth_key: the request is laid
// out as the documentation's, and its resPQ passes for its nonce only.
func TestMTProtoSample(t *testing.T) {
	var nonce [16]byte
	hex.Decode(nonce[:], []byte("75E622F3BC7D714632B833821FD7BB0C"))
	req := mtprotoRequest(nonce, time.Unix(0x6872A921, 0))
	wantSent := unhex(t, "00000000000000000000000021A97268140000 00F18E7EBE75E622F3BC7D714632B833821FD7BB0C")
	if got := req[8:]; len(got) != len(wantSent) || !equalExceptMsgIDLow(got, wantSent) {
		t.Errorf("request payload\n%x\nwant (msg_id's low half aside)\n%x", got, wantSent)
	}
	if binary.LittleEndian.Uint32(req) != 0xeeeeeeee || binary.LittleEndian.Uint32(req[4:]) != 40 {
		t.Errorf("transport header %x", req[:8])
	}
	if binary.LittleEndian.Uint32(req[8+8:])%4 != 0 {
		t.Errorf("msg_id %x not divisible by 4", req[16:24])
	}
	answer := unhex(t, `0000000000000000014C527921A97268500000006324160575E622F3BC7D714632B833821FD7BB0C
		8EC53EC050CB2D475B457BAF445B49F50816E748B29522C68F00000015C4B51C0300000085FD64DE
		851D9DD0A5B7F709355FC30B216BE86C022BB4C3`)
	if err := checkResPQ(answer, nonce); err != nil {
		t.Errorf("the documentation's resPQ: %v", err)
	}
	other := nonce
	other[0]++
	if err := checkResPQ(answer, other); !errors.Is(err, ErrNotTarget) {
		t.Errorf("resPQ for another nonce: %v, want ErrNotTarget", err)
	}
	if err := checkResPQ(answer[:30], nonce); !errors.Is(err, ErrNotTarget) {
		t.Errorf("a short packet: %v, want ErrNotTarget", err)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// equalExceptMsgIDLow compares two req_pq_multi payloads; the low half of msg_id
// (bytes 8..11) is random.
func equalExceptMsgIDLow(a, b []byte) bool {
	for i := range a {
		if (i < 8 || i >= 12) && a[i] != b[i] {
			return false
		}
	}
	return true
}

// mtprotoServer answers one req_pq_multi the way handle says.
func mtprotoAnswer(c net.Conn, mangle func(nonce []byte) []byte) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	body := make([]byte, binary.LittleEndian.Uint32(hdr[4:]))
	if _, err := io.ReadFull(c, body); err != nil || len(body) != 40 {
		return
	}
	msg := binary.LittleEndian.AppendUint64(nil, 0)
	msg = binary.LittleEndian.AppendUint64(msg, uint64(time.Now().Unix())<<32|1)
	msg = binary.LittleEndian.AppendUint32(msg, 80)
	msg = binary.LittleEndian.AppendUint32(msg, mtprotoResPQ)
	msg = append(msg, mangle(body[24:40])...)
	msg = append(msg, make([]byte, 16)...) // server_nonce
	msg = append(msg, 8, 0x17, 0xed, 0x48, 0x94, 0x1a, 0x08, 0xf9, 0x81, 0, 0, 0)
	msg = binary.LittleEndian.AppendUint32(msg, 0x1cb5c415)
	msg = binary.LittleEndian.AppendUint32(msg, 1)
	msg = binary.LittleEndian.AppendUint64(msg, 0xc3b42b026ce86b21)
	_, _ = c.Write(append(binary.LittleEndian.AppendUint32(nil, uint32(len(msg))), msg...))
}

// testTLSCert is a CA-signed certificate for name and the CA's pool.
func testTLSCert(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tgtun test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// The probe's checks against targets that are what the check wants, and against
// what a proxy's fallback site (or a wrong server) answers instead: certain at
// once. A target that does not answer is an ordinary failure (three in a row).
func TestPoolProbeChecks(t *testing.T) {
	good, roots := testTLSCert(t, "target.test")
	impostor, _ := testTLSCert(t, "fallback.test")
	httpFallback := func(c net.Conn) {
		_, _ = c.Read(make([]byte, 512))
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n")
	}
	tlsServer := func(cert tls.Certificate) func(net.Conn) {
		return func(c net.Conn) {
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			_ = tc.Handshake()
			_, _ = tc.Read(make([]byte, 1))
		}
	}
	tests := []struct {
		name      string
		check     Check
		target    func(net.Conn)
		wantState string
		wantErr   string
	}{
		{"mtproto: resPQ", Check{Kind: CheckMTProto}, func(c net.Conn) { mtprotoAnswer(c, func(n []byte) []byte { return n }) }, StateHealthy, ""},
		{"mtproto: transport error", Check{Kind: CheckMTProto}, func(c net.Conn) {
			_, _ = c.Read(make([]byte, 64))
			_, _ = c.Write([]byte{4, 0, 0, 0, 0x6c, 0xfe, 0xff, 0xff})
		}, StateHealthy, ""},
		{"mtproto: a web site", Check{Kind: CheckMTProto}, httpFallback, StateUnhealthy, "not an MTProto packet"},
		{"mtproto: another nonce", Check{Kind: CheckMTProto}, func(c net.Conn) {
			mtprotoAnswer(c, func(n []byte) []byte { return make([]byte, 16) })
		}, StateUnhealthy, "another nonce"},
		{"mtproto: closed without an answer", Check{Kind: CheckMTProto}, func(c net.Conn) { _, _ = c.Read(make([]byte, 64)) }, StateUnknown, "closed without an answer"},
		{"mtproto: silence", Check{Kind: CheckMTProto}, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }, StateUnknown, "no answer"},
		{"tls: the target's certificate", Check{Kind: CheckTLS, Name: "target.test", Roots: roots}, tlsServer(good), StateHealthy, ""},
		{"tls: another name's", Check{Kind: CheckTLS, Name: "target.test", Roots: roots}, tlsServer(impostor), StateUnhealthy, "certificate"},
		{"tls: a plain web site", Check{Kind: CheckTLS, Name: "target.test", Roots: roots}, httpFallback, StateUnhealthy, "not a TLS answer"},
		{"connect: a web site passes", Check{}, httpFallback, StateHealthy, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := fakeServer(t, tt.target)
			m, err := NewMember(Spec{Name: "direct", Type: TypeDirect}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			p := NewPool([]Member{m}, netip.AddrPortFrom(netip.MustParseAddr(target.Server), target.Port), time.Hour, nil)
			p.Check = tt.check
			p.ProbeSettle = -1
			p.ProbeTimeout = time.Second
			p.ProbeAll(testCtx(t))
			st := p.Status()[0]
			if st.State != tt.wantState || !strings.Contains(st.LastError, tt.wantErr) {
				t.Errorf("status %+v, want %s with an error containing %q", st, tt.wantState, tt.wantErr)
			}
		})
	}
}

// FuzzMTProtoAnswer: whatever a server (or what sits in its place) answers, the
// probe judges it without a panic, and only a resPQ with the probe's nonce passes.
func FuzzMTProtoAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	f.Add([]byte{4, 0, 0, 0, 0x6c, 0xfe, 0xff, 0xff})
	f.Add([]byte{0x64, 0, 0, 0})
	f.Add(append([]byte{0x30, 0, 0, 0}, make([]byte, 0x30)...))
	f.Fuzz(func(t *testing.T, answer []byte) {
		client, server := net.Pipe()
		defer client.Close()
		go func() {
			defer server.Close()
			_, _ = io.ReadFull(server, make([]byte, 48))
			_, _ = server.Write(answer)
		}()
		_ = client.SetDeadline(time.Now().Add(5 * time.Second))
		err := mtprotoProbe(client)
		if err == nil && !(len(answer) >= 8 && binary.LittleEndian.Uint32(answer) == 4) {
			t.Fatalf("answer %x passed without the probe's nonce", answer)
		}
	})
}
