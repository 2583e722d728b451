package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/bench/internal/hev"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// The hev rows (issue 21): tgtun against hev-socks5-tunnel, the C relay people run on
// OpenWrt instead, each in turn in the router namespace of the same test network with
// the same dante, the other one stopped, every figure by measureRelay.
var (
	hevRows  = flag.Bool("hev", true, "measure hev-socks5-tunnel in tgtun's place too, the hev rows (-hev=false skips them; -only hev runs just them)")
	hevSrc   = flag.String("hev-src", filepath.Join("..", "shared", "peers", hev.Tarball), "hev-socks5-tunnel's source `tarball`")
	hevCache = flag.String("hev-cache", "/var/cache/tgtun-bench", "`directory` where hev-socks5-tunnel is built once, outside the checkout")
)

// hevTun and hevTunV4 are hev's TUN in the router namespace and the TUN's own address
// (in the LAN's documentation range, like bench/mips's).
const hevTun = "hevtun"

var hevTunV4 = netip.MustParseAddr("192.0.2.250")

// versusHev takes measureRelay's figures of a fresh tgtun and then of hev-socks5-tunnel
// in its place, 1 stream, and adds them as figures with tgtun's value against hev's.
func (b *bench) versusHev(ctx context.Context) error {
	bin, err := hev.Ensure(ctx, *hevSrc, *hevCache, func(s string) { fmt.Println(s) })
	if err != nil {
		return err
	}
	iperfDst, err := b.iperfServer(b.n.Messenger, testnet.MsgrV4)
	if err != nil {
		return err
	}
	relay, err := b.socksRelay(iperfDst)
	if err != nil {
		return err
	}
	nsIno, err := namespaceInodes(b.n)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // the iperf3 server listening
	c := &comparison{byName: map[string]*metric{}, order: []string{"tgtun", "hev"}}
	fmt.Printf("tgtun, then hev-socks5-tunnel %s in its place (%d s per iperf3 run, %d conns):\n", hev.Version, b.seconds, b.conns)
	for _, r := range []struct {
		name string
		r    relayUnder
	}{{"tgtun", b.tgtunUnder()}, {"hev", b.hevUnder(bin)}} {
		rec := func(metric, unit string, v float64) { c.add(metric, unit, r.name, v) }
		if err := b.measureRelay(ctx, r.r, []int{1}, iperfDst, relay, nsIno, rec); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	against := "hev-socks5-tunnel " + hev.Version + " in tgtun's place"
	for _, m := range c.metrics {
		f := figure{Name: "vs hev: " + m.Name, Value: median(m.Values["tgtun"]), Baseline: median(m.Values["hev"]), Unit: m.Unit, Against: against}
		switch {
		case m.Name == nameFlowsSum:
			f.Target, f.Met = "< hev", met(f.Value < f.Baseline)
		case m.Name == fmt.Sprintf("%s (%d conns)", nameLatency, b.conns):
			f.Target, f.Met = "<= hev", met(f.Value <= f.Baseline)
		case strings.HasPrefix(m.Name, nameRelayCPU1):
			f.Target, f.Met = "tgtun <= 1.0 s/GiB", met(f.Value <= 1.0)
		}
		b.add(f)
	}
	return nil
}

// hevUnder is hev-socks5-tunnel (bin) in the router namespace with dante as its SOCKS5
// server, and the messenger's IPv4 prefix routed into its TUN, the route removed again
// on stop. tgtun must not run meanwhile.
func (b *bench) hevUnder(bin string) relayUnder {
	return relayUnder{start: func(ctx context.Context) (int, func() error, error) {
		conf := filepath.Join(b.n.Dir, "hev.yml")
		if err := os.WriteFile(conf, []byte(hev.Conf(hevTun, 8500, hevTunV4, b.dante)), 0o600); err != nil {
			return 0, nil, err
		}
		p, err := b.n.Start(b.n.Router, bin, conf)
		if err != nil {
			return 0, nil, err
		}
		route := []string{"ip", "route", "replace", testnet.MsgrPrefixV4.String(), "dev", hevTun}
		stop := func() error {
			// The route would go with the TUN; removed first anyway, so that nothing is
			// left behind however hev ends.
			del := append([]string{}, route...)
			del[2] = "del"
			_, _ = b.n.Exec(context.Background(), b.n.Router, del...)
			err := p.Stop()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
					return nil // hev ends on SIGTERM's default action
				}
			}
			return err
		}
		fail := func(err error) (int, func() error, error) {
			_ = stop()
			return 0, nil, fmt.Errorf("hev-socks5-tunnel: %w\n%s", err, p.Output())
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			if _, err := b.n.Exec(ctx, b.n.Router, "ip", "link", "show", hevTun); err == nil {
				break
			}
			if exited, werr := p.Exited(); exited {
				return fail(fmt.Errorf("exited without making its TUN %s: %v", hevTun, werr))
			}
			if time.Now().After(deadline) {
				return fail(fmt.Errorf("no TUN %s within 30 s", hevTun))
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The client's traffic to the messenger is forwarded into the TUN by a route in
		// the main table (rp_filter is strict on the router: the answers come back from
		// the TUN, which that same route makes their reverse path).
		for _, step := range [][]string{{"ip", "link", "set", hevTun, "up"}, route} {
			if out, err := b.n.Exec(ctx, b.n.Router, step...); err != nil {
				return fail(fmt.Errorf("%v: %w: %s", step, err, out))
			}
		}
		dst := netip.AddrPortFrom(testnet.MsgrV4, testnet.HTTPPort).String()
		for deadline := time.Now().Add(30 * time.Second); ; {
			_, err := timeFirstByte(func() (net.Conn, error) { return b.n.Dial(ctx, b.n.Client, "tcp", dst) })
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fail(fmt.Errorf("the client got no answer from the messenger through it within 30 s: %w", err))
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(time.Second) // as for tgtun: start-up settled before the idle reading
		return p.Pid(), stop, nil
	}}
}
