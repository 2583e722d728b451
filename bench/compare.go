package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// compare measures several tgtun binaries (the engines of issue 21 side by side:
// -tgtun default=bin/a,gvisor=bin/b,nat=bin/c) in one test network and one run:
// idle memory, memory with idle flows, throughput against dante used directly
// (measured right after each run through tgtun), CPU per GiB and connection set-up.
// Each round runs every binary in turn, the order rotating, each in a fresh daemon
// per group of figures; with several rounds the table shows medians.
//
// CPU seconds per GiB come in two figures: the relay's own (utime+stime of the daemon),
// and the whole path's: every process in the test network's namespaces (tgtun,
// dante, the iperf3 server) plus the iperf3 client. The second is the fair one
// between engines that leave different work to the kernel: with tproxy the
// client's packets are processed in the sender's context, with a TUN in tgtun's.
// Softirq work the kernel defers to ksoftirqd counts in neither.
type variant struct{ name, path string }

// rounds is how many times compare measures every binary (-tgtun name=path,...).
var rounds = flag.Int("rounds", 1, "with several binaries (-tgtun name=path,...): `rounds` of every figure, medians shown")

// parseVariants reads name=path,name=path.
func parseVariants(s string) ([]variant, error) {
	var out []variant
	for _, part := range strings.Split(s, ",") {
		name, path, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || path == "" {
			return nil, fmt.Errorf("-tgtun %q: want name=path,name=path", s)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("tgtun binary %s: %w", name, err)
		}
		for _, v := range out {
			if v.name == name {
				return nil, fmt.Errorf("-tgtun: name %q twice", name)
			}
		}
		out = append(out, variant{name, abs})
	}
	return out, nil
}

// metric is one row of the comparison: per variant, one value per round.
type metric struct {
	Name   string               `json:"name"`
	Unit   string               `json:"unit"`
	Values map[string][]float64 `json:"values"`
}

type comparison struct {
	order   []string
	metrics []*metric
	byName  map[string]*metric
}

func (c *comparison) add(name, unit, variant string, v float64) {
	m := c.byName[name]
	if m == nil {
		m = &metric{Name: name, Unit: unit, Values: map[string][]float64{}}
		c.byName[name] = m
		c.metrics = append(c.metrics, m)
	}
	m.Values[variant] = append(m.Values[variant], v)
	fmt.Printf("  %-10s %-58s %9.3f %s\n", variant, name+":", v, unit)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (c *comparison) print() {
	fmt.Printf("\n%-58s", "median of rounds")
	for _, name := range c.order {
		fmt.Printf(" %12s", name)
	}
	fmt.Println()
	for _, m := range c.metrics {
		fmt.Printf("%-58s", m.Name+" ("+m.Unit+")")
		for _, name := range c.order {
			if v, ok := m.Values[name]; ok {
				fmt.Printf(" %12.3f", median(v))
			} else {
				fmt.Printf(" %12s", "-")
			}
		}
		fmt.Println()
	}
}

func compare(spec, out string, seconds, conns, rounds int) error {
	variants, err := parseVariants(spec)
	if err != nil {
		return err
	}
	ctx := context.Background()
	n, done, err := newBenchNet(ctx)
	if err != nil {
		return err
	}
	defer done()
	base := &bench{n: n, seconds: seconds, conns: conns}
	if err := n.StartMessengerServers(); err != nil {
		return err
	}
	if base.dante, err = n.StartDante(testnet.DanteOptions{}); err != nil {
		return err
	}
	iperfDst, err := base.iperfServer(n.Messenger, testnet.MsgrV4)
	if err != nil {
		return err
	}
	relay, err := base.socksRelay(iperfDst)
	if err != nil {
		return err
	}
	nsIno, err := namespaceInodes(n)
	if err != nil {
		return err
	}
	c := &comparison{byName: map[string]*metric{}}
	for _, v := range variants {
		c.order = append(c.order, v.name)
		if st, err := os.Stat(v.path); err == nil {
			c.add("binary size (as given)", "MiB", v.name, float64(st.Size())/(1<<20))
		}
	}
	fmt.Printf("tgtun builds side by side (%d round(s), %d s per iperf3 run); the machine is shared: figures are noisy\n", rounds, seconds)
	for round := range rounds {
		for i := range variants {
			v := variants[(i+round)%len(variants)]
			fmt.Printf("round %d: %s (%s)\n", round+1, v.name, v.path)
			b := *base
			b.tgtun, b.figures = v.path, nil
			if err := b.compareOne(ctx, c, v.name, iperfDst, relay, nsIno); err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
		}
	}
	c.print()
	if out == "bench/results.json" {
		out = "bench/results-engines.json" // the single-binary run's file stays
	}
	raw, err := json.MarshalIndent(map[string]any{"date": time.Now().UTC().Format(time.RFC3339),
		"rounds": rounds, "seconds": seconds, "variants": variants2json(variants), "metrics": c.metrics}, "", "  ")
	if err != nil {
		return err
	}
	fmt.Printf("results: %s\n", out)
	return os.WriteFile(out, append(raw, '\n'), 0o644)
}

func variants2json(vs []variant) map[string]string {
	m := map[string]string{}
	for _, v := range vs {
		m[v.name] = v.path
	}
	return m
}

// compareOne takes one round's figures of one binary.
func (b *bench) compareOne(ctx context.Context, c *comparison, name string, iperfDst, relay netip.AddrPort, nsIno map[uint64]bool) error {
	return b.measureRelay(ctx, b.tgtunUnder(), []int{1, 4}, iperfDst, relay, nsIno,
		func(metric, unit string, v float64) { c.add(metric, unit, name, v) })
}

// relayUnder is a relay measured by measureRelay: a program in the router namespace
// that carries the client's traffic to the messenger through dante (a tgtun build, or
// hev-socks5-tunnel in tgtun's place). start runs a fresh one, ready for traffic, and
// returns its pid and how to stop it; stop undoes whatever start set up, and is called
// on every path once start succeeded.
type relayUnder struct {
	start func(context.Context) (pid int, stop func() error, err error)
}

// tgtunUnder is b.tgtun with dante as its proxy.
func (b *bench) tgtunUnder() relayUnder {
	return relayUnder{start: func(ctx context.Context) (int, func() error, error) {
		if err := b.launchTgtun(ctx); err != nil {
			return 0, nil, err
		}
		p := b.tgtunProc
		return b.tgtunPID, p.Stop, nil
	}}
}

// idleFlows is how many idle TCP flows measureRelay holds.
const idleFlows = 1000

// The names of measureRelay's figures that others pick out.
var (
	nameFlowsSum  = fmt.Sprintf("memory holding %d idle TCP flows: VmRSS + kernel growth", idleFlows)
	nameLatency   = "connect+first byte median"
	nameRelayCPU1 = "relay CPU per GiB 1 stream(s) "
)

// measureRelay takes the figures of one relay, each group in a fresh process:
// idle VmRSS; holding idleFlows idle TCP flows its VmRSS, then, holding them a second
// time, the kernel's growth (the whole machine's, net of the reading just before the
// flows: see kernelNow), and the sum of both; then, in another process, iperf3 with streams streams up and down, each run
// followed by one through dante used directly from the router (relay, socksRelay's),
// with the relay's CPU and the whole path's per GiB; and connect + first byte through
// it and through dante, alternating. rec takes each figure as it comes.
func (b *bench) measureRelay(ctx context.Context, r relayUnder, streams []int, iperfDst, relay netip.AddrPort, nsIno map[uint64]bool, rec func(name, unit string, v float64)) error {
	pid, stop, err := r.start(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if stop != nil {
			_ = stop()
		}
	}()
	rss, _, err := memory(pid)
	if err != nil {
		return err
	}
	rec("memory idle VmRSS", "MiB", rss)
	// The flows twice: VmRSS with the first, as the fresh process holds them; the
	// kernel's growth with the second. Dante serves its clients from a pool of child
	// processes that it grows with the load and shrinks again once they sit idle:
	// measured on the first flows, whichever relay comes first after a quiet spell
	// would pay in the machine-wide figures for dante's new children (some 60 processes
	// for 1000 flows, about 8 MiB of slab: task structs, vm_area_structs, socket pairs,
	// /proc inodes) and the next would find them ready. On the second, every relay
	// finds dante's pool as its own load grew it. The first flows' TIME_WAIT entries
	// expire 60 s after their close, after the readings.
	open, err := b.openIdleFlows(ctx, idleFlows)
	if err == nil {
		time.Sleep(time.Second)
		rss, _, err = memory(pid)
	}
	for _, conn := range open {
		conn.Close()
	}
	if err != nil {
		return err
	}
	rec(fmt.Sprintf("memory holding %d idle TCP flows VmRSS", idleFlows), "MiB", rss)
	time.Sleep(time.Second) // the closed flows' sockets freed
	before, kernErr := kernelNow()
	open, err = b.openIdleFlows(ctx, idleFlows)
	if err == nil {
		time.Sleep(time.Second)
		if after, kerr := kernelNow(); kerr == nil && kernErr == nil {
			sockstat := float64(after.sockstat-before.sockstat) / 1024
			pinned := float64(after.unreclaimable+after.sockInodes-before.unreclaimable-before.sockInodes) / 1024
			rec(fmt.Sprintf("kernel TCP pages growth (sockstat mem) holding %d idle TCP flows (whole machine)", idleFlows), "MiB", sockstat)
			rec(fmt.Sprintf("kernel slab growth holding %d idle TCP flows (whole machine)", idleFlows), "MiB", float64(after.slab-before.slab)/1024)
			rec(fmt.Sprintf("kernel unreclaimable slab + socket inodes growth holding %d idle TCP flows (whole machine)", idleFlows), "MiB", pinned)
			rec(nameFlowsSum, "MiB", rss+sockstat+pinned)
		} else {
			fmt.Printf("  note: no kernel figures: %v\n", errors.Join(kernErr, kerr))
		}
	}
	for _, conn := range open {
		conn.Close()
	}
	if err != nil {
		return err
	}
	// A fresh process for the rest: its figures see only their own load.
	start := time.Now()
	if err := stop(); err != nil {
		fmt.Printf("  note: the relay did not stop cleanly (%v after %v)\n", err, time.Since(start).Round(time.Millisecond))
	}
	stop = nil
	if pid, stop, err = r.start(ctx); err != nil {
		return err
	}
	for _, streams := range streams {
		for _, reverse := range []bool{false, true} {
			dir := "up"
			if reverse {
				dir = "down"
			}
			before, err := procCPU(pid)
			if err != nil {
				return err
			}
			pathBefore := namespacesCPU(nsIno)
			res, err := b.iperfRun(ctx, b.n.Client, iperfDst.Addr().String(), iperfDst.Port(), streams, reverse)
			if err != nil {
				return err
			}
			after, err := procCPU(pid)
			if err != nil {
				return err
			}
			path := cpuSince(pathBefore, namespacesCPU(nsIno)) + res.clientCPU
			proxied, err := b.iperfRun(ctx, b.n.Router, "127.0.0.1", relay.Port(), streams, reverse)
			if err != nil {
				return err
			}
			gib := res.bytes / (1 << 30)
			row := fmt.Sprintf("%d stream(s) %s", streams, dir)
			rec("throughput "+row, "Gbit/s", res.gbps)
			rec("throughput "+row+" / dante directly", "ratio", res.gbps/proxied.gbps)
			if gib > 0 {
				rec("relay CPU per GiB "+row, "s/GiB", (after-before)/gib)
				rec("path CPU per GiB "+row+" (all test processes)", "s/GiB", path/gib)
			}
		}
	}
	via, direct, err := b.latencies(ctx)
	if err != nil {
		return err
	}
	rec(fmt.Sprintf("%s (%d conns)", nameLatency, b.conns), "ms", median(via))
	rec(nameLatency+" / dante directly", "ratio", median(via)/median(direct))
	err = stop()
	stop = nil
	return err
}

// openIdleFlows opens n TCP flows from the client to the messenger's echo server
// through tgtun and checks the last one answers.
func (b *bench) openIdleFlows(ctx context.Context, n int) ([]net.Conn, error) {
	dst := netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort).String()
	var open []net.Conn
	for len(open) < n {
		c, err := b.n.Dial(ctx, b.n.Client, "tcp", dst)
		if err != nil {
			return open, fmt.Errorf("idle flow %d: %w", len(open)+1, err)
		}
		open = append(open, c)
	}
	last := open[len(open)-1]
	_ = last.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := last.Write([]byte("x")); err != nil {
		return open, err
	}
	if _, err := io.ReadFull(last, make([]byte, 1)); err != nil {
		return open, fmt.Errorf("round trip on flow %d: %w", len(open), err)
	}
	return open, nil
}

// latencies is connect + first byte (ms) through the relay from the client and
// through dante from the router, b.conns of each, alternating so that the machine's
// load drifting during the run weighs on both alike; sorted.
func (b *bench) latencies(ctx context.Context) (via, direct []float64, err error) {
	dst := netip.AddrPortFrom(testnet.MsgrV4, testnet.HTTPPort)
	for range b.conns {
		d, err := timeFirstByte(func() (net.Conn, error) { return b.n.Dial(ctx, b.n.Client, "tcp", dst.String()) })
		if err != nil {
			return nil, nil, fmt.Errorf("latency through the relay: %w", err)
		}
		via = append(via, float64(d.Microseconds())/1000)
		if d, err = timeFirstByte(func() (net.Conn, error) { return b.socksDial(ctx, b.n.Router, dst) }); err != nil {
			return nil, nil, fmt.Errorf("latency through dante: %w", err)
		}
		direct = append(direct, float64(d.Microseconds())/1000)
	}
	slices.Sort(via)
	slices.Sort(direct)
	return via, direct, nil
}

// timeFirstByte is the time from dialing to the first byte of the HTTP server's answer.
func timeFirstByte(dial func() (net.Conn, error)) (time.Duration, error) {
	start := time.Now()
	c, err := dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return 0, err
	}
	var one [1]byte
	if _, err := c.Read(one[:]); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

type iperfResult struct {
	gbps, bytes float64
	clientCPU   float64 // seconds of the iperf3 client
}

// iperfRun runs an iperf3 client in ns and returns what it received and the CPU
// it used itself. A run that moved nothing (iperf3 says why in its JSON: the
// server still busy with the last test, say) is tried again, twice at most.
func (b *bench) iperfRun(ctx context.Context, ns, server string, port uint16, streams int, reverse bool) (iperfResult, error) {
	for try := 1; ; try++ {
		r, why, err := b.iperfOnce(ctx, ns, server, port, streams, reverse)
		if err != nil || r.bytes > 0 {
			return r, err
		}
		if try == 3 {
			return r, fmt.Errorf("iperf3 to %s:%d from %s moved nothing three times: %s", server, port, ns, why)
		}
		fmt.Printf("  note: iperf3 to %s:%d from %s moved nothing (%s), again\n", server, port, ns, why)
		time.Sleep(time.Second)
	}
}

func (b *bench) iperfOnce(ctx context.Context, ns, server string, port uint16, streams int, reverse bool) (iperfResult, string, error) {
	args := []string{"netns", "exec", ns, "iperf3", "-J", "-c", server, "-p", strconv.Itoa(int(port)), "-t", strconv.Itoa(b.seconds), "-P", strconv.Itoa(streams)}
	if reverse {
		args = append(args, "-R")
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		return iperfResult{}, "", fmt.Errorf("iperf3 %s: %w\n%s", strings.Join(args, " "), err, outb)
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(outb, &res); err != nil {
		return iperfResult{}, "", fmt.Errorf("iperf3 output: %w", err)
	}
	r := iperfResult{gbps: res.End.SumReceived.BitsPerSecond / 1e9, bytes: res.End.SumReceived.Bytes}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.clientCPU = tv(ru.Utime) + tv(ru.Stime)
	}
	return r, res.Error, nil
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// userHZ is the unit of /proc/PID/stat's times (USER_HZ, 100 on every Linux).
const userHZ = 100

// procCPU is the user+system CPU seconds of pid. Its reaped children's are left
// out: a dante child that ends during a run would otherwise count twice (in its own
// entry before, in its parent's after), or go missing from one snapshot to the next.
func procCPU(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: the fields start after its closing ')'.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0, errors.New("stat: short")
	}
	var ticks float64
	for _, k := range []int{11, 12} { // utime stime (fields 14 and 15)
		v, err := strconv.ParseFloat(f[k], 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return ticks / userHZ, nil
}

// namespaceInodes identifies the test network's namespaces.
func namespaceInodes(n *testnet.Net) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	for _, ns := range []string{n.Client, n.Router, n.Inet, n.Proxy, n.Messenger} {
		st, err := os.Stat("/run/netns/" + ns)
		if err != nil {
			return nil, err
		}
		out[st.Sys().(*syscall.Stat_t).Ino] = true
	}
	return out, nil
}

// namespacesCPU is the CPU seconds of each process living in the namespaces.
func namespacesCPU(inos map[uint64]bool) map[int]float64 {
	out := map[int]float64{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil || !inos[st.Sys().(*syscall.Stat_t).Ino] {
			continue
		}
		if cpu, err := procCPU(pid); err == nil {
			out[pid] = cpu
		}
	}
	return out
}

// cpuSince is the CPU the processes of after used since before: what those that
// ran through used meanwhile, all of what a new one used. One that ended meanwhile
// is missing (a few dante children at most: the figure is a little low, never
// negative).
func cpuSince(before, after map[int]float64) float64 {
	var sum float64
	for pid, cpu := range after {
		sum += max(cpu-before[pid], 0)
	}
	return sum
}

// kernelReading is the kernel's memory that idle flows grow, machine-wide, in KiB.
type kernelReading struct {
	sockstat      int64 // TCP buffer pages: sockstatTCPKiB
	slab          int64 // /proc/meminfo Slab: all slab caches
	unreclaimable int64 // /proc/meminfo SUnreclaim: TCP sockets, files, epoll items, ...
	sockInodes    int64 // /proc/slabinfo sock_inode_cache's pages
}

// kernelNow reads the kernel's memory. Slab is the whole machine's slab, and with it
// the dentry and inode caches (proc_inode_cache, dentry, ext4_inode_cache) that any
// process on the machine grows by looking at files and that the kernel frees under
// pressure: the idle flows are in it, but so is noise of several MiB. The flows' own
// objects are in SUnreclaim (the TCP sockets, their files and epoll items), except
// the socket inodes: sock_inode_cache is accounted reclaimable although an open
// socket holds its inode, so it is read on its own from /proc/slabinfo (root only).
func kernelNow() (kernelReading, error) {
	var k kernelReading
	var err error
	if k.sockstat, err = sockstatTCPKiB(); err != nil {
		return k, err
	}
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return k, err
	}
	found := 0
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "Slab:" && f[0] != "SUnreclaim:") {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return k, fmt.Errorf("meminfo %s: %w", f[0], err)
		}
		if f[0] == "Slab:" {
			k.slab = v
		} else {
			k.unreclaimable = v
		}
		found++
	}
	if found != 2 {
		return k, errors.New("meminfo: no Slab or SUnreclaim")
	}
	k.sockInodes, err = slabCacheKiB("sock_inode_cache")
	return k, err
}

// slabCacheKiB is the memory of one slab cache: its slabs times their pages
// (/proc/slabinfo version 2.1: name active_objs num_objs objsize objperslab
// pagesperslab : tunables ... : slabdata active_slabs num_slabs sharedavail).
func slabCacheKiB(name string) (int64, error) {
	raw, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 16 || f[0] != name || f[12] != "slabdata" {
			continue
		}
		perSlab, err1 := strconv.ParseInt(f[5], 10, 64)
		slabs, err2 := strconv.ParseInt(f[14], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("slabinfo %s: %w", name, err)
		}
		return slabs * perSlab * int64(os.Getpagesize()) / 1024, nil
	}
	return 0, fmt.Errorf("slabinfo: no %s", name)
}

// sockstatTCPKiB is the kernel's TCP buffer memory (/proc/net/sockstat, "TCP: ... mem
// PAGES"): the whole machine's, whichever namespace reads it. Since Linux 6.0 every CPU
// keeps up to 1 MiB of it in reserve, uncounted there: a difference of two readings is
// good to about 1 MiB per CPU.
func sockstatTCPKiB() (int64, error) {
	raw, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "mem" {
				pages, err := strconv.ParseInt(f[i+1], 10, 64)
				return pages * int64(os.Getpagesize()) / 1024, err
			}
		}
	}
	return 0, errors.New("sockstat: no TCP mem")
}
