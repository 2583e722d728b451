package proxy

import (
	"runtime"
	"slices"

	utls "github.com/metacubex/utls"
	"golang.org/x/sys/cpu"
)

// Cipher suite order for the CPU the daemon runs on (docs/ARCHITECTURE.md,
// "Cipher suites on CPUs without AES instructions").
//
// A Go TLS server (Xray, sing-box, and the site a REALITY server imitates when it
// is a Go server) takes ChaCha20-Poly1305 when the client lists it before AES-GCM,
// and AES-GCM otherwise. On a core without AES instructions (every MIPS router,
// ARM without the crypto extension) ChaCha20 is much the faster, so the hello
// lists it first — exactly as the browser it imitates does on such a CPU:
// Chrome leaves the order to BoringSSL, which puts ChaCha20 first in its TLS 1.3
// list (ssl/handshake_client.cc, ssl_write_client_cipher_list), before AES-GCM in
// its TLS 1.2 list (ssl/ssl_cipher.cc, ssl_create_cipher_list), and picks
// ChaCha20 for the GREASE ECH extension (ssl/encrypted_client_hello.cc,
// setup_ech_grease) when EVP_has_aes_hardware() is false.

// aesHardware reports whether Go's AES-GCM runs on AES instructions on this CPU:
// the test Go's crypto/tls makes (hasAESGCMHardwareSupport), on the same flags.
// GODEBUG=cpu.aes=off turns it off, for Go's own AES code as for this check.
func aesHardware() bool {
	switch runtime.GOARCH {
	case "amd64":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAES && cpu.S390X.HasAESCTR && cpu.S390X.HasGHASH
	case "ppc64", "ppc64le":
		return true
	}
	return false // mips*, 32-bit arm, 386, riscv64: Go's AES is table code there
}

// boringSSLFamily reports whether a fingerprint is a browser built on BoringSSL,
// whose cipher order follows the CPU. Firefox (NSS) keeps one order everywhere;
// Safari and iOS run only on CPUs with AES instructions; the Android (OkHttp)
// and 360 hellos offer no TLS 1.3 suite to reorder.
func boringSSLFamily(id utls.ClientHelloID) bool {
	switch id.Client {
	case utls.HelloChrome_Auto.Client, utls.HelloEdge_Auto.Client, utls.HelloQQ_Auto.Client:
		return true
	}
	return false
}

// TLS 1.2 suites BoringSSL moves as a group.
var (
	tls12ChaCha = []uint16{
		utls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		utls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	tls12AESGCM = []uint16{
		utls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		utls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		utls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		utls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	}
)

// noAESOrder returns a BoringSSL-family cipher list in the order BoringSSL sends
// without AES hardware: TLS_CHACHA20_POLY1305_SHA256 before the AES-GCM TLS 1.3
// suites, and the ECDHE ChaCha20 suites before the ECDHE AES-GCM ones. Every
// other entry (GREASE, CBC, RSA key exchange) keeps its place.
func noAESOrder(suites []uint16) []uint16 {
	has := func(id uint16) bool { return slices.Contains(suites, id) }
	out := make([]uint16, 0, len(suites))
	tls13, tls12 := false, false // ChaCha20 emitted
	for _, s := range suites {
		switch {
		case s == utls.TLS_CHACHA20_POLY1305_SHA256:
			if tls13 {
				continue
			}
			tls13 = true
		case (s == utls.TLS_AES_128_GCM_SHA256 || s == utls.TLS_AES_256_GCM_SHA384) && !tls13 && has(utls.TLS_CHACHA20_POLY1305_SHA256):
			out = append(out, utls.TLS_CHACHA20_POLY1305_SHA256)
			tls13 = true
		case slices.Contains(tls12ChaCha, s) || (slices.Contains(tls12AESGCM, s) && !tls12):
			if !tls12 {
				for _, c := range tls12ChaCha {
					if has(c) {
						out = append(out, c)
					}
				}
				tls12 = true
			}
			if slices.Contains(tls12ChaCha, s) {
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

// preferChaCha20 turns a built BoringSSL-family hello into the one that browser
// sends on a CPU without AES instructions: the cipher order above and a GREASE
// ECH extension that names ChaCha20-Poly1305. The caller builds the hello again.
func preferChaCha20(u *utls.UConn) {
	hello := u.HandshakeState.Hello
	hello.CipherSuites = noAESOrder(hello.CipherSuites)
	for i, ext := range u.Extensions {
		g, ok := ext.(*utls.GREASEEncryptedClientHelloExtension)
		if !ok {
			continue
		}
		// A fresh extension: the old one fixed its suite when first built.
		u.Extensions[i] = &utls.GREASEEncryptedClientHelloExtension{
			CandidateCipherSuites: []utls.HPKESymmetricCipherSuite{{KdfId: hpkeHKDFSHA256, AeadId: hpkeChaCha20Poly1305}},
			CandidatePayloadLens:  g.CandidatePayloadLens,
		}
	}
}

// HPKE identifiers (RFC 9180 §7.2, §7.3).
const (
	hpkeHKDFSHA256       = 0x0001
	hpkeChaCha20Poly1305 = 0x0003
)
