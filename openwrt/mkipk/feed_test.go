package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFeedKeysPrivateAndKept: the feed's private keys are written 0600 and never
// replaced by a second -genkeys (a new key would make every router refuse the feed).
// What the package managers check of the keys and indexes is tested with the real opkg
// and apk (managers_test.go).
func TestFeedKeysPrivateAndKept(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "feed-keys")
	if err := GenerateFeedKeys(keys); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, filepath.Join(keys, usignSecretFile))
	if err := GenerateFeedKeys(keys); err == nil {
		t.Error("feed keys were overwritten")
	}
	if !bytes.Equal(before, readFile(t, filepath.Join(keys, usignSecretFile))) {
		t.Error("the usign secret key changed")
	}
	for _, f := range []string{usignSecretFile, apkPrivateFile} {
		if st, err := os.Stat(filepath.Join(keys, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: not a 0600 file (%v)", f, err)
		}
	}
}

// TestUsignKeysRoundTrip: a generated secret key reads back, signs, and the public key
// verifies; the published file names follow usign's fingerprint naming.
func TestUsignKeysRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if err := GenerateFeedKeys(dir); err != nil {
		t.Fatal(err)
	}
	sec, err := readUsignSecret(readFile(t, filepath.Join(dir, usignSecretFile)))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ReadUsignPublic(readFile(t, filepath.Join(dir, usignPublicFile)))
	if err != nil {
		t.Fatal(err)
	}
	if sec.FingerprintHex() != pub.FingerprintHex() || strings.HasPrefix(pub.FingerprintHex(), "0") {
		t.Errorf("fingerprints %s / %s", sec.FingerprintHex(), pub.FingerprintHex())
	}
	msg := []byte("Package: tgtun\n")
	sig := usignSign(sec, msg)
	if !strings.HasPrefix(string(sig), "untrusted comment: signed by key "+pub.FingerprintHex()+"\n") {
		t.Errorf("signature file %q", sig)
	}
	if err := UsignVerify(pub, msg, sig); err != nil {
		t.Error(err)
	}
	if err := UsignVerify(pub, []byte("Package: other\n"), sig); err == nil {
		t.Error("a signature verified another message")
	}
}

func FuzzUsignDecode(f *testing.F) {
	f.Add([]byte("untrusted comment: x\nRWQxMDiUZRPIMw==\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ReadUsignPublic(b)
		_, _ = readUsignSecret(b)
		_ = UsignVerify(usignKey{pub: make([]byte, 32)}, nil, b)
	})
}

func FuzzParsePackagesIndex(f *testing.F) {
	f.Add([]byte("Package: tgtun\nVersion: 1\nDescription: x\n y\n\nPackage: b\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkgs, err := ParsePackagesIndex(b)
		if err == nil {
			for _, p := range pkgs {
				if len(p) == 0 {
					t.Fatal("empty paragraph returned")
				}
			}
		}
	})
}
