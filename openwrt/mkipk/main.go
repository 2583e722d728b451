// Command mkipk builds an OpenWrt .ipk without the OpenWrt SDK, from a binary built by
// `go build` and file trees from the checkout:
//
//	go run ./openwrt/mkipk -name tgtun -version 0.1.0-r1 -arch mipsel_24kc \
//		-bin bin/mipsel_24kc/tgtun -files openwrt/files -scripts openwrt/scripts -out dist
//
// writes dist/tgtun_0.1.0-r1_mipsel_24kc.ipk, the same layout scripts/ipkg-build of the
// SDK produces. `-print-archs` lists the OpenWrt architectures a release builds with
// their GOARCH and GOMIPS/GOARM value; `-print-env ARCH` prints the environment for
// `go build`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "mkipk: %v\n", err)
		}
		os.Exit(1)
	}
}

// preset is what a known package's control file says unless a flag overrides it.
type preset struct {
	depends     string
	section     string
	description string
}

const projectURL = "https://github.com/tgtun/tgtun"

var presets = map[string]preset{
	"tgtun": {
		depends: "libc, kmod-tun, kmod-nft-core, kmod-nft-tproxy, kmod-nft-socket, ca-bundle",
		section: "net",
		description: `Tunnels only messenger traffic (Telegram, WhatsApp, ...) from the LAN
through a remote SOCKS5, HTTP CONNECT or Shadowsocks proxy; everything else
stays on the direct path. A TUN device, nftables sets and a userspace TCP/IP
stack do the work on the router, for every device.`,
	},
	"luci-app-tgtun": {
		depends:     "libc, tgtun, luci-base",
		section:     "luci",
		description: "LuCI support for tgtun: settings, status and diagnostics.",
	},
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkipk", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		name        = fs.String("name", "", "package `name`")
		version     = fs.String("version", "", "package `version`, e.g. 0.1.0-r1")
		arch        = fs.String("arch", "", "OpenWrt `architecture` (see -print-archs) or all")
		bin         = fs.String("bin", "", "the program `file` to install at -bin-dest")
		binDest     = fs.String("bin-dest", "", "where the -bin program is installed (default /usr/sbin/NAME)")
		scriptsDir  = fs.String("scripts", "", "`dir` with the package's own preinst, postinst, prerm, postrm (each optional)")
		depends     = fs.String("depends", "", "comma-separated `packages` (default: the preset of -name)")
		section     = fs.String("section", "", "control Section (default: the preset of -name)")
		description = fs.String("description", "", "control Description (default: the preset of -name)")
		license     = fs.String("license", "Apache-2.0", "control License")
		url         = fs.String("url", projectURL, "control URL")
		maintainer  = fs.String("maintainer", "tgtun developers <"+projectURL+">", "control Maintainer")
		source      = fs.String("source", "openwrt", "control Source: the package's directory in the source tree")
		out         = fs.String("out", ".", "output `dir`")
		mtime       = fs.Int64("mtime", -1, "file time in `seconds` since 1970 (default $SOURCE_DATE_EPOCH, else 0)")
		printArchs  = fs.Bool("print-archs", false, "print the release architectures as 'ARCH GOARCH VARIANT' lines and exit")
		printAll    = fs.Bool("print-all-archs", false, "like -print-archs, for every known architecture")
		printEnv    = fs.String("print-env", "", "print the `go build` environment for an OpenWrt architecture and exit")
		files       stringList
		trees       stringList
		conffiles   stringList
		lmos        stringList
		genKeys     = fs.String("genkeys", "", "write new feed keys (usign and apk) into `dir` and exit")
		index       = fs.String("index", "", "write the opkg and apk indexes of the packages in `dir` (signed with -keys) and exit")
		keys        = fs.String("keys", "feed-keys", "`dir` of the feed's private keys, for -index")
		format      = fs.String("format", "ipk", "package `format`: ipk (opkg, OpenWrt 24.10) or apk (apk-tools v3, OpenWrt 25.12)")
	)
	fs.Var(&files, "files", "`dir` whose contents are installed at / (repeatable)")
	fs.Var(&trees, "tree", "`DIR:PREFIX`: install DIR's contents under PREFIX (repeatable)")
	fs.Var(&lmos, "lmo", "`PO:DEST`: compile the gettext file PO into LuCI's .lmo and install it at DEST (repeatable)")
	fs.Var(&conffiles, "conffile", "`path` kept across upgrades (repeatable; files under /etc/config/ always are)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	switch {
	case *genKeys != "":
		return GenerateFeedKeys(*genKeys)
	case *index != "":
		return BuildFeedIndex(*index, *keys, "tgtun "+filepath.Base(*index))
	case *printArchs:
		return printTargets(stdout, targets[:releaseTargets])
	case *printAll:
		return printTargets(stdout, targets)
	case *printEnv != "":
		t, err := lookupTarget(*printEnv)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, strings.Join(t.Env(), " "))
		return err
	}

	if *name == "" || *version == "" || *arch == "" {
		return errors.New("-name, -version and -arch are required")
	}
	pre := presets[*name]
	ctl := Control{
		Package:      *name,
		Version:      *version,
		Depends:      splitList(firstNonEmpty(*depends, pre.depends)),
		Source:       *source,
		SourceName:   *name,
		License:      *license,
		Section:      firstNonEmpty(*section, pre.section),
		URL:          *url,
		Maintainer:   *maintainer,
		Architecture: *arch,
		Description:  firstNonEmpty(*description, pre.description),
	}
	if ctl.Section == "" || ctl.Description == "" {
		return fmt.Errorf("package %s has no preset: give -section and -description", *name)
	}

	b := &Build{Control: ctl, Payload: payload{}}
	if *bin != "" {
		dest := firstNonEmpty(*binDest, "/usr/sbin/"+*name)
		if err := b.Payload.add(Input{Src: *bin, Dest: dest}); err != nil {
			return err
		}
	}
	for _, dir := range files {
		trees = append(trees, dir+":/")
	}
	for _, t := range trees {
		in, err := parseTreeInput(t)
		if err != nil {
			return err
		}
		if err := b.Payload.add(in); err != nil {
			return err
		}
	}
	for _, l := range lmos {
		if err := addLMO(b.Payload, l); err != nil {
			return err
		}
	}
	if len(b.Payload) == 0 {
		return errors.New("nothing to package: give -bin, -files or -tree")
	}
	b.Conffiles = conffilesOf(b.Payload, conffiles)

	if *scriptsDir != "" {
		s, err := readScripts(*scriptsDir)
		if err != nil {
			return err
		}
		b.Scripts = s
	}

	epoch, err := chooseMTime(*mtime, os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	b.MTime = epoch

	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("output dir: %w", err)
	}
	target, write := filepath.Join(*out, b.FileName()), b.Write
	switch *format {
	case "ipk":
	case "apk":
		target, write = filepath.Join(*out, b.APKFileName()), b.WriteAPK
	default:
		return fmt.Errorf("-format %q: want ipk or apk", *format)
	}
	if err := writeAtomically(target, write); err != nil {
		return fmt.Errorf("%s: %w", target, err)
	}
	_, err = fmt.Fprintln(stdout, target)
	return err
}

// addLMO compiles "PO:DEST" into the payload.
func addLMO(p payload, arg string) error {
	in, err := parseTreeInput(arg)
	if err != nil {
		return fmt.Errorf("-lmo: %w", err)
	}
	po, err := os.ReadFile(in.Src)
	if err != nil {
		return fmt.Errorf("-lmo: %w", err)
	}
	lmo, err := CompileLMO(po)
	if err != nil {
		return fmt.Errorf("-lmo %s: %w", in.Src, err)
	}
	return p.putData(in.Dest, in.Src, lmo)
}

// conffilesOf is every file under /etc/config/ plus the ones asked for.
func conffilesOf(p payload, extra []string) []string {
	var list []string
	for name := range p {
		if strings.HasPrefix(name, "/etc/config/") {
			list = append(list, name)
		}
	}
	for _, e := range extra {
		list = append(list, path.Clean(e))
	}
	slices.Sort(list)
	return slices.Compact(list)
}

func readScripts(dir string) (Scripts, error) {
	var s Scripts
	for name, dst := range map[string]*[]byte{
		"preinst": &s.Preinst, "postinst": &s.Postinst, "prerm": &s.Prerm, "postrm": &s.Postrm,
	} {
		body, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return Scripts{}, fmt.Errorf("script %s: %w", name, err)
		}
		*dst = body
	}
	return s, nil
}

func chooseMTime(flagValue int64, env string) (time.Time, error) {
	if flagValue >= 0 {
		return time.Unix(flagValue, 0).UTC(), nil
	}
	if env != "" {
		sec, err := strconv.ParseInt(env, 10, 64)
		if err != nil || sec < 0 {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: not a number of seconds", env)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Unix(0, 0).UTC(), nil
}

// writeAtomically never leaves a half-written package under the final name.
func writeAtomically(target string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(target), ".mkipk-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), target)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
