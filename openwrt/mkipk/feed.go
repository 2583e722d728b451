package main

// A package feed directory for one architecture, readable by opkg (OpenWrt 24.10) and
// apk (OpenWrt 25.12) at once:
//
//	Packages          opkg's index: each package's control fields with Filename, Size
//	                  and SHA256sum before Description (as OpenWrt's ipkg-make-index.sh)
//	Packages.gz       the same, gzip'd: what opkg downloads
//	Packages.sig      usign signature (Ed25519) of Packages, checked against
//	                  /etc/opkg/keys/<fingerprint>
//	packages.adb      apk's index (ADB schema "indx"): each package's info with its
//	                  file-size and hashes = SHA-256 of the package's ADB block, signed
//	                  with an ECDSA P-256 key (SHA-512), checked against /etc/apk/keys/*.pem
//
// Keys (`-genkeys DIR`): usign.sec / usign.pub in usign's format (base64 of "Ed", 8-byte
// fingerprint, key; the secret without a password: KDF "BK" with 0 rounds) and
// apk.pem / apk.pub.pem (PKCS#8 private key, PKIX public key), the types OpenWrt's build
// uses for its own feeds.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Key file names in the key directory; the public ones are what a feed publishes.
const (
	usignSecretFile = "usign.sec"
	usignPublicFile = "usign.pub"
	apkPrivateFile  = "apk.pem"
	apkPublicFile   = "apk.pub.pem"
)

// ----- usign -----

// usignKey is an Ed25519 key with its usign fingerprint.
type usignKey struct {
	fingerprint [8]byte
	priv        ed25519.PrivateKey // nil for a public key
	pub         ed25519.PublicKey
}

// FingerprintHex is how usign and opkg name the key file: %PRIx64, no leading zeros.
func (k usignKey) FingerprintHex() string {
	return fmt.Sprintf("%x", binary.BigEndian.Uint64(k.fingerprint[:]))
}

func usignFile(comment string, blob []byte) []byte {
	return []byte("untrusted comment: " + comment + "\n" + base64.StdEncoding.EncodeToString(blob) + "\n")
}

// usignDecode reads the base64 line after the comment line.
func usignDecode(b []byte, size int) ([]byte, error) {
	_, rest, ok := bytes.Cut(b, []byte("\n"))
	if !ok || !bytes.HasPrefix(b, []byte("untrusted comment: ")) {
		return nil, errors.New("usign: want an 'untrusted comment:' line and a base64 line")
	}
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(rest)))
	if err != nil {
		return nil, fmt.Errorf("usign: %w", err)
	}
	if len(raw) != size || string(raw[:2]) != "Ed" {
		return nil, fmt.Errorf("usign: %d bytes, want %d starting with Ed", len(raw), size)
	}
	return raw, nil
}

func newUsignKey() (usignKey, []byte, []byte, error) {
	var k usignKey
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return k, nil, nil, err
	}
	if _, err := rand.Read(k.fingerprint[:]); err != nil {
		return k, nil, nil, err
	}
	k.priv, k.pub = priv, pub
	var salt [16]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return k, nil, nil, err
	}
	sum := sha512.Sum512(priv) // seed and public key, usign's 64-byte secret
	sec := append([]byte("EdBK"), 0, 0, 0, 0)
	sec = append(sec, salt[:]...)
	sec = append(sec, sum[:8]...)
	sec = append(sec, k.fingerprint[:]...)
	sec = append(sec, priv...)
	pubBlob := append(append([]byte("Ed"), k.fingerprint[:]...), pub...)
	return k, usignFile("tgtun feed secret key "+k.FingerprintHex(), sec),
		usignFile("tgtun feed public key "+k.FingerprintHex(), pubBlob), nil
}

func readUsignSecret(b []byte) (usignKey, error) {
	raw, err := usignDecode(b, 2+2+4+16+8+8+64)
	if err != nil {
		return usignKey{}, err
	}
	if string(raw[2:4]) != "BK" || binary.BigEndian.Uint32(raw[4:8]) != 0 {
		return usignKey{}, errors.New("usign secret key: password-protected keys are not supported")
	}
	var k usignKey
	// "Ed" "BK" rounds[4] salt[16] checksum[8] fingerprint[8] secret[64] (seed, public)
	copy(k.fingerprint[:], raw[32:40])
	k.priv = ed25519.NewKeyFromSeed(raw[40:72])
	if !bytes.Equal(k.priv, raw[40:104]) {
		return usignKey{}, errors.New("usign secret key: public half does not match")
	}
	if sum := sha512.Sum512(raw[40:104]); !bytes.Equal(sum[:8], raw[24:32]) {
		return usignKey{}, errors.New("usign secret key: checksum mismatch")
	}
	k.pub = k.priv.Public().(ed25519.PublicKey)
	return k, nil
}

// ReadUsignPublic reads a usign public key file.
func ReadUsignPublic(b []byte) (usignKey, error) {
	raw, err := usignDecode(b, 2+8+32)
	if err != nil {
		return usignKey{}, err
	}
	var k usignKey
	copy(k.fingerprint[:], raw[2:10])
	k.pub = ed25519.PublicKey(raw[10:42])
	return k, nil
}

// usignSign writes a signature file of msg, as `usign -S -m FILE` does.
func usignSign(k usignKey, msg []byte) []byte {
	sig := ed25519.Sign(k.priv, msg)
	blob := append(append([]byte("Ed"), k.fingerprint[:]...), sig...)
	return usignFile("signed by key "+k.FingerprintHex(), blob)
}

// UsignVerify checks a signature file of msg against a public key, as `usign -V` does
// for opkg: the fingerprints must match and the Ed25519 signature verify.
func UsignVerify(pub usignKey, msg, sigFile []byte) error {
	raw, err := usignDecode(sigFile, 2+8+64)
	if err != nil {
		return err
	}
	if !bytes.Equal(raw[2:10], pub.fingerprint[:]) {
		return fmt.Errorf("usign: signed by key %x, not %s", raw[2:10], pub.FingerprintHex())
	}
	if !ed25519.Verify(pub.pub, msg, raw[10:]) {
		return errors.New("usign: verification failed")
	}
	return nil
}

// ----- apk keys -----

func newAPKKey() ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil
}

func readAPKPrivate(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("apk key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		if ek, err2 := x509.ParseECPrivateKey(blk.Bytes); err2 == nil {
			k = ek
		} else {
			return nil, fmt.Errorf("apk key: %w", err)
		}
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("apk key: want an ECDSA P-256 key (what OpenWrt's apk feeds use)")
	}
	return ek, nil
}

// ReadAPKPublic reads a PEM public key as /etc/apk/keys/*.pem holds it.
func ReadAPKPublic(b []byte) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("apk public key: no PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("apk public key: %w", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("apk public key: not ECDSA")
	}
	if _, err := ek.ECDH(); err != nil {
		return nil, fmt.Errorf("apk public key: %w", err)
	}
	return ek, nil
}

// GenerateFeedKeys writes a new key pair of each kind into dir, refusing to overwrite
// existing keys (a feed's users trust the old ones). Private files are 0600.
func GenerateFeedKeys(dir string) error {
	for _, f := range []string{usignSecretFile, usignPublicFile, apkPrivateFile, apkPublicFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s exists: keys are not replaced (remove them to start a new feed key)", filepath.Join(dir, f))
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	_, usec, upub, err := newUsignKey()
	if err != nil {
		return err
	}
	apriv, apub, err := newAPKKey()
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		body []byte
		mode os.FileMode
	}{
		{usignSecretFile, usec, 0o600}, {usignPublicFile, upub, 0o644},
		{apkPrivateFile, apriv, 0o600}, {apkPublicFile, apub, 0o644},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.body, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// ----- indexes -----

// ipkIndexEntry is one package's paragraph of Packages.
func ipkIndexEntry(name string, raw []byte) (string, error) {
	control, err := ipkControl(raw)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	sum := sha256.Sum256(raw)
	extra := fmt.Sprintf("Filename: %s\nSize: %d\nSHA256sum: %x\n", name, len(raw), sum)
	c := string(control)
	i := strings.Index(c, "\nDescription:")
	if i < 0 {
		return "", fmt.Errorf("%s: control has no Description", name)
	}
	return c[:i+1] + extra + c[i+1:], nil
}

// ipkControl returns the control file of an .ipk.
func ipkControl(raw []byte) ([]byte, error) {
	outer, err := tarMembers(raw)
	if err != nil {
		return nil, err
	}
	ctl, err := tarMembers(outer["./control.tar.gz"])
	if err != nil {
		return nil, fmt.Errorf("control.tar.gz: %w", err)
	}
	c, ok := ctl["./control"]
	if !ok {
		return nil, errors.New("no ./control")
	}
	return c, nil
}

// BuildFeedIndex writes Packages, Packages.gz, Packages.sig and packages.adb for the
// .ipk and .apk files in dir, signed with the keys in keyDir.
func BuildFeedIndex(dir, keyDir, description string) error {
	usec, err := os.ReadFile(filepath.Join(keyDir, usignSecretFile))
	if err != nil {
		return fmt.Errorf("feed key (make feed-key): %w", err)
	}
	ukey, err := readUsignSecret(usec)
	if err != nil {
		return err
	}
	apriv, err := os.ReadFile(filepath.Join(keyDir, apkPrivateFile))
	if err != nil {
		return fmt.Errorf("feed key (make feed-key): %w", err)
	}
	akey, err := readAPKPrivate(apriv)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var packages strings.Builder
	aw := newADBWriter()
	type ndxPkg struct {
		name, version string
		val           uint32
	}
	var pkgs []ndxPkg
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".ipk") || strings.HasSuffix(name, ".apk")) {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if strings.HasSuffix(name, ".ipk") {
			p, err := ipkIndexEntry(name, raw)
			if err != nil {
				return err
			}
			packages.WriteString(p + "\n")
			continue
		}
		info, _, err := ReadAPKInfo(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		v, err := copyPkgInfo(aw, info, uint64(len(raw)))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		pkgs = append(pkgs, ndxPkg{info.Info.Field(piName).Str(), info.Info.Field(piVersion).Str(), v})
	}
	if packages.Len() == 0 || len(pkgs) == 0 {
		return fmt.Errorf("%s: want .ipk and .apk packages to index", dir)
	}
	slices.SortFunc(pkgs, func(a, b ndxPkg) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return strings.Compare(a.version, b.version)
	})
	var vals []uint32
	for _, p := range pkgs {
		vals = append(vals, p.val)
	}
	root := aw.object([]uint32{0, ndxDescription: aw.str(description), ndxPackages: aw.array(vals)})
	adb := aw.finish(root)
	sig, err := adbSignature(akey, adbSchemaIndex, adb)
	if err != nil {
		return err
	}
	stream := adbBlock(adbStreamHeader(adbSchemaIndex), adbBlockADB, adb)
	stream = adbBlock(stream, adbBlockSig, sig)
	var ndx bytes.Buffer
	if err := adbCompress(&ndx, stream); err != nil {
		return err
	}

	idx := []byte(packages.String())
	gz, err := gzipBytes(idx)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		body []byte
	}{
		{"Packages", idx}, {"Packages.gz", gz}, {"Packages.sig", usignSign(ukey, idx)},
		{"packages.adb", ndx.Bytes()},
	} {
		if err := writeAtomically(filepath.Join(dir, f.name), func(w io.Writer) error {
			_, err := w.Write(f.body)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// copyPkgInfo writes a package's info into the index: the same fields, with hashes the
// SHA-256 of the package's ADB block (how apk finds and checks the file it downloads)
// and file-size.
func copyPkgInfo(aw *adbWriter, info *APKInfo, size uint64) (uint32, error) {
	in := info.Info
	if in.Kind != 'o' {
		return 0, errors.New("no package info")
	}
	f := make([]uint32, max(len(in.Items), piFileSize+1))
	for i := 1; i < len(in.Items); i++ {
		v := in.Items[i]
		switch v.Kind {
		case 'b':
			f[i] = aw.blob(v.Blob)
		case 'i':
			f[i] = aw.int(v.Int)
		case 'a':
			var items []uint32
			for _, d := range v.Items {
				items = append(items, aw.object([]uint32{0, depName: aw.blob(d.Field(depName).Blob)}))
			}
			f[i] = aw.array(items)
		}
	}
	sum := sha256.Sum256(info.ADB)
	f[piHashes] = aw.blob(sum[:])
	f[piFileSize] = aw.int(size)
	return aw.object(f), nil
}

// ParsePackagesIndex splits an opkg Packages file into its paragraphs' fields.
func ParsePackagesIndex(b []byte) ([]map[string]string, error) {
	var out []map[string]string
	cur := map[string]string{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "":
			if len(cur) > 0 {
				out = append(out, cur)
				cur, last = map[string]string{}, ""
			}
		case strings.HasPrefix(l, " "):
			if last == "" {
				return nil, errors.New("opkg index: continuation line without a field")
			}
			cur[last] += "\n" + l
		default:
			k, v, ok := strings.Cut(l, ": ")
			if !ok {
				return nil, fmt.Errorf("opkg index: malformed line %q", l)
			}
			cur[k], last = v, k
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, sc.Err()
}

// tarMembers reads a gzip'd tar into its regular files.
func tarMembers(raw []byte) (map[string][]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 256<<20))
		if err != nil {
			return nil, err
		}
		out[h.Name] = b
	}
}
