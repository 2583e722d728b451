// Command mips is `make bench-mips`: tgtun on an emulated MIPS router. It boots Debian
// bookworm mipsel under qemu-system-mipsel (Malta, 24Kc: no FPU, one CPU, 256 MB),
// runs the guest program (bench/mips/guest) inside, which builds the e2e test network
// out of namespaces and measures tgtun, hev-socks5-tunnel and, for the encrypted
// protocols, sing-box's and Xray's own clients, each against a baseline of the same
// boot. Each round is one boot; the figures are the medians over rounds of the per-round
// ratios, because absolute rates under emulation drift with the host's load.
//
//	go run ./bench/mips -variant tproxy=bin/tgtun-mipsel -variant gvisor=/tmp/tgtun-old
//
// See docs/performance.md ("Emulated MIPS router") for what each figure is.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/bench/internal/hev"
	"github.com/tgtun/tgtun/bench/mips/wire"
)

// The root file system's Debian packages: a change rebuilds the cached image.
var rootfsPackages = []string{
	"linux-image-4kc-malta", // kernel 6.1 and its initrd; nft_tproxy and nft_socket as modules
	"iproute2", "nftables", "kmod", "procps",
	"iperf3",
	"dante-server", // the SOCKS5 proxy
	"proxychains4", // the baseline's iperf3 speaks SOCKS5 to dante itself
}

// Peers' versions (docs/performance.md says where each comes from).
const (
	xrayModule     = "github.com/xtls/xray-core/main@v1.260327.0"
	xrayVersion    = "v1.260327.0"
	singBoxModule  = "github.com/sagernet/sing-box/cmd/sing-box@v1.14.1"
	singBoxVersion = "1.14.1"
)

type options struct {
	rounds, encRounds   int
	variants            []variant
	cache, out, shared  string
	seconds, conns      int
	flows, idle         int
	protocols           []string
	pprof               bool
	bootTimeout         time.Duration
	siteAES, keepImages bool
	kernelArgs, icount  string
	stall               time.Duration
	rtcArgs             []string
	retries             int
}

// variant is one tgtun binary to measure: NAME=PATH[,ENV=VALUE...].
type variant struct {
	Name, Path string
	Env        []string
}

func parseVariant(s string) (variant, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" || rest == "" {
		return variant{}, fmt.Errorf("variant %q: want NAME=PATH[,ENV=VALUE...]", s)
	}
	if strings.ContainsAny(name, "/ ,.") || name == "hev" || name == "base" || name == "sing-box" || name == "xray" {
		return variant{}, fmt.Errorf("variant %q: name must be a plain word other than hev, base, sing-box, xray", s)
	}
	parts := strings.Split(rest, ",")
	v := variant{Name: name, Path: parts[0]}
	for _, e := range parts[1:] {
		if !strings.Contains(e, "=") {
			return variant{}, fmt.Errorf("variant %q: %q is not ENV=VALUE", s, e)
		}
		v.Env = append(v.Env, e)
	}
	return v, nil
}

type variantFlag struct{ list *[]variant }

func (f variantFlag) String() string { return "" }
func (f variantFlag) Set(s string) error {
	v, err := parseVariant(s)
	if err != nil {
		return err
	}
	*f.list = append(*f.list, v)
	return nil
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "SOCKS5 rounds (one boot each): tgtun's variants, hev-socks5-tunnel and the baseline back to back")
	flag.IntVar(&o.encRounds, "enc-rounds", 1, "rounds of the encrypted protocols (one boot each; 0 skips them)")
	flag.Var(variantFlag{&o.variants}, "variant", "a tgtun mipsel `NAME=PATH[,ENV=VALUE...]` to measure (repeatable); default: tgtun=<this checkout, built>")
	flag.StringVar(&o.cache, "cache", "/var/cache/tgtun-mips", "`directory` for the root file system, the peers' builds and the runs' logs (outside the checkout)")
	flag.StringVar(&o.out, "o", "bench/mips-results.json", "results `file`")
	flag.StringVar(&o.shared, "shared", "../shared", "`directory` with peers/"+hev.Tarball)
	flag.IntVar(&o.seconds, "t", 5, "iperf3 `seconds` per direction")
	flag.IntVar(&o.conns, "conns", 20, "connect+first byte samples per variant and round")
	flag.IntVar(&o.flows, "flows", 200, "idle TCP flows held for the memory figure")
	flag.IntVar(&o.idle, "idle", 10, "`seconds` of the idle CPU window")
	protocols := flag.String("protocols", strings.Join(allProtocols, ","), "encrypted protocols to measure")
	flag.BoolVar(&o.pprof, "pprof", false, "one more boot: tgtun of this checkout built with -tags tgtun_pprof, CPU profiles of idle, upload and download, brought back to the cache's run directory")
	flag.DurationVar(&o.bootTimeout, "boot-timeout", 0, "limit of one boot (0: from the plan's size)")
	flag.BoolVar(&o.siteAES, "site-aes", true, "the site REALITY imitates chooses cipher suites like a server with AES instructions (as real sites); false: like Go on a core without")
	flag.StringVar(&o.kernelArgs, "kernel-args", "", "more kernel command line `arguments`")
	// -icount: the guest's clock counts executed instructions, its period adjusted by qemu
	// (shift=auto) to keep up with the host's clock: monotonic, where plain TCG (-icount
	// "") let the guest's clock step backwards by tens of seconds on a loaded host (dante
	// aborts its I/O children then). A fixed shift (shift=1: a 500-MIPS core) would make
	// the figures independent of the host's load, but the kernel calibrates its counter
	// against the RTC on the host's clock at boot (8.7 MHz instead of 333 on a loaded
	// host: TCP's timers then fire after a few million instructions), and -rtc clock=vm,
	// which fixes that, hung every boot with qemu 7.2. sleep=off hung in an earlier trial.
	// shift=auto in turn failed on a quiet host (2026-12-07, load 1-2): the kernel found
	// a 10-29 MHz counter, the guest's clock ran several times faster than the host's and
	// every relay, hev included, timed out. Plain TCG, the default, ran clean there (no
	// backward step in 4 boots); on a loaded host use -icount shift=auto,sleep=on.
	flag.StringVar(&o.icount, "icount", "", "qemu `-icount` setting (shift=auto,sleep=on for a loaded host); empty for plain TCG")
	flag.DurationVar(&o.stall, "stall", 6*time.Minute, "kill a boot that prints nothing on its console for this long")
	flag.IntVar(&o.retries, "retries", 1, "boots that fail (hang, time out, the guest gives up) are tried again this many times; the failed boot's figures are dropped")
	flag.BoolVar(&o.keepImages, "keep", false, "keep each boot's disk images and console log in the run directory")
	rtcVM := flag.Bool("rtc-vm", false, "with -icount, the RTC on the virtual clock too (hung in every trial with qemu 7.2)")
	flag.Parse()
	o.protocols = splitList(*protocols)
	if *rtcVM {
		o.rtcArgs = []string{"-rtc", "base=utc,clock=vm"}
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintf(os.Stderr, "bench-mips: %v\n", err)
		os.Exit(1)
	}
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

func progress(format string, args ...any) {
	fmt.Printf("%s bench-mips: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (debootstrap, the images' owners)")
	}
	for _, p := range o.protocols {
		if protocolByName(p) == nil {
			return fmt.Errorf("unknown protocol %q (known: %s)", p, strings.Join(allProtocols, ", "))
		}
	}
	start := time.Now()
	if err := os.MkdirAll(o.cache, 0o755); err != nil {
		return err
	}
	runDir := filepath.Join(o.cache, "runs", time.Now().Format("20060102-150405"))
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	vm, err := ensureRootfs(ctx, o.cache)
	if err != nil {
		return err
	}
	tools, err := ensurePeers(ctx, o, vm)
	if err != nil {
		return err
	}
	bins := filepath.Join(runDir, "bin")
	if err := os.MkdirAll(bins, 0o755); err != nil {
		return err
	}
	if tools.guest, err = buildGuest(ctx, bins); err != nil {
		return err
	}
	if tools.initrd, err = buildInitrd(ctx, vm, bins); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if len(o.variants) == 0 {
		p := filepath.Join(bins, "tgtun-mipsel")
		progress("building tgtun for mipsel from this checkout")
		if err := goBuildMipsle(ctx, p, "./daemon", ""); err != nil {
			return err
		}
		o.variants = []variant{{Name: "tgtun", Path: p}}
	}
	for i, v := range o.variants {
		abs, err := filepath.Abs(v.Path)
		if err != nil {
			return err
		}
		if err := checkMipsel(abs); err != nil {
			return fmt.Errorf("variant %s: %w", v.Name, err)
		}
		o.variants[i].Path = abs
	}
	if o.pprof {
		p := filepath.Join(bins, "tgtun-pprof")
		progress("building tgtun for mipsel with -tags tgtun_pprof")
		if err := goBuildMipsle(ctx, p, "./daemon", "tgtun_pprof"); err != nil {
			return err
		}
		tools.pprofTgtun = p
	}
	unlock, err := lockQemu(o.cache)
	if err != nil {
		return err
	}
	defer unlock()

	var boots []*bootPlan
	for r := 1; r <= o.rounds; r++ {
		boots = append(boots, socksPlan(o, tools, r))
	}
	for r := 1; r <= o.encRounds && len(o.protocols) > 0; r++ {
		p, err := encPlan(o, tools, r)
		if err != nil {
			return err
		}
		boots = append(boots, p)
	}
	if o.pprof {
		p, err := pprofPlan(o, tools)
		if err != nil {
			return err
		}
		boots = append(boots, p)
	}
	progress("%d boot(s): %d SOCKS5 round(s), %d encrypted, pprof %v; variants %s; run directory %s",
		len(boots), o.rounds, o.encRounds, o.pprof, variantNames(o.variants), runDir)
	var results []wire.Result
	var bootErr error
	for i, plan := range boots {
		progress("boot %d/%d: %s round %d (%d runs)", i+1, len(boots), plan.Kind, plan.Round, len(plan.Runs))
		var res []wire.Result
		var err error
		var bootDir string
		for try := 0; try <= o.retries; try++ {
			bootDir = filepath.Join(runDir, fmt.Sprintf("%02d-%s-%d-try%d", i+1, plan.Kind, plan.Round, try+1))
			if res, err = boot(ctx, o, vm, tools, plan, bootDir); err == nil {
				break
			}
			if try < o.retries {
				progress("boot %d FAILED, trying it again: %v", i+1, err)
			}
		}
		results = append(results, res...)
		if plan.Kind == "pprof" {
			topProfiles(ctx, filepath.Join(bootDir, "guest"))
		}
		// The figures so far, in case a later boot never ends.
		if part := summarize(o, results); part.write(o.out) == nil {
			progress("figures of %d boot(s) so far in %s", i+1, o.out)
		}
		if err != nil {
			bootErr = fmt.Errorf("boot %d (%s round %d): %w", i+1, plan.Kind, plan.Round, err)
			break
		}
	}
	rep := summarize(o, results)
	rep.Minutes = time.Since(start).Minutes()
	rep.RunDir = runDir
	if err := rep.write(o.out); err != nil {
		return err
	}
	rep.print(os.Stdout)
	progress("results: %s (logs and profiles: %s); %.0f min", o.out, runDir, rep.Minutes)
	if bootErr == nil {
		if n := failedRuns(results); n > 0 {
			bootErr = fmt.Errorf("%d run(s) failed (their errors are in %s)", n, o.out)
		}
	}
	return bootErr
}

func variantNames(vs []variant) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.Name+"="+v.Path+strings.Join(append([]string{""}, v.Env...), ","))
	}
	return strings.Join(s, " ")
}

func failedRuns(rs []wire.Result) int {
	n := 0
	for _, r := range rs {
		if r.Error != "" {
			n++
		}
	}
	return n
}

// lockQemu takes the machine-wide lock: one emulated router at a time.
func lockQemu(cache string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(cache, "qemu.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		progress("another bench-mips holds %s: waiting for it", f.Name())
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}

// vmFiles is the cached emulated router.
type vmFiles struct{ dir, kernel, modules, rootfs string }

// ensureRootfs returns the cached root file system, building it first (about 15
// minutes) when the cache has none for this package list and these scripts.
func ensureRootfs(ctx context.Context, cache string) (vmFiles, error) {
	h := sha256.New()
	fmt.Fprintln(h, strings.Join(rootfsPackages, " "))
	for _, f := range []string{"rootfs.sh"} {
		raw, err := os.ReadFile(filepath.Join("bench/mips", f))
		if err != nil {
			return vmFiles{}, fmt.Errorf("run from the checkout's root: %w", err)
		}
		h.Write(raw)
	}
	dir := filepath.Join(cache, "rootfs-"+hex.EncodeToString(h.Sum(nil))[:12])
	vm := vmFiles{dir: dir, kernel: filepath.Join(dir, "vmlinux"), modules: filepath.Join(dir, "modules"), rootfs: filepath.Join(dir, "rootfs.img")}
	if _, err := os.Stat(filepath.Join(dir, "ok")); err == nil {
		progress("root file system: %s (cached)", dir)
		return vm, nil
	}
	progress("building the root file system into %s (about 15 minutes, once)", dir)
	cmd := exec.CommandContext(ctx, "bash", append([]string{"bench/mips/rootfs.sh", dir}, rootfsPackages...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return vmFiles{}, fmt.Errorf("root file system: %w", err)
	}
	return vm, nil
}

// toolFiles are the mipsel programs copied onto each boot's bench disk, and the initramfs.
type toolFiles struct {
	guest, hev, xray, singBox, pprofTgtun, initrd string
}

// buildInitrd writes the emulated router's initramfs (an uncompressed newc cpio): its
// /init (bench/mips/initrd) and the root file system's modules that mount the root disk.
func buildInitrd(ctx context.Context, vm vmFiles, dir string) (string, error) {
	initBin := filepath.Join(dir, "initrd-init")
	if err := goBuildMipsle(ctx, initBin, "./bench/mips/initrd", ""); err != nil {
		return "", err
	}
	order, err := os.ReadFile(filepath.Join(vm.modules, "order"))
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	w := cpioWriter{w: &buf}
	w.dir("lib")
	w.dir("lib/modules")
	for _, m := range strings.Fields(string(order)) {
		raw, err := os.ReadFile(filepath.Join(vm.modules, m))
		if err != nil {
			return "", err
		}
		w.file("lib/modules/"+m, 0o644, raw)
	}
	w.file("modules", 0o644, order)
	raw, err := os.ReadFile(initBin)
	if err != nil {
		return "", err
	}
	w.file("init", 0o755, raw)
	w.trailer()
	out := filepath.Join(dir, "initrd.cpio")
	return out, os.WriteFile(out, buf.Bytes(), 0o644)
}

// cpioWriter writes the "newc" format the kernel unpacks into its initramfs.
type cpioWriter struct {
	w   *bytes.Buffer
	ino int
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	c.ino++
	fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.w.WriteString(name)
	c.w.WriteByte(0)
	c.pad()
	c.w.Write(data)
	c.pad()
}

func (c *cpioWriter) pad() {
	for c.w.Len()%4 != 0 {
		c.w.WriteByte(0)
	}
}

func (c *cpioWriter) dir(name string)                            { c.entry(name, 0o040755, nil) }
func (c *cpioWriter) file(name string, perm uint32, data []byte) { c.entry(name, 0o100000|perm, data) }
func (c *cpioWriter) trailer()                                   { c.entry("TRAILER!!!", 0, nil) }

// ensurePeers builds (once, into the cache) hev-socks5-tunnel, Xray and sing-box for mipsel.
func ensurePeers(ctx context.Context, o options, vm vmFiles) (toolFiles, error) {
	var t toolFiles
	peers := filepath.Join(o.cache, "peers")
	if err := os.MkdirAll(peers, 0o755); err != nil {
		return t, err
	}
	var err error
	t.hev, err = hev.Ensure(ctx, filepath.Join(o.shared, "peers", hev.Tarball), peers, func(s string) { progress("%s", s) },
		"CROSS_PREFIX=mipsel-linux-gnu-", "LFLAGS=-static")
	if err != nil {
		return t, err
	}
	needGo := (o.encRounds > 0 || o.pprof) && len(o.protocols) > 0
	t.xray = filepath.Join(peers, "xray-"+xrayVersion+"-mipsle")
	t.singBox = filepath.Join(peers, "sing-box-"+singBoxVersion+"-mipsle")
	if !needGo {
		return t, nil
	}
	for _, p := range []struct{ path, module, tags, ldflags, bin string }{
		{t.xray, xrayModule, "", "-s -w", "main"},
		{t.singBox, singBoxModule, "with_utls", "-s -w -X github.com/sagernet/sing-box/constant.Version=" + singBoxVersion, "sing-box"},
	} {
		if _, err := os.Stat(p.path); err == nil {
			continue
		}
		progress("building %s for mipsle (go install, a few minutes once)", p.module)
		gopath, err := os.MkdirTemp("", "bench-mips-gobin-")
		if err != nil {
			return t, err
		}
		defer os.RemoveAll(gopath)
		args := []string{"install", "-trimpath", "-ldflags", p.ldflags}
		if p.tags != "" {
			args = append(args, "-tags", p.tags)
		}
		cmd := exec.CommandContext(ctx, "go", append(args, p.module)...)
		// A cross build cannot use GOBIN: go install writes GOPATH/bin/linux_mipsle/;
		// a temporary GOPATH/bin with the usual module cache.
		modcache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "CGO_ENABLED=0",
			"GOPATH="+gopath, "GOMODCACHE="+strings.TrimSpace(string(modcache)), "GOFLAGS=-modcacherw")
		if out, err := cmd.CombinedOutput(); err != nil {
			return t, fmt.Errorf("go install %s: %w\n%s", p.module, err, out)
		}
		if err := copyFile(filepath.Join(gopath, "bin", "linux_mipsle", p.bin), p.path, 0o755); err != nil {
			return t, err
		}
	}
	return t, nil
}

func buildGuest(ctx context.Context, dir string) (string, error) {
	p := filepath.Join(dir, "guest")
	// mipsbench_aes, -checklinkname=0: the TLS site may choose suites as on a CPU with AES (tlsaes.go).
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "mipsbench_aes", "-ldflags", "-s -w -checklinkname=0", "-o", p, "./bench/mips/guest")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the guest: %w\n%s", err, out)
	}
	return p, nil
}

// goBuildMipsle builds pkg as tgtun's release builds do for a mipsel router.
func goBuildMipsle(ctx context.Context, out, pkg, tags string) error {
	args := []string{"build", "-trimpath", "-ldflags", "-s -w"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "-o", out, pkg)...)
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, o)
	}
	return nil
}

// checkMipsel refuses a file that is not a 32-bit little-endian MIPS ELF executable.
func checkMipsel(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// ELF magic, ELFCLASS32, ELFDATA2LSB, e_machine EM_MIPS (8)
	if string(hdr[:4]) != "\x7fELF" || hdr[4] != 1 || hdr[5] != 1 || hdr[18] != 8 {
		return fmt.Errorf("%s is not a mipsel (32-bit little-endian MIPS) executable: build with GOARCH=mipsle GOMIPS=softfloat", path)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	raw, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, raw, mode); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// boot runs one plan in a fresh emulated router and returns its results. A boot that
// fails, times out or ends without finishing its plan is an error with the console's
// last lines; the results it printed before still count.
func boot(ctx context.Context, o options, vm vmFiles, tools toolFiles, plan *bootPlan, dir string) ([]wire.Result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	disk, err := benchDisk(tools, plan, dir)
	if err != nil {
		return nil, err
	}
	resultImg := filepath.Join(dir, "result.img")
	if err := os.WriteFile(resultImg, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(resultImg, 128<<20); err != nil {
		return nil, err
	}
	defer func() {
		if !o.keepImages {
			os.Remove(disk)
			os.Remove(resultImg)
		}
	}()
	limit := o.bootTimeout
	if limit == 0 {
		limit = 10*time.Minute + time.Duration(len(plan.Runs))*(4*time.Minute+time.Duration(2*plan.Seconds+plan.IdleSeconds)*time.Second)
	}
	bctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	args := []string{
		"-M", "malta", "-cpu", "24Kc", "-m", "256", "-smp", "1",
		"-display", "none", "-vga", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot", "-nic", "none",
		"-kernel", vm.kernel, "-initrd", tools.initrd,
		"-append", strings.TrimSpace("console=ttyS0 quiet loglevel=3 panic=-1 " + o.kernelArgs),
		"-drive", "file=" + vm.rootfs + ",format=raw,if=ide,index=0,snapshot=on",
		"-drive", "file=" + disk + ",format=raw,if=ide,index=1",
		"-drive", "file=" + resultImg + ",format=raw,if=ide,index=2",
	}
	if o.icount != "" {
		args = append(args, "-icount", o.icount)
		// -rtc clock=vm would make the kernel's calibration of its counter (against the
		// RTC, at boot) independent of the host's speed, and the guest's second exactly
		// 5e8 instructions; but with it the boot hung in 4 of 4 tries (qemu busy, the
		// guest's clock standing still, in an iperf3 transfer). Without it the guest's
		// second is fixed for a boot but differs between boots: compare within a round.
		args = append(args, o.rtcArgs...)
	}
	cmd := exec.CommandContext(bctx, "qemu-system-mipsel", args...)
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	consolePath := filepath.Join(dir, "console.log")
	console, err := os.Create(consolePath)
	if err != nil {
		return nil, err
	}
	defer console.Close()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu-system-mipsel: %w (apt-get install qemu-system-mips)", err)
	}
	var results []wire.Result
	var last []string
	done, fatal := false, ""
	// The guest's first line must come within a few minutes (kernel, initrd, root file
	// system); a boot that hangs there is not worth waiting the whole limit for.
	var started atomic.Bool
	var bootHung, stalled atomic.Bool
	// Under -icount the emulated router has hung now and then with the CPU busy and no
	// progress: a boot that prints nothing for o.stall is killed (and tried again).
	lastLine := time.Now().UnixNano()
	var lastMu atomic.Int64
	lastMu.Store(lastLine)
	stallDone := make(chan struct{})
	defer close(stallDone)
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stallDone:
				return
			case <-t.C:
				if time.Since(time.Unix(0, lastMu.Load())) > o.stall {
					stalled.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	firstLine := time.AfterFunc(6*time.Minute, func() {
		if !started.Load() {
			bootHung.Store(true)
			cancel()
		}
	})
	defer firstLine.Stop()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		lastMu.Store(time.Now().UnixNano())
		fmt.Fprintln(console, line)
		last = append(last, line)
		if len(last) > 60 {
			last = last[1:]
		}
		switch r, ok, err := wire.ParseResult(line); {
		case err != nil:
			fatal = err.Error()
		case ok:
			results = append(results, r)
			progress("  %s", r.Summary())
			continue
		}
		if strings.Contains(line, "@@") {
			started.Store(true)
		}
		if i := strings.Index(line, wire.ProgressPrefix); i >= 0 {
			progress("  [%s] %s", time.Since(t0).Round(time.Second), line[i+len(wire.ProgressPrefix):])
		}
		if i := strings.Index(line, wire.FatalPrefix); i >= 0 {
			fatal = line[i+len(wire.FatalPrefix):]
		}
		if strings.Contains(line, wire.DonePrefix) {
			done = true
		}
	}
	waitErr := cmd.Wait()
	if err := unpackResults(resultImg, dir); err != nil {
		progress("  result disk: %v", err)
	}
	tailText := strings.Join(last, "\n")
	switch {
	case stalled.Load():
		return results, fmt.Errorf("%w: no console output for %s (console: %s); its last lines:\n%s", errStalled, o.stall, consolePath, tailText)
	case bootHung.Load():
		return results, fmt.Errorf("the emulated router did not come up within 6 minutes (console: %s); its last lines:\n%s", consolePath, tailText)
	case bctx.Err() != nil:
		return results, fmt.Errorf("timed out after %s (console: %s); its last lines:\n%s", limit, consolePath, tailText)
	case fatal != "":
		return results, fmt.Errorf("the guest failed: %s (console: %s); its last lines:\n%s", fatal, consolePath, tailText)
	case !done:
		return results, fmt.Errorf("the emulated router stopped before finishing (qemu: %v; console: %s); its last lines:\n%s", waitErr, consolePath, tailText)
	}
	progress("  boot done in %s", time.Since(t0).Round(time.Second))
	return results, nil
}

// topProfiles writes `go tool pprof -top` of every profile the guest brought back beside it.
func topProfiles(ctx context.Context, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.pprof"))
	for _, f := range files {
		out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=45", f).CombinedOutput()
		if err != nil {
			progress("pprof %s: %v", f, err)
			continue
		}
		_ = os.WriteFile(f+".top.txt", out, 0o644)
		progress("profile %s (top: %s.top.txt)", f, f)
	}
}

// errStalled marks a boot killed for printing nothing for too long.
var errStalled = errors.New("the emulated router stalled")

// unpackResults extracts the tar the guest wrote onto the raw result disk.
func unpackResults(img, dir string) error {
	f, err := os.Open(img)
	if err != nil {
		return err
	}
	defer f.Close()
	out := filepath.Join(dir, "guest")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Base(h.Name)
		if name == "." || name == "/" || h.Typeflag != tar.TypeReg {
			continue
		}
		w, err := os.Create(filepath.Join(out, name))
		if err != nil {
			return err
		}
		_, err = io.Copy(w, io.LimitReader(tr, 64<<20))
		w.Close()
		if err != nil {
			return err
		}
	}
}
