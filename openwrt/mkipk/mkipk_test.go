package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paths of the package sources, relative to this test's directory.
const (
	filesDir   = "../files"
	scriptsDir = "../scripts"
	makefile   = "../Makefile"
)

func TestPrintArchs(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-print-archs"}, &out, io.Discard); err != nil {
		t.Fatalf("-print-archs: %v", err)
	}
	want := "mipsel_24kc mipsle softfloat\n" +
		"mips_24kc mips softfloat\n" +
		"arm_cortex-a7_neon-vfpv4 arm 7\n" +
		"aarch64_cortex-a53 arm64 -\n" +
		"x86_64 amd64 -\n"
	if out.String() != want {
		t.Errorf("-print-archs:\n%s\nwant:\n%s", out.String(), want)
	}

	out.Reset()
	if err := run([]string{"-print-all-archs"}, &out, io.Discard); err != nil {
		t.Fatalf("-print-all-archs: %v", err)
	}
	if !strings.HasPrefix(out.String(), want) || strings.Count(out.String(), "\n") != len(targets) {
		t.Errorf("-print-all-archs does not start with the release archs or misses some:\n%s", out.String())
	}

	for _, tc := range []struct{ arch, env string }{
		{"mipsel_24kc", "GOOS=linux GOARCH=mipsle CGO_ENABLED=0 GOMIPS=softfloat"},
		{"mips_24kc", "GOOS=linux GOARCH=mips CGO_ENABLED=0 GOMIPS=softfloat"},
		{"arm_cortex-a7_neon-vfpv4", "GOOS=linux GOARCH=arm CGO_ENABLED=0 GOARM=7"},
		{"aarch64_cortex-a53", "GOOS=linux GOARCH=arm64 CGO_ENABLED=0"},
		{"x86_64", "GOOS=linux GOARCH=amd64 CGO_ENABLED=0"},
		{"i386_pentium4", "GOOS=linux GOARCH=386 CGO_ENABLED=0 GO386=sse2"},
	} {
		out.Reset()
		if err := run([]string{"-print-env", tc.arch}, &out, io.Discard); err != nil {
			t.Fatalf("-print-env %s: %v", tc.arch, err)
		}
		if got := strings.TrimSpace(out.String()); got != tc.env {
			t.Errorf("-print-env %s = %q, want %q", tc.arch, got, tc.env)
		}
	}
	if err := run([]string{"-print-env", "sparc_v8"}, io.Discard, io.Discard); err == nil {
		t.Error("-print-env of an unknown architecture succeeded")
	}
}

// elfWant is what the program inside a package for an architecture must be.
var elfWant = map[string]struct {
	machine elf.Machine
	order   binary.ByteOrder
	class   elf.Class
	setting string // Go build setting that carries the variant, "" for none
}{
	"mipsel_24kc":              {elf.EM_MIPS, binary.LittleEndian, elf.ELFCLASS32, "GOMIPS"},
	"mips_24kc":                {elf.EM_MIPS, binary.BigEndian, elf.ELFCLASS32, "GOMIPS"},
	"arm_cortex-a7_neon-vfpv4": {elf.EM_ARM, binary.LittleEndian, elf.ELFCLASS32, "GOARM"},
	"aarch64_cortex-a53":       {elf.EM_AARCH64, binary.LittleEndian, elf.ELFCLASS64, ""},
	"x86_64":                   {elf.EM_X86_64, binary.LittleEndian, elf.ELFCLASS64, ""},
}

func TestPackagePerArch(t *testing.T) {
	requireFile(t, filepath.Join(filesDir, "etc/config/tgtun"))
	mtime := int64(1_700_000_000)
	out := t.TempDir()
	for _, target := range targets[:releaseTargets] {
		t.Run(target.Arch, func(t *testing.T) {
			want, ok := elfWant[target.Arch]
			if !ok {
				t.Fatalf("no ELF expectation for release arch %s", target.Arch)
			}
			bin := tinyProgram(t, target)
			args := []string{
				"-name", "tgtun", "-version", "1.2.3-r1", "-arch", target.Arch,
				"-bin", bin, "-files", filesDir, "-scripts", scriptsDir,
				"-out", out, "-mtime", "1700000000",
			}
			var stdout bytes.Buffer
			if err := run(args, &stdout, io.Discard); err != nil {
				t.Fatalf("mkipk %v: %v", args, err)
			}
			ipk := filepath.Join(out, "tgtun_1.2.3-r1_"+target.Arch+".ipk")
			if got := strings.TrimSpace(stdout.String()); got != ipk {
				t.Errorf("mkipk printed %q, want the package path %q", got, ipk)
			}
			pkg := openIPK(t, ipk)

			// Control file: every field, exactly.
			ctl := parseControl(t, pkg.control["./control"].body)
			wantCtl := map[string]string{
				"Package":        "tgtun",
				"Version":        "1.2.3-r1",
				"Depends":        "libc, kmod-tun, kmod-nft-core, kmod-nft-tproxy, kmod-nft-socket, ca-bundle",
				"Source":         "openwrt",
				"SourceName":     "tgtun",
				"License":        "Apache-2.0",
				"Section":        "net",
				"URL":            "https://github.com/tgtun/tgtun",
				"Maintainer":     "tgtun developers <https://github.com/tgtun/tgtun>",
				"Architecture":   target.Arch,
				"Installed-Size": strconv.Itoa(len(pkg.dataTar)),
			}
			for k, v := range wantCtl {
				if ctl[k] != v {
					t.Errorf("control %s = %q, want %q", k, ctl[k], v)
				}
			}
			if !strings.HasPrefix(ctl["Description"], "Tunnels only messenger traffic") || !strings.Contains(ctl["Description"], "\n ") {
				t.Errorf("control Description = %q: want the multi-line preset with continuation lines", ctl["Description"])
			}
			if extra := len(ctl) - len(wantCtl) - 1; extra != 0 {
				t.Errorf("control has %d unexpected fields: %v", extra, ctl)
			}

			if got := string(pkg.control["./conffiles"].body); got != "/etc/config/tgtun\n" {
				t.Errorf("conffiles = %q, want /etc/config/tgtun", got)
			}
			for _, name := range []string{"./postinst", "./prerm", "./postinst-pkg", "./postrm"} {
				m, ok := pkg.control[name]
				if !ok {
					t.Errorf("control.tar.gz has no %s", name)
					continue
				}
				if m.mode != 0o755 || !bytes.HasPrefix(m.body, []byte("#!/bin/sh\n")) {
					t.Errorf("%s: mode %o, starts %q; want an executable #!/bin/sh script", name, m.mode, firstLine(m.body))
				}
			}
			if !bytes.Contains(pkg.control["./postinst"].body, []byte(`default_postinst "$0" "$@"`)) ||
				!bytes.Contains(pkg.control["./prerm"].body, []byte(`default_prerm "$0" "$@"`)) {
				t.Error("postinst/prerm do not hand over to default_postinst/default_prerm as OpenWrt packages do")
			}
			if postinst := readFile(t, filepath.Join(scriptsDir, "postinst")); !bytes.Equal(pkg.control["./postinst-pkg"].body, postinst) {
				t.Error("postinst-pkg differs from scripts/postinst")
			}

			// Data: the tree of openwrt/files plus the program, with the modes OpenWrt uses.
			wantModes := map[string]int64{"./": 0o755, "./usr/sbin/tgtun": 0o755}
			err := filepath.WalkDir(filesDir, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(filesDir, p)
				if rel == "." {
					return nil
				}
				name := "./" + filepath.ToSlash(rel)
				if d.IsDir() {
					wantModes[name+"/"] = 0o755
				} else {
					wantModes[name] = 0o644
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{"./usr/", "./usr/sbin/"} {
				wantModes[d] = 0o755
			}
			for name, mode := range map[string]int64{
				"./etc/config/tgtun":                                    0o600,
				"./etc/init.d/tgtun":                                    0o755,
				"./etc/uci-defaults/99-tgtun":                           0o755,
				"./usr/share/nftables.d/chain-pre/forward/30-tgtun.nft": 0o644,
				"./usr/share/nftables.d/chain-pre/input/30-tgtun.nft":   0o644,
			} {
				if _, ok := wantModes[name]; !ok {
					t.Errorf("openwrt/files has no %s", name)
				}
				wantModes[name] = mode
			}
			var names []string
			for _, m := range pkg.data {
				names = append(names, m.name)
				want, ok := wantModes[m.name]
				switch {
				case !ok:
					t.Errorf("data has unexpected %s", m.name)
				case m.mode != want:
					t.Errorf("data %s: mode %o, want %o", m.name, m.mode, want)
				}
			}
			for name := range wantModes {
				if !slices.Contains(names, name) {
					t.Errorf("data lacks %s", name)
				}
			}
			if !slices.IsSortedFunc(names, func(a, b string) int { return comparePaths(a[1:], b[1:]) }) {
				t.Errorf("data entries not in tar --sort=name order: %v", names)
			}
			for _, tarball := range [][]member2{pkg.outer, pkg.controlList, pkg.data} {
				for _, m := range tarball {
					if m.uid != 0 || m.gid != 0 || m.uname != "" || m.gname != "" || !m.mtime.Equal(time.Unix(mtime, 0)) || !m.gnu {
						t.Errorf("%s: owner %d:%d (%q:%q), time %v, gnu %v; want 0:0, no names, %v, GNU format",
							m.name, m.uid, m.gid, m.uname, m.gname, m.mtime, m.gnu, time.Unix(mtime, 0))
					}
				}
			}

			// The program is the one for this architecture.
			prog := filepath.Join(t.TempDir(), "tgtun")
			if err := os.WriteFile(prog, pkg.dataFile(t, "./usr/sbin/tgtun"), 0o755); err != nil {
				t.Fatal(err)
			}
			ef, err := elf.Open(prog)
			if err != nil {
				t.Fatalf("packaged program is not ELF: %v", err)
			}
			defer ef.Close()
			if ef.Machine != want.machine || ef.ByteOrder != want.order || ef.Class != want.class {
				t.Errorf("ELF %v %v %v, want %v %v %v", ef.Machine, ef.ByteOrder, ef.Class, want.machine, want.order, want.class)
			}
			info, err := buildinfo.ReadFile(prog)
			if err != nil {
				t.Fatalf("packaged program has no Go build info: %v", err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			if settings["GOARCH"] != target.GOARCH {
				t.Errorf("program GOARCH %q, want %q", settings["GOARCH"], target.GOARCH)
			}
			if want.setting != "" && settings[want.setting] != target.Variant {
				t.Errorf("program %s %q, want %q", want.setting, settings[want.setting], target.Variant)
			}

			// GNU tar, an independent reader, sees the same members in the same order.
			listed := gnuTarList(t, ipk)
			if want := []string{"./debian-binary", "./data.tar.gz", "./control.tar.gz"}; !slices.Equal(listed, want) {
				t.Errorf("tar -tzf %s = %v, want %v", ipk, listed, want)
			}
		})
	}
}

func TestPackageIsDeterministic(t *testing.T) {
	requireFile(t, filepath.Join(filesDir, "etc/config/tgtun"))
	bin := tinyProgram(t, targets[0])
	build := func(dir string) []byte {
		t.Setenv("SOURCE_DATE_EPOCH", "1600000000")
		args := []string{"-name", "tgtun", "-version", "1.0.0-r1", "-arch", targets[0].Arch,
			"-bin", bin, "-files", filesDir, "-scripts", scriptsDir, "-out", dir}
		if err := run(args, io.Discard, io.Discard); err != nil {
			t.Fatalf("mkipk: %v", err)
		}
		return readFile(t, filepath.Join(dir, "tgtun_1.0.0-r1_"+targets[0].Arch+".ipk"))
	}
	a, b := build(t.TempDir()), build(t.TempDir())
	if !bytes.Equal(a, b) {
		t.Fatal("two builds from the same inputs differ")
	}
	pkg := openIPKBytes(t, a)
	if got := pkg.outer[0].mtime; !got.Equal(time.Unix(1600000000, 0)) {
		t.Errorf("mtime %v, want SOURCE_DATE_EPOCH 1600000000", got)
	}
}

// TestArchAllTrees packs a LuCI-style package: no program, architecture all, several
// trees under different prefixes.
func TestArchAllTrees(t *testing.T) {
	root := t.TempDir()
	write := func(rel, body string, mode fs.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("root/usr/share/luci/menu.d/luci-app-tgtun.json", "{}\n", 0o600)
	write("root/usr/libexec/rpcd/tgtun", "#!/bin/sh\n", 0o644)
	write("root/usr/share/rpcd/acl.d/luci-app-tgtun.json", "{}\n", 0o664)
	write("root/usr/share/rpcd/acl.d/luci-app-tgtun.json~", "backup\n", 0o644)
	write("htdocs/luci-static/resources/view/tgtun/settings.js", "'use strict';\n", 0o644)
	write("htdocs/luci-static/resources/view/tgtun/.gitkeep", "", 0o644)
	out := t.TempDir()
	args := []string{"-name", "luci-app-tgtun", "-version", "1.0.0-r1", "-arch", "all",
		"-tree", filepath.Join(root, "root") + ":/", "-tree", filepath.Join(root, "htdocs") + ":/www", "-out", out}
	if err := run(args, io.Discard, io.Discard); err != nil {
		t.Fatalf("mkipk: %v", err)
	}
	pkg := openIPK(t, filepath.Join(out, "luci-app-tgtun_1.0.0-r1_all.ipk"))
	ctl := parseControl(t, pkg.control["./control"].body)
	if ctl["Architecture"] != "all" || ctl["Depends"] != "libc, tgtun, luci-base" || ctl["Section"] != "luci" {
		t.Errorf("control = %v", ctl)
	}
	if _, ok := pkg.control["./conffiles"]; ok {
		t.Error("a package without /etc/config files has a conffiles list")
	}
	files := map[string]int64{}
	for _, m := range pkg.data {
		if !strings.HasSuffix(m.name, "/") {
			files[m.name] = m.mode
		}
	}
	want := map[string]int64{
		"./usr/share/luci/menu.d/luci-app-tgtun.json":        0o644,
		"./usr/libexec/rpcd/tgtun":                           0o755,
		"./usr/share/rpcd/acl.d/luci-app-tgtun.json":         0o644,
		"./www/luci-static/resources/view/tgtun/settings.js": 0o644,
	}
	if len(files) != len(want) {
		t.Errorf("data files %v, want %v", files, want)
	}
	for name, mode := range want {
		if files[name] != mode {
			t.Errorf("%s: mode %o (present %v), want %o", name, files[name], files[name] != 0, mode)
		}
	}
}

func TestRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	base := []string{"-out", t.TempDir(), "-bin", bin}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no name", []string{"-version", "1", "-arch", "x86_64"}},
		{"unknown arch", []string{"-name", "tgtun", "-version", "1", "-arch", "sparc"}},
		{"underscore in version", []string{"-name", "tgtun", "-version", "1_2", "-arch", "x86_64"}},
		{"upper-case name", []string{"-name", "TGTUN", "-version", "1", "-arch", "x86_64", "-section", "net", "-description", "d"}},
		{"no preset", []string{"-name", "other", "-version", "1", "-arch", "x86_64"}},
		{"missing conffile", []string{"-name", "tgtun", "-version", "1", "-arch", "x86_64", "-conffile", "/etc/nope"}},
		{"same path twice", []string{"-name", "tgtun", "-version", "1", "-arch", "x86_64", "-tree", dir + ":/usr/sbin/tgtun-dir", "-tree", dir + ":/usr/sbin/tgtun-dir"}},
		{"symlink in tree", []string{"-name", "tgtun", "-version", "1", "-arch", "x86_64", "-tree", dir + ":/opt"}},
		{"relative prefix", []string{"-name", "tgtun", "-version", "1", "-arch", "x86_64", "-tree", dir + ":opt"}},
		{"bad SOURCE_DATE_EPOCH", []string{"-name", "tgtun", "-version", "1", "-arch", "x86_64", "-mtime", "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "bad SOURCE_DATE_EPOCH" {
				t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
			}
			if err := run(append(slices.Clone(base), tc.args...), io.Discard, io.Discard); err == nil {
				t.Errorf("mkipk %v succeeded", tc.args)
			}
		})
	}
}

func TestParseTreeInput(t *testing.T) {
	for _, tc := range []struct {
		in       string
		src, dst string
		ok       bool
	}{
		{"luci-app/htdocs:/www", "luci-app/htdocs", "/www", true},
		{"openwrt/files:/", "openwrt/files", "/", true},
		{"c:/dir:/www", "c:/dir", "/www", true},
		{"files", "", "", false},
		{":/www", "", "", false},
		{"files:", "", "", false},
		{"files:www", "", "", false},
	} {
		got, err := parseTreeInput(tc.in)
		if (err == nil) != tc.ok || got.Src != tc.src || got.Dest != tc.dst {
			t.Errorf("parseTreeInput(%q) = %+v, %v; want %q %q ok=%v", tc.in, got, err, tc.src, tc.dst, tc.ok)
		}
	}
}

func FuzzParseTreeInput(f *testing.F) {
	for _, s := range []string{"a:/b", "luci-app/htdocs:/www", ":", "a:", ":/", "a:b:/c", "::/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		in, err := parseTreeInput(s)
		if err != nil {
			return
		}
		if in.Src == "" || !strings.HasPrefix(in.Dest, "/") || in.Src+":"+in.Dest != s || strings.Contains(in.Dest, ":") {
			t.Errorf("parseTreeInput(%q) = %+v", s, in)
		}
	})
}

// TestMakefileMatchesFiles keeps the SDK package and the mkipk package the same: the
// Makefile installs every file of openwrt/files where mkipk puts it, and its postinst and
// postrm are the scripts mkipk packs.
func TestMakefileMatchesFiles(t *testing.T) {
	mk := string(readFile(t, makefile))
	for _, want := range []string{
		"include $(TOPDIR)/rules.mk",
		"PKG_NAME:=tgtun",
		"PKG_LICENSE:=Apache-2.0",
		"PKG_SOURCE_PROTO:=git",
		"PKG_SOURCE_URL:=https://github.com/tgtun/tgtun.git",
		"GO_PKG:=github.com/tgtun/tgtun\n",
		"GO_PKG_BUILD_PKG:=$(GO_PKG)/daemon",
		"GO_PKG_LDFLAGS_X:=main.version=",
		"../../lang/golang/golang-package.mk",
		"DEPENDS:=$(GO_ARCH_DEPENDS) +kmod-tun +kmod-nft-core +kmod-nft-tproxy +kmod-nft-socket +ca-bundle",
		"define Package/tgtun/conffiles\n/etc/config/tgtun\nendef",
		"$(INSTALL_BIN) $(GO_PKG_BUILD_BIN_DIR)/daemon $(1)/usr/sbin/tgtun",
		"$(eval $(call BuildPackage,tgtun))",
	} {
		if !strings.Contains(mk, want) {
			t.Errorf("openwrt/Makefile lacks %q", want)
		}
	}
	install := defineBlock(t, mk, "Package/tgtun/install")
	err := filepath.WalkDir(filesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(filesDir, p)
		rel = filepath.ToSlash(rel)
		mode := modeFor("/"+rel, 0)
		verb := map[int64]string{0o600: "$(INSTALL_CONF)", 0o755: "$(INSTALL_BIN)", 0o644: "$(INSTALL_DATA)"}[mode]
		line := verb + " ./files/" + rel + " $(1)/" + rel
		if !strings.Contains(strings.ReplaceAll(install, "\\\n\t\t", ""), line) {
			t.Errorf("Package/tgtun/install lacks %q", line)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"postinst", "postrm"} {
		block := strings.ReplaceAll(defineBlock(t, mk, "Package/tgtun/"+name), "$$", "$")
		if script := string(readFile(t, filepath.Join(scriptsDir, name))); block != script {
			t.Errorf("Package/tgtun/%s differs from scripts/%s:\n%s\n---\n%s", name, name, block, script)
		}
	}
}

func defineBlock(t *testing.T, mk, name string) string {
	t.Helper()
	start := "define " + name + "\n"
	i := strings.Index(mk, start)
	if i < 0 {
		t.Fatalf("openwrt/Makefile has no define %s", name)
	}
	body := mk[i+len(start):]
	j := strings.Index(body, "endef\n")
	if j < 0 {
		t.Fatalf("define %s has no endef", name)
	}
	return body[:j]
}

// --- helpers ---

type member2 struct {
	name         string
	mode         int64
	uid, gid     int
	uname, gname string
	mtime        time.Time
	gnu          bool
	body         []byte
}

type openedIPK struct {
	outer       []member2
	controlList []member2
	control     map[string]member2
	data        []member2
	dataTar     []byte
}

func (p *openedIPK) dataFile(t *testing.T, name string) []byte {
	t.Helper()
	for _, m := range p.data {
		if m.name == name {
			return m.body
		}
	}
	t.Fatalf("data has no %s", name)
	return nil
}

func openIPK(t *testing.T, path string) *openedIPK {
	t.Helper()
	return openIPKBytes(t, readFile(t, path))
}

func openIPKBytes(t *testing.T, raw []byte) *openedIPK {
	t.Helper()
	if !bytes.HasPrefix(raw, []byte{0x1f, 0x8b}) {
		t.Fatalf("package is not gzip (starts %x); OpenWrt's .ipk is a tar.gz, not an ar archive", raw[:min(8, len(raw))])
	}
	p := &openedIPK{control: map[string]member2{}}
	p.outer = readTar(t, gunzip(t, raw))
	var names []string
	for _, m := range p.outer {
		names = append(names, m.name)
	}
	if want := []string{"./debian-binary", "./data.tar.gz", "./control.tar.gz"}; !slices.Equal(names, want) {
		t.Fatalf("outer members %v, want %v", names, want)
	}
	if string(p.outer[0].body) != "2.0\n" {
		t.Errorf("debian-binary = %q, want \"2.0\\n\"", p.outer[0].body)
	}
	p.dataTar = gunzip(t, p.outer[1].body)
	p.data = readTar(t, p.dataTar)
	p.controlList = readTar(t, gunzip(t, p.outer[2].body))
	var cnames []string
	for _, m := range p.controlList {
		p.control[m.name] = m
		cnames = append(cnames, m.name)
	}
	if !slices.IsSorted(cnames) || cnames[0] != "./" {
		t.Errorf("control.tar.gz members %v: want ./ first, then sorted", cnames)
	}
	return p
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	return out
}

func readTar(t *testing.T, b []byte) []member2 {
	t.Helper()
	var ms []member2
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return ms
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("tar %s: %v", h.Name, err)
		}
		isDir := h.Typeflag == tar.TypeDir
		if isDir != strings.HasSuffix(h.Name, "/") || (!isDir && h.Typeflag != tar.TypeReg) {
			t.Errorf("tar %s: type %q does not match its name", h.Name, h.Typeflag)
		}
		ms = append(ms, member2{
			name: h.Name, mode: h.Mode, uid: h.Uid, gid: h.Gid, uname: h.Uname, gname: h.Gname,
			mtime: h.ModTime, gnu: h.Format&tar.FormatGNU != 0, body: body,
		})
	}
}

func parseControl(t *testing.T, b []byte) map[string]string {
	t.Helper()
	fields := map[string]string{}
	var last string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if strings.HasPrefix(line, " ") {
			if last == "" {
				t.Fatalf("control: continuation line before any field: %q", line)
			}
			fields[last] += "\n" + line
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("control: malformed line %q", line)
		}
		if _, dup := fields[k]; dup {
			t.Fatalf("control: field %s twice", k)
		}
		fields[k], last = v, k
	}
	return fields
}

// tinyProgram builds a minimal Go program for target, once per target for the test run.
func tinyProgram(t *testing.T, target Target) string {
	t.Helper()
	programsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mkipk-programs-")
		if err != nil {
			programsErr = err
			return
		}
		programsDir = dir
		programsErr = errors.Join(
			os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module tiny\n\ngo 1.21\n"), 0o644),
			os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println(\"tgtun\") }\n"), 0o644),
		)
	})
	if programsErr != nil {
		t.Fatalf("tiny program sources: %v", programsErr)
	}
	out := filepath.Join(programsDir, "prog-"+target.Arch)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	goBin := goCommand(t)
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", out, ".")
	cmd.Dir = programsDir
	cmd.Env = append(withoutGoTarget(os.Environ()), append(target.Env(), "GOWORK=off", "GOFLAGS=")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s: %v\n%s", target.Arch, err, b)
	}
	return out
}

var (
	programsOnce sync.Once
	programsDir  string
	programsErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if programsDir != "" {
		os.RemoveAll(programsDir)
	}
	os.Exit(code)
}

// withoutGoTarget drops the target variables a cross test run (GOARCH=mips go test -exec
// qemu-mips-static) leaves in the environment, so they cannot leak into the builds.
func withoutGoTarget(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOOS", "GOARCH", "GOMIPS", "GOMIPS64", "GOARM", "GO386", "GOAMD64", "GOARM64", "CGO_ENABLED", "GOEXPERIMENT":
			return true
		}
		return false
	})
}

func goCommand(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go"
	}
	t.Fatalf("the go command is needed to build the test programs: not in PATH nor /usr/local/go/bin")
	return ""
}

func gnuTarList(t *testing.T, path string) []string {
	t.Helper()
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Fatalf("GNU tar is needed to cross-check the package: %v", err)
	}
	out, err := exec.Command(tarBin, "-tzf", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tar -tzf %s: %v\n%s", path, err, out)
	}
	return strings.Fields(string(out))
}

func requireFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("package source %s is missing: %v", path, err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(line)
}
