package main

// .apk packages for OpenWrt 25.12 (apk-tools v3), laid out as OpenWrt's package-pack.mk
// has `apk mkpkg` make them: one ADB block (schema "pckg") with the package info, every
// directory and file with its mode, owner, size, time and SHA-256, and the scripts; then
// one data block per non-empty file (le32 directory index, le32 file index, contents) in
// the order of the ADB's paths; all of it deflated behind "ADBd".

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
)

// apkVersionRE is apk's version syntax (apk_version_validate): numbers separated by dots,
// an optional letter, suffixes such as _rc1 or _p2, an optional ~hash and -rN.
var apkVersionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*[a-z]?(_(alpha|beta|pre|rc|cvs|svn|git|hg|p)[0-9]*)*(~[0-9a-f]+)?(-r[0-9]+)?$`)

// APKFileName is the name OpenWrt's apk feeds give a package (apk's default
// pkgname-spec ${name}-${version}.apk).
func (b *Build) APKFileName() string {
	return fmt.Sprintf("%s-%s.apk", b.Control.Package, b.Control.Version)
}

// apkArch is the package's arch field: OpenWrt writes "noarch" for arch-independent ones.
func (b *Build) apkArch() string {
	if b.Control.Architecture == "all" {
		return "noarch"
	}
	return b.Control.Architecture
}

// apkScripts composes the scripts as OpenWrt 25.12 does for apk: default_postinst and
// default_prerm from /lib/functions.sh (uci-defaults, enabling, starting and stopping
// the init scripts listed in /lib/apk/packages/NAME.list) around the package's own
// postinst and prerm, guarded so that an image build without /lib/functions.sh skips
// them; post-upgrade is post-install with PKG_UPGRADE=1.
func (b *Build) apkScripts() map[int][]byte {
	name := b.Control.Package
	body := func(s []byte) string {
		var out []string
		for _, l := range strings.Split(string(s), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "#!") {
				out = append(out, l)
			}
		}
		return strings.TrimRight(strings.Join(out, "\n"), "\n") + "\n"
	}
	head := "[ -s \"${IPKG_INSTROOT}/lib/functions.sh\" ] || exit 0\n" +
		"# shellcheck source=/dev/null\n" +
		". \"${IPKG_INSTROOT}/lib/functions.sh\"\n" +
		"export root=\"${IPKG_INSTROOT}\"\n" +
		"export pkgname=\"" + name + "\"\n"
	post := "[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0\n" + head +
		"add_group_and_user\n" + "default_postinst\n"
	if b.Scripts.Postinst != nil {
		post += body(b.Scripts.Postinst)
	}
	pre := head + "default_prerm\n"
	if b.Scripts.Prerm != nil {
		pre += body(b.Scripts.Prerm)
	}
	s := map[int][]byte{
		scriptPostInstall:  []byte("#!/bin/sh\n" + post),
		scriptPostUpgrade:  []byte("#!/bin/sh\nexport PKG_UPGRADE=1\n" + post),
		scriptPreDeinstall: []byte("#!/bin/sh\n" + pre),
	}
	if b.Scripts.Postrm != nil {
		s[scriptPostDeinstall] = b.Scripts.Postrm
	}
	return s
}

// apkPayload is the payload plus the files OpenWrt's apk packages carry for the scripts
// and sysupgrade: /lib/apk/packages/NAME.list (every file), NAME.conffiles and
// NAME.conffiles_static (conffile and its SHA-256, what `sysupgrade` keeps and compares).
func (b *Build) apkPayload() (payload, error) {
	p := payload{}
	for k, v := range b.Payload {
		p[k] = v
	}
	dir := "/lib/apk/packages/" + b.Control.Package
	var list, static []string
	names := append(sortedKeys(b.Payload), dir+".list")
	if len(b.Conffiles) > 0 {
		names = append(names, dir+".conffiles", dir+".conffiles_static")
	}
	slices.Sort(names)
	list = names
	for _, c := range b.Conffiles {
		body, err := b.Payload.read(c)
		if err != nil {
			return nil, err
		}
		static = append(static, fmt.Sprintf("%s %x", c, sha256.Sum256(body)))
	}
	if err := p.putData(dir+".list", "(generated)", []byte(strings.Join(list, "\n")+"\n")); err != nil {
		return nil, err
	}
	if len(b.Conffiles) > 0 {
		if err := p.putData(dir+".conffiles", "(generated)", []byte(strings.Join(b.Conffiles, "\n")+"\n")); err != nil {
			return nil, err
		}
		if err := p.putData(dir+".conffiles_static", "(generated)", []byte(strings.Join(static, "\n")+"\n")); err != nil {
			return nil, err
		}
	}
	return p, nil
}

type apkFile struct {
	name string
	body []byte
	mode int64
}

// WriteAPK produces the .apk.
func (b *Build) WriteAPK(w io.Writer) error {
	// The version follows apk's rules instead of the .ipk file name's (which has no '_').
	c := b.Control
	c.Version = "0"
	if err := c.validate(); err != nil {
		return err
	}
	if !apkVersionRE.MatchString(b.Control.Version) {
		return fmt.Errorf("version %q: not an apk version (e.g. 1.2.3-r1, 1.2.3_rc1-r1)", b.Control.Version)
	}
	for _, c := range b.Conffiles {
		if _, ok := b.Payload[c]; !ok {
			return fmt.Errorf("conffile %s: not a file of the package", c)
		}
	}
	p, err := b.apkPayload()
	if err != nil {
		return err
	}
	// Every directory, the root ("") included, as `apk mkpkg` lists them by default.
	dirs := map[string][]apkFile{"": nil}
	var installed uint64
	for _, name := range sortedKeys(p) {
		body, err := p.read(name)
		if err != nil {
			return err
		}
		d := strings.TrimPrefix(path.Dir(name), "/")
		for x := d; x != "." && x != ""; x = path.Dir(x) {
			if _, ok := dirs[x]; !ok {
				dirs[x] = nil
			}
		}
		dirs[d] = append(dirs[d], apkFile{name: path.Base(name), body: body, mode: p[name].mode})
		installed += uint64(len(body))
	}
	mtime := uint64(b.MTime.Unix())

	aw := newADBWriter()
	root := func(mode int64) uint32 {
		return aw.object([]uint32{0, aw.int(uint64(mode)), aw.str("root"), aw.str("root")})
	}
	var paths []uint32
	dirNames := sortedKeys(dirs)
	for _, d := range dirNames {
		files := dirs[d]
		slices.SortFunc(files, func(a, b apkFile) int { return strings.Compare(a.name, b.name) })
		var fv []uint32
		for _, f := range files {
			sum := sha256.Sum256(f.body)
			fv = append(fv, aw.object([]uint32{0,
				fiName:   aw.str(f.name),
				fiACL:    root(f.mode),
				fiSize:   aw.int(uint64(len(f.body))),
				fiMTime:  aw.int(mtime),
				fiHashes: aw.blob(sum[:]),
			}))
		}
		paths = append(paths, aw.object([]uint32{0,
			diName:  aw.str(d),
			diACL:   root(0o755),
			diFiles: aw.array(fv),
		}))
	}
	var deps []uint32
	for _, d := range slices.Sorted(slices.Values(b.Control.Depends)) {
		deps = append(deps, aw.object([]uint32{0, depName: aw.str(d)}))
	}
	// The unique id: 20 zero bytes now, then the first 20 bytes of SHA-256 of the ADB
	// block with them zero, as apk mkpkg fills it in.
	uidAt := len(aw.b) + 1
	uid := aw.blob(make([]byte, 20))
	info := make([]uint32, piDepends+1)
	info[piName] = aw.str(b.Control.Package)
	info[piVersion] = aw.str(b.Control.Version)
	info[piHashes] = uid
	info[piDescription] = aw.str(oneLine(b.Control.Description))
	info[piArch] = aw.str(b.apkArch())
	info[piLicense] = aw.str(b.Control.License)
	info[piOrigin] = aw.str(b.Control.Source)
	info[piMaintainer] = aw.str(b.Control.Maintainer)
	info[piURL] = aw.str(b.Control.URL)
	info[piInstalledSize] = aw.int(max(installed, 1))
	info[piDepends] = aw.array(deps)
	scripts := make([]uint32, scriptPostUpgrade+1)
	sc := b.apkScripts()
	for i := range scripts {
		scripts[i] = aw.blob(sc[i]) // in field order: equal inputs give equal bytes
	}
	pkg := aw.object([]uint32{0,
		pkgInfo:    aw.object(info),
		pkgPaths:   aw.array(paths),
		pkgScripts: aw.object(scripts),
	})
	adb := aw.finish(pkg)
	sum := sha256.Sum256(adb)
	copy(adb[uidAt:uidAt+20], sum[:20])

	stream := adbBlock(adbStreamHeader(adbSchemaPackage), adbBlockADB, adb)
	for i, d := range dirNames {
		for j, f := range dirs[d] {
			if len(f.body) == 0 {
				continue
			}
			hdr := binary.LittleEndian.AppendUint32(nil, uint32(i+1))
			hdr = binary.LittleEndian.AppendUint32(hdr, uint32(j+1))
			stream = adbBlock(stream, adbBlockData, hdr, f.body)
		}
	}
	return adbCompress(w, stream)
}

// oneLine joins a multi-line description as OpenWrt's description_escape does.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ----- reading, for tests and the feed index -----

// APKInfo is the package info of an .apk as the index stores it.
type APKInfo struct {
	Info ADBValue // the pkginfo object
	ADB  []byte   // the package's ADB block, whose SHA-256 the index records
}

// ReadAPKInfo decodes a package and checks that its data blocks match the files listed.
func ReadAPKInfo(raw []byte) (*APKInfo, *ADBFile, error) {
	f, err := ReadADB(raw)
	if err != nil {
		return nil, nil, err
	}
	if f.Schema != adbSchemaPackage {
		return nil, nil, fmt.Errorf("apk: schema %08x is not a package", f.Schema)
	}
	paths := f.Root.Field(pkgPaths)
	next := 0
	for i, d := range paths.Items {
		for j, fi := range d.Field(diFiles).Items {
			size := fi.Field(fiSize).Int
			if size == 0 {
				continue
			}
			if next >= len(f.Data) {
				return nil, nil, fmt.Errorf("apk: no data for %s/%s", d.Field(diName).Str(), fi.Field(fiName).Str())
			}
			blk := f.Data[next]
			next++
			if len(blk) < 8 || binary.LittleEndian.Uint32(blk) != uint32(i+1) || binary.LittleEndian.Uint32(blk[4:]) != uint32(j+1) {
				return nil, nil, fmt.Errorf("apk: data block %d is not for path %d file %d", next, i+1, j+1)
			}
			body := blk[8:]
			sum := sha256.Sum256(body)
			if uint64(len(body)) != size || !bytes.Equal(sum[:], fi.Field(fiHashes).Blob) {
				return nil, nil, fmt.Errorf("apk: %s/%s: contents do not match size or hash", d.Field(diName).Str(), fi.Field(fiName).Str())
			}
		}
	}
	if next != len(f.Data) {
		return nil, nil, fmt.Errorf("apk: %d data blocks for %d files", len(f.Data), next)
	}
	return &APKInfo{Info: f.Root.Field(pkgInfo), ADB: f.ADB}, f, nil
}

// APKFiles maps every file of a decoded package to its contents and mode.
func APKFiles(f *ADBFile) map[string]apkFile {
	out := map[string]apkFile{}
	next := 0
	for _, d := range f.Root.Field(pkgPaths).Items {
		for _, fi := range d.Field(diFiles).Items {
			name := path.Join("/", d.Field(diName).Str(), fi.Field(fiName).Str())
			af := apkFile{name: name, mode: int64(fi.Field(fiACL).Field(aclMode).Int), body: []byte{}}
			if fi.Field(fiSize).Int > 0 {
				af.body = f.Data[next][8:]
				next++
			}
			out[name] = af
		}
	}
	return out
}
