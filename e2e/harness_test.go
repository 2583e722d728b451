// Package e2e holds tgtun's end-to-end tests: the real daemon in the test network of
// DESIGN.md (network namespaces with a LAN client, a router, a censored internet, a proxy
// host running real Debian proxy servers, and a messenger server). They need root and
// fail, never skip, when a prerequisite is missing.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/control"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// tgtunBin is the daemon under test, built once by TestMain.
var tgtunBin string

func TestMain(m *testing.M) {
	if err := testnet.CheckPrerequisites(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "tgtun-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	tgtunBin = filepath.Join(dir, "tgtun")
	build := exec.Command("go", "build", "-o", tgtunBin, "./daemon")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build tgtun: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proxyConf is one `config proxy` section.
type proxyConf struct {
	name, typ, server string
	port              uint16
	user, pass        string
	cipher            string
	udp               bool
	priority          int
	extra             map[string]string // more options (vless, trojan, ...), written in sorted order
}

// tgtunConf is a configuration for the test network: LAN lan0, the messenger subnets as a
// custom list, and the given proxies.
type tgtunConf struct {
	proxies        []proxyConf
	failMode       string   // "" = block
	extraSubnets   []string // more custom subnets
	listURLs       []string // custom list URLs (then the messenger subnets are not static)
	noStaticTarget bool
	healthInterval string   // "" = 1s
	tunMTU         int      // 0 = the default
	env            []string // more environment for the daemon ("GODEBUG=cpu.aes=off")
	mainExtra      []string // more lines for config main ("option dns_port '5399'")
	customExtra    []string // more lines for config custom 'messenger' ("list domain 'x.org'")
	sections       string   // more sections, appended as written
}

func (c tgtunConf) render() string {
	var b strings.Builder
	hi := c.healthInterval
	if hi == "" {
		hi = "1s"
	}
	mtu := c.tunMTU
	if mtu == 0 {
		mtu = 1500
	}
	fm := c.failMode
	if fm == "" {
		fm = "block"
	}
	fmt.Fprintf(&b, `config main 'main'
	option enabled '1'
	list lan_iface '%s'
	option ipv6 '1'
	option fail_mode '%s'
	option health_target '%s'
	option health_check 'mtproto'
	option health_interval '%s'
	option update_interval '0'
	option log_level 'debug'
	option tun_mtu '%d'
%s
config service 'telegram'
	option enabled '0'

config custom 'messenger'
`, testnet.LANIface, fm, netip.AddrPortFrom(testnet.MsgrV4, testnet.MTProtoPort), hi, mtu, indentLines(c.mainExtra))
	if !c.noStaticTarget {
		fmt.Fprintf(&b, "\tlist subnet '%s'\n\tlist subnet '%s'\n", testnet.MsgrPrefixV4, testnet.MsgrPrefixV6)
	}
	for _, s := range c.extraSubnets {
		fmt.Fprintf(&b, "\tlist subnet '%s'\n", s)
	}
	for _, u := range c.listURLs {
		fmt.Fprintf(&b, "\tlist url '%s'\n", u)
	}
	for _, l := range c.customExtra {
		fmt.Fprintf(&b, "\t%s\n", l)
	}
	for _, p := range c.proxies {
		udp := 0
		if p.udp {
			udp = 1
		}
		prio := p.priority
		if prio == 0 {
			prio = 10
		}
		fmt.Fprintf(&b, "\nconfig proxy '%s'\n\toption type '%s'\n\toption server '%s'\n\toption port '%d'\n\toption udp '%d'\n\toption priority '%d'\n",
			p.name, p.typ, p.server, p.port, udp, prio)
		if p.user != "" {
			fmt.Fprintf(&b, "\toption username '%s'\n", p.user)
		}
		if p.pass != "" {
			fmt.Fprintf(&b, "\toption password '%s'\n", p.pass)
		}
		if p.cipher != "" {
			fmt.Fprintf(&b, "\toption cipher '%s'\n", p.cipher)
		}
		for _, k := range slices.Sorted(maps.Keys(p.extra)) {
			fmt.Fprintf(&b, "\toption %s '%s'\n", k, p.extra[k])
		}
	}
	b.WriteString(c.sections)
	return b.String()
}

func indentLines(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("\t" + l + "\n")
	}
	return b.String()
}

// daemon is one `tgtun run` in the router namespace.
type daemon struct {
	t      *testing.T
	n      *testnet.Net
	proc   *testnet.Proc
	conf   string
	socket string
	env    []string
}

// startTgtun writes conf and runs the daemon in the router until its socket answers.
// Lists may hold documentation ranges: the test network is built from them.
func startTgtun(t *testing.T, n *testnet.Net, conf tgtunConf, extraArgs ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, n: n, conf: filepath.Join(n.Dir, "tgtun.conf"), socket: filepath.Join(n.Dir, "tgtun.sock"), env: conf.env}
	d.writeConf(conf)
	d.start(extraArgs...)
	return d
}

func (d *daemon) writeConf(conf tgtunConf) {
	d.t.Helper()
	if err := os.WriteFile(d.conf, []byte(conf.render()), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) start(extraArgs ...string) {
	d.t.Helper()
	args := append(append([]string{"env", "TGTUN_ALLOW_DOCUMENTATION_RANGES=1"}, d.env...),
		tgtunBin, "run", "-c", d.conf, "--socket", d.socket, "--list-cache", filepath.Join(d.n.Dir, "lists"),
		"--subscription-cache", filepath.Join(d.n.Dir, "subscriptions"))
	args = append(args, extraArgs...)
	p, err := d.n.Start(d.n.Router, args...)
	if err != nil {
		d.t.Fatal(err)
	}
	d.proc = p
	d.t.Cleanup(func() {
		if d.t.Failed() {
			d.t.Logf("tgtun output:\n%s", lastLines(p.Output(), 60))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := d.call("status"); err == nil {
			return
		}
		if exited, werr := p.Exited(); exited {
			d.t.Fatalf("tgtun exited at start (%v):\n%s", werr, p.Output())
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("tgtun did not answer on %s within 60s:\n%s", d.socket, p.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// call runs a method through the CLI (`tgtun <cmd> --json`), as an admin would.
func (d *daemon) call(cmd string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tgtunBin, cmd, "--json", "--socket", d.socket).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("tgtun %s: %w: %s", cmd, err, out)
	}
	return out, nil
}

func (d *daemon) status() control.Status {
	d.t.Helper()
	raw, err := d.call("status")
	if err != nil {
		d.t.Fatal(err)
	}
	var st control.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		d.t.Fatalf("decode status: %v\n%s", err, raw)
	}
	return st
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	if err := d.proc.Stop(); err != nil {
		d.t.Fatalf("tgtun did not stop cleanly: %v\n%s", err, lastLines(d.proc.Output(), 40))
	}
}

// curl fetches url from the client and returns the address the server saw.
func curl(t *testing.T, n *testnet.Net, url string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, n.Client, "curl", "-sS", "--noproxy", "*", "--max-time", "10", url)
	if err != nil {
		return "", fmt.Errorf("curl %s: %w: %s", url, err, out)
	}
	a, err := testnet.ParseYouAre(out)
	if err != nil {
		return "", fmt.Errorf("curl %s: %w", url, err)
	}
	return a.String(), nil
}

// eventually retries fn until it succeeds or the time is up; the last error fails t.
func eventually(t *testing.T, within time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// seesAs asserts that a request from the client to url arrives from want.
func seesAs(t *testing.T, n *testnet.Net, url, want string) {
	t.Helper()
	eventually(t, 20*time.Second, "GET "+url, func() error {
		got, err := curl(t, n, url)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("server saw %s, want %s", got, want)
		}
		return nil
	})
}

func msgrURL(v6 bool) string {
	if v6 {
		return fmt.Sprintf("http://[%s]/", testnet.MsgrV6)
	}
	return fmt.Sprintf("http://%s/", testnet.MsgrV4)
}

func directURL(v6 bool) string {
	if v6 {
		return fmt.Sprintf("http://[%s]/", testnet.DirectV6)
	}
	return fmt.Sprintf("http://%s/", testnet.DirectV4)
}

// routerExec runs a command in the router namespace.
func routerExec(t *testing.T, n *testnet.Net, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, n.Router, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
