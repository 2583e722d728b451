// Package testnet builds the test network of DESIGN.md ("Test network (e2e)") out of
// network namespaces joined by veth pairs, and runs real proxy servers and small
// test servers in it.
//
//	client ──lan0── router ──wan0── inet (the internet + the censor) ── proxy ── msgr
//
// The router is where tgtun runs. The inet namespace rejects everything addressed to
// the messenger subnets unless it comes from the proxy host, and the proxy host (which
// does not forward) is the only one with a route to the messenger. Nothing is
// created in the caller's own namespace, so the host is never touched and no packet
// can leave the test network.
package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Addresses of the test network. They are fixed facts of the topology (documentation
// ranges only), not settings.
var (
	ClientV4 = netip.MustParseAddr("192.0.2.10")
	ClientV6 = netip.MustParseAddr("2001:db8:1::10")
	LANV4    = netip.MustParseAddr("192.0.2.1") // the router on lan0
	LANV6    = netip.MustParseAddr("2001:db8:1::1")
	WANV4    = netip.MustParseAddr("198.51.100.1") // the router on wan0; LAN IPv4 is masqueraded to it
	WANV6    = netip.MustParseAddr("2001:db8:2::1")
	InetV4   = netip.MustParseAddr("198.51.100.254") // the router's gateway
	InetV6   = netip.MustParseAddr("2001:db8:2::fe")
	DirectV4 = netip.MustParseAddr("198.51.100.80") // an ordinary, uncensored internet host
	DirectV6 = netip.MustParseAddr("2001:db8:2::80")
	ProxyV4  = netip.MustParseAddr("198.51.100.6") // the proxy host
	ProxyV6  = netip.MustParseAddr("2001:db8:2::6")
	MsgrV4   = netip.MustParseAddr("203.0.113.10") // the censored messenger server
	MsgrV6   = netip.MustParseAddr("2001:db8:3::10")

	MsgrPrefixV4 = netip.MustParsePrefix("203.0.113.0/24")
	MsgrPrefixV6 = netip.MustParsePrefix("2001:db8:3::/64")
)

// Interface names inside the namespaces.
const (
	LANIface = "lan0" // the router's LAN side: tgtun's lan_iface
	WANIface = "wan0" // the router's WAN side
)

// Ports of the test servers started by StartMessengerServers and StartDirectServer.
const (
	HTTPPort    = 80  // answers "you are ADDR\n"
	EchoPort    = 7   // TCP and UDP echo
	MTProtoPort = 443 // the messenger's MTProto stand-in (StartMTProto)
)

// requiredBinaries maps the programs the package runs to their Debian packages.
// Missing ones make New fail with the apt-get line that installs them.
func requiredBinaries() map[string]string {
	return map[string]string{
		"ip":         "iproute2",
		"nft":        "nftables",
		"sysctl":     "procps",
		"socat":      "socat",
		"curl":       "curl",
		"iperf3":     "iperf3",
		"danted":     "dante-server",
		"microsocks": "microsocks",
		"ss-server":  "shadowsocks-libev",
		"tinyproxy":  "tinyproxy",
		"openssl":    "openssl",
		"unshare":    "util-linux",
		"ss-local":   "shadowsocks-libev",
		"dnsmasq":    "dnsmasq-base",
	}
}

// Net is one running test network. Its fields are read-only.
type Net struct {
	// Namespace names, unique per run ("tg<pid>-<n>-client" …).
	Client, Router, Inet, Proxy, Messenger string
	// Dir is a temporary directory for server configs and logs, removed at cleanup.
	Dir string

	logf func(format string, args ...any)

	mu        sync.Mutex
	procs     []*Proc
	listeners []interface{ Close() error }
	closed    bool
}

var netCounter atomic.Int64 // makes namespace names unique within this process

// New builds a test network for a test. Everything it creates (namespaces,
// processes, servers, files) is removed by t.Cleanup, even when the test fails.
// A missing prerequisite (root, a binary) fails the test.
func New(t testing.TB) *Net {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, cleanup, err := NewCtx(ctx, t.Logf)
	if cleanup != nil {
		t.Cleanup(func() {
			if err := cleanup(); err != nil {
				t.Errorf("testnet cleanup: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	return n
}

// NewCtx builds a test network outside of tests. The returned cleanup function is
// non-nil even when err is not, and must be called to remove what was built.
// logf may be nil.
func NewCtx(ctx context.Context, logf func(format string, args ...any)) (*Net, func() error, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := CheckPrerequisites(); err != nil {
		return nil, nil, err
	}
	prefix := fmt.Sprintf("tg%d-%d-", os.Getpid(), netCounter.Add(1))
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("temp dir: %w", err)
	}
	n := &Net{
		Client:    prefix + "client",
		Router:    prefix + "router",
		Inet:      prefix + "inet",
		Proxy:     prefix + "proxy",
		Messenger: prefix + "msgr",
		Dir:       dir,
		logf:      logf,
	}
	if err := n.build(ctx); err != nil {
		return n, n.close, err
	}
	return n, n.close, nil
}

// CheckPrerequisites reports a missing root privilege or missing programs.
func CheckPrerequisites() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (network namespaces, nftables)")
	}
	var bins, pkgs []string
	seen := map[string]bool{}
	for bin, pkg := range requiredBinaries() {
		if _, err := exec.LookPath(bin); err != nil {
			bins = append(bins, bin)
			if !seen[pkg] {
				seen[pkg] = true
				pkgs = append(pkgs, pkg)
			}
		}
	}
	if len(bins) > 0 {
		slices.Sort(bins)
		slices.Sort(pkgs)
		return fmt.Errorf("missing programs %s: apt-get install %s",
			strings.Join(bins, ", "), strings.Join(pkgs, " "))
	}
	return nil
}

func (n *Net) namespaces() []string {
	return []string{n.Client, n.Router, n.Inet, n.Proxy, n.Messenger}
}

// build runs the setup script. Interfaces are created directly inside their
// namespaces (ip link add … netns), so nothing ever appears in the caller's namespace.
func (n *Net) build(ctx context.Context) error {
	for _, ns := range n.namespaces() {
		if err := n.ip(ctx, "netns", "add", ns); err != nil {
			return err
		}
		n.mu.Lock()
		n.listeners = append(n.listeners, nsDeleter{n, ns})
		n.mu.Unlock()
	}
	// Sysctls first, so that new interfaces inherit "default". Forwarding and
	// rp_filter are set explicitly in every namespace because IPv4 settings of a new
	// namespace are inherited from the host's, which may forward.
	for _, ns := range n.namespaces() {
		fwd := "0"
		if ns == n.Router || ns == n.Inet {
			fwd = "1"
		}
		rp := "0"
		if ns == n.Router {
			rp = "1" // strict on every router interface: the hard case tgtun must pass
		}
		if _, err := n.Exec(ctx, ns, "sysctl", "-qw",
			"net.ipv4.ip_forward="+fwd,
			"net.ipv6.conf.all.forwarding="+fwd,
			"net.ipv6.conf.all.accept_dad=0",
			"net.ipv6.conf.default.accept_dad=0",
			"net.ipv4.conf.all.rp_filter=0",
			"net.ipv4.conf.all.arp_ignore=0",
			"net.ipv4.conf.default.rp_filter="+rp,
		); err != nil {
			return err
		}
		if err := n.ip(ctx, "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	steps := [][]string{
		// client ── router
		{"link", "add", "eth0", "netns", n.Client, "type", "veth", "peer", "name", LANIface, "netns", n.Router},
		// router ── inet
		{"link", "add", WANIface, "netns", n.Router, "type", "veth", "peer", "name", "r0", "netns", n.Inet},
		// inet ── proxy
		{"link", "add", "px0", "netns", n.Inet, "type", "veth", "peer", "name", "eth0", "netns", n.Proxy},
		// proxy ── messenger
		{"link", "add", "m0", "netns", n.Proxy, "type", "veth", "peer", "name", "eth0", "netns", n.Messenger},

		{"-n", n.Client, "addr", "add", "192.0.2.10/24", "dev", "eth0"},
		{"-n", n.Client, "addr", "add", "2001:db8:1::10/64", "dev", "eth0", "nodad"},
		{"-n", n.Client, "link", "set", "eth0", "up"},
		{"-n", n.Client, "route", "add", "default", "via", "192.0.2.1"},
		{"-n", n.Client, "-6", "route", "add", "default", "via", "2001:db8:1::1"},

		{"-n", n.Router, "addr", "add", "192.0.2.1/24", "dev", LANIface},
		{"-n", n.Router, "addr", "add", "2001:db8:1::1/64", "dev", LANIface, "nodad"},
		{"-n", n.Router, "addr", "add", "198.51.100.1/24", "dev", WANIface},
		{"-n", n.Router, "addr", "add", "2001:db8:2::1/64", "dev", WANIface, "nodad"},
		{"-n", n.Router, "link", "set", LANIface, "up"},
		{"-n", n.Router, "link", "set", WANIface, "up"},
		{"-n", n.Router, "route", "add", "default", "via", "198.51.100.254"},
		{"-n", n.Router, "-6", "route", "add", "default", "via", "2001:db8:2::fe"},

		// The direct server's addresses sit on r0 itself so that the router, which
		// sees all of 198.51.100.0/24 as on-link, gets ARP/NDP answers for them.
		{"-n", n.Inet, "addr", "add", "198.51.100.254/24", "dev", "r0"},
		{"-n", n.Inet, "addr", "add", "198.51.100.80/32", "dev", "r0"},
		{"-n", n.Inet, "addr", "add", "2001:db8:2::fe/64", "dev", "r0", "nodad"},
		{"-n", n.Inet, "addr", "add", "2001:db8:2::80/128", "dev", "r0", "nodad"},
		{"-n", n.Inet, "addr", "add", "fe80::fe/64", "dev", "px0", "nodad"},
		{"-n", n.Inet, "link", "set", "r0", "up"},
		{"-n", n.Inet, "link", "set", "px0", "up"},
		{"-n", n.Inet, "route", "add", "198.51.100.6/32", "dev", "px0"},
		{"-n", n.Inet, "-6", "route", "add", "2001:db8:2::6/128", "dev", "px0"},
		{"-n", n.Inet, "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:2::1"},
		// The messenger is behind the proxy host; the censor below keeps everyone else out.
		{"-n", n.Inet, "route", "add", "203.0.113.0/24", "via", "198.51.100.6"},
		{"-n", n.Inet, "-6", "route", "add", "2001:db8:3::/64", "via", "2001:db8:2::6"},
		// The proxy host is on the router's /24 and /64 as seen from the router: answer
		// for it on r0 like an ISP's access router.
		{"-n", n.Inet, "-6", "neigh", "add", "proxy", "2001:db8:2::6", "dev", "r0"},

		// The proxy host has only its public addresses; m0 is unnumbered so that what
		// it sends to the messenger carries 198.51.100.6 / 2001:db8:2::6.
		{"-n", n.Proxy, "addr", "add", "198.51.100.6/32", "dev", "eth0"},
		{"-n", n.Proxy, "addr", "add", "2001:db8:2::6/128", "dev", "eth0", "nodad"},
		{"-n", n.Proxy, "addr", "add", "fe80::6/64", "dev", "m0", "nodad"},
		{"-n", n.Proxy, "link", "set", "eth0", "up"},
		{"-n", n.Proxy, "link", "set", "m0", "up"},
		{"-n", n.Proxy, "route", "add", "198.51.100.254/32", "dev", "eth0"},
		{"-n", n.Proxy, "route", "add", "default", "via", "198.51.100.254"},
		{"-n", n.Proxy, "-6", "route", "add", "default", "via", "fe80::fe", "dev", "eth0"},
		{"-n", n.Proxy, "route", "add", "203.0.113.0/24", "dev", "m0"},
		{"-n", n.Proxy, "-6", "route", "add", "2001:db8:3::/64", "dev", "m0"},

		{"-n", n.Messenger, "addr", "add", "203.0.113.10/24", "dev", "eth0"},
		{"-n", n.Messenger, "addr", "add", "2001:db8:3::10/64", "dev", "eth0", "nodad"},
		{"-n", n.Messenger, "link", "set", "eth0", "up"},
		{"-n", n.Messenger, "route", "add", "198.51.100.6/32", "dev", "eth0"},
		{"-n", n.Messenger, "route", "add", "default", "via", "198.51.100.6"},
		{"-n", n.Messenger, "-6", "route", "add", "default", "via", "fe80::6", "dev", "eth0"},
	}
	for _, args := range steps {
		if err := n.ip(ctx, args...); err != nil {
			return err
		}
	}
	if _, err := n.Exec(ctx, n.Inet, "sysctl", "-qw",
		"net.ipv4.conf.r0.proxy_arp=1",
		"net.ipv6.conf.r0.proxy_ndp=1",
		"net.ipv6.neigh.r0.proxy_delay=0",
	); err != nil {
		return err
	}
	if err := n.nft(ctx, n.Router, routerNAT); err != nil {
		return err
	}
	return n.nft(ctx, n.Inet, censor)
}

// routerNAT makes the router a home router: LAN IPv4 leaves masqueraded to the WAN
// address; IPv6 is routed (inet routes the LAN prefix back to the router).
const routerNAT = `
table ip testnet_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
}
`

// censor rejects (TCP reset, ICMP admin-prohibited) whatever heads for the messenger
// subnets unless it comes from the proxy host's link, so a blocked client fails fast
// instead of waiting for a timeout.
const censor = `
table inet censor {
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "px0" accept
		ip daddr 203.0.113.0/24 meta l4proto tcp reject with tcp reset
		ip daddr 203.0.113.0/24 reject with icmpx type admin-prohibited
		ip6 daddr 2001:db8:3::/64 meta l4proto tcp reject with tcp reset
		ip6 daddr 2001:db8:3::/64 reject with icmpx type admin-prohibited
	}
}
`

func (n *Net) ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (n *Net) nft(ctx context.Context, ns, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// Exec runs a program in namespace ns and returns its combined output.
func (n *Net) Exec(ctx context.Context, ns string, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("exec: no program")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.WaitDelay = 5 * time.Second // a grandchild holding the pipe must not hang us
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w", strings.Join(args, " "), ns, err)
	}
	return string(out), nil
}

// Proc is a background process started by Start.
type Proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // valid after done is closed
}

// Start runs a program in namespace ns in the background, with stdout and stderr
// collected for Output. It is stopped at cleanup if still running.
func (n *Net) Start(ns string, args ...string) (*Proc, error) {
	if len(args) == 0 {
		return nil, errors.New("start: no program")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("start: test network already removed")
	}
	out := &syncBuffer{}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", args[0], ns, err)
	}
	p := &Proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	n.procs = append(n.procs, p)
	n.logf("testnet: started %s in %s (pid %d)", strings.Join(args, " "), ns, cmd.Process.Pid)
	return p, nil
}

// Pid is the process id (ip netns exec execs the program, so this is the program).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output returns what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and its wait error.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits up to 10 s for the exit, then kills the process
// group. It returns the wait error of a process that exited on SIGTERM (nil for a
// clean exit) or an error saying it had to be killed.
func (p *Proc) Stop() error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop pid %d: %w", p.Pid(), err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(10 * time.Second):
		p.Kill()
		return fmt.Errorf("pid %d did not exit within 10s of SIGTERM, killed", p.Pid())
	}
}

// Kill sends SIGKILL to the process group and waits for the exit.
func (p *Proc) Kill() {
	if exited, _ := p.Exited(); !exited {
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	}
	<-p.done
}

// Wait waits for the process to exit, bounded by ctx.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops every process, closes in-process servers and deletes the namespaces
// (which deletes their interfaces) and the temp dir. It is safe to call twice.
func (n *Net) close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	procs, listeners := n.procs, n.listeners
	n.mu.Unlock()

	var errs []error
	for _, p := range procs {
		if exited, _ := p.Exited(); exited {
			continue
		}
		_ = p.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.Kill()
		}
	}
	// Anything else still running in our namespaces was started there by the test
	// (e.g. through Exec); nothing else can be in a namespace we just made.
	for _, ns := range n.namespaces() {
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	// Listeners first (they hold references to their namespaces), namespaces last.
	for i := len(listeners) - 1; i >= 0; i-- {
		if err := listeners[i].Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(n.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", n.Dir, err))
	}
	return errors.Join(errs...)
}

// nsDeleter deletes a namespace at cleanup; it is registered as the first
// "listener" of each namespace so that it runs after everything living in it.
type nsDeleter struct {
	n  *Net
	ns string
}

func (d nsDeleter) Close() error {
	out, err := exec.Command("ip", "netns", "del", d.ns).CombinedOutput()
	if err != nil {
		return fmt.Errorf("delete namespace %s: %w: %s", d.ns, err, bytes.TrimSpace(out))
	}
	return nil
}

func (n *Net) addCloser(c interface{ Close() error }) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listeners = append(n.listeners, c)
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitListening polls until a TCP connect from namespace ns to addr succeeds, the
// process exits, or the timeout passes.
func (n *Net) waitListening(ns string, addr netip.AddrPort, p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("exited before listening on %s (%v): %s", addr, err, p.Output())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := n.Dial(ctx, ns, "tcp", addr.String())
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not listening on %s after %s (%v): %s", addr, timeout, lastErr, p.Output())
}
