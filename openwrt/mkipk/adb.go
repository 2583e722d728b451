package main

// ADB, the container of apk-tools v3 (OpenWrt 25.12's package manager): packages (.apk,
// schema "pckg") and repository indexes (packages.adb, schema "indx"). Written from
// apk-tools' description of the format (src/adb.h, src/apk_adb.h, src/adb.c) without its
// code:
//
//	file     "ADBd" + raw deflate of the stream below (or the stream itself, "ADB.")
//	stream   "ADB." + le32 schema, then blocks
//	block    le32 (type<<30 | 4+len), payload, zero padding to a multiple of 8;
//	         types: 0 ADB (exactly one, first), 1 signature, 2 data
//	ADB      header (u8 compat 0, u8 version 0, u16 0, le32 root value) + values
//	value    le32: 4 type bits + 28 bits of inline number or offset into the ADB block
//	         0x0 null/special, 0x1 int (inline), 0x2 int32 / 0x3 int64 (at offset),
//	         0x8/0x9/0xa blob with u8/u16/u32 length (at offset, aligned to it),
//	         0xd array / 0xe object (at offset, 4-aligned: le32 n, then n-1 values)
//
// Objects are numbered fields (1-based); arrays are sorted as apk-tools sorts them when it
// writes them (by name). Trailing null fields are left out; an empty object or array is null.

import (
	"bytes"
	"compress/flate"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

const (
	adbTypeSpecial = 0x00000000
	adbTypeInt     = 0x10000000
	adbTypeInt32   = 0x20000000
	adbTypeInt64   = 0x30000000
	adbTypeBlob8   = 0x80000000
	adbTypeBlob16  = 0x90000000
	adbTypeBlob32  = 0xa0000000
	adbTypeArray   = 0xd0000000
	adbTypeObject  = 0xe0000000
	adbTypeMask    = 0xf0000000
	adbValueMask   = 0x0fffffff

	adbMagic         = 0x2e424441 // "ADB."
	adbSchemaPackage = 0x676b6370 // "pckg"
	adbSchemaIndex   = 0x78646e69 // "indx"

	adbBlockADB  = 0
	adbBlockSig  = 1
	adbBlockData = 2

	digestSHA512 = 4 // apk-tools' APK_DIGEST_SHA512, in signature headers
)

// Field numbers of the schemas used here (apk_adb.h).
const (
	depName = 1

	piName          = 1
	piVersion       = 2
	piHashes        = 3
	piDescription   = 4
	piArch          = 5
	piLicense       = 6
	piOrigin        = 7
	piMaintainer    = 8
	piURL           = 9
	piInstalledSize = 0x0c
	piFileSize      = 0x0d
	piDepends       = 0x0f

	aclMode  = 1
	aclUser  = 2
	aclGroup = 3

	fiName   = 1
	fiACL    = 2
	fiSize   = 3
	fiMTime  = 4
	fiHashes = 5

	diName  = 1
	diACL   = 2
	diFiles = 3

	scriptPostInstall   = 3
	scriptPreDeinstall  = 4
	scriptPostDeinstall = 5
	scriptPostUpgrade   = 7

	pkgInfo    = 1
	pkgPaths   = 2
	pkgScripts = 3

	ndxDescription = 1
	ndxPackages    = 2
)

// adbWriter appends values to an ADB block. It does not share equal values as apk-tools
// does (an optimisation, not part of the format).
type adbWriter struct{ b []byte }

func newADBWriter() *adbWriter { return &adbWriter{b: make([]byte, 8)} }

func (w *adbWriter) align(n int) {
	for len(w.b)%n != 0 {
		w.b = append(w.b, 0)
	}
}

func (w *adbWriter) offset() uint32 {
	if len(w.b) > adbValueMask {
		panic("adb: block larger than 256 MiB")
	}
	return uint32(len(w.b))
}

func (w *adbWriter) blob(p []byte) uint32 {
	switch n := len(p); {
	case n == 0:
		return 0
	case n <= 0xff:
		off := w.offset()
		w.b = append(append(w.b, byte(n)), p...)
		return adbTypeBlob8 | off
	case n <= 0xffff:
		w.align(2)
		off := w.offset()
		w.b = append(binary.LittleEndian.AppendUint16(w.b, uint16(n)), p...)
		return adbTypeBlob16 | off
	default:
		w.align(4)
		off := w.offset()
		w.b = append(binary.LittleEndian.AppendUint32(w.b, uint32(n)), p...)
		return adbTypeBlob32 | off
	}
}

func (w *adbWriter) str(s string) uint32 { return w.blob([]byte(s)) }

func (w *adbWriter) int(v uint64) uint32 {
	switch {
	case v < 0x10000000:
		return adbTypeInt | uint32(v)
	case v <= 0xffffffff:
		w.align(4)
		off := w.offset()
		w.b = binary.LittleEndian.AppendUint32(w.b, uint32(v))
		return adbTypeInt32 | off
	default:
		w.align(4)
		off := w.offset()
		w.b = binary.LittleEndian.AppendUint64(w.b, v)
		return adbTypeInt64 | off
	}
}

// object writes fields 1..len(f)-1 of f (f[0] is ignored); array writes items.
func (w *adbWriter) object(f []uint32) uint32 { return w.vector(adbTypeObject, f[1:]) }
func (w *adbWriter) array(items []uint32) uint32 {
	return w.vector(adbTypeArray, items)
}

func (w *adbWriter) vector(typ uint32, vals []uint32) uint32 {
	n := len(vals)
	for n > 0 && vals[n-1] == 0 {
		n--
	}
	if n == 0 {
		return 0
	}
	w.align(4)
	off := w.offset()
	w.b = binary.LittleEndian.AppendUint32(w.b, uint32(n+1))
	for _, v := range vals[:n] {
		w.b = binary.LittleEndian.AppendUint32(w.b, v)
	}
	return typ | off
}

// finish sets the root value and returns the block's bytes.
func (w *adbWriter) finish(root uint32) []byte {
	binary.LittleEndian.PutUint32(w.b[4:], root)
	return w.b
}

// adbBlock appends one block with its header and padding.
func adbBlock(out []byte, typ uint32, payload ...[]byte) []byte {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	if n > 0x3fffffff-4 {
		panic("adb: block too large for a short header")
	}
	out = binary.LittleEndian.AppendUint32(out, typ<<30|uint32(4+n))
	for _, p := range payload {
		out = append(out, p...)
	}
	for (4+n)%8 != 0 {
		out = append(out, 0)
		n++
	}
	return out
}

func adbStreamHeader(schema uint32) []byte {
	h := binary.LittleEndian.AppendUint32(nil, adbMagic)
	return binary.LittleEndian.AppendUint32(h, schema)
}

// adbCompress writes "ADBd" and the stream as raw deflate, as `apk mkpkg` and `apk
// mkndx` do by default.
func adbCompress(w io.Writer, stream []byte) error {
	if _, err := io.WriteString(w, "ADBd"); err != nil {
		return err
	}
	zw, err := flate.NewWriter(w, flate.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(stream); err != nil {
		return err
	}
	return zw.Close()
}

// adbSignature is the payload of a signature block (v0): u8 version 0, u8 hash algorithm
// (SHA-512), the key id, and the signature of SHA-512 over le32 schema, those 18 header
// bytes and SHA-512 of the ADB block. apk-tools signs with OpenSSL's EVP_DigestSign and
// SHA-512, so for an ECDSA key (what OpenWrt's apk keys are) it is an ASN.1 ECDSA
// signature of that SHA-512.
func adbSignature(key *ecdsa.PrivateKey, schema uint32, adb []byte) ([]byte, error) {
	id, err := apkKeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	hdr := append([]byte{0, digestSHA512}, id[:]...)
	md := sha512.Sum512(adb)
	msg := binary.LittleEndian.AppendUint32(nil, schema)
	msg = append(append(msg, hdr...), md[:]...)
	digest := sha512.Sum512(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("sign index: %w", err)
	}
	return append(hdr, sig...), nil
}

// apkKeyID is how apk-tools names a key: the first 16 bytes of SHA-512 of the public key
// as OpenSSL's i2d_PublicKey encodes it (for an EC key, the uncompressed point).
func apkKeyID(pub *ecdsa.PublicKey) ([16]byte, error) {
	var id [16]byte
	ek, err := pub.ECDH()
	if err != nil {
		return id, fmt.Errorf("apk key: %w", err)
	}
	sum := sha512.Sum512(ek.Bytes())
	copy(id[:], sum[:16])
	return id, nil
}

// ----- reading -----

// ADBValue is one decoded value. Kind is 'n' null, 'i' int, 'b' blob, 'o' object,
// 'a' array; Items holds an object's fields (index 0 unused) or an array's items.
type ADBValue struct {
	Kind  byte
	Int   uint64
	Blob  []byte
	Items []ADBValue
}

// Field returns field i of an object (a null value when absent).
func (v ADBValue) Field(i int) ADBValue {
	if v.Kind != 'o' || i >= len(v.Items) {
		return ADBValue{Kind: 'n'}
	}
	return v.Items[i]
}

// Str is the blob as a string.
func (v ADBValue) Str() string { return string(v.Blob) }

// ADBFile is a decoded ADB container.
type ADBFile struct {
	Schema     uint32
	ADB        []byte // the ADB block's payload, as hashed and signed
	Root       ADBValue
	Signatures [][]byte // payloads of signature blocks
	Data       [][]byte // payloads of data blocks
	Compressed bool
}

// ReadADB decodes a whole ADB file, checking the block structure and every offset.
func ReadADB(raw []byte) (*ADBFile, error) {
	f := &ADBFile{}
	switch {
	case bytes.HasPrefix(raw, []byte("ADBd")):
		f.Compressed = true
		zr := flate.NewReader(bytes.NewReader(raw[4:]))
		s, err := io.ReadAll(io.LimitReader(zr, 1<<30))
		if err != nil {
			return nil, fmt.Errorf("adb: inflate: %w", err)
		}
		raw = s
	case bytes.HasPrefix(raw, []byte("ADB.")):
	default:
		return nil, errors.New("adb: no ADB header")
	}
	if len(raw) < 8 || binary.LittleEndian.Uint32(raw) != adbMagic {
		return nil, errors.New("adb: no ADB. stream header")
	}
	f.Schema = binary.LittleEndian.Uint32(raw[4:])
	rest := raw[8:]
	for len(rest) > 0 {
		if len(rest) < 4 {
			return nil, errors.New("adb: truncated block header")
		}
		ts := binary.LittleEndian.Uint32(rest)
		typ, size := ts>>30, uint64(ts&0x3fffffff)
		if typ == 3 {
			return nil, errors.New("adb: extended blocks not supported")
		}
		padded := (size + 7) &^ 7
		if size < 4 || padded > uint64(len(rest)) {
			return nil, fmt.Errorf("adb: block of %d bytes does not fit", size)
		}
		payload := rest[4:size]
		rest = rest[padded:]
		switch typ {
		case adbBlockADB:
			if f.ADB != nil {
				return nil, errors.New("adb: two ADB blocks")
			}
			f.ADB = payload
		case adbBlockSig:
			if f.ADB == nil || len(f.Data) > 0 {
				return nil, errors.New("adb: signature block out of place")
			}
			f.Signatures = append(f.Signatures, payload)
		case adbBlockData:
			if f.ADB == nil {
				return nil, errors.New("adb: data block before the ADB block")
			}
			f.Data = append(f.Data, payload)
		}
	}
	if len(f.ADB) < 8 {
		return nil, errors.New("adb: no ADB block")
	}
	root, err := adbDecode(f.ADB, binary.LittleEndian.Uint32(f.ADB[4:]), 0)
	if err != nil {
		return nil, err
	}
	f.Root = root
	return f, nil
}

func adbDecode(b []byte, v uint32, depth int) (ADBValue, error) {
	if depth > 16 {
		return ADBValue{}, errors.New("adb: nested too deep")
	}
	off := uint64(v & adbValueMask)
	need := func(n uint64) ([]byte, error) {
		if off+n > uint64(len(b)) {
			return nil, fmt.Errorf("adb: value %08x: %d bytes at %d outside the block", v, n, off)
		}
		return b[off : off+n], nil
	}
	switch v & adbTypeMask {
	case adbTypeSpecial:
		return ADBValue{Kind: 'n', Int: off}, nil
	case adbTypeInt:
		return ADBValue{Kind: 'i', Int: off}, nil
	case adbTypeInt32:
		p, err := need(4)
		if err != nil {
			return ADBValue{}, err
		}
		return ADBValue{Kind: 'i', Int: uint64(binary.LittleEndian.Uint32(p))}, nil
	case adbTypeInt64:
		p, err := need(8)
		if err != nil {
			return ADBValue{}, err
		}
		return ADBValue{Kind: 'i', Int: binary.LittleEndian.Uint64(p)}, nil
	case adbTypeBlob8, adbTypeBlob16, adbTypeBlob32:
		w := map[uint32]uint64{adbTypeBlob8: 1, adbTypeBlob16: 2, adbTypeBlob32: 4}[v&adbTypeMask]
		p, err := need(w)
		if err != nil {
			return ADBValue{}, err
		}
		var n uint64
		for i := int(w) - 1; i >= 0; i-- {
			n = n<<8 | uint64(p[i])
		}
		off += w
		p, err = need(n)
		if err != nil {
			return ADBValue{}, err
		}
		return ADBValue{Kind: 'b', Blob: p}, nil
	case adbTypeArray, adbTypeObject:
		p, err := need(4)
		if err != nil {
			return ADBValue{}, err
		}
		n := uint64(binary.LittleEndian.Uint32(p))
		if n == 0 {
			return ADBValue{}, fmt.Errorf("adb: value %08x: vector without its count", v)
		}
		if p, err = need(4 * n); err != nil {
			return ADBValue{}, err
		}
		out := ADBValue{Kind: 'o'}
		if v&adbTypeMask == adbTypeArray {
			out.Kind = 'a'
		}
		items := make([]ADBValue, 0, n)
		for i := uint64(0); i < n; i++ {
			if i == 0 {
				if out.Kind == 'o' {
					items = append(items, ADBValue{Kind: 'n'})
				}
				continue
			}
			item, err := adbDecode(b, binary.LittleEndian.Uint32(p[4*i:]), depth+1)
			if err != nil {
				return ADBValue{}, err
			}
			items = append(items, item)
		}
		out.Items = items
		return out, nil
	}
	return ADBValue{}, fmt.Errorf("adb: value %08x: unknown type", v)
}

// VerifyADBSignature checks that one signature block is a valid signature of the ADB block
// by pub, as apk-tools does before it trusts an index.
func VerifyADBSignature(f *ADBFile, pub *ecdsa.PublicKey) error {
	id, err := apkKeyID(pub)
	if err != nil {
		return err
	}
	for _, s := range f.Signatures {
		if len(s) < 18 || s[0] != 0 || !bytes.Equal(s[2:18], id[:]) {
			continue
		}
		if s[1] != digestSHA512 {
			return fmt.Errorf("adb signature: hash algorithm %d, want SHA-512", s[1])
		}
		md := sha512.Sum512(f.ADB)
		msg := binary.LittleEndian.AppendUint32(nil, f.Schema)
		msg = append(append(msg, s[:18]...), md[:]...)
		digest := sha512.Sum512(msg)
		if !ecdsa.VerifyASN1(pub, digest[:], s[18:]) {
			return errors.New("adb signature: does not verify")
		}
		return nil
	}
	return fmt.Errorf("adb signature: none by key %x", id)
}

// sortedKeys returns the keys of m in byte order, as apk-tools sorts names.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
