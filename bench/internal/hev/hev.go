// Package hev builds and configures hev-socks5-tunnel, the C relay (a TUN and lwIP in
// one process, SOCKS5 to the proxy) people run on OpenWrt instead of tgtun, for the
// benches that measure tgtun against it: make bench (x86, the host's compiler) and
// make bench-mips (mipsel, a cross compiler).
package hev

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Tarball is the source release the benches build, in ../shared/peers/.
const Tarball = "hev-socks5-tunnel-2.15.0.tar.gz"

// Version is Tarball's version, for the reports.
const Version = "2.15.0"

// Ensure returns the binary built from tarball with make's extra arguments makeArgs
// (a cross compiler, static linking), building it into dir once: the cached file is
// named after the tarball's hash, so a new source builds anew. progress, if not nil,
// is told before a build. A missing make or C compiler is an error that says so.
func Ensure(ctx context.Context, tarball, dir string, progress func(string), makeArgs ...string) (string, error) {
	raw, err := os.ReadFile(tarball)
	if err != nil {
		return "", fmt.Errorf("hev-socks5-tunnel source: %w", err)
	}
	sum := sha256.Sum256(raw)
	bin := filepath.Join(dir, "hev-socks5-tunnel-"+hex.EncodeToString(sum[:])[:12])
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cc := "cc"
	for _, a := range makeArgs {
		if p, ok := strings.CutPrefix(a, "CROSS_PREFIX="); ok {
			cc = p + "gcc"
		}
	}
	for _, tool := range []string{"make", cc, "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("building hev-socks5-tunnel needs %s, which is missing (make deps installs build-essential; make bench-mips its cross compiler)", tool)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if progress != nil {
		progress(fmt.Sprintf("building hev-socks5-tunnel %s into %s (once)", Version, dir))
	}
	tmp, err := os.MkdirTemp("", "bench-hev-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "tar", "-C", tmp, "-xzf", tarball).CombinedOutput(); err != nil {
		return "", fmt.Errorf("unpack %s: %w: %s", tarball, err, out)
	}
	src := filepath.Join(tmp, strings.TrimSuffix(filepath.Base(tarball), ".tar.gz"))
	cmd := exec.CommandContext(ctx, "make", append([]string{"-C", src, "-j2"}, makeArgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		if len(out) > 2000 {
			out = append([]byte("…"), out[len(out)-2000:]...)
		}
		return "", fmt.Errorf("build hev-socks5-tunnel: %w\n%s", err, out)
	}
	built, err := os.ReadFile(filepath.Join(src, "bin", "hev-socks5-tunnel"))
	if err != nil {
		return "", err
	}
	// Written whole under another name, then renamed: an interrupted build leaves no
	// cached half binary.
	part := bin + ".part"
	if err := os.WriteFile(part, built, 0o755); err != nil {
		return "", err
	}
	return bin, os.Rename(part, bin)
}

// Conf is hev-socks5-tunnel's YAML: its TUN tun with mtu and the address tunV4 (the
// TUN's own, in the LAN's documentation range), and the SOCKS5 server socks (UDP
// through it too, by UDP ASSOCIATE).
func Conf(tun string, mtu int, tunV4 netip.Addr, socks netip.AddrPort) string {
	return fmt.Sprintf(`tunnel:
  name: %s
  mtu: %d
  ipv4: %s
socks5:
  port: %d
  address: %s
  udp: 'udp'
misc:
  log-level: warn
`, tun, mtu, tunV4, socks.Port(), socks.Addr())
}
