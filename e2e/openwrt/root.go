package openwrt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostTools are Debian programs a router root gets beside busybox, because busybox-static
// lacks them or they are not busybox on OpenWrt either: nft (fw4 loads its ruleset with
// it), flock (procd.sh and fw4 lock with it; OpenWrt's busybox has it, Debian's lacks it)
// and signify-openbsd, which verifies usign's signatures (the same Ed25519 format) where
// a router's opkg-key runs usign. Path in the root -> program on the host.
var hostTools = map[string]string{
	"/usr/sbin/nft":    "nft",
	"/usr/bin/flock":   "flock",
	"/usr/bin/signify": "signify-openbsd",
}

// Root is a scratch root laid out as an OpenWrt router's.
type Root struct {
	Host Host
	Dir  string
	// NetNS is the network namespace commands run in ("" = a new, empty one per command).
	NetNS string
}

// libDir is where Debian keeps the shared libraries of the host programs in the root (the
// OpenWrt programs here are built against Debian's glibc). It is bound read-only into the
// root for each command; OpenWrt's own /lib and /usr/lib stay the root's.
const libDir = "/usr/lib/x86_64-linux-gnu"

// NewRoot lays out a router root in a temporary directory: busybox (busybox-static) as
// /bin/sh and its applets, OpenWrt's base shell libraries from the cache, ubusd, ubus,
// uci, jshn, ucode, utpl, opkg (with usign checks, and its /usr/sbin/opkg-key) and apk at
// their router paths, nft, flock and signify from the host, /etc/protocols.
// /etc/config, /etc/init.d, /etc/rc.d, /tmp, /var/run and /var/lock exist and are empty;
// AddFirewall4 adds fw4. The host programs come with Debian's amd64 libraries (libDir):
// the tests run on amd64 Debian, as CI does.
func NewRoot(t testing.TB, h Host) *Root {
	t.Helper()
	r, err := newRoot(h, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newRoot(h Host, dir string) (*Root, error) {
	r := &Root{Host: h, Dir: dir}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "etc/config",
		"etc/init.d", "etc/rc.d", "tmp", "var/run/ubus", "var/lock", "var/state", "proc", "dev",
		"root", libDir[1:], "usr/share/libubox", "usr/lib/opkg"} {
		if err := os.MkdirAll(r.Path(d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(r.Path("tmp"), 0o1777); err != nil {
		return nil, err
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox is needed for the router root (apt-get install busybox-static; `make deps` installs it): %w", err)
	}
	if err := copyFile(bb, r.Path("bin/busybox"), 0o755); err != nil {
		return nil, err
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", r.Path("bin", applet)); err != nil && !os.IsExist(err) {
			return nil, err
		}
	}
	for dst, prog := range hostTools {
		src, err := exec.LookPath(prog)
		if err != nil {
			return nil, fmt.Errorf("%s is needed in the router root (`make deps` installs it): %w", prog, err)
		}
		if err := copyFile(src, r.Path(dst), 0o755); err != nil {
			return nil, err
		}
	}
	// OpenWrt's base shell libraries.
	if err := copyTree(h.Path("files"), dir); err != nil {
		return nil, err
	}
	// The OpenWrt programs keep their build prefix inside the root (their rpath names it):
	// the cache's lib, bin and sbin are copied to the same path here.
	for _, d := range []string{"lib", "bin", "sbin", "opkg-usign"} {
		if err := copyTree(h.Path(d), r.Path(h.Dir, d)); err != nil {
			return nil, err
		}
	}
	links := map[string]string{
		"sbin/ubusd":    filepath.Join(h.Dir, "sbin/ubusd"),
		"bin/ubus":      filepath.Join(h.Dir, "bin/ubus"),
		"sbin/uci":      filepath.Join(h.Dir, "bin/uci"),
		"usr/bin/jshn":  filepath.Join(h.Dir, "bin/jshn"),
		"usr/bin/ucode": filepath.Join(h.Dir, "bin/ucode"),
		"usr/bin/utpl":  filepath.Join(h.Dir, "bin/utpl"),
		"bin/opkg":      filepath.Join(h.Dir, "opkg-usign/bin/opkg-cl"),
		"usr/bin/apk":   filepath.Join(h.Dir, "bin/apk"),
		// The programs above are Debian-built: their loader at its usual place.
		"lib64/ld-linux-x86-64.so.2": libDir + "/ld-linux-x86-64.so.2",
	}
	for l, target := range links {
		_ = os.Remove(r.Path(l))
		if err := os.Symlink(target, r.Path(l)); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := os.WriteFile(r.Path("dev", d), nil, 0o644); err != nil {
			return nil, err
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, r.Path("dev", name)); err != nil {
			return nil, err
		}
	}
	for name, body := range map[string]string{
		"usr/sbin/opkg-key":   opkgKey,
		"etc/protocols":       protocols,
		"etc/passwd":          "root:x:0:0:root:/root:/bin/ash\n",
		"etc/group":           "root:x:0:\n",
		"etc/openwrt_release": "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='test'\n",
	} {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "usr/sbin/") {
			mode = 0o755
		}
		if err := os.WriteFile(r.Path(name), []byte(body), mode); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// protocols is the root's /etc/protocols (OpenWrt's base-files has one): nft resolves the
// names fw4 writes (ipv6-icmp, esp...) through it.
const protocols = `ip	0	IP
icmp	1	ICMP
igmp	2	IGMP
tcp	6	TCP
udp	17	UDP
ipv6	41	IPv6
gre	47	GRE
esp	50	IPSEC-ESP
ah	51	IPSEC-AH
ipv6-icmp	58	IPv6-ICMP
sctp	132	SCTP
udplite	136	UDPLite
`

// opkgKey is the root's /usr/sbin/opkg-key, the program opkg runs to verify a feed's
// list (`opkg-key verify SIG LIST`). OpenWrt 24.10's unpacks the list (opkg keeps a src/gz
// feed's Packages.gz as it came; the signature is over Packages) and pipes it to `usign -V
// -P /etc/opkg/keys -q -x SIG -m -`, which takes the key that the signature's fingerprint
// names from /etc/opkg/keys. usign has no Debian package: signify (OpenBSD's, whose key
// and signature format usign implements) verifies here, with the key usign would take.
const opkgKey = `#!/bin/sh
case "$1" in
verify)
	fp=$(sed -n 2p "$2" | base64 -d 2>/dev/null | dd bs=1 skip=2 count=8 2>/dev/null | hexdump -e '8/1 "%02x"' | sed 's/^0*//')
	[ -n "$fp" ] && [ -f "/etc/opkg/keys/$fp" ] || { echo "opkg-key: no trusted key for $2" >&2; exit 1; }
	{ zcat "$3" 2>/dev/null || cat "$3"; } | signify -V -q -p "/etc/opkg/keys/$fp" -x "$2" -m -
	;;
*)
	echo "opkg-key: only verify is here" >&2
	exit 1
	;;
esac
`

// AddFirewall4 installs OpenWrt's firewall4 in the root: /sbin/fw4, its templates and
// ucode module (where ucode searches: the build prefix's share/ucode), the default
// /etc/config/firewall, /etc/init.d/firewall and the include directories.
func (r *Root) AddFirewall4() error {
	h := r.Host
	// fw4's program, templates and module; ucode searches PREFIX/share/ucode for modules.
	fw := h.Path("firewall4/root")
	for src, dst := range map[string]string{
		"sbin/fw4":               "sbin/fw4",
		"usr/share/firewall4":    "usr/share/firewall4",
		"usr/share/ucode/fw4.uc": filepath.Join(h.Dir, "share/ucode/fw4.uc"),
		"usr/share/nftables.d":   "usr/share/nftables.d",
		"etc/nftables.d":         "etc/nftables.d",
		"etc/config/firewall":    "etc/config/firewall",
		"etc/hotplug.d/iface":    "etc/hotplug.d/iface",
		"etc/init.d/firewall":    "etc/init.d/firewall",
	} {
		if err := copyTree(filepath.Join(fw, src), r.Path(dst)); err != nil {
			return err
		}
	}
	return nil
}

// Path is a path inside the root, as seen from outside.
func (r *Root) Path(elem ...string) string {
	return filepath.Join(append([]string{r.Dir}, elem...)...)
}

// chrootScript runs in a new mount namespace (private propagation: nothing reaches the
// host's mounts): it binds the host's library directory read-only, the character devices
// a shell needs (not the host's /dev/log: syslog goes to the root's own, see Syslog) and
// a /proc into the root, then runs the command chrooted with a router's environment.
const chrootScript = `set -e
R=$1; LIBDIR=$2; LDPATH=$3; shift 3
mount --bind -o ro "$LIBDIR" "$R$LIBDIR"
for d in null zero full random urandom tty; do mount --bind "/dev/$d" "$R/dev/$d"; done
mount -t proc proc "$R/proc"
exec chroot "$R" /bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TZ=UTC \
	LD_LIBRARY_PATH="$LDPATH" "$@"
`

// Command returns the command that runs args inside the root, in its network namespace.
// Extra environment entries may be put before the program as NAME=value words (env's
// syntax: the command runs through env).
func (r *Root) Command(ctx context.Context, args ...string) *exec.Cmd {
	argv := []string{"unshare", "--mount", "--propagation", "private"}
	if r.NetNS == "" {
		argv = append(argv, "--net")
	} else {
		argv = append([]string{"ip", "netns", "exec", r.NetNS}, argv...)
	}
	argv = append(argv, "/bin/sh", "-c", chrootScript, "sh", r.Dir, libDir, r.Host.Path("lib"))
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs args in the root and returns the combined output; a non-zero exit is an error
// that carries the output.
func (r *Root) Run(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errNoProgram
	}
	var out bytes.Buffer
	cmd := r.Command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s (in the router root): %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// Sh runs a busybox ash script in the root, as a router's shell runs it.
func (r *Root) Sh(ctx context.Context, script string) (string, error) {
	return r.Run(ctx, "/bin/sh", "-c", script)
}

// WriteFile writes a file inside the root, creating its directory.
func (r *Root) WriteFile(path string, body []byte, mode os.FileMode) error {
	p := r.Path(path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, body, mode)
}

// ReadFile reads a file inside the root.
func (r *Root) ReadFile(path string) ([]byte, error) { return os.ReadFile(r.Path(path)) }

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// copyTree copies a file or a directory tree, keeping modes and symlinks; the copies are
// writable by their owner (the cache's sources may be read-only).
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_ = os.Remove(target)
			return os.Symlink(l, target)
		case fi.IsDir():
			return os.MkdirAll(target, fi.Mode().Perm()|0o700)
		default:
			return copyFile(p, target, fi.Mode().Perm()|0o200)
		}
	})
}

// Syslog collects what programs in the root send to syslog (/dev/log: logger, and so the
// init script's messages), as logd would.
type Syslog struct {
	mu    sync.Mutex
	lines []string
}

// Syslog starts collecting the root's syslog until the test ends.
func (r *Root) Syslog(t testing.TB) *Syslog {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: r.Path("dev/log"), Net: "unixgram"})
	if err != nil {
		t.Fatalf("syslog socket in the router root: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	s := &Syslog{}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.lines = append(s.lines, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	return s
}

// Lines returns the messages so far (each as sent: "<PRI>TIMESTAMP TAG: MESSAGE") and
// forgets them.
func (s *Syslog) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lines
	s.lines = nil
	return l
}
