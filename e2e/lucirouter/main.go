// Command lucirouter is the router that luci-app-tgtun's browser tests talk to
// (luci-app/tests/runtime.test.js, through luci-app/tests/lib/router.js): OpenWrt's own
// ubusd, rpcd and uhttpd, built from ../shared/openwrt by its build.sh, and tgtun's
// daemon on that ubusd, running in the router of a test network (e2e/testnet) with a
// real SOCKS5 proxy (dante) behind it.
//
//	lucirouter -root DIR -openwrt PREFIX -tgtun BIN
//
// DIR holds what router.js laid out: etc/config (the router's /etc/config: rpcd's logins,
// luci, tgtun), acl.d (rpcd's access lists: rpcd's own, LuCI base's, the app's),
// rpcd-plugins (rpcd's file plugin), www (uhttpd's document root: LuCI's runtime, the
// theme, the app's views, cgi-bin/luci) and fixtures.json (what luci-rpc answers).
//
// rpcd reads /etc/config and PREFIX/share/rpcd/acl.d, and keeps sessions, uci deltas and
// rollback snapshots in /var/run/rpcd: it runs in a private mount namespace where DIR's
// copies are mounted there (an overlay over /etc holds the mount point of /etc/config),
// so neither the host's /etc nor the shared build in PREFIX is written. The host's init
// scripts are hidden from rpcd's rc object, and rpcd loads no rpc-sys plugin (it can
// reboot): LuCI's views need neither.
//
// Programs that are not here are answered on the bus by this command, as few as the
// views and LuCI's runtime call: netifd's network, network.interface and network.device;
// LuCI's luci and luci-rpc (rpcd's ucode plugin on a router; this rpcd is built without
// ucode); and procd's service object, which on config.change of tgtun runs
// `tgtun reload`, as /etc/init.d/tgtun's reload trigger does.
//
// It prints one JSON line when the router is up, {"url": "http://127.0.0.1:PORT",
// "ubus": SOCKET, "config": DIR/etc/config, ...}, then reads commands, one JSON object a
// line, and answers each with one line {"id": N, "result": ...} or {"id": N, "error": "..."}:
//
//	{"id":1,"op":"daemon","mode":"real"}   tgtun run on the config in etc/config/tgtun
//	{"id":2,"op":"daemon","mode":"none"}   no tgtun object on the bus
//	{"id":3,"op":"daemon","mode":"fake","answers":{"status":{...},"check":{...}}}
//	                                       a tgtun object that answers each method with
//	                                       the given table, or with ubus status N for
//	                                       {"$status": N}: a daemon in a state the test
//	                                       network cannot produce
//	{"id":4,"op":"call","object":"uci","method":"changes","args":{...}}
//	                                       a call on the bus as root: {"status": N, "data": {...}}
//	{"id":5,"op":"events"}                 what the service object and the fake tgtun
//	                                       received since the last "events"
//	{"id":6,"op":"panel","answers":{"/sub/TOKEN":{"status":200,"body":"...","headers":{...}}}}
//	                                       a subscription provider's panel on the test
//	                                       network's internet host (198.51.100.80, HTTP):
//	                                       sets its answer of each path given ("reason":
//	                                       a status line's own text) and returns
//	                                       {"url": "http://198.51.100.80:PORT",
//	                                       "requests": {PATH: N}}, the requests so far
//
// At the end of its input, or on SIGTERM, it stops everything and removes the test
// network. Needs root.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/daemon/control"
	"github.com/tgtun/tgtun/daemon/lists"
	"github.com/tgtun/tgtun/daemon/subs"
	"github.com/tgtun/tgtun/daemon/ubus"
	"github.com/tgtun/tgtun/e2e/testnet"
)

func main() {
	root := flag.String("root", "", "`directory` laid out by luci-app/tests/lib/router.js")
	prefix := flag.String("openwrt", "/var/cache/tgtun-openwrt", "`prefix` of OpenWrt's programs (../shared/openwrt/build.sh PREFIX)")
	tgtun := flag.String("tgtun", "", "the tgtun `binary` to run in the router")
	flag.Parse()
	if *root == "" || *tgtun == "" {
		fmt.Fprintln(os.Stderr, "usage: lucirouter -root DIR -openwrt PREFIX -tgtun BIN")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *root, *prefix, *tgtun); err != nil {
		fmt.Fprintf(os.Stderr, "lucirouter: %v\n", err)
		os.Exit(1)
	}
}

// The proxy the tests' router config names as 'primary' (luci-app/tests/fixtures/
// sample.config): dante on the test network's proxy host, with a login.
const (
	proxyPort            = 1080
	proxyUser, proxyPass = "alice", "secret"
)

// The router's LAN bridges that sample.config names as lan_iface.
var lanBridges = []string{"br-lan", "br-guest"}

type router struct {
	root, prefix, tgtunBin string
	sock, url              string
	net                    *testnet.Net
	logf                   func(string, ...any)

	procs []*proc // the test network, ubusd, rpcd, uhttpd: stopped in reverse order

	mu     sync.Mutex
	daemon *testnet.Proc
	fake   *fakeTgtun
	events []event
	panel  *panel
}

type event struct {
	Object string         `json:"object"`
	Method string         `json:"method"`
	Args   map[string]any `json:"args"`
}

func run(ctx context.Context, root, prefix, tgtunBin string) error {
	for _, f := range []string{"sbin/ubusd", "sbin/rpcd", "bin/uhttpd", "lib/uhttpd_ubus.so", "lib/rpcd/file.so", "bin/ubus"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			return fmt.Errorf("OpenWrt's programs are not built in %s (%v): run ../shared/openwrt/build.sh %s", prefix, err, prefix)
		}
	}
	for _, d := range []string{"etc/config", "acl.d", "rpcd-plugins", "www"} {
		if st, err := os.Stat(filepath.Join(root, d)); err != nil || !st.IsDir() {
			return fmt.Errorf("%s/%s is missing: lay the router out with luci-app/tests/lib/router.js", root, d)
		}
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
	}
	r := &router{root: root, prefix: prefix, tgtunBin: tgtunBin, logf: logf, sock: filepath.Join(root, "run", "ubus.sock")}
	defer r.close()
	if err := r.start(ctx); err != nil {
		return err
	}
	ready, _ := json.Marshal(map[string]any{
		"url": r.url, "ubus": r.sock, "config": filepath.Join(root, "etc", "config"),
		"router_ns": r.net.Router, "client_ns": r.net.Client,
	})
	fmt.Println(string(ready))
	return r.serve(ctx, os.Stdin)
}

// start builds the test network and starts OpenWrt's programs and the bus objects.
func (r *router) start(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	n, cleanup, err := testnet.NewCtx(sctx, r.logf)
	if cleanup != nil {
		r.procs = append(r.procs, &proc{name: "test network", stop: cleanup})
	}
	if err != nil {
		return fmt.Errorf("test network: %w", err)
	}
	r.net = n
	if _, err := n.StartDante(testnet.DanteOptions{Auth: true, User: proxyUser, Pass: proxyPass, Port: proxyPort}); err != nil {
		return fmt.Errorf("dante: %w", err)
	}
	if err := n.StartMessengerServers(); err != nil {
		return fmt.Errorf("messenger servers: %w", err)
	}
	for _, br := range lanBridges {
		if out, err := n.Exec(sctx, n.Router, "ip", "link", "add", br, "up", "type", "bridge"); err != nil {
			return fmt.Errorf("%s: %w: %s", br, err, out)
		}
	}

	for _, d := range []string{"run", "logs", "ns/etc-upper", "ns/etc-work", "lists"} {
		if err := os.MkdirAll(filepath.Join(r.root, d), 0o755); err != nil {
			return err
		}
	}
	env := []string{"LD_LIBRARY_PATH=" + filepath.Join(r.prefix, "lib")}
	ubusd, err := r.startProc("ubusd", env, filepath.Join(r.prefix, "sbin/ubusd"), "-s", r.sock)
	if err != nil {
		return err
	}
	if err := r.waitFor(sctx, ubusd, "ubusd's socket", func(ctx context.Context) error {
		c, err := ubus.Dial(ctx, r.sock)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		return err
	}

	rpcd, err := r.startProc("rpcd", env, "unshare", "--mount", "--propagation", "private", "sh", "-c", r.rpcdScript())
	if err != nil {
		return err
	}
	if err := r.waitFor(sctx, rpcd, "rpcd's session and uci objects", func(ctx context.Context) error {
		return r.lookup(ctx, "session", "uci", "file")
	}); err != nil {
		return err
	}

	// The objects of the programs that are not here, before uhttpd takes requests.
	go func() {
		srv := &ubus.Server{Path: r.sock, Objects: r.objects(), MinBackoff: 50 * time.Millisecond}
		if err := srv.Run(ctx); err != nil {
			r.logf("bus objects: %v", err)
		}
	}()
	if err := r.waitFor(sctx, nil, "the objects of netifd, LuCI and procd", func(ctx context.Context) error {
		return r.lookup(ctx, "service", "luci", "luci-rpc", "network.interface")
	}); err != nil {
		return err
	}

	// uhttpd as /etc/config/uhttpd of OpenWrt sets it up for LuCI, on a free port of
	// the host's loopback (where the browser is).
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		uhttpd, err := r.startProc("uhttpd", env, filepath.Join(r.prefix, "bin/uhttpd"), "-f",
			"-p", addr, "-h", filepath.Join(r.root, "www"), "-x", "/cgi-bin", "-u", "/ubus", "-U", r.sock,
			"-t", "60", "-T", "30", "-k", "20", "-A", "1", "-n", "3", "-N", "100")
		if err != nil {
			return err
		}
		err = r.waitFor(sctx, uhttpd, "uhttpd on "+addr, func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			r.url = "http://" + addr
			return nil
		}
		if attempt == 2 {
			return err
		}
		r.logf("uhttpd on %s: %v; another port", addr, err)
	}
}

// rpcdScript mounts the router's files where rpcd looks for them, in its own mount
// namespace, and runs rpcd.
func (r *router) rpcdScript() string {
	q := shellQuote
	etcUp, etcWork := filepath.Join(r.root, "ns/etc-upper"), filepath.Join(r.root, "ns/etc-work")
	share, plugins := filepath.Join(r.prefix, "share"), filepath.Join(r.prefix, "lib/rpcd")
	return strings.Join([]string{
		"set -e",
		fmt.Sprintf("mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc", q(etcUp), q(etcWork)),
		"mkdir -p /etc/config /etc/init.d",
		"mount --bind " + q(filepath.Join(r.root, "etc/config")) + " /etc/config",
		"mount -t tmpfs -o mode=0755 tmpfs /etc/init.d",
		"mount -t tmpfs -o mode=0755 tmpfs " + q(share),
		"mkdir -p " + q(share+"/rpcd/acl.d"),
		"mount --bind " + q(filepath.Join(r.root, "acl.d")) + " " + q(share+"/rpcd/acl.d"),
		"mount --bind " + q(filepath.Join(r.root, "rpcd-plugins")) + " " + q(plugins),
		"mount -t tmpfs -o mode=0755 tmpfs /run",
		"exec " + q(filepath.Join(r.prefix, "sbin/rpcd")) + " -s " + q(r.sock),
	}, "\n")
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// proc is a program this command started, or a cleanup step.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	stop func() error
}

func (r *router) startProc(name string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(r.root, "logs", name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	p.stop = func() error {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		return nil
	}
	r.procs = append(r.procs, p)
	r.logf("started %s (pid %d): %s", name, cmd.Process.Pid, strings.Join(args, " "))
	return p, nil
}

// waitFor polls ready until it succeeds; a process that exits meanwhile is an error with
// the end of its log.
func (r *router) waitFor(ctx context.Context, p *proc, what string, ready func(context.Context) error) error {
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = ready(cctx)
		cancel()
		if last == nil {
			return nil
		}
		if p != nil {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited (%v) before %s: %s", p.name, p.err, what, r.logTail(p.name))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *router) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(r.root, "logs", name+".log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// lookup succeeds when every object is on the bus.
func (r *router) lookup(ctx context.Context, objects ...string) error {
	c, err := ubus.Dial(ctx, r.sock)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, o := range objects {
		objs, err := c.Lookup(ctx, o)
		if err != nil {
			return fmt.Errorf("%s: %w", o, err)
		}
		if len(objs) == 0 {
			return fmt.Errorf("%s: not on the bus", o)
		}
	}
	return nil
}

func (r *router) close() {
	r.mu.Lock()
	fake, daemon := r.fake, r.daemon
	r.fake, r.daemon = nil, nil
	r.mu.Unlock()
	if fake != nil {
		fake.stop()
	}
	if daemon != nil {
		if err := daemon.Stop(); err != nil {
			r.logf("tgtun: %v", err)
		}
	}
	for i := len(r.procs) - 1; i >= 0; i-- {
		if err := r.procs[i].stop(); err != nil {
			r.logf("stop %s: %v", r.procs[i].name, err)
		}
	}
}

// serve answers the commands on in until its end or ctx's.
func (r *router) serve(ctx context.Context, in *os.File) error {
	lines := make(chan []byte)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
		close(lines)
	}()
	out := json.NewEncoder(os.Stdout)
	for {
		var line []byte
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case line, ok = <-lines:
			if !ok {
				return nil
			}
		}
		var cmd struct {
			ID      int                        `json:"id"`
			Op      string                     `json:"op"`
			Mode    string                     `json:"mode"`
			Answers map[string]json.RawMessage `json:"answers"`
			Object  string                     `json:"object"`
			Method  string                     `json:"method"`
			Args    map[string]any             `json:"args"`
		}
		reply := map[string]any{}
		if err := json.Unmarshal(line, &cmd); err != nil {
			reply["error"] = fmt.Sprintf("command %q: %v", line, err)
		} else {
			reply["id"] = cmd.ID
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			var res any
			var err error
			switch cmd.Op {
			case "daemon":
				err = r.setDaemon(cctx, cmd.Mode, cmd.Answers)
			case "call":
				res, err = r.call(cctx, cmd.Object, cmd.Method, cmd.Args)
			case "panel":
				res, err = r.setPanel(cmd.Answers)
			case "events":
				r.mu.Lock()
				evs := append([]event{}, r.events...)
				r.events = nil
				r.mu.Unlock()
				res = evs
			default:
				err = fmt.Errorf("unknown op %q", cmd.Op)
			}
			cancel()
			if err != nil {
				reply["error"] = err.Error()
			} else {
				reply["result"] = res
			}
		}
		if err := out.Encode(reply); err != nil {
			return err
		}
	}
}

// call invokes a method on the bus as root (as LuCI's server side and the init scripts
// do) and returns its status and data.
func (r *router) call(ctx context.Context, object, method string, args map[string]any) (any, error) {
	c, err := ubus.Dial(ctx, r.sock)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	t, err := ubus.FromMap(args)
	if err != nil {
		return nil, err
	}
	data, err := c.Invoke(ctx, object, method, t)
	var se *ubus.StatusError
	if errors.As(err, &se) {
		return map[string]any{"status": int(se.Code)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ubus call %s %s: %w", object, method, err)
	}
	return map[string]any{"status": 0, "data": data.Map()}, nil
}

// setDaemon puts the tgtun object on the bus the test asks for.
func (r *router) setDaemon(ctx context.Context, mode string, answers map[string]json.RawMessage) error {
	r.mu.Lock()
	fake, daemon := r.fake, r.daemon
	r.fake, r.daemon = nil, nil
	r.mu.Unlock()
	if fake != nil {
		fake.stop()
	}
	if daemon != nil {
		if err := daemon.Stop(); err != nil {
			return fmt.Errorf("tgtun did not stop cleanly: %w\n%s", err, tail(daemon.Output(), 2000))
		}
	}
	if err := r.waitGone(ctx, "tgtun"); err != nil {
		return err
	}
	switch mode {
	case "none":
		return nil
	case "real":
		return r.startDaemon(ctx)
	case "fake":
		f, err := r.startFake(ctx, answers)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.fake = f
		r.mu.Unlock()
		return nil
	}
	return fmt.Errorf("daemon mode %q: real, none or fake", mode)
}

func (r *router) waitGone(ctx context.Context, object string) error {
	for {
		err := r.lookup(ctx, object)
		if err != nil && strings.Contains(err.Error(), "not on the bus") {
			return nil
		}
		var se *ubus.StatusError
		if errors.As(err, &se) && se.Code == ubus.StatusNotFound {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is still on the bus: %w", object, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startDaemon runs tgtun in the router as /etc/init.d/tgtun would, on this ubusd, and
// waits until its object is on the bus.
func (r *router) startDaemon(ctx context.Context) error {
	n := r.net
	// The test network has no resolver: names (proxy.example.org in the tests' config)
	// fail at once against an empty 127.0.0.1:53 rather than after the timeout of the
	// host's resolver, unreachable from here.
	resolv := filepath.Join(r.root, "run", "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\noptions attempts:1\n"), 0o644); err != nil {
		return err
	}
	// The daemon asks netifd with the ubus CLI (an interface proxy): OpenWrt's, on this bus.
	bin := filepath.Join(r.root, "run", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s -s %s \"$@\"\n",
		shellQuote(filepath.Join(r.prefix, "lib")), shellQuote(filepath.Join(r.prefix, "bin/ubus")), shellQuote(r.sock))
	if err := os.WriteFile(filepath.Join(bin, "ubus"), []byte(wrapper), 0o755); err != nil {
		return err
	}
	// (Where /etc/resolv.conf is a link to nowhere, names take the resolver's timeout.)
	script := "mount --bind " + shellQuote(resolv) + " /etc/resolv.conf || echo 'lucirouter: /etc/resolv.conf kept' >&2; exec \"$@\""
	p, err := n.Start(n.Router, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
		"env", "PATH="+bin+":"+os.Getenv("PATH"), "TGTUN_ALLOW_DOCUMENTATION_RANGES=1", r.tgtunBin, "run",
		"-c", filepath.Join(r.root, "etc/config/tgtun"), "--socket", r.daemonSocket(),
		"--ubus-socket", r.sock, "--list-cache", filepath.Join(r.root, "lists"))
	if err != nil {
		return err
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := r.lookup(cctx, "tgtun")
		cancel()
		if err == nil {
			break
		}
		if exited, werr := p.Exited(); exited {
			return fmt.Errorf("tgtun exited (%v) before its object was on the bus:\n%s", werr, tail(p.Output(), 3000))
		}
		select {
		case <-ctx.Done():
			p.Kill()
			return fmt.Errorf("tgtun's object never appeared on the bus: %w\n%s", err, tail(p.Output(), 3000))
		case <-time.After(100 * time.Millisecond):
		}
	}
	r.mu.Lock()
	r.daemon = p
	r.mu.Unlock()
	return nil
}

func (r *router) daemonSocket() string { return filepath.Join(r.root, "run", "tgtun.sock") }

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (r *router) record(object, method string, args ubus.Table) {
	m := args.Map()
	r.mu.Lock()
	r.events = append(r.events, event{Object: object, Method: method, Args: m})
	r.mu.Unlock()
}

// fakeTgtun is a tgtun object with fixed answers, served by its own connection.
type fakeTgtun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (f *fakeTgtun) stop() {
	f.cancel()
	<-f.done
}

// answerShapes are the daemon's types of the answers a fake tgtun gives. update_lists
// and update_subscriptions answer maps (control.Daemon.UpdateLists,
// UpdateSubscriptions): their members and the daemon's types of each.
var answerShapes = map[string]func() any{
	"status": func() any { return new(control.Status) },
	"check":  func() any { return new(control.CheckResult) },
	"reload": func() any {
		return new(struct {
			Reloaded bool `json:"reloaded"`
		})
	},
	"update_lists": func() any {
		return new(struct {
			Lists []lists.ListStatus `json:"lists"`
			Error string             `json:"error"`
		})
	},
	"update_subscriptions": func() any {
		return new(struct {
			Subscriptions []subs.Status `json:"subscriptions"`
			Error         string        `json:"error"`
		})
	},
}

// fakeMethods are the daemon's methods with their argument policies, from its own
// method table (never called here): a fake tgtun has exactly the daemon's methods.
func fakeMethods() []ubus.Method {
	return control.UbusObject((&control.Daemon{}).Table()).Methods
}

func (r *router) startFake(ctx context.Context, answers map[string]json.RawMessage) (*fakeTgtun, error) {
	obj := ubus.Object{Name: "tgtun", Methods: fakeMethods()}
	for name := range answers {
		if !slices.ContainsFunc(obj.Methods, func(m ubus.Method) bool { return m.Name == name }) {
			return nil, fmt.Errorf("answer of %s: tgtun has no such method", name)
		}
	}
	for i, m := range obj.Methods {
		name := m.Name
		var reply ubus.Table
		var status ubus.Status
		if raw, ok := answers[name]; ok {
			t, err := ubus.TableFromJSON(raw)
			if err != nil {
				return nil, fmt.Errorf("answer of %s: %w", name, err)
			}
			if v, ok := t.Get("$status"); ok && len(t) == 1 {
				n, ok := v.(int32)
				if !ok {
					return nil, fmt.Errorf("answer of %s: $status is not a number", name)
				}
				status = ubus.Status(n)
			} else {
				// A fixed answer must be one the daemon can send: no member its types lack.
				shape, ok := answerShapes[name]
				if !ok {
					return nil, fmt.Errorf("answer of %s: lucirouter does not know the daemon's type of it (answerShapes)", name)
				}
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.DisallowUnknownFields()
				if err := dec.Decode(shape()); err != nil {
					return nil, fmt.Errorf("answer of %s is not what tgtun sends (%T): %w", name, shape(), err)
				}
				reply = t
			}
		} else {
			status = ubus.StatusNoData
		}
		obj.Methods[i].Handler = func(_ context.Context, args ubus.Table) (ubus.Table, error) {
			r.record("tgtun", name, args)
			if status != ubus.StatusOK {
				return nil, &ubus.StatusError{Code: status}
			}
			return reply, nil
		}
	}
	sctx, cancel := context.WithCancel(context.Background())
	f := &fakeTgtun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		srv := &ubus.Server{Path: r.sock, Objects: []ubus.Object{obj}, MinBackoff: 50 * time.Millisecond}
		if err := srv.Run(sctx); err != nil {
			r.logf("fake tgtun: %v", err)
		}
	}()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		err := r.lookup(cctx, "tgtun")
		ccancel()
		if err == nil {
			return f, nil
		}
		select {
		case <-ctx.Done():
			f.stop()
			return nil, fmt.Errorf("the fake tgtun object never appeared on the bus: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// objects are the bus objects of the programs a router has and this one has not.
func (r *router) objects() []ubus.Object {
	fixed := func(name string, res func() (ubus.Table, error)) ubus.Method {
		return ubus.Method{Name: name, Handler: func(context.Context, ubus.Table) (ubus.Table, error) { return res() }}
	}
	empty := func() (ubus.Table, error) { return ubus.Table{}, nil }
	fixture := func(key string) func() (ubus.Table, error) {
		return func() (ubus.Table, error) {
			b, err := os.ReadFile(filepath.Join(r.root, "fixtures.json"))
			if err != nil {
				return nil, err
			}
			var all map[string]json.RawMessage
			if err := json.Unmarshal(b, &all); err != nil {
				return nil, fmt.Errorf("fixtures.json: %w", err)
			}
			raw, ok := all[key]
			if !ok {
				return ubus.Table{}, nil
			}
			return ubus.TableFromJSON(raw)
		}
	}
	return []ubus.Object{
		{Name: "luci", Methods: []ubus.Method{
			fixed("getFeatures", fixture("features")),
			fixed("getVersion", fixture("version")),
		}},
		{Name: "luci-rpc", Methods: []ubus.Method{
			fixed("getDHCPLeases", fixture("leases")),
			fixed("getNetworkDevices", fixture("devices")),
			fixed("getBoardJSON", fixture("board")),
			fixed("getWirelessDevices", empty),
			fixed("getHostHints", empty),
		}},
		{Name: "network", Methods: []ubus.Method{fixed("get_proto_handlers", empty)}},
		{Name: "network.interface", Methods: []ubus.Method{
			fixed("dump", func() (ubus.Table, error) { return ubus.Table{{Name: "interface", Value: ubus.Array{}}}, nil }),
		}},
		{Name: "network.device", Methods: []ubus.Method{fixed("status", empty)}},
		{Name: "service", Methods: []ubus.Method{{
			Name:    "event",
			Policy:  []ubus.Arg{{Name: "type", Type: ubus.TypeString}, {Name: "data", Type: ubus.TypeTable}},
			Handler: r.serviceEvent,
		}}},
	}
}

// serviceEvent is procd's service.event: rpcd sends config.change for each config that
// uci apply (or its rollback) wrote. For tgtun, procd runs /etc/init.d/tgtun reload,
// whose reload_service asks the running daemon to re-read the file: `tgtun reload`.
func (r *router) serviceEvent(_ context.Context, args ubus.Table) (ubus.Table, error) {
	r.record("service", "event", args)
	m := args.Map()
	data, _ := m["data"].(map[string]any)
	if m["type"] != "config.change" || data == nil || data["package"] != "tgtun" {
		return nil, nil
	}
	r.mu.Lock()
	running := r.daemon != nil
	r.mu.Unlock()
	if !running {
		return nil, nil
	}
	// rpcd waits a second at most for this answer: reload in the background.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, r.tgtunBin, "reload", "--socket", r.daemonSocket()).CombinedOutput()
		if err != nil {
			r.logf("tgtun reload after config.change: %v: %s", err, out)
		}
	}()
	return nil, nil
}
