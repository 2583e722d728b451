// Command demo shows tgtun's job end to end in a throw-away test network: a LAN
// client behind a router cannot reach a censored messenger; with tgtun running on
// the router, the messenger's traffic goes through a SOCKS5 proxy (dante) while
// everything else stays direct. It also shows the real Telegram ranges in the target
// set, that direct traffic never reaches tgtun's flow counters, what fail_mode block does
// when the proxy dies and how it recovers, and a kill -9 followed by a restart. It
// prints every step with PASS/FAIL and exits non-zero if any step failed. Needs root.
//
//	go run ./e2e/demo -tgtun ./bin/tgtun
package main

import (
	"context"
	"encoding/json"
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
	dante   *testnet.Proc
	// the running daemon and how to reach it
	tgtun          *testnet.Proc
	bin, conf, ctl string
	// the router's LAN resolver (Debian's dnsmasq, as OpenWrt's), fed tgtun's directives
	dnsmasq *testnet.Dnsmasq
}

func (d *demo) stopDante() {
	if d.dante != nil {
		d.dante.Kill()
		d.dante = nil
	}
}

// startDaemon runs tgtun in the router and waits until its control socket answers.
func (d *demo) startDaemon(ctx context.Context, b *strings.Builder) error {
	n := d.net
	p, err := n.Start(n.Router, d.bin, "run", "-c", d.conf, "--socket", d.ctl,
		"--dnsmasq-dir", d.dnsmasq.ConfDir, "--dnsmasq-restart", d.dnsmasq.Restart,
		"--dnsmasq-addr", netip.AddrPortFrom(testnet.LANV4, 53).String())
	if err != nil {
		return err
	}
	d.tgtun = p
	for {
		if exited, werr := p.Exited(); exited {
			b.WriteString("\ntgtun log:\n" + p.Output())
			return fmt.Errorf("tgtun exited: %v", werr)
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := n.Exec(qctx, n.Router, d.bin, "status", "--socket", d.ctl)
		cancel()
		if err == nil {
			b.WriteString("tgtun answers on its control socket\n")
			return nil
		}
		select {
		case <-ctx.Done():
			b.WriteString("\ntgtun log:\n" + p.Output())
			return fmt.Errorf("status never answered: %w", err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// status is the part of `tgtun status --json` the demo looks at.
type status struct {
	Proxies []struct {
		Name    string `json:"name"`
		Healthy bool   `json:"healthy"`
	} `json:"proxies"`
	Flows struct {
		TotalTCP uint64 `json:"total_tcp"`
		TotalUDP uint64 `json:"total_udp"`
	} `json:"flows"`
}

func (d *demo) status(ctx context.Context) (status, error) {
	var st status
	out, err := d.net.Exec(ctx, d.net.Router, d.bin, "status", "--json", "--socket", d.ctl)
	if err != nil {
		return st, fmt.Errorf("%w: %s", err, out)
	}
	return st, json.Unmarshal([]byte(out), &st)
}

// waitHealthy waits until the proxy's health in status is want.
func (d *demo) waitHealthy(ctx context.Context, b *strings.Builder, want bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		st, err := d.status(ctx)
		if err == nil && len(st.Proxies) > 0 && st.Proxies[0].Healthy == want {
			fmt.Fprintf(b, "tgtun status: proxy '%s' healthy=%v\n", st.Proxies[0].Name, want)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy never became healthy=%v (%v)", want, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
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
	d.stopDante()
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
			dante, d.dante, err = n.StartDanteProc(testnet.DanteOptions{Port: 1080})
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("dante listening on %s and [%s]:%d", dante, testnet.ProxyV6, dante.Port()), nil
		})

	d.step("start DNS: the ISP's resolver lies about telegram.org, the true one is behind the censor; dnsmasq is the router's LAN resolver",
		func(context.Context) (string, error) {
			// What a censor's resolver does: a listed name gets an address of its choosing.
			if err := n.StartDNSServer(n.Inet, testnet.InetV4, testnet.DNSAnswers{"telegram.org": {testnet.DirectV4}}); err != nil {
				return "", err
			}
			if err := n.StartDNSServer(n.Messenger, testnet.MsgrV4, testnet.DNSAnswers{"telegram.org": {testnet.MsgrV4}}); err != nil {
				return "", err
			}
			dm, err := n.StartLANDnsmasq(testnet.InetV4)
			if err != nil {
				return "", err
			}
			d.dnsmasq = dm
			return fmt.Sprintf("ISP resolver %s: telegram.org = %s (poisoned); true resolver %s:53 (reachable only through the proxy): telegram.org = %s; dnsmasq on %s:53 forwards to the ISP's",
				testnet.InetV4, testnet.DirectV4, testnet.MsgrV4, testnet.MsgrV4, testnet.LANV4), nil
		})
	lanDNS := netip.AddrPortFrom(testnet.LANV4, 53)
	d.step("without tgtun: telegram.org resolves to the ISP's poisoned address", func(ctx context.Context) (string, error) {
		got, err := n.LookupA(ctx, n.Client, lanDNS, "telegram.org")
		if err != nil {
			return "", err
		}
		if len(got) != 1 || got[0] != testnet.DirectV4 {
			return "", fmt.Errorf("telegram.org = %v, want the poisoned %s", got, testnet.DirectV4)
		}
		return fmt.Sprintf("[client] ask %s: telegram.org = %s (poisoned)", lanDNS, got[0]), nil
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
	option fail_mode 'block'
	option update_interval '0'
	option log_level 'debug'
	option dns_upstream '%s:53'

config proxy 'dante'
	option type 'socks5'
	option server '%s'
	option port '%d'
	option udp '1'
	option priority '10'

config service 'telegram'
	option enabled '1'

config custom 'demo'
	list subnet '%s'
	list subnet '%s'
`, testnet.LANIface, testnet.MsgrV4, testnet.MsgrV4, dante.Addr(), dante.Port(), testnet.MsgrPrefixV4, testnet.MsgrPrefixV6)

	d.conf, d.ctl = confPath, sockPath
	started := d.step("start tgtun in the router: "+tgtunPath+" run -c tgtun.conf --socket tgtun.sock",
		func(ctx context.Context) (string, error) {
			abs, err := filepath.Abs(tgtunPath)
			if err != nil {
				return "", err
			}
			if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
				return "", fmt.Errorf("no tgtun binary at %s (build it first, or pass -tgtun PATH)", abs)
			}
			tgtunPath, d.bin = abs, abs
			if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
				return "", fmt.Errorf("write config: %w", err)
			}
			var b strings.Builder
			b.WriteString(conf + "\n")
			if _, err := d.show(ctx, &b, n.Router, "router", tgtunPath, "config", "check", "-c", confPath); err != nil {
				return b.String(), err
			}
			b.WriteString("\n")
			err = d.startDaemon(ctx, &b)
			return b.String(), err
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
		d.step("the real Telegram ranges are in the target set (config service 'telegram', built-in list)",
			func(ctx context.Context) (string, error) {
				var b strings.Builder
				// nft merges neighbouring ranges, so ask which element holds an address.
				var errs []error
				for _, c := range []struct{ set, addr, what string }{
					{"dst4", "149.154.167.51", "Telegram (149.154.160.0/20), also the default health target"},
					{"dst4", "91.108.56.100", "Telegram (91.108.56.0/22)"},
					{"dst6", "2001:b28:f23d::a", "Telegram (2001:b28:f23d::/48)"},
					{"dst4", testnet.MsgrV4.String(), "the demo's stand-in messenger, config custom 'demo'"},
				} {
					args := []string{"nft", "get", "element", "inet", "tgtun", c.set, "{ " + c.addr + " }"}
					fmt.Fprintf(&b, "[router]$ %s\n", strings.Join(args, " "))
					out, err := n.Exec(ctx, n.Router, args...)
					_, elems, found := strings.Cut(out, "elements = ")
					if err != nil || !found {
						b.WriteString(out)
						errs = append(errs, fmt.Errorf("%s (%s) not in set %s", c.addr, c.what, c.set))
						continue
					}
					elems, _, _ = strings.Cut(elems, "\n")
					fmt.Fprintf(&b, "    elements = %s  <- %s\n", elems, c.what)
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
		d.step("with tgtun: telegram.org resolves to its true address, asked through the proxy, and lands in the domain set",
			func(ctx context.Context) (string, error) {
				// tgtun hands its domains to dnsmasq at start; the answer comes once a
				// proxy is healthy (until then its forwarder answers SERVFAIL, never a guess).
				var b strings.Builder
				for {
					got, err := n.LookupA(ctx, n.Client, lanDNS, "telegram.org")
					if err == nil && len(got) == 1 && got[0] == testnet.MsgrV4 {
						fmt.Fprintf(&b, "[client] ask %s: telegram.org = %s (the true address: dnsmasq asked tgtun, tgtun asked %s:53 through the proxy)\n", lanDNS, got[0], testnet.MsgrV4)
						break
					}
					select {
					case <-ctx.Done():
						return b.String(), fmt.Errorf("telegram.org = %v (%v), want %s", got, err, testnet.MsgrV4)
					case <-time.After(200 * time.Millisecond):
					}
				}
				_, err := d.show(ctx, &b, n.Router, "router", "nft", "list", "set", "inet", "tgtun", "dst4_dns")
				return b.String(), err
			})
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
		d.step("direct requests never reach tgtun: its flow counters do not move for them", func(ctx context.Context) (string, error) {
			var b strings.Builder
			before, err := d.status(ctx)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "flows relayed so far: %d TCP, %d UDP\n", before.Flows.TotalTCP, before.Flows.TotalUDP)
			for _, u := range []string{direct4, direct6, direct4} {
				if _, err := d.fetch(ctx, &b, u); err != nil {
					return b.String(), err
				}
			}
			after, err := d.status(ctx)
			if err != nil {
				return b.String(), err
			}
			fmt.Fprintf(&b, "after 3 direct requests: %d TCP, %d UDP: unchanged, they took the normal path\n", after.Flows.TotalTCP, after.Flows.TotalUDP)
			if after.Flows.TotalTCP != before.Flows.TotalTCP {
				return b.String(), fmt.Errorf("direct requests were counted as tunnelled flows")
			}
			if _, err := d.fetch(ctx, &b, msgr4); err != nil {
				return b.String(), err
			}
			msgr, err := d.status(ctx)
			if err != nil {
				return b.String(), err
			}
			fmt.Fprintf(&b, "after 1 messenger request: %d TCP: one more, it went through tgtun\n", msgr.Flows.TotalTCP)
			if msgr.Flows.TotalTCP != after.Flows.TotalTCP+1 {
				return b.String(), fmt.Errorf("a messenger request added %d flows, want 1", msgr.Flows.TotalTCP-after.Flows.TotalTCP)
			}
			return b.String(), nil
		})
		d.step("the proxy dies (fail_mode 'block'): messenger blocked, everything else fine", func(ctx context.Context) (string, error) {
			var b strings.Builder
			b.WriteString("killing dante on the proxy host\n")
			d.stopDante()
			if err := d.waitHealthy(ctx, &b, false); err != nil {
				return b.String(), err
			}
			if got, err := d.fetch(ctx, &b, msgr4); err == nil {
				return b.String(), fmt.Errorf("messenger reached (seen as %s) with the only proxy dead", got)
			}
			b.WriteString("messenger blocked: with fail_mode 'block' its traffic never leaks onto the direct path\n")
			out, err := d.expectSeenAs(direct4, testnet.WANV4, "the router's WAN address = ordinary internet unaffected")(ctx)
			return b.String() + out, err
		})
		d.step("the proxy is back: messenger through it again, nothing to do on the router", func(ctx context.Context) (string, error) {
			var b strings.Builder
			b.WriteString("starting dante again on the same port\n")
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, p, err := n.StartDanteProc(testnet.DanteOptions{Port: dante.Port()})
				if err == nil {
					d.dante = p
					break
				}
				if time.Now().After(deadline) { // the old sockets may hold the port a moment
					return b.String(), err
				}
				time.Sleep(time.Second)
			}
			if err := d.waitHealthy(ctx, &b, true); err != nil {
				return b.String(), err
			}
			out, err := d.expectSeenAs(msgr4, testnet.ProxyV4, "the proxy host's address = tunnelled again")(ctx)
			return b.String() + out, err
		})
		d.step("tgtun reload keeps the messenger reachable", func(ctx context.Context) (string, error) {
			var b strings.Builder
			if _, err := d.show(ctx, &b, n.Router, "router", tgtunPath, "reload", "--socket", sockPath); err != nil {
				return b.String(), err
			}
			out, err := d.expectSeenAs(msgr4, testnet.ProxyV4, "still tunnelled")(ctx)
			return b.String() + out, err
		})
		d.step("kill -9 tgtun: ordinary internet unaffected; messenger traffic takes the normal path (censored here)", func(ctx context.Context) (string, error) {
			var b strings.Builder
			b.WriteString("[router]$ kill -9 <tgtun>\n")
			d.tgtun.Kill()
			b.WriteString("tgtun had no chance to clean up: its TUN is gone with the process, so the route into it is\n" +
				"gone too; the nftables table it left still marks, but marked packets fall back to the main table\n")
			d.show(ctx, &b, n.Router, "router", "nft", "list", "tables")
			out, err := d.expectSeenAs(direct4, testnet.WANV4, "ordinary internet unaffected")(ctx)
			b.WriteString(out)
			if err != nil {
				return b.String(), err
			}
			out, err = d.expectCensored(msgr4)(ctx)
			return b.String() + out, err
		})
		d.step("start tgtun again: it removes the leftovers and tunnels again", func(ctx context.Context) (string, error) {
			var b strings.Builder
			if err := d.startDaemon(ctx, &b); err != nil {
				return b.String(), err
			}
			out, _ := d.show(ctx, &b, n.Router, "router", "nft", "list", "tables")
			if c := strings.Count(out, "table inet tgtun"); c != 1 {
				return b.String(), fmt.Errorf("%d copies of table inet tgtun, want 1", c)
			}
			out, err := d.expectSeenAs(msgr4, testnet.ProxyV4, "tunnelled again")(ctx)
			return b.String() + out, err
		})
		d.step("stop tgtun (SIGTERM): clean exit, its table and rules removed", func(ctx context.Context) (string, error) {
			var b strings.Builder
			daemon := d.tgtun
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
		if failed(d.results) && d.tgtun != nil {
			fmt.Printf("\n=== tgtun log (last 40 lines)\n%s\n", indent(tail(d.tgtun.Output(), 40)))
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
