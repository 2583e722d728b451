//go:build mipsbench_aes

package main

import _ "unsafe" // go:linkname

// hasAESGCMHardwareSupport is crypto/tls's own view of the CPU: without AES instructions
// (every MIPS core) a Go TLS 1.3 server prefers ChaCha20-Poly1305 whatever the client
// offers first. A real site that a REALITY server imitates runs on a server CPU with AES
// and follows the client's order; the TLS site sets this to choose like one. Only in the
// bench's guest, built with -tags mipsbench_aes -ldflags=-checklinkname=0 (bench/mips).
//
//go:linkname hasAESGCMHardwareSupport crypto/tls.hasAESGCMHardwareSupport
var hasAESGCMHardwareSupport bool

func init() { setSiteAES = func(on bool) { hasAESGCMHardwareSupport = on } }
