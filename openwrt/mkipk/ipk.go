package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Control is the metadata of one package, written to its control file the way OpenWrt's
// package-ipkg.mk does. Installed-Size is computed, not given.
type Control struct {
	Package      string
	Version      string
	Depends      []string
	Source       string
	SourceName   string
	License      string
	Section      string
	URL          string
	Maintainer   string
	Architecture string
	Description  string // several lines allowed
}

var (
	// opkg and the OpenWrt build system accept these in names (ipkg-build checks the same).
	packageNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]*$`)
	// '_' separates name, version and architecture in the file name, so no field has one.
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+~:-]*$`)
)

func (c Control) validate() error {
	if !packageNameRE.MatchString(c.Package) {
		return fmt.Errorf("package name %q: use lower-case letters, digits, '.', '+', '-'", c.Package)
	}
	if !versionRE.MatchString(c.Version) {
		return fmt.Errorf("version %q: use only letters, digits, '.', '+', '~', ':', '-', starting with a letter or digit", c.Version)
	}
	if c.Architecture != "all" {
		if _, err := lookupTarget(c.Architecture); err != nil {
			return err
		}
	}
	single := map[string]string{
		"Source": c.Source, "SourceName": c.SourceName, "License": c.License, "Section": c.Section,
		"URL": c.URL, "Maintainer": c.Maintainer,
	}
	for field, v := range single {
		if strings.ContainsAny(v, "\n\r") {
			return fmt.Errorf("control field %s: must be one line", field)
		}
	}
	for _, d := range c.Depends {
		if !packageNameRE.MatchString(d) {
			return fmt.Errorf("dependency %q: not a package name", d)
		}
	}
	if strings.TrimSpace(c.Description) == "" {
		return fmt.Errorf("control field Description: empty")
	}
	return nil
}

// render writes the control file. Continuation lines of Description start with a space,
// as Debian control syntax and opkg expect; empty lines become " .".
func (c Control) render(installedSize int) []byte {
	var b strings.Builder
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%s: %s\n", name, value)
		}
	}
	field("Package", c.Package)
	field("Version", c.Version)
	field("Depends", strings.Join(c.Depends, ", "))
	field("Source", c.Source)
	field("SourceName", c.SourceName)
	field("License", c.License)
	field("Section", c.Section)
	field("URL", c.URL)
	field("Maintainer", c.Maintainer)
	field("Architecture", c.Architecture)
	field("Installed-Size", fmt.Sprint(installedSize))
	lines := strings.Split(strings.TrimSpace(c.Description), "\n")
	fmt.Fprintf(&b, "Description: %s\n", strings.TrimSpace(lines[0]))
	for _, l := range lines[1:] {
		l = strings.TrimSpace(l)
		if l == "" {
			l = "."
		}
		fmt.Fprintf(&b, " %s\n", l)
	}
	return []byte(b.String())
}

// Input puts the file or directory tree Src at Dest in the installed file system.
// A directory's contents land under Dest; a file becomes Dest itself.
type Input struct {
	Src  string
	Dest string
}

// parseTreeInput reads "DIR:PREFIX". The split is at the last ':' so that a source path may
// contain one; PREFIX must be absolute.
func parseTreeInput(s string) (Input, error) {
	i := strings.LastIndex(s, ":")
	if i <= 0 || i == len(s)-1 {
		return Input{}, fmt.Errorf("tree %q: want DIR:PREFIX, e.g. luci-app/htdocs:/www", s)
	}
	in := Input{Src: s[:i], Dest: s[i+1:]}
	if !strings.HasPrefix(in.Dest, "/") {
		return Input{}, fmt.Errorf("tree %q: PREFIX %q must start with /", s, in.Dest)
	}
	return in, nil
}

// file is one regular file of the package's data.
type file struct {
	src  string
	mode int64
	data []byte // the contents when built in memory (compiled translations); else read src
}

// payload is the installed file system of a package: regular files by absolute path.
// Directories are implied by the files' parents.
type payload map[string]file

// executableDirs hold programs and scripts opkg users run or procd and the boot
// sequence execute; their files are 0755 whatever the mode in the checkout.
var executableDirs = []string{
	"/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/libexec/",
	"/etc/init.d/", "/etc/uci-defaults/",
}

// modeFor decides a file's mode from where it is installed, so that a checkout's umask or
// a lost executable bit never changes the package. /etc/config holds the proxy password:
// 0600, as OpenWrt's INSTALL_CONF does.
func modeFor(dest string, src fs.FileMode) int64 {
	if strings.HasPrefix(dest, "/etc/config/") {
		return 0o600
	}
	for _, d := range executableDirs {
		if strings.HasPrefix(dest, d) {
			return 0o755
		}
	}
	if src&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// skipName reports editor and VCS leftovers that ipkg-build also leaves out.
func skipName(name string) bool {
	return strings.HasSuffix(name, "~") || strings.HasPrefix(name, ".#") ||
		name == ".gitkeep" || name == ".gitignore" || name == ".git"
}

// add puts every file of in into p; two inputs claiming the same path is an error.
func (p payload) add(in Input) error {
	dest := path.Clean(in.Dest)
	if !strings.HasPrefix(dest, "/") {
		return fmt.Errorf("destination %q: must be absolute", in.Dest)
	}
	info, err := os.Lstat(in.Src)
	if err != nil {
		return fmt.Errorf("input %s: %w", in.Src, err)
	}
	if info.Mode().IsRegular() {
		return p.put(dest, in.Src, info.Mode())
	}
	if !info.IsDir() {
		return fmt.Errorf("input %s: neither a regular file nor a directory", in.Src)
	}
	return filepath.WalkDir(in.Src, func(src string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("input %s: %w", in.Src, err)
		}
		if src != in.Src && skipName(d.Name()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(in.Src, src)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("input %s: %w", src, err)
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("input %s: only regular files and directories can be packaged (not %v)", src, info.Mode().Type())
		}
		return p.put(path.Join(dest, filepath.ToSlash(rel)), src, info.Mode())
	})
}

func (p payload) put(dest, src string, mode fs.FileMode) error {
	if prev, ok := p[dest]; ok {
		return fmt.Errorf("%s: given twice (%s and %s)", dest, prev.src, src)
	}
	p[dest] = file{src: src, mode: modeFor(dest, mode)}
	return nil
}

// putData adds a file built in memory; src names where it came from, for messages.
func (p payload) putData(dest, src string, data []byte) error {
	dest = path.Clean(dest)
	if !strings.HasPrefix(dest, "/") {
		return fmt.Errorf("destination %q: must be absolute", dest)
	}
	if prev, ok := p[dest]; ok {
		return fmt.Errorf("%s: given twice (%s and %s)", dest, prev.src, src)
	}
	p[dest] = file{src: src, mode: modeFor(dest, 0o644), data: data}
	return nil
}

// read returns the contents of the file at dest.
func (p payload) read(dest string) ([]byte, error) {
	f := p[dest]
	if f.data != nil {
		return f.data, nil
	}
	body, err := os.ReadFile(f.src)
	if err != nil {
		return nil, fmt.Errorf("data %s: %w", dest, err)
	}
	return body, nil
}

// entries lists every file and directory of p, directories ending in '/', in the order
// GNU tar --sort=name walks a tree: depth first, names sorted within each directory.
func (p payload) entries() []string {
	seen := map[string]bool{"/": true}
	list := []string{"/"}
	for name := range p {
		list = append(list, name)
		for dir := path.Dir(name); !seen[dir+"/"] && dir != "/"; dir = path.Dir(dir) {
			seen[dir+"/"] = true
			list = append(list, dir+"/")
		}
	}
	slices.SortFunc(list, comparePaths)
	return list
}

// comparePaths orders paths component by component, so a directory's contents follow it
// directly ("/etc/init.d/x" before "/etc/init.dx").
func comparePaths(a, b string) int {
	return slices.Compare(strings.Split(strings.TrimSuffix(a, "/"), "/"), strings.Split(strings.TrimSuffix(b, "/"), "/"))
}

// Scripts are the package's own maintainer scripts. As in OpenWrt, Postinst and Prerm are
// stored as postinst-pkg and prerm-pkg and run by default_postinst/default_prerm from
// /lib/functions.sh, which also run uci-defaults and enable, start and stop init scripts.
type Scripts struct {
	Preinst, Postinst, Prerm, Postrm []byte
}

// Both return early when the root they install into has no /lib/functions.sh (an image
// or SDK staging root before base-files), as OpenWrt's package-pack.mk writes them.
const defaultPostinst = `#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck source=/dev/null
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
`

const defaultPrerm = `#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck source=/dev/null
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
`

// Build describes one .ipk.
type Build struct {
	Control   Control
	Payload   payload
	Conffiles []string // absolute paths of files in Payload
	Scripts   Scripts
	MTime     time.Time
}

// FileName is the name opkg feeds and OpenWrt's build system give the package.
func (b *Build) FileName() string {
	return fmt.Sprintf("%s_%s_%s.ipk", b.Control.Package, b.Control.Version, b.Control.Architecture)
}

// Write produces the package: a gzip'd GNU tar holding ./debian-binary, ./data.tar.gz and
// ./control.tar.gz in that order, as scripts/ipkg-build makes it and opkg reads it.
func (b *Build) Write(w io.Writer) error {
	if err := b.Control.validate(); err != nil {
		return err
	}
	for _, c := range b.Conffiles {
		if _, ok := b.Payload[c]; !ok {
			return fmt.Errorf("conffile %s: not a file of the package", c)
		}
	}
	data, err := b.dataTar()
	if err != nil {
		return err
	}
	dataGz, err := gzipBytes(data)
	if err != nil {
		return fmt.Errorf("data.tar.gz: %w", err)
	}
	control, err := b.controlTar(len(data))
	if err != nil {
		return err
	}
	controlGz, err := gzipBytes(control)
	if err != nil {
		return fmt.Errorf("control.tar.gz: %w", err)
	}
	outer, err := b.tarOf([]member{
		{name: "./debian-binary", body: []byte("2.0\n"), mode: 0o644},
		{name: "./data.tar.gz", body: dataGz, mode: 0o644},
		{name: "./control.tar.gz", body: controlGz, mode: 0o644},
	})
	if err != nil {
		return fmt.Errorf("outer archive: %w", err)
	}
	gz, err := gzipBytes(outer)
	if err != nil {
		return fmt.Errorf("outer archive: %w", err)
	}
	_, err = w.Write(gz)
	return err
}

type member struct {
	name string // "./x" or "./dir/"
	body []byte
	mode int64
}

func (b *Build) dataTar() ([]byte, error) {
	var ms []member
	for _, e := range b.Payload.entries() {
		if strings.HasSuffix(e, "/") {
			ms = append(ms, member{name: "." + e, mode: 0o755})
			continue
		}
		body, err := b.Payload.read(e)
		if err != nil {
			return nil, err
		}
		ms = append(ms, member{name: "." + e, body: body, mode: b.Payload[e].mode})
	}
	data, err := b.tarOf(ms)
	if err != nil {
		return nil, fmt.Errorf("data.tar: %w", err)
	}
	return data, nil
}

func (b *Build) controlTar(installedSize int) ([]byte, error) {
	files := map[string]member{
		"control":  {body: b.Control.render(installedSize), mode: 0o644},
		"postinst": {body: []byte(defaultPostinst), mode: 0o755},
		"prerm":    {body: []byte(defaultPrerm), mode: 0o755},
	}
	if len(b.Conffiles) > 0 {
		cf := slices.Clone(b.Conffiles)
		slices.Sort(cf)
		files["conffiles"] = member{body: []byte(strings.Join(cf, "\n") + "\n"), mode: 0o644}
	}
	for name, body := range map[string][]byte{
		"preinst": b.Scripts.Preinst, "postinst-pkg": b.Scripts.Postinst,
		"prerm-pkg": b.Scripts.Prerm, "postrm": b.Scripts.Postrm,
	} {
		if body != nil {
			files[name] = member{body: body, mode: 0o755}
		}
	}
	ms := []member{{name: "./", mode: 0o755}}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		m := files[name]
		m.name = "./" + name
		ms = append(ms, m)
	}
	out, err := b.tarOf(ms)
	if err != nil {
		return nil, fmt.Errorf("control.tar: %w", err)
	}
	return out, nil
}

// tarOf writes members as a GNU tar owned by 0:0 with no user or group names (tar
// --numeric-owner) and one fixed time, so equal inputs give equal bytes.
func (b *Build) tarOf(ms []member) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		h := &tar.Header{
			Name:    m.name,
			Mode:    m.mode,
			ModTime: b.MTime,
			Format:  tar.FormatGNU,
		}
		if strings.HasSuffix(m.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(m.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, err)
		}
		if _, err := tw.Write(m.body); err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipBytes compresses without a name or time in the header (gzip -n).
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
