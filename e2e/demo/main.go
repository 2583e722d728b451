// Command demo shows tgtun's job end to end in a throw-away test network: a LAN
// client behind a router cannot reach a censored messenger; with tgtun running on
// the router, the messenger's traffic goes through a SOCKS5 proxy (dante) while
// everything else stays direct. It prints every step with PASS/FAIL and exits
// non-zero if any step failed. Needs root.
//
//	go run ./e2e/demo -tgtun ./bin/tgtun
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

func main() {
	tgtunPath := flag.String("tgtun", "./bin/tgtun", "path to the tgtun binary")
	verbose := flag.Bool("v", false, "log test network setup")
	flag.Parse()
	os.Exit(run(*tgtunPath, *verbose))
}

// demo carries the network and the step results.
type demo struct {
	net     *testnet.Net
	results []result
}

type result struct {
	name string
	err  error
}

// step runs and prints one step. fn returns what to show and an error if the step
// failed.
func (d *demo) step(name string, fn func(ctx context.Context) (string, error)) bool {
	fmt.Printf("\n=== %s\n", name)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := fn(ctx)
	if out = strings.TrimRight(out, "\n"); out != "" {
		fmt.Println(indent(out))
	}
	verdict := "PASS"
	if err != nil {
		verdict = "FAIL: " + err.Error()
	}
	fmt.Printf("--- %s\n", verdict)
	d.results = append(d.results, result{name, err})
	return err == nil
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// show runs a command in a namespace, echoing it like a shell transcript.
func (d *demo) show(ctx context.Context, b *strings.Builder, ns, nsLabel string, args ...string) (string, error) {
	fmt.Fprintf(b, "[%s]$ %s\n", nsLabel, strings.Join(args, " "))
	out, err := d.net.Exec(ctx, ns, args...)
	b.WriteString(out)
	if out != "" && !strings.HasSuffix(out, "\n") {
		b.WriteString("\n")
	}
	return out, err
}

// fetch asks a test server who we are, from the client.
func (d *demo) fetch(ctx context.Context, b *strings.Builder, url string) (netip.Addr, error) {
	out, err := d.show(ctx, b, d.net.Client, "client", "curl", "-sS", "--noproxy", "*", "--max-time", "10", url)
	if err != nil {
		return netip.Addr{}, err
	}
	return testnet.ParseYouAre(out)
}

// expectSeenAs fetches url from the client and wants the server to see want. It
// retries for a while, because the daemon may still be checking the proxy's health.
func (d *demo) expectSeenAs(url string, want netip.Addr, meaning string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var b strings.Builder
		for {
			got, err := d.fetch(ctx, &b, url)
			if err == nil && got == want {
				fmt.Fprintf(&b, "server saw %s: %s\n", got, meaning)
				return b.String(), nil
			}
			if err == nil {
				err = fmt.Errorf("server saw %s, want %s (%s)", got, want, meaning)
			}
			select {
			case <-ctx.Done():
				return b.String(), err
			case <-time.After(2 * time.Second):
				b.WriteString("(retrying)\n")
			}
		}
	}
}

func (d *demo) expectCensored(url string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var b strings.Builder
		got, err := d.fetch(ctx, &b, url)
		if err == nil {
			return b.String(), fmt.Errorf("reached the messenger (seen as %s)", got)
		}
		b.WriteString("messenger unreachable (censored)\n")
		return b.String(), nil
	}
}

// echo sends a line through socat from the client and wants it back.
func (d *demo) echo(proto string, dst netip.AddrPort) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var b strings.Builder
		msg := "hello over " + proto + " " + dst.String()
		addr := proto + ":" + dst.String()
		if dst.Addr().Is6() {
			addr = proto + "6:" + dst.String()
		}
		var err error
		for try := 0; try < 3; try++ {
			var out string
			out, err = d.show(ctx, &b, d.net.Client, "client", "sh", "-c",
				fmt.Sprintf("echo '%s' | socat -t 3 -T 5 - %s", msg, addr))
			if err == nil && strings.TrimSpace(out) == msg {
				return b.String(), nil
			}
			if err == nil {
				err = fmt.Errorf("no echo")
			}
		}
		return b.String(), err
	}
}

func run(tgtunPath string, verbose bool) int {
	logf := func(string, ...any) {}
	if verbose {
		logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	setupCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fmt.Println("building the test network: client ── router ── inet (censor) ── proxy ── messenger")
	n, cleanup, err := testnet.NewCtx(setupCtx, logf)
	if cleanup != nil {
		defer func() {
			if err := cleanup(); err != nil {
				fmt.Fprintf(os.Stderr, "teardown: %v\n", err)
			}
		}()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: test network: %v\n", err)
		return 1
	}
	d := &demo{net: n}
	code := d.run(tgtunPath)
	fmt.Println("\ntearing down the test network")
	return code
}

func (d *demo) run(tgtunPath string) int {
	n := d.net
	var dante netip.AddrPort
	d.step("start servers: messenger 203.0.113.10, direct 198.51.100.80, dante SOCKS5 on the proxy host",
		func(context.Context) (string, error) {
			if err := n.StartMessengerServers(); err != nil {
				return "", err
			}
			if err := n.StartDirectServer(); err != nil {
				return "", err
			}
			var err error
			dante, err = n.StartDante(testnet.DanteOptions{Port: 1080})
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("dante listening on %s and [%s]:%d", dante, testnet.ProxyV6, dante.Port()), nil
		})

	msgr4 := "http://" + testnet.MsgrV4.String() + "/"
	msgr6 := "http://[" + testnet.MsgrV6.String() + "]/"
	direct4 := "http://" + testnet.DirectV4.String() + "/"
	direct6 := "http://[" + testnet.DirectV6.String() + "]/"

	d.step("without tgtun: messenger unreachable over IPv4 (censored)", d.expectCensored(msgr4))
	d.step("without tgtun: messenger unreachable over IPv6 (censored)", d.expectCensored(msgr6))
	d.step("without tgtun: ordinary internet works (IPv4 via NAT)",
		d.expectSeenAs(direct4, testnet.WANV4, "the router's WAN address"))

	dir, err := os.MkdirTemp(n.Dir, "tgtun-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	confPath := filepath.Join(dir, "tgtun.conf")
	sockPath := filepath.Join(dir, "tgtun.sock")
	conf := fmt.Sprintf(`config main 'main'
	option enabled '1'
	option ipv6 '1'
	list lan_iface '%s'
	option health_target '%s:80'
	option health_interval '2s'
	option log_level 'debug'

config proxy 'dante'
	option type 'socks5'
	option server '%s'
	option port '%d'
	option udp '1'
	option priority '10'

config service 'telegram'
	option enabled '0'

config custom 'demo'
	list subnet '%s'
	list subnet '%s'
`, testnet.LANIface, testnet.MsgrV4, dante.Addr(), dante.Port(), testnet.MsgrPrefixV4, testnet.MsgrPrefixV6)

	var daemon *testnet.Proc
	started := d.step("start tgtun in the router: "+tgtunPath+" run -c tgtun.conf --socket tgtun.sock",
		func(ctx context.Context) (string, error) {
			abs, err := filepath.Abs(tgtunPath)
			if err != nil {
				return "", err
			}
			if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
				return "", fmt.Errorf("no tgtun binary at %s (build it first, or pass -tgtun PATH)", abs)
			}
			tgtunPath = abs
			if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
				return "", fmt.Errorf("write config: %w", err)
			}
			var b strings.Builder
			b.WriteString(conf + "\n")
			if _, err := d.show(ctx, &b, n.Router, "router", tgtunPath, "config", "check", "-c", confPath); err != nil {
				return b.String(), err
			}
			daemon, err = n.Start(n.Router, tgtunPath, "run", "-c", confPath, "--socket", sockPath)
			if err != nil {
				return b.String(), err
			}
			for {
				if exited, werr := daemon.Exited(); exited {
					return b.String() + "\ntgtun log:\n" + daemon.Output(), fmt.Errorf("tgtun exited: %v", werr)
				}
				qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := n.Exec(qctx, n.Router, tgtunPath, "status", "--socket", sockPath)
				cancel()
				if err == nil {
					b.WriteString("\ntgtun answers on its control socket\n")
					return b.String(), nil
				}
				select {
				case <-ctx.Done():
					return b.String() + "\ntgtun log:\n" + daemon.Output(), fmt.Errorf("status never answered: %w", err)
				case <-time.After(300 * time.Millisecond):
				}
			}
		})

	if started {
		d.step("kernel state in the router", func(ctx context.Context) (string, error) {
			var b strings.Builder
			var errs []error
			for _, args := range [][]string{
				{"nft", "list", "table", "inet", "tgtun"},
				{"ip", "rule"},
				{"ip", "-6", "rule"},
				{"ip", "route", "show", "table", "7470"},
				{"ip", "-6", "route", "show", "table", "7470"},
			} {
				out, err := d.show(ctx, &b, n.Router, "router", args...)
				if err == nil && strings.TrimSpace(out) == "" {
					err = errors.New("empty")
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", strings.Join(args, " "), err))
				}
			}
			return b.String(), errors.Join(errs...)
		})
		d.step("with tgtun: messenger over IPv4 goes through the proxy",
			d.expectSeenAs(msgr4, testnet.ProxyV4, "the proxy host's address = tunnelled"))
		d.step("with tgtun: ordinary internet over IPv4 stays direct",
			d.expectSeenAs(direct4, testnet.WANV4, "the router's WAN address = direct, NAT"))
		d.step("with tgtun: messenger over IPv6 goes through the proxy",
			d.expectSeenAs(msgr6, testnet.ProxyV6, "the proxy host's address = tunnelled"))
		d.step("with tgtun: ordinary internet over IPv6 stays direct",
			d.expectSeenAs(direct6, testnet.ClientV6, "the client's own address = direct, routed"))
		d.step("with tgtun: TCP echo with the messenger (IPv4)",
			d.echo("TCP", netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort)))
		d.step("with tgtun: UDP round trip with the messenger through dante's UDP ASSOCIATE (IPv4)",
			d.echo("UDP", netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort)))
		d.step("with tgtun: UDP round trip with the messenger (IPv6)",
			d.echo("UDP", netip.AddrPortFrom(testnet.MsgrV6, testnet.EchoPort)))
		d.step("tgtun status", func(ctx context.Context) (string, error) {
			var b strings.Builder
			_, err := d.show(ctx, &b, n.Router, "router", tgtunPath, "status", "--socket", sockPath)
			if err != nil {
				return b.String(), err
			}
			_, err = d.show(ctx, &b, n.Router, "router", tgtunPath, "status", "--json", "--socket", sockPath)
			return b.String(), err
		})
		d.step("tgtun check: every step of the path is fine", func(ctx context.Context) (string, error) {
			var b strings.Builder
			_, err := d.show(ctx, &b, n.Router, "router", tgtunPath, "check", "--socket", sockPath)
			return b.String(), err
		})
		d.step("tgtun reload keeps the messenger reachable", func(ctx context.Context) (string, error) {
			var b strings.Builder
			if _, err := d.show(ctx, &b, n.Router, "router", tgtunPath, "reload", "--socket", sockPath); err != nil {
				return b.String(), err
			}
			out, err := d.expectSeenAs(msgr4, testnet.ProxyV4, "still tunnelled")(ctx)
			return b.String() + out, err
		})
		d.step("stop tgtun (SIGTERM): clean exit, its table and rules removed", func(ctx context.Context) (string, error) {
			var b strings.Builder
			if exited, err := daemon.Exited(); exited {
				return daemon.Output(), fmt.Errorf("tgtun had already exited: %v", err)
			}
			if err := daemon.Signal(syscall.SIGTERM); err != nil {
				return "", err
			}
			if err := daemon.Wait(ctx); err != nil {
				return "tgtun log (tail):\n" + tail(daemon.Output(), 20), fmt.Errorf("tgtun exit: %w", err)
			}
			b.WriteString("tgtun exited with status 0\n")
			var errs []error
			if _, err := d.show(ctx, &b, n.Router, "router", "nft", "list", "table", "inet", "tgtun"); err == nil {
				errs = append(errs, errors.New("nft table inet tgtun still there"))
			}
			for _, fam := range []string{"-4", "-6"} {
				out, _ := d.show(ctx, &b, n.Router, "router", "ip", fam, "rule")
				if strings.Contains(out, "7470") {
					errs = append(errs, fmt.Errorf("ip %s rule still mentions table 7470", fam))
				}
			}
			return b.String(), errors.Join(errs...)
		})
		d.step("after tgtun: messenger censored again", d.expectCensored(msgr4))
		d.step("after tgtun: ordinary internet still works",
			d.expectSeenAs(direct4, testnet.WANV4, "the router's WAN address"))
		if failed(d.results) && daemon != nil {
			fmt.Printf("\n=== tgtun log (last 40 lines)\n%s\n", indent(tail(daemon.Output(), 40)))
		}
	}

	fmt.Println("\n=== summary")
	code := 0
	for _, r := range d.results {
		verdict := "PASS"
		if r.err != nil {
			verdict, code = "FAIL", 1
		}
		fmt.Printf("%s  %s\n", verdict, r.name)
	}
	return code
}

func failed(rs []result) bool {
	for _, r := range rs {
		if r.err != nil {
			return true
		}
	}
	return false
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
