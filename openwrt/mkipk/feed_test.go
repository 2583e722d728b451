package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// buildTestFeed makes dist/feed's layout for x86_64 in a temporary directory, as `make
// feed` does: both formats of both packages, the indexes, the public keys.
func buildTestFeed(t *testing.T) (feed, keys string) {
	t.Helper()
	root := t.TempDir()
	feed, keys = filepath.Join(root, "feed"), filepath.Join(root, "feed-keys")
	arch := filepath.Join(feed, "x86_64")
	if err := GenerateFeedKeys(keys); err != nil {
		t.Fatal(err)
	}
	if err := GenerateFeedKeys(keys); err == nil {
		t.Error("feed keys were overwritten")
	}
	for _, f := range []string{usignSecretFile, apkPrivateFile} {
		if st, err := os.Stat(filepath.Join(keys, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: not a 0600 file (%v)", f, err)
		}
	}
	prog := tinyProgram(t, targets[4])
	for _, format := range []string{"ipk", "apk"} {
		for _, args := range [][]string{
			{"-name", "tgtun", "-arch", "x86_64", "-bin", prog, "-files", filesDir, "-scripts", scriptsDir},
			{"-name", "luci-app-tgtun", "-arch", "all", "-tree", "../../luci-app/htdocs:/www", "-files", "../../luci-app/root"},
		} {
			args = append(args, "-format", format, "-version", "0.1.0-r7", "-out", arch)
			if err := run(args, io.Discard, os.Stderr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := run([]string{"-index", arch, "-keys", keys}, io.Discard, os.Stderr); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(feed, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{usignPublicFile: "tgtun-feed.usign.pub", apkPublicFile: "tgtun-feed.pem"} {
		if err := os.WriteFile(filepath.Join(feed, "keys", dst), readFile(t, filepath.Join(keys, src)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return feed, keys
}

type fetchFunc func(path string) ([]byte, error)

// opkgCheck does what opkg does after `opkg update` with check_signature, then `opkg
// install tgtun luci-app-tgtun`: Packages.gz and Packages.sig from the feed, the usign
// signature of the unpacked list against the trusted key, then each package's file with
// its Size and SHA256sum from the list.
func opkgCheck(get fetchFunc, trusted usignKey, arch string) error {
	gz, err := get(arch + "/Packages.gz")
	if err != nil {
		return err
	}
	list, err := gunzipBytes(gz)
	if err != nil {
		return fmt.Errorf("Packages.gz: %w", err)
	}
	sig, err := get(arch + "/Packages.sig")
	if err != nil {
		return err
	}
	if err := UsignVerify(trusted, list, sig); err != nil {
		return fmt.Errorf("Packages.sig: %w", err)
	}
	pkgs, err := ParsePackagesIndex(list)
	if err != nil {
		return err
	}
	found := map[string]bool{}
	for _, p := range pkgs {
		raw, err := get(arch + "/" + p["Filename"])
		if err != nil {
			return err
		}
		sum := sha256.Sum256(raw)
		if strconv.Itoa(len(raw)) != p["Size"] || hex.EncodeToString(sum[:]) != p["SHA256sum"] {
			return fmt.Errorf("%s: size or SHA256sum differ from Packages", p["Filename"])
		}
		ctl, err := ipkControl(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", p["Filename"], err)
		}
		if !bytes.Contains(ctl, []byte("Package: "+p["Package"]+"\n")) {
			return fmt.Errorf("%s: control is not package %s", p["Filename"], p["Package"])
		}
		found[p["Package"]] = true
	}
	if !found["tgtun"] || !found["luci-app-tgtun"] {
		return fmt.Errorf("Packages lists %v", found)
	}
	return nil
}

// apkCheck does what apk does after `apk update` and for `apk add tgtun luci-app-tgtun`:
// packages.adb from the feed, its signature against the trusted key, then each package
// by ${name}-${version}.apk with its file-size and the SHA-256 of its ADB block.
func apkCheck(get fetchFunc, trusted []byte, arch string) error {
	pub, err := ReadAPKPublic(trusted)
	if err != nil {
		return err
	}
	raw, err := get(arch + "/packages.adb")
	if err != nil {
		return err
	}
	ndx, err := ReadADB(raw)
	if err != nil {
		return fmt.Errorf("packages.adb: %w", err)
	}
	if ndx.Schema != adbSchemaIndex {
		return fmt.Errorf("packages.adb: schema %08x", ndx.Schema)
	}
	if err := VerifyADBSignature(ndx, pub); err != nil {
		return fmt.Errorf("packages.adb: %w", err)
	}
	found := map[string]bool{}
	for _, p := range ndx.Root.Field(ndxPackages).Items {
		name, version := p.Field(piName).Str(), p.Field(piVersion).Str()
		file := name + "-" + version + ".apk"
		pkg, err := get(arch + "/" + file)
		if err != nil {
			return err
		}
		if uint64(len(pkg)) != p.Field(piFileSize).Int {
			return fmt.Errorf("%s: %d bytes, the index says %d", file, len(pkg), p.Field(piFileSize).Int)
		}
		info, _, err := ReadAPKInfo(pkg)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		sum := sha256.Sum256(info.ADB)
		if !bytes.Equal(sum[:], p.Field(piHashes).Blob) {
			return fmt.Errorf("%s: hash differs from the index", file)
		}
		if info.Info.Field(piName).Str() != name || info.Info.Field(piArch).Str() != p.Field(piArch).Str() {
			return fmt.Errorf("%s: info differs from the index", file)
		}
		found[name] = true
	}
	if !found["tgtun"] || !found["luci-app-tgtun"] {
		return fmt.Errorf("packages.adb lists %v", found)
	}
	return nil
}

func gunzipBytes(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// TestFeedOverHTTP serves a feed from the test network's internet host (a network
// namespace) and runs README's install flow from the LAN client's namespace, for both
// package managers: fetch the public keys, the indexes and the packages over HTTP, and
// check them as opkg and apk do. Real opkg and apk cannot run in CI (they are not in
// Debian, and would install into the test machine); opkgCheck and apkCheck stand in for
// their signature and hash checks, which were compared with apk-tools 3.0.6 by hand
// (openwrt/README.md). A tampered package and a tampered index must be refused.
func TestFeedOverHTTP(t *testing.T) {
	feed, _ := buildTestFeed(t)
	n := testnet.New(t)
	port, err := n.FreePort(n.Inet, testnet.DirectV4)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(testnet.DirectV4, port).String()
	l, err := n.Listen(n.Inet, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(feed)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return n.Dial(ctx, n.Client, network, a)
		},
	}}
	get := func(p string) ([]byte, error) {
		resp, err := client.Get("http://" + addr + "/" + p)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", p, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}

	usignPub, err := get("keys/tgtun-feed.usign.pub")
	if err != nil {
		t.Fatal(err)
	}
	ukey, err := ReadUsignPublic(usignPub)
	if err != nil {
		t.Fatal(err)
	}
	apkPub, err := get("keys/tgtun-feed.pem")
	if err != nil {
		t.Fatal(err)
	}
	if err := opkgCheck(get, ukey, "x86_64"); err != nil {
		t.Errorf("opkg flow: %v", err)
	}
	if err := apkCheck(get, apkPub, "x86_64"); err != nil {
		t.Errorf("apk flow: %v", err)
	}

	// Another key must not be trusted.
	other := t.TempDir()
	if err := GenerateFeedKeys(other); err != nil {
		t.Fatal(err)
	}
	otherU, _ := ReadUsignPublic(readFile(t, filepath.Join(other, usignPublicFile)))
	if err := opkgCheck(get, otherU, "x86_64"); err == nil {
		t.Error("opkg flow accepted a feed signed by another key")
	}
	if err := apkCheck(get, readFile(t, filepath.Join(other, apkPublicFile)), "x86_64"); err == nil {
		t.Error("apk flow accepted a feed signed by another key")
	}

	// One changed byte in a package, then in an index: refused.
	for _, name := range []string{"tgtun-0.1.0-r7.apk", "tgtun_0.1.0-r7_x86_64.ipk", "packages.adb", "Packages.gz"} {
		p := filepath.Join(feed, "x86_64", name)
		orig := readFile(t, p)
		bad := bytes.Clone(orig)
		bad[len(bad)-9] ^= 0x20
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		errO, errA := opkgCheck(get, ukey, "x86_64"), apkCheck(get, apkPub, "x86_64")
		if strings.HasSuffix(name, ".apk") || name == "packages.adb" {
			if errA == nil {
				t.Errorf("apk flow accepted a changed %s", name)
			}
		} else if errO == nil {
			t.Errorf("opkg flow accepted a changed %s", name)
		}
		if err := os.WriteFile(p, orig, 0o644); err != nil {
			t.Fatal(err)
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
