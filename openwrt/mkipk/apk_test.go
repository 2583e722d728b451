package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestAPKPerArch builds the tgtun .apk for every release arch and reads back every field
// with the reader of adb.go: the info apk-tools and OpenWrt 25.12 need, every file with
// mode, owner, size, time, hash and contents, the scripts, the unique id.
func TestAPKPerArch(t *testing.T) {
	for _, target := range targets[:releaseTargets] {
		t.Run(target.Arch, func(t *testing.T) {
			prog := tinyProgram(t, target)
			out := t.TempDir()
			err := run([]string{"-format", "apk", "-name", "tgtun", "-version", "0.1.0-r3", "-arch", target.Arch,
				"-bin", prog, "-files", filesDir, "-scripts", scriptsDir, "-mtime", "1700000000", "-out", out},
				io.Discard, os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			raw := readFile(t, filepath.Join(out, "tgtun-0.1.0-r3.apk"))
			if !bytes.HasPrefix(raw, []byte("ADBd")) {
				t.Fatalf("package starts %q, want ADBd (deflated ADB)", raw[:4])
			}
			info, f, err := ReadAPKInfo(raw)
			if err != nil {
				t.Fatal(err)
			}
			i := info.Info
			for field, want := range map[int]string{
				piName: "tgtun", piVersion: "0.1.0-r3", piArch: target.Arch, piLicense: "Apache-2.0",
				piOrigin: "openwrt", piURL: projectURL, piMaintainer: "tgtun developers <" + projectURL + ">",
			} {
				if got := i.Field(field).Str(); got != want {
					t.Errorf("info field %d = %q, want %q", field, got, want)
				}
			}
			if d := i.Field(piDescription).Str(); !strings.HasPrefix(d, "Tunnels only messenger traffic") || strings.Contains(d, "\n") {
				t.Errorf("description %q", d)
			}
			var deps []string
			for _, d := range i.Field(piDepends).Items {
				deps = append(deps, d.Field(depName).Str())
			}
			if want := []string{"ca-bundle", "kmod-nft-core", "kmod-nft-socket", "kmod-nft-tproxy", "kmod-tun", "libc"}; !slices.Equal(deps, want) {
				t.Errorf("depends %v, want %v", deps, want)
			}
			// The unique id is SHA-256 (first 20 bytes) of the ADB block with the id zeroed.
			uid := i.Field(piHashes).Blob
			adb := bytes.Clone(info.ADB)
			at := bytes.Index(adb, uid)
			if len(uid) != 20 || at < 0 {
				t.Fatalf("unique id %x not in the ADB block", uid)
			}
			copy(adb[at:], make([]byte, 20))
			if sum := sha256.Sum256(adb); !bytes.Equal(sum[:20], uid) {
				t.Errorf("unique id %x, want %x", uid, sum[:20])
			}

			files := APKFiles(f)
			var installed uint64
			for _, af := range files {
				installed += uint64(len(af.body))
			}
			if got := i.Field(piInstalledSize).Int; got != installed {
				t.Errorf("installed-size %d, want %d", got, installed)
			}
			wantFiles := map[string]struct {
				src  string
				mode int64
			}{
				"/usr/sbin/tgtun":            {prog, 0o755},
				"/etc/config/tgtun":          {filesDir + "/etc/config/tgtun", 0o600},
				"/etc/init.d/tgtun":          {filesDir + "/etc/init.d/tgtun", 0o755},
				"/etc/uci-defaults/99-tgtun": {filesDir + "/etc/uci-defaults/99-tgtun", 0o755},
				"/usr/share/nftables.d/chain-pre/forward/30-tgtun.nft": {filesDir + "/usr/share/nftables.d/chain-pre/forward/30-tgtun.nft", 0o644},
				"/usr/share/nftables.d/chain-pre/input/30-tgtun.nft":   {filesDir + "/usr/share/nftables.d/chain-pre/input/30-tgtun.nft", 0o644},
			}
			for name, w := range wantFiles {
				af, ok := files[name]
				if !ok {
					t.Errorf("no %s", name)
					continue
				}
				if !bytes.Equal(af.body, readFile(t, w.src)) || af.mode != w.mode {
					t.Errorf("%s: mode %o or contents differ (want %o, %s)", name, af.mode, w.mode, w.src)
				}
			}
			list := string(files["/lib/apk/packages/tgtun.list"].body)
			for name := range files {
				if !strings.Contains(list, name+"\n") {
					t.Errorf("tgtun.list misses %s", name)
				}
			}
			if got := string(files["/lib/apk/packages/tgtun.conffiles"].body); got != "/etc/config/tgtun\n" {
				t.Errorf("conffiles %q", got)
			}
			sum := sha256.Sum256(readFile(t, filesDir+"/etc/config/tgtun"))
			if got, want := string(files["/lib/apk/packages/tgtun.conffiles_static"].body), "/etc/config/tgtun "+hexString(sum[:])+"\n"; got != want {
				t.Errorf("conffiles_static %q, want %q", got, want)
			}
			for _, d := range f.Root.Field(pkgPaths).Items {
				acl := d.Field(diACL)
				if acl.Field(aclMode).Int != 0o755 || acl.Field(aclUser).Str() != "root" || acl.Field(aclGroup).Str() != "root" {
					t.Errorf("dir %q: acl %v", d.Field(diName).Str(), acl)
				}
				for _, fi := range d.Field(diFiles).Items {
					if fi.Field(fiMTime).Int != 1700000000 || fi.Field(fiACL).Field(aclUser).Str() != "root" {
						t.Errorf("%s/%s: mtime %d, owner %q", d.Field(diName).Str(), fi.Field(fiName).Str(),
							fi.Field(fiMTime).Int, fi.Field(fiACL).Field(aclUser).Str())
					}
				}
			}
			sc := f.Root.Field(pkgScripts)
			post, pre := sc.Field(scriptPostInstall).Str(), sc.Field(scriptPreDeinstall).Str()
			for _, want := range []string{guardLine, "default_postinst\n", `export pkgname="tgtun"`, "/etc/init.d/firewall reload"} {
				if !strings.Contains(post, want) {
					t.Errorf("post-install misses %q:\n%s", want, post)
				}
			}
			if !strings.Contains(pre, guardLine) || !strings.Contains(pre, "default_prerm\n") {
				t.Errorf("pre-deinstall:\n%s", pre)
			}
			if up := sc.Field(scriptPostUpgrade).Str(); !strings.HasPrefix(up, "#!/bin/sh\nexport PKG_UPGRADE=1\n") || !strings.Contains(up, "default_postinst") {
				t.Errorf("post-upgrade:\n%s", up)
			}
			if got := sc.Field(scriptPostDeinstall).Str(); got != string(readFile(t, scriptsDir+"/postrm")) {
				t.Errorf("post-deinstall is not scripts/postrm:\n%s", got)
			}
		})
	}
}

const guardLine = `[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0`

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

// TestAPKNoarchAndDeterministic: the LuCI package is noarch with luci-base among its
// dependencies, and two builds of the same input are byte-equal.
func TestAPKNoarchAndDeterministic(t *testing.T) {
	var prev []byte
	for range 2 {
		out := t.TempDir()
		if err := run([]string{"-format", "apk", "-name", "luci-app-tgtun", "-version", "1.2.3_rc1-r2", "-arch", "all",
			"-tree", "../../luci-app/htdocs:/www", "-files", "../../luci-app/root",
			"-lmo", filepath.Join(poDir, "ru", "tgtun.po") + ":/usr/lib/lua/luci/i18n/tgtun.ru.lmo",
			"-out", out}, io.Discard, os.Stderr); err != nil {
			t.Fatal(err)
		}
		raw := readFile(t, filepath.Join(out, "luci-app-tgtun-1.2.3_rc1-r2.apk"))
		if prev != nil && !bytes.Equal(prev, raw) {
			t.Error("two builds differ")
		}
		prev = raw
	}
	info, f, err := ReadAPKInfo(prev)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Info.Field(piArch).Str(); got != "noarch" {
		t.Errorf("arch %q, want noarch", got)
	}
	var deps []string
	for _, d := range info.Info.Field(piDepends).Items {
		deps = append(deps, d.Field(depName).Str())
	}
	if !slices.Contains(deps, "luci-base") || !slices.Contains(deps, "tgtun") {
		t.Errorf("depends %v", deps)
	}
	lmo, ok := APKFiles(f)["/usr/lib/lua/luci/i18n/tgtun.ru.lmo"]
	if !ok {
		t.Fatal("no tgtun.ru.lmo")
	}
	if _, err := DecodeLMO(lmo.body); err != nil {
		t.Error(err)
	}
}

func TestAPKRejects(t *testing.T) {
	for _, v := range []string{"0.1.0-git6a9fc8c", "v1.0", "1.0-r", "1.0_foo"} {
		err := run([]string{"-format", "apk", "-name", "tgtun", "-version", v, "-arch", "x86_64",
			"-files", filesDir, "-out", t.TempDir()}, io.Discard, io.Discard)
		if err == nil {
			t.Errorf("apk version %q accepted", v)
		}
	}
	if err := run([]string{"-format", "deb", "-name", "tgtun", "-version", "1", "-arch", "x86_64",
		"-files", filesDir, "-out", t.TempDir()}, io.Discard, io.Discard); err == nil {
		t.Error("-format deb accepted")
	}
	for name, b := range map[string][]byte{
		"empty":       {},
		"no header":   []byte("ADB.xxxx"),
		"short block": append([]byte("ADB.pckg"), 0xff, 0, 0, 0),
		"garbage":     []byte("ADBd\x00\x01\x02"),
	} {
		if _, _, err := ReadAPKInfo(b); err == nil {
			t.Errorf("%s: read without an error", name)
		}
	}
}

func FuzzReadADB(f *testing.F) {
	f.Add([]byte("ADB.pckg\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ReadADB(b)
		_, _, _ = ReadAPKInfo(b)
	})
}

// TestScriptsGuard runs the install and remove scripts of both formats in a root without
// /lib/functions.sh (an image being assembled): they must succeed and do nothing. With a
// functions.sh that records its calls, they must call the default functions.
func TestScriptsGuard(t *testing.T) {
	b := &Build{Control: Control{Package: "tgtun"}}
	s, err := readScripts(scriptsDir)
	if err != nil {
		t.Fatal(err)
	}
	b.Scripts = s
	apkScripts := b.apkScripts()
	scripts := map[string]string{
		"ipk postinst":      defaultPostinst,
		"ipk prerm":         defaultPrerm,
		"apk post-install":  string(apkScripts[scriptPostInstall]),
		"apk post-upgrade":  string(apkScripts[scriptPostUpgrade]),
		"apk pre-deinstall": string(apkScripts[scriptPreDeinstall]),
	}
	for name, body := range scripts {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			script := filepath.Join(t.TempDir(), "script")
			if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
				t.Fatal(err)
			}
			runIt := func() (string, error) {
				cmd := exec.Command("sh", script)
				cmd.Env = append(os.Environ(), "IPKG_INSTROOT="+root)
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			if out, err := runIt(); err != nil {
				t.Errorf("in a root without lib/functions.sh: %v\n%s", err, out)
			}
			// An empty functions.sh is a broken root too: -s skips it as OpenWrt's does.
			if err := os.MkdirAll(filepath.Join(root, "lib"), 0o755); err != nil {
				t.Fatal(err)
			}
			fn := filepath.Join(root, "lib", "functions.sh")
			if err := os.WriteFile(fn, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := runIt(); err != nil {
				t.Errorf("with an empty lib/functions.sh: %v\n%s", err, out)
			}
			stub := "default_postinst() { echo called default_postinst; }\n" +
				"default_prerm() { echo called default_prerm; }\n" +
				"add_group_and_user() { :; }\n"
			if err := os.WriteFile(fn, []byte(stub), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := runIt()
			if err != nil {
				t.Fatalf("with functions.sh: %v\n%s", err, out)
			}
			want := "called default_postinst"
			if strings.Contains(name, "prerm") || strings.Contains(name, "deinstall") {
				want = "called default_prerm"
			}
			if !strings.Contains(out, want) {
				t.Errorf("output %q, want %q", out, want)
			}
		})
	}
}
