package main

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/openwrt"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// The packages of OpenWrt's own repositories that tgtun and luci-app-tgtun depend on:
// the stub repository serves empty packages of these names.
var openwrtDeps = []string{"libc", "kmod-tun", "kmod-nft-core", "kmod-nft-tproxy", "kmod-nft-socket", "ca-bundle", "luci-base"}

// repos is what a router's package manager sees: tgtun's feed, laid out as `make feed`
// writes it (both formats of both packages, both indexes, signed by the feed's keys), and a
// stub of OpenWrt's own repository with the packages tgtun depends on, signed by another
// key, as a router has OpenWrt's repositories and their key. Both are served over HTTP
// from the test network's internet host; the package managers run on the LAN client.
type repos struct {
	t        *testing.T
	dir      string // served: tgtun/x86_64, openwrt/x86_64
	feedKeys string // the feed's private keys (feed-keys/)
	owrtKeys string // the stub OpenWrt repository's keys
	url      string
	n        *testnet.Net
}

func newRepos(t *testing.T) *repos {
	t.Helper()
	root := t.TempDir()
	rp := &repos{t: t, dir: filepath.Join(root, "www"), feedKeys: filepath.Join(root, "feed-keys"), owrtKeys: filepath.Join(root, "openwrt-keys")}
	for _, k := range []string{rp.feedKeys, rp.owrtKeys} {
		if err := GenerateFeedKeys(k); err != nil {
			t.Fatal(err)
		}
	}
	// The stub OpenWrt repository: one empty package per dependency, both formats.
	stub := filepath.Join(rp.dir, "openwrt", "x86_64")
	for _, name := range openwrtDeps {
		files := filepath.Join(root, "stub-"+name)
		if err := os.MkdirAll(filepath.Join(files, "usr/share/openwrt-stub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(files, "usr/share/openwrt-stub", name), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, format := range []string{"ipk", "apk"} {
			args := []string{"-format", format, "-name", name, "-version", "1.0-r1", "-arch", "x86_64",
				"-files", files, "-depends", " ", "-section", "base", "-description", "OpenWrt's " + name + " (test stub)",
				"-license", "GPL-2.0", "-out", stub}
			if err := run(args, io.Discard, os.Stderr); err != nil {
				t.Fatalf("stub %s: %v", name, err)
			}
		}
	}
	if err := run([]string{"-index", stub, "-keys", rp.owrtKeys}, io.Discard, os.Stderr); err != nil {
		t.Fatal(err)
	}
	rp.n = testnet.New(t)
	port, err := rp.n.FreePort(rp.n.Inet, testnet.DirectV4)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(testnet.DirectV4, port).String()
	l, err := rp.n.Listen(rp.n.Inet, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(rp.dir)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	rp.url = "http://" + addr
	return rp
}

// publish builds tgtun and luci-app-tgtun at version into the feed (replacing what was
// there, as a release does) and signs its indexes with keys (the feed's own unless a test
// says otherwise). configLine, when set, is appended to the packaged /etc/config/tgtun so
// two versions ship different default configurations.
func (rp *repos) publish(version, keys, configLine string) {
	t := rp.t
	t.Helper()
	arch := filepath.Join(rp.dir, "tgtun", "x86_64")
	if err := os.RemoveAll(arch); err != nil {
		t.Fatal(err)
	}
	files := filesDir
	if configLine != "" {
		files = filepath.Join(t.TempDir(), "files")
		if err := copyDir(filesDir, files); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(files, "etc/config/tgtun")
		body := append(readFile(t, cfg), []byte(configLine+"\n")...)
		if err := os.WriteFile(cfg, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	prog := tinyProgram(t, targets[4])
	for _, format := range []string{"ipk", "apk"} {
		for _, args := range [][]string{
			{"-name", "tgtun", "-arch", "x86_64", "-bin", prog, "-files", files, "-scripts", scriptsDir},
			{"-name", "luci-app-tgtun", "-arch", "all", "-tree", "../../luci-app/htdocs:/www", "-files", "../../luci-app/root"},
		} {
			args = append(args, "-format", format, "-version", version, "-out", arch)
			if err := run(args, io.Discard, os.Stderr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := run([]string{"-index", arch, "-keys", keys}, io.Discard, os.Stderr); err != nil {
		t.Fatal(err)
	}
}

func copyDir(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode().Perm())
	})
}

// feedFile is a file of tgtun's feed.
func (rp *repos) feedFile(name string) string { return filepath.Join(rp.dir, "tgtun", "x86_64", name) }

// router is a router root on the LAN client with OpenWrt's ubusd and a recorder where
// procd sits, so the maintainer scripts' `/etc/init.d/tgtun enable|start|stop` run as on
// a router.
type router struct {
	*openwrt.Root
	procd *openwrt.Procd
}

func (rp *repos) router(t *testing.T) *router {
	t.Helper()
	h := openwrt.NeedHost(t)
	r := openwrt.NewRoot(t, h)
	r.NetNS = rp.n.Client
	u := openwrt.StartUbusd(t, h, "", r.Path("var/run/ubus/ubus.sock"))
	return &router{Root: r, procd: openwrt.ServeProcd(t, u.Sock)}
}

func (r *router) sh(t *testing.T, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return r.Sh(ctx, script)
}

func (r *router) mustSh(t *testing.T, script string) string {
	t.Helper()
	out, err := r.sh(t, script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// methods lists the procd calls since the last look, by method name.
func (r *router) methods() string {
	var m []string
	for _, c := range r.procd.Calls() {
		m = append(m, c.Method)
	}
	return strings.Join(m, " ")
}

func (r *router) exists(path string) bool {
	_, err := os.Lstat(r.Path(path))
	return err == nil
}

// trust writes the usign public keys as opkg-key add does: /etc/opkg/keys/<fingerprint>.
func (r *router) trustUsign(t *testing.T, pubFiles ...string) {
	t.Helper()
	_ = os.RemoveAll(r.Path("etc/opkg/keys"))
	for _, f := range pubFiles {
		pub := readFile(t, f)
		k, err := ReadUsignPublic(pub)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.WriteFile("etc/opkg/keys/"+k.FingerprintHex(), pub, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (r *router) trustAPK(t *testing.T, pubFiles map[string]string) {
	t.Helper()
	_ = os.RemoveAll(r.Path("etc/apk/keys"))
	for name, f := range pubFiles {
		if err := r.WriteFile("etc/apk/keys/"+name, readFile(t, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpkgInstallUpgradeRemove installs tgtun and luci-app-tgtun with OpenWrt's opkg (built
// with usign checks) on a router root, from tgtun's feed over HTTP, their dependencies from
// the stub OpenWrt repository; the feed's key and OpenWrt's are the only ones trusted. The
// maintainer scripts run as on a router: uci-defaults, enable and start on install (procd
// gets the service), stop on upgrade and removal. An upgrade keeps a changed
// /etc/config/tgtun (the new default lands beside it as tgtun-opkg); remove takes the
// package's files and the init links away.
func TestOpkgInstallUpgradeRemove(t *testing.T) {
	rp := newRepos(t)
	rp.publish("0.1.0-r7", rp.feedKeys, "")
	r := rp.router(t)
	r.trustUsign(t, filepath.Join(rp.owrtKeys, usignPublicFile), filepath.Join(rp.feedKeys, usignPublicFile))
	opkgConf := "dest root /\ndest ram /tmp\nlists_dir ext /var/opkg-lists\noption overlay_root /overlay\n" +
		"option check_signature 1\narch all 1\narch noarch 1\narch x86_64 10\n" +
		"src/gz openwrt_core " + rp.url + "/openwrt/x86_64\n" +
		"src/gz tgtun " + rp.url + "/tgtun/x86_64\n"
	if err := r.WriteFile("etc/opkg.conf", []byte(opkgConf), 0o644); err != nil {
		t.Fatal(err)
	}

	out := r.mustSh(t, "opkg update")
	if strings.Count(out, "Signature check passed") != 2 {
		t.Fatalf("opkg update did not pass both signature checks:\n%s", out)
	}
	out = r.mustSh(t, "opkg install tgtun luci-app-tgtun")
	t.Logf("opkg install:\n%s", out)
	inst := r.mustSh(t, "opkg list-installed")
	for _, p := range append([]string{"tgtun - 0.1.0-r7", "luci-app-tgtun - 0.1.0-r7"}, openwrtDeps...) {
		if !strings.Contains(inst, p) {
			t.Errorf("opkg list-installed lacks %q:\n%s", p, inst)
		}
	}
	for _, f := range []string{"usr/sbin/tgtun", "etc/config/tgtun", "etc/init.d/tgtun", "etc/rc.d/S95tgtun",
		"usr/share/nftables.d/chain-pre/forward/30-tgtun.nft", "usr/share/nftables.d/chain-pre/input/30-tgtun.nft",
		"www/luci-static/resources/view/tgtun/status.js"} {
		if !r.exists(f) {
			t.Errorf("/%s missing after install", f)
		}
	}
	if r.exists("etc/uci-defaults/99-tgtun") {
		t.Error("uci-defaults script left behind: default_postinst did not run it")
	}
	if st, err := os.Stat(r.Path("etc/config/tgtun")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("/etc/config/tgtun: %v %v, want mode 0600", st.Mode(), err)
	}
	if got := r.methods(); got != "set" {
		t.Errorf("procd calls during install: %q, want the init script's start (set)", got)
	}

	// The admin sets a proxy; a new release changes the default config.
	r.mustSh(t, "uci set tgtun.primary.server=198.51.100.6 && uci commit tgtun")
	changed := readFileString(t, r.Path("etc/config/tgtun"))
	rp.publish("0.1.0-r8", rp.feedKeys, "# 0.1.0-r8")
	r.mustSh(t, "opkg update")
	out = r.mustSh(t, "opkg upgrade tgtun luci-app-tgtun")
	t.Logf("opkg upgrade:\n%s", out)
	if inst := r.mustSh(t, "opkg list-installed tgtun"); !strings.Contains(inst, "tgtun - 0.1.0-r8") {
		t.Errorf("after upgrade: %s", inst)
	}
	if got := readFileString(t, r.Path("etc/config/tgtun")); got != changed {
		t.Errorf("upgrade replaced the changed /etc/config/tgtun:\n%s\nwas:\n%s", got, changed)
	}
	if b, err := r.ReadFile("etc/config/tgtun-opkg"); err != nil || !strings.Contains(string(b), "# 0.1.0-r8") {
		t.Errorf("the new default config is not beside it as tgtun-opkg: %v", err)
	}
	if got := r.methods(); !strings.Contains(got, "set") {
		t.Errorf("procd calls during upgrade: %q, want the service started again (set)", got)
	}
	if !r.exists("etc/rc.d/S95tgtun") {
		t.Error("upgrade disabled the service")
	}

	out = r.mustSh(t, "opkg remove luci-app-tgtun tgtun")
	t.Logf("opkg remove:\n%s", out)
	for _, f := range []string{"usr/sbin/tgtun", "etc/init.d/tgtun", "etc/rc.d/S95tgtun", "etc/rc.d/K10tgtun",
		"usr/share/nftables.d/chain-pre/forward/30-tgtun.nft", "usr/share/nftables.d/chain-pre/input/30-tgtun.nft"} {
		if r.exists(f) {
			t.Errorf("/%s still there after remove", f)
		}
	}
	if got := r.methods(); got != "delete" {
		t.Errorf("procd calls during remove: %q, want the init script's stop (delete)", got)
	}
}

func readFileString(t *testing.T, p string) string { return string(readFile(t, p)) }

// TestOpkgRefusesUntrusted: opkg with usign checks refuses, each time from a fresh
// router: a feed whose index is signed by a key other than the feed's; an index changed
// after signing (another package's hash put in); a package changed after the index was
// made; and the right feed when the router trusts some other key instead of the feed's.
// OpenWrt's stub repository keeps working throughout: only tgtun's feed is refused.
func TestOpkgRefusesUntrusted(t *testing.T) {
	rp := newRepos(t)
	other := filepath.Join(t.TempDir(), "other-keys")
	if err := GenerateFeedKeys(other); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		keys    string           // the feed's signing keys
		trusted string           // the usign public key the router trusts for the feed
		tamper  func(*testing.T) // after publishing
		refusal string           // in opkg's output
	}{
		{name: "index signed by another key", keys: other, trusted: rp.feedKeys, refusal: "Signature check failed"},
		{name: "feed key not trusted", keys: rp.feedKeys, trusted: other, refusal: "Signature check failed"},
		{name: "index changed after signing", keys: rp.feedKeys, trusted: rp.feedKeys, refusal: "Signature check failed",
			tamper: func(t *testing.T) {
				list := readFile(t, rp.feedFile("Packages"))
				re := regexp.MustCompile(`(Package: tgtun\n(?:[^\n]+\n)*?SHA256sum: )[0-9a-f]{64}`)
				bad := re.ReplaceAll(list, []byte("${1}"+strings.Repeat("ab", 32)))
				if bytes.Equal(bad, list) {
					t.Fatal("no SHA256sum of tgtun in Packages")
				}
				writeGz(t, rp.feedFile("Packages.gz"), bad)
			}},
		{name: "package changed after indexing", keys: rp.feedKeys, trusted: rp.feedKeys, refusal: "Checksum or size mismatch",
			tamper: func(t *testing.T) { flipByte(t, rp.feedFile("tgtun_0.1.0-r7_x86_64.ipk")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp.publish("0.1.0-r7", tc.keys, "")
			if tc.tamper != nil {
				tc.tamper(t)
			}
			r := rp.router(t)
			r.trustUsign(t, filepath.Join(rp.owrtKeys, usignPublicFile), filepath.Join(tc.trusted, usignPublicFile))
			opkgConf := "dest root /\nlists_dir ext /var/opkg-lists\noption check_signature 1\n" +
				"arch all 1\narch noarch 1\narch x86_64 10\n" +
				"src/gz openwrt_core " + rp.url + "/openwrt/x86_64\nsrc/gz tgtun " + rp.url + "/tgtun/x86_64\n"
			if err := r.WriteFile("etc/opkg.conf", []byte(opkgConf), 0o644); err != nil {
				t.Fatal(err)
			}
			upd, _ := r.sh(t, "opkg update")
			if out, err := r.sh(t, "opkg install kmod-tun"); err != nil {
				t.Errorf("OpenWrt's repository refused too: %v\n%s", err, out)
			}
			out, err := r.sh(t, "opkg install tgtun")
			if err == nil || r.exists("usr/sbin/tgtun") {
				t.Fatalf("opkg installed tgtun:\nupdate:\n%s\ninstall:\n%s", upd, out)
			}
			if all := upd + out; !strings.Contains(all, tc.refusal) {
				t.Errorf("opkg's refusal does not say %q:\nupdate:\n%s\ninstall:\n%s", tc.refusal, upd, out)
			}
		})
	}
}

func writeGz(t *testing.T, path string, body []byte) {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write(body)
	_ = zw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// changeIndexedHash changes, inside the signed apk index, the hash it holds for a package
// (as an attacker who wants another package installed would), and packs the index again
// without a new signature.
func changeIndexedHash(t *testing.T, index, pkg string) {
	t.Helper()
	raw := readFile(t, index)
	if !bytes.HasPrefix(raw, []byte("ADBd")) {
		t.Fatal("packages.adb is not a compressed ADB")
	}
	stream, err := io.ReadAll(flate.NewReader(bytes.NewReader(raw[4:])))
	if err != nil {
		t.Fatal(err)
	}
	info, _, err := ReadAPKInfo(readFile(t, pkg))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(info.ADB)
	i := bytes.Index(stream, sum[:])
	if i < 0 {
		t.Fatal("the package's hash is not in the index")
	}
	stream[i] ^= 0xff
	var out bytes.Buffer
	if err := adbCompress(&out, stream); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(index, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// changeAPKFile changes one byte of a file's contents inside an .apk and packs it again:
// the package's metadata (and so the index's hash of it) stays, the file's SHA-256 in it
// no longer matches.
func changeAPKFile(t *testing.T, pkg, file string) {
	t.Helper()
	raw := readFile(t, pkg)
	stream, err := io.ReadAll(flate.NewReader(bytes.NewReader(raw[4:])))
	if err != nil {
		t.Fatal(err)
	}
	body := readFile(t, filesDir+file)
	i := bytes.Index(stream, body)
	if i < 0 {
		t.Fatalf("%s is not in %s", file, pkg)
	}
	stream[i+len(body)/2] ^= 0x20
	var out bytes.Buffer
	if err := adbCompress(&out, stream); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pkg, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// flipByte changes one byte near the end of a file (inside the data, keeping its size).
func flipByte(t *testing.T, path string) {
	t.Helper()
	b := readFile(t, path)
	b[len(b)-9] ^= 0x20
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestApkAddUpgradeDel is TestOpkgInstallUpgradeRemove with OpenWrt 25.12's package
// manager, apk-tools 3.0.6: `apk add` from the signed packages.adb of tgtun's feed and of
// the stub OpenWrt repository, each trusted by its own key in /etc/apk/keys; an upgrade
// keeps a changed /etc/config/tgtun (the new one as tgtun.apk-new); `apk del` removes.
func TestApkAddUpgradeDel(t *testing.T) {
	rp := newRepos(t)
	rp.publish("0.1.0-r7", rp.feedKeys, "")
	r := rp.router(t)
	r.trustAPK(t, map[string]string{"openwrt.pem": filepath.Join(rp.owrtKeys, apkPublicFile),
		"tgtun-feed.pem": filepath.Join(rp.feedKeys, apkPublicFile)})
	apkSetup(t, r, rp)

	r.mustSh(t, "apk update")
	out := r.mustSh(t, "apk add tgtun luci-app-tgtun")
	t.Logf("apk add:\n%s", out)
	inst := r.mustSh(t, "apk list --installed")
	for _, p := range append([]string{"tgtun-0.1.0-r7", "luci-app-tgtun-0.1.0-r7"}, openwrtDeps...) {
		if !strings.Contains(inst, p) {
			t.Errorf("apk list --installed lacks %q:\n%s", p, inst)
		}
	}
	for _, f := range []string{"usr/sbin/tgtun", "etc/config/tgtun", "etc/init.d/tgtun", "etc/rc.d/S95tgtun",
		"usr/share/nftables.d/chain-pre/forward/30-tgtun.nft", "usr/share/nftables.d/chain-pre/input/30-tgtun.nft",
		"www/luci-static/resources/view/tgtun/status.js"} {
		if !r.exists(f) {
			t.Errorf("/%s missing after apk add", f)
		}
	}
	if r.exists("etc/uci-defaults/99-tgtun") {
		t.Error("uci-defaults script left behind: default_postinst did not run it")
	}
	if got := r.methods(); got != "set" {
		t.Errorf("procd calls during apk add: %q, want the init script's start (set)", got)
	}

	r.mustSh(t, "uci set tgtun.primary.server=198.51.100.6 && uci commit tgtun")
	changed := readFileString(t, r.Path("etc/config/tgtun"))
	rp.publish("0.1.0-r8", rp.feedKeys, "# 0.1.0-r8")
	r.mustSh(t, "apk update")
	out = r.mustSh(t, "apk upgrade tgtun luci-app-tgtun")
	t.Logf("apk upgrade:\n%s", out)
	if inst := r.mustSh(t, "apk list --installed tgtun"); !strings.Contains(inst, "tgtun-0.1.0-r8") {
		t.Errorf("after upgrade: %s", inst)
	}
	if got := readFileString(t, r.Path("etc/config/tgtun")); got != changed {
		t.Errorf("upgrade replaced the changed /etc/config/tgtun:\n%s\nwas:\n%s", got, changed)
	}
	if b, err := r.ReadFile("etc/config/tgtun.apk-new"); err != nil || !strings.Contains(string(b), "# 0.1.0-r8") {
		t.Errorf("the new default config is not beside it as tgtun.apk-new: %v", err)
	}
	if got := r.methods(); !strings.Contains(got, "set") {
		t.Errorf("procd calls during upgrade: %q, want the service started again (set)", got)
	}

	out = r.mustSh(t, "apk del luci-app-tgtun tgtun")
	t.Logf("apk del:\n%s", out)
	for _, f := range []string{"usr/sbin/tgtun", "etc/init.d/tgtun", "etc/rc.d/S95tgtun", "etc/rc.d/K10tgtun",
		"usr/share/nftables.d/chain-pre/forward/30-tgtun.nft", "usr/share/nftables.d/chain-pre/input/30-tgtun.nft"} {
		if r.exists(f) {
			t.Errorf("/%s still there after apk del", f)
		}
	}
	if got := r.methods(); got != "delete" {
		t.Errorf("procd calls during apk del: %q, want the init script's stop (delete)", got)
	}
}

// apkSetup points the root's apk at both repositories and creates its database.
func apkSetup(t *testing.T, r *router, rp *repos) {
	t.Helper()
	repos := rp.url + "/openwrt/x86_64/packages.adb\n" + rp.url + "/tgtun/x86_64/packages.adb\n"
	for name, body := range map[string]string{"etc/apk/repositories": repos, "etc/apk/arch": "x86_64\n"} {
		if err := r.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.mustSh(t, "apk add --initdb")
}

// TestApkRefusesUntrusted: apk refuses tgtun from an index signed by another key, from an
// index changed after signing, as a package changed after indexing, and when the router
// trusts some other key instead of the feed's; OpenWrt's repository keeps working.
func TestApkRefusesUntrusted(t *testing.T) {
	rp := newRepos(t)
	other := filepath.Join(t.TempDir(), "other-keys")
	if err := GenerateFeedKeys(other); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		keys    string
		trusted string
		tamper  func(*testing.T)
		refusal string
	}{
		{name: "index signed by another key", keys: other, trusted: rp.feedKeys, refusal: "UNTRUSTED signature"},
		{name: "feed key not trusted", keys: rp.feedKeys, trusted: other, refusal: "UNTRUSTED signature"},
		{name: "index changed after signing", keys: rp.feedKeys, trusted: rp.feedKeys, refusal: "UNTRUSTED signature",
			tamper: func(t *testing.T) {
				changeIndexedHash(t, rp.feedFile("packages.adb"), rp.feedFile("tgtun-0.1.0-r7.apk"))
			}},
		{name: "package changed after indexing", keys: rp.feedKeys, trusted: rp.feedKeys, refusal: "file integrity error",
			tamper: func(t *testing.T) { changeAPKFile(t, rp.feedFile("tgtun-0.1.0-r7.apk"), "/etc/init.d/tgtun") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp.publish("0.1.0-r7", tc.keys, "")
			if tc.tamper != nil {
				tc.tamper(t)
			}
			r := rp.router(t)
			r.trustAPK(t, map[string]string{"openwrt.pem": filepath.Join(rp.owrtKeys, apkPublicFile),
				"tgtun-feed.pem": filepath.Join(tc.trusted, apkPublicFile)})
			apkSetup(t, r, rp)
			upd, _ := r.sh(t, "apk update")
			if out, err := r.sh(t, "apk add kmod-tun"); err != nil {
				t.Errorf("OpenWrt's repository refused too: %v\n%s", err, out)
			}
			out, err := r.sh(t, "apk add tgtun")
			if err == nil || r.exists("usr/sbin/tgtun") {
				t.Fatalf("apk added tgtun:\nupdate:\n%s\nadd:\n%s", upd, out)
			}
			if !strings.Contains(upd+out, tc.refusal) {
				t.Errorf("apk's refusal does not say %q:\nupdate:\n%s\nadd:\n%s", tc.refusal, upd, out)
			}
		})
	}
}
