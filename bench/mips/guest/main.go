// Command guest is the part of `make bench-mips` that runs inside the emulated MIPS
// router: built for mipsle, started by the bench disk's run.sh, it builds the test
// network out of namespaces (cli → rtr → inet → proxy → msgr, documentation ranges
// only, as e2e/testnet does), starts the servers of the plan, measures each run and
// prints one result line per run on the serial console (package wire). Logs and
// profiles go, as a tar, onto the raw result disk.
//
//	guest run PLAN.json RESULT-DEVICE
package main

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/bench/mips/wire"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 4 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: guest run PLAN.json RESULT-DEVICE")
		os.Exit(2)
	}
	if err := runPlan(os.Args[2], os.Args[3]); err != nil {
		fmt.Printf("%s%v\n", wire.FatalPrefix, err)
		os.Exit(1)
	}
	fmt.Println(wire.DonePrefix)
}

// The namespaces of the emulated router's test network.
const (
	nsCli   = "cli"
	nsRtr   = "rtr"
	nsInet  = "inet"
	nsProxy = "proxy"
	nsMsgr  = "msgr"
)

// Addresses: the same documentation ranges as e2e/testnet.
const (
	msgrV4     = "203.0.113.10"
	msgrPrefix = "203.0.113.0/24"
	httpAddr   = msgrV4 + ":80"
	echoAddr   = msgrV4 + ":7"
	iperfPort  = "5201"
	logDir     = "/tmp/logs"
)

type guest struct {
	plan  wire.Plan
	mu    sync.Mutex
	procs []*proc
	site  *tlsSite
}

func progress(format string, args ...any) {
	fmt.Printf("%s%s\n", wire.ProgressPrefix, fmt.Sprintf(format, args...))
}

func runPlan(planPath, resultDev string) error {
	raw, err := os.ReadFile(planPath)
	if err != nil {
		return err
	}
	g := &guest{}
	if err := json.Unmarshal(raw, &g.plan); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	// Idle flows need descriptors in the guest, the relays and dante, which inherit this.
	lim := syscall.Rlimit{Cur: 65536, Max: 65536}
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	defer g.stopAll()
	defer func() {
		if err := g.collect(resultDev); err != nil {
			progress("collect: %v", err)
		}
	}()
	go watchClock()
	progress("round %d (%s): building the test network", g.plan.Round, g.plan.Kind)
	if err := buildNet(); err != nil {
		return fmt.Errorf("test network: %w", err)
	}
	if err := g.startServers(); err != nil {
		return err
	}
	for i, r := range g.plan.Runs {
		progress("round %d: run %d/%d %s", g.plan.Round, i+1, len(g.plan.Runs), r.Name)
		back0 := clockBack.Load()
		res := g.measure(r)
		if n := clockBack.Load() - back0; n > 0 {
			res.Notes["clock"] = fmt.Sprintf("the guest's clock stepped backwards %d time(s) during the run (largest %.3f s)", n, float64(clockBackMax.Load())/1e9)
		}
		fmt.Println(res.Line())
	}
	progress("clock: %d backward step(s), largest %.3f s", clockBack.Load(), float64(clockBackMax.Load())/1e9)
	return nil
}

// clockBack counts the times the guest's wall clock (what dante and the relays see)
// went backwards, clockBackMax the largest step in ns: under TCG on a loaded host the
// emulated timer can misbehave, and the results say so.
var clockBack, clockBackMax atomic.Int64

func watchClock() {
	var ts unix.Timespec
	last := int64(0)
	for {
		_ = unix.ClockGettime(unix.CLOCK_REALTIME, &ts)
		now := ts.Nano()
		if last != 0 && now < last {
			clockBack.Add(1)
			if d := last - now; d > clockBackMax.Load() {
				clockBackMax.Store(d)
			}
		}
		last = now
		time.Sleep(50 * time.Millisecond)
	}
}

// proc is a program the guest started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	out  *os.File
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs argv in namespace ns, its output appended to logDir/name.log.
func (g *guest) start(name, ns string, argv ...string) (*proc, error) {
	f, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), out: f}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return p, nil
}

// stop sends SIGTERM, waits up to limit, then kills the process group.
func (p *proc) stop(limit time.Duration) (clean bool) {
	if p.exited() {
		return true
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(limit):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
		return false
	}
}

func (g *guest) stopAll() {
	g.mu.Lock()
	procs := g.procs
	g.mu.Unlock()
	for _, p := range procs {
		p.stop(5 * time.Second)
	}
}

// logTail is the end of a process's log, for an error message.
func logTail(name string, lines int) string {
	raw, _ := os.ReadFile(filepath.Join(logDir, name+".log"))
	all := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func run(ctx context.Context, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func inNS(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

func (g *guest) startServers() error {
	ctx := context.Background()
	// The messenger: iperf3, an HTTP-like first-byte server and a TCP echo.
	if _, err := g.start("iperf3-server", nsMsgr, "iperf3", "-s", "-B", msgrV4, "-p", iperfPort); err != nil {
		return err
	}
	if err := serve(nsMsgr, httpAddr, serveHTTP); err != nil {
		return err
	}
	if err := serve(nsMsgr, echoAddr, serveEcho); err != nil {
		return err
	}
	if s := g.plan.TLSSite; s != nil {
		site, err := startTLSSite(nsProxy, *s)
		if err != nil {
			return fmt.Errorf("tls site: %w", err)
		}
		g.site = site
	}
	for _, s := range g.plan.Servers {
		p, err := g.start(s.Name, nsProxy, s.Argv...)
		if err != nil {
			return err
		}
		if err := waitTCP(ctx, nsProxy, s.Wait, p, 15*time.Minute); err != nil {
			return fmt.Errorf("%s: %w\n%s", s.Name, err, logTail(s.Name, 20))
		}
	}
	return waitTCP(ctx, nsMsgr, msgrV4+":"+iperfPort, nil, 60*time.Second)
}

// waitTCP waits until addr accepts a connection from ns (or p exits).
func waitTCP(ctx context.Context, ns, addr string, p *proc, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return fmt.Errorf("exited before listening on %s: %v", addr, p.err)
		}
		c, err := dialNS(ctx, ns, addr, 2*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after %s: %v", addr, limit, last)
}

// measure starts a run's relay, takes its figures and stops it. A failure is
// reported in the result (Error) so that the other runs of the round still count.
func (g *guest) measure(r wire.Run) wire.Result {
	res := wire.Result{Round: g.plan.Round, Name: r.Name, Group: r.Group, Values: map[string]float64{}, Notes: map[string]string{}}
	if err := g.measureInto(r, &res); err != nil {
		res.Error = err.Error()
		if r.Argv != nil {
			res.Error += "\n--- " + r.Name + " log:\n" + logTail(logName(r), 25)
		}
	}
	return res
}

func logName(r wire.Run) string { return "run-" + r.Name + "-" + r.Group }

func (g *guest) measureInto(r wire.Run, res *wire.Result) error {
	ctx := context.Background()
	cl := client{socks: r.Socks}
	set := func(k string, v float64) { res.Values[k] = v }
	t0 := time.Now()
	phase := func(what string) {
		progress("  %s/%s: %s (%.0f s into the run)", r.Group, r.Name, what, time.Since(t0).Seconds())
	}
	var hello0 int64
	if g.site != nil {
		hello0 = g.site.hellos.Load()
	}
	var p *proc
	if len(r.Argv) > 0 {
		snap := snapshotRouter(ctx)
		defer func() {
			if left := restoreRouter(ctx, snap); left != "" {
				res.Notes["left_behind"] = left
			}
		}()
		t0 = time.Now()
		var err error
		if p, err = g.start(logName(r), nsRtr, r.Argv...); err != nil {
			return err
		}
		defer func() {
			t := time.Now()
			if !p.stop(20 * time.Second) {
				res.Notes["stop"] = "killed: no exit within 20 s of SIGTERM"
			}
			set("stop_s", time.Since(t).Seconds())
			if g.site != nil {
				set("tls_handshakes", float64(g.site.hellos.Load()-hello0))
				res.Notes["tls_suites"] = g.site.suites()
			}
		}()
		if r.Tun != "" {
			if err := routeIntoTun(ctx, r, p); err != nil {
				return err
			}
		}
		if err := waitReady(ctx, cl, p, 240*time.Second); err != nil {
			return err
		}
		phase("ready")
		set("start_wall_s", time.Since(t0).Seconds())
		cpu, err := procCPU(p.pid())
		if err != nil {
			return err
		}
		set("start_cpu_s", cpu)
	} else if err := waitReady(ctx, cl, nil, 60*time.Second); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // start-up's garbage and timers settle
	if r.Idle && p != nil {
		phase("idle")
		if err := g.profile(r, p, "idle", true); err != nil {
			return err
		}
		c0, err := procTicks(p.pid())
		if err != nil {
			return err
		}
		v0 := vmBusyTicks()
		var h0 int64
		if g.site != nil {
			h0 = g.site.hellos.Load()
		}
		time.Sleep(time.Duration(g.plan.IdleSeconds) * time.Second)
		if g.site != nil {
			set("tls_handshakes_idle", float64(g.site.hellos.Load()-h0))
		}
		c1, err := procTicks(p.pid())
		if err != nil {
			return err
		}
		set("idle_ticks", float64(c1-c0))
		set("idle_cpu_pct", float64(c1-c0)/float64(g.plan.IdleSeconds)) // ticks are 1/100 s
		set("idle_vm_ticks", float64(vmBusyTicks()-v0))
		if err := g.profile(r, p, "idle", false); err != nil {
			return err
		}
		st, err := procStatus(p.pid())
		if err != nil {
			return err
		}
		set("idle_rss_mib", st["VmRSS"]/1024)
		// VmRSS = RssAnon (heap, stacks: memory only this process can free) + RssFile
		// (the executable's pages mapped in: clean page cache the kernel can drop and
		// read again, which fault-around maps 64 KiB at a time) + RssShmem.
		set("idle_rss_anon_mib", st["RssAnon"]/1024)
		set("idle_rss_file_mib", st["RssFile"]/1024)
		set("threads_idle", st["Threads"])
	}
	if r.Flows {
		phase(fmt.Sprintf("holding %d idle flows", g.plan.Flows))
		if err := g.holdFlows(ctx, cl, p, set); err != nil {
			return err
		}
	}
	if r.Latency {
		phase("connect+first byte")
		med, p90, err := latency(ctx, cl, g.plan.Conns)
		if err != nil {
			return err
		}
		set("connect_ms_median", med)
		set("connect_ms_p90", p90)
	}
	if r.Throughput {
		var ctxsw0, ctxsw1 float64
		if p != nil {
			ctxsw0, _ = ctxSwitches(p.pid())
		}
		for _, dir := range []string{"up", "down"} {
			phase("iperf3 " + dir)
			if err := g.profile(r, p, dir, true); err != nil {
				return err
			}
			if err := g.transfer(ctx, r, p, dir, set); err != nil {
				return err
			}
			if err := g.profile(r, p, dir, false); err != nil {
				return err
			}
		}
		if p != nil {
			ctxsw1, _ = ctxSwitches(p.pid())
			set("ctx_switches", ctxsw1-ctxsw0)
			if st, err := procStatus(p.pid()); err == nil {
				set("threads", st["Threads"])
				set("hwm_mib", st["VmHWM"]/1024)
			}
		}
	}
	if p != nil && p.exited() {
		return fmt.Errorf("%s exited during the run: %v", r.Name, p.err)
	}
	return nil
}

// routerState is what a relay may leave behind in the router namespace: nft tables,
// links, and whether policy rules were added.
type routerState struct {
	tables, links, rules4, rules6 string
}

func snapshotRouter(ctx context.Context) routerState {
	get := func(argv ...string) string { out, _ := run(ctx, argv...); return out }
	return routerState{
		tables: get(inNS(nsRtr, "nft", "list", "tables")...),
		links:  get("ip", "-n", nsRtr, "-o", "link", "show"),
		rules4: get("ip", "-n", nsRtr, "-4", "rule", "show"),
		rules6: get("ip", "-n", nsRtr, "-6", "rule", "show"),
	}
}

// restoreRouter removes what the last relay left in the router (a relay killed before
// it cleaned up must not break the next one) and says what that was.
func restoreRouter(ctx context.Context, before routerState) string {
	now := snapshotRouter(ctx)
	var left []string
	for _, line := range strings.Split(now.tables, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.Contains(before.tables, line) {
			left = append(left, line)
			_, _ = run(ctx, inNS(nsRtr, append([]string{"nft", "delete"}, strings.Fields(line)...)...)...)
		}
	}
	for _, line := range strings.Split(now.links, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if !strings.Contains(before.links, " "+name+":") && !strings.Contains(before.links, " "+name+"@") {
			left = append(left, "link "+name)
			_, _ = run(ctx, "ip", "-n", nsRtr, "link", "del", name)
		}
	}
	for _, fam := range []struct{ flag, before, now string }{{"-4", before.rules4, now.rules4}, {"-6", before.rules6, now.rules6}} {
		if fam.before == fam.now {
			continue
		}
		left = append(left, "ip "+fam.flag+" rules")
		_, _ = run(ctx, "ip", "-n", nsRtr, fam.flag, "rule", "flush")
		_, _ = run(ctx, "ip", "-n", nsRtr, fam.flag, "rule", "add", "priority", "32766", "lookup", "main")
		_, _ = run(ctx, "ip", "-n", nsRtr, fam.flag, "rule", "add", "priority", "32767", "lookup", "default")
	}
	return strings.Join(left, "; ")
}

// routeIntoTun waits for the relay's TUN, brings it up and routes the messenger into it.
func routeIntoTun(ctx context.Context, r wire.Run, p *proc) error {
	deadline := time.Now().Add(120 * time.Second)
	for {
		if _, err := run(ctx, "ip", "-n", nsRtr, "link", "show", r.Tun); err == nil {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			return fmt.Errorf("%s made no TUN %s (exited: %v)", r.Name, r.Tun, p.exited())
		}
		time.Sleep(200 * time.Millisecond)
	}
	steps := [][]string{{"ip", "-n", nsRtr, "link", "set", r.Tun, "up"}}
	if r.TunAddr != "" {
		steps = append(steps, []string{"ip", "-n", nsRtr, "addr", "replace", r.TunAddr, "dev", r.Tun})
	}
	steps = append(steps, []string{"ip", "-n", nsRtr, "route", "replace", msgrPrefix, "dev", r.Tun})
	for _, s := range steps {
		if _, err := run(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits until the client gets the messenger's first byte (through the relay).
func waitReady(ctx context.Context, cl client, p *proc, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return fmt.Errorf("exited at start: %v", p.err)
		}
		if _, err := cl.firstByte(ctx); err == nil {
			return nil
		} else {
			last = err
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("no answer from the messenger through the relay within %s: %v", limit, last)
}

// profile sends SIGUSR2 to start (begin) or stop a CPU profile of phase, when the run
// asks for one; after the stop it waits for the file and names it after the phase.
func (g *guest) profile(r wire.Run, p *proc, phase string, begin bool) error {
	if p == nil || !slices.Contains(r.Profile, phase) {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		return fmt.Errorf("profile %s: %w", phase, err)
	}
	if begin {
		time.Sleep(200 * time.Millisecond)
		return nil
	}
	// tgtun writes TGTUN_PPROF with its counter appended: .1, .2, ... in phase order.
	n := slices.Index(r.Profile, phase) + 1
	src := filepath.Join(logDir, fmt.Sprintf("%s.pprof.%d", r.Name, n))
	dst := filepath.Join(logDir, fmt.Sprintf("%s-%s.pprof", r.Name, phase))
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st, err := os.Stat(src); err == nil && st.Size() > 0 {
			time.Sleep(300 * time.Millisecond) // written and closed
			return os.Rename(src, dst)
		}
	}
	return fmt.Errorf("profile %s: %s not written (built without -tags tgtun_pprof, or TGTUN_PPROF unset?)", phase, src)
}

// transfer runs iperf3 one way and records throughput, bytes and CPU.
func (g *guest) transfer(ctx context.Context, r wire.Run, p *proc, dir string, set func(string, float64)) error {
	args := []string{"iperf3", "-J", "-c", msgrV4, "-p", iperfPort, "-t", strconv.Itoa(g.plan.Seconds), "--connect-timeout", "30000"}
	if dir == "down" {
		args = append(args, "-R")
	}
	if r.Socks != "" {
		args = append([]string{"proxychains4", "-q", "-f", proxychainsConf(r.Socks)}, args...)
	}
	var pc0 float64
	if p != nil {
		pc0, _ = procCPU(p.pid())
	}
	v0 := vmBusyTicks()
	tctx, cancel := context.WithTimeout(ctx, time.Duration(g.plan.Seconds+90)*time.Second)
	defer cancel()
	out, err := exec.CommandContext(tctx, "ip", inNS(nsCli, args...)[1:]...).Output()
	v1 := vmBusyTicks()
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Error != "" || err != nil {
		// A failed test can leave iperf3's server busy: restart it for the next run.
		g.restartIperf()
		return fmt.Errorf("iperf3 %s: %v %s %v: %s", dir, err, res.Error, jerr, tail(string(out), 400))
	}
	set(dir+"_mbps", res.End.SumReceived.BitsPerSecond/1e6)
	set(dir+"_bytes", res.End.SumReceived.Bytes)
	set(dir+"_vm_cpu_s", float64(v1-v0)/100)
	if p != nil {
		pc1, err := procCPU(p.pid())
		if err != nil {
			return err
		}
		set(dir+"_proc_cpu_s", pc1-pc0)
	}
	return nil
}

func (g *guest) restartIperf() {
	g.mu.Lock()
	procs := g.procs
	g.mu.Unlock()
	for _, p := range procs {
		if p.name == "iperf3-server" && !p.exited() {
			p.stop(5 * time.Second)
		}
	}
	if _, err := g.start("iperf3-server", nsMsgr, "iperf3", "-s", "-B", msgrV4, "-p", iperfPort); err == nil {
		_ = waitTCP(context.Background(), nsMsgr, msgrV4+":"+iperfPort, nil, 30*time.Second)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// proxychainsConf writes (once per server) the configuration that makes iperf3 of the
// baseline speak SOCKS5 to dante itself.
func proxychainsConf(server string) string {
	path := "/tmp/proxychains-" + strings.NewReplacer(":", "_", ".", "_").Replace(server) + ".conf"
	if _, err := os.Stat(path); err == nil {
		return path
	}
	host, port, _ := net.SplitHostPort(server)
	_ = os.WriteFile(path, []byte("strict_chain\nquiet_mode\ntcp_read_time_out 30000\ntcp_connect_time_out 30000\n[ProxyList]\nsocks5 "+host+" "+port+"\n"), 0o644)
	return path
}

// holdFlows opens plan.Flows idle TCP flows to the messenger's echo, one round trip
// each, and reads the relay's RSS and the kernel's TCP memory (sockstat) while they
// are held; the difference with the reading before counts for the flows.
func (g *guest) holdFlows(ctx context.Context, cl client, p *proc, set func(string, float64)) error {
	before, err := tcpMemPages()
	if err != nil {
		return err
	}
	slab0, _ := meminfo("Slab")
	// Opened 8 at a time: under emulation a round trip through the relay takes long.
	conns := make([]net.Conn, g.plan.Flows)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		time.Sleep(2 * time.Second) // the relay sees them close
	}()
	var next atomic.Int64
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			buf := make([]byte, 1)
			for {
				i := int(next.Add(1)) - 1
				if i >= len(conns) {
					return
				}
				c, err := cl.dial(ctx, echoAddr)
				if err != nil {
					errs <- fmt.Errorf("idle flow %d: %w", i+1, err)
					return
				}
				conns[i] = c
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				if _, err := c.Write([]byte{'x'}); err != nil {
					errs <- fmt.Errorf("idle flow %d: %w", i+1, err)
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs <- fmt.Errorf("idle flow %d: echo: %w", i+1, err)
					return
				}
				_ = c.SetDeadline(time.Time{})
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	time.Sleep(3 * time.Second)
	held, err := tcpMemPages()
	if err != nil {
		return err
	}
	if slab1, err := meminfo("Slab"); err == nil {
		set("flows_slab_delta_kib", slab1-slab0)
	}
	page := float64(os.Getpagesize()) / 1024
	set("flows_kernel_kib_before", float64(before)*page)
	set("flows_kernel_kib", float64(held)*page)
	set("flows_kernel_delta_kib", float64(held-before)*page)
	if p != nil {
		st, err := procStatus(p.pid())
		if err != nil {
			return err
		}
		set("flows_rss_mib", st["VmRSS"]/1024)
		set("flows_rss_anon_mib", st["RssAnon"]/1024)
	}
	return nil
}

// latency measures n connects + first byte of the messenger's HTTP answer.
func latency(ctx context.Context, cl client, n int) (median, p90 float64, err error) {
	var ms []float64
	for range n {
		d, err := cl.firstByte(ctx)
		if err != nil {
			return 0, 0, fmt.Errorf("connect+first byte: %w", err)
		}
		ms = append(ms, float64(d.Microseconds())/1000)
	}
	slices.Sort(ms)
	return ms[len(ms)/2], ms[len(ms)*9/10], nil
}

// collect writes the plan's files (logs, profiles) as a tar onto the raw result disk.
func (g *guest) collect(dev string) error {
	var files []string
	for _, pat := range append([]string{logDir + "/*"}, g.plan.Collect...) {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(name), Mode: 0o644, Size: int64(len(raw)), ModTime: time.Now()}); err != nil {
			return err
		}
		if _, err := tw.Write(raw); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Sync()
}

// --- /proc readers ---

// procTicks is utime+stime of pid in clock ticks (1/100 s).
func procTicks(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(s[i+1:])
	// after ')': state(3) ... utime is field 14 of the whole line, index 11 here.
	if len(f) < 13 {
		return 0, errors.New("stat: short")
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st, nil
}

func procCPU(pid int) (float64, error) {
	t, err := procTicks(pid)
	return float64(t) / 100, err
}

// vmBusyTicks is the machine's non-idle time (user, nice, system, irq, softirq, steal).
func vmBusyTicks() int64 {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return busy
}

// procStatus reads the numeric fields of /proc/PID/status (kB values in kB).
func procStatus(pid int) (map[string]float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		if n, err := strconv.ParseFloat(fs[0], 64); err == nil {
			m[k] = n
		}
	}
	return m, nil
}

// ctxSwitches sums the voluntary and involuntary context switches of every thread.
func ctxSwitches(pid int) (float64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "voluntary_ctxt_switches:") || strings.HasPrefix(line, "nonvoluntary_ctxt_switches:") {
				_, v, _ := strings.Cut(line, ":")
				n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				sum += n
			}
		}
	}
	return sum, nil
}

// tcpMemPages is the kernel's TCP socket memory in pages (/proc/net/sockstat "mem"),
// which is counted for the whole machine, every namespace included.
func tcpMemPages() (int64, error) {
	f, err := os.Open("/proc/net/sockstat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 || fs[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(fs); i += 2 {
			if fs[i] == "mem" {
				return strconv.ParseInt(fs[i+1], 10, 64)
			}
		}
	}
	return 0, errors.New("sockstat: no TCP mem")
}

// meminfo reads one field of /proc/meminfo in kB.
func meminfo(field string) (float64, error) {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && k == field {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseFloat(f[0], 64)
			}
		}
	}
	return 0, fmt.Errorf("meminfo: no %s", field)
}

// counter is a small helper for the TLS site's per-suite counts.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
}
