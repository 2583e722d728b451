package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// domains measures what domain targets cost: the daemon's memory with all five catalogue
// services (their ranges, their domains in dnsmasq's file, the DNS forwarder) against the
// same daemon with one custom subnet, and the time nftables takes to put 10 000
// addresses into a domain set one command each (as dnsmasq adds what it resolves)
// against one command for all of them.
func (b *bench) domains(ctx context.Context) error {
	base := fmt.Sprintf(`config main 'main'
	option enabled '1'
	list lan_iface '%s'
	option health_target '%s:%d'
	option update_interval '0'
	option log_level 'warn'

config proxy 'dante'
	option server '%s'
	option port '%d'
`, testnet.LANIface, testnet.MsgrV4, testnet.EchoPort, b.dante.Addr(), b.dante.Port())
	small := base + fmt.Sprintf("\nconfig service 'telegram'\n\toption enabled '0'\n\nconfig custom 'messenger'\n\tlist subnet '%s'\n", testnet.MsgrPrefixV4)
	all := base
	for _, s := range []string{"telegram", "whatsapp", "signal", "discord", "viber"} {
		all += fmt.Sprintf("\nconfig service '%s'\n\toption enabled '1'\n", s)
	}
	rssSmall, err := b.domainsRun(ctx, "small", small, nil)
	if err != nil {
		return err
	}
	var setAdd, setBatch float64
	rssAll, err := b.domainsRun(ctx, "all", all, func() error {
		var err error
		setAdd, setBatch, err = b.setUpdate(ctx)
		return err
	})
	if err != nil {
		return err
	}
	b.add(figure{Name: "memory idle VmRSS, all five services", Value: rssAll, Baseline: rssSmall, Unit: "MiB", Against: "one custom subnet"})
	b.add(figure{Name: "10000 addresses into dst6_dns, one nft command each", Value: setAdd, Baseline: setBatch, Unit: "ms", Against: "one command for all"})
	return b.firstConnection(ctx)
}

// firstConnection measures resolve + connect + first byte from the client to a listed
// domain through dnsmasq, tgtun's forwarder and the proxy, against the same to an
// unlisted domain on the direct path without tgtun. Every round asks a new subdomain, so
// no cache answers. Medians of 30 rounds, in milliseconds.
func (b *bench) firstConnection(ctx context.Context) error {
	const listed, unlisted, rounds = "msgr.example", "direct.example", 30
	n := b.n
	if err := n.StartDNSServer(n.Inet, testnet.InetV4, testnet.DNSAnswers{listed: {testnet.DirectV4}, unlisted: {testnet.DirectV4}}); err != nil {
		return err
	}
	if err := n.StartDNSServer(n.Messenger, testnet.MsgrV4, testnet.DNSAnswers{listed: {testnet.MsgrV4}}); err != nil {
		return err
	}
	dm, err := n.StartLANDnsmasq(testnet.InetV4)
	if err != nil {
		return err
	}
	measure := func(domain string, want netip.Addr) (float64, error) {
		var ms []float64
		for i := range rounds {
			name := fmt.Sprintf("r%d-%d.%s", i, time.Now().UnixNano(), domain)
			start := time.Now()
			if err := firstByte(ctx, n, name, want); err != nil {
				return 0, err
			}
			ms = append(ms, float64(time.Since(start).Microseconds())/1000)
		}
		slices.Sort(ms)
		return ms[len(ms)/2], nil
	}
	direct, err := measure(unlisted, testnet.DirectV4)
	if err != nil {
		return fmt.Errorf("first connection without tgtun: %w", err)
	}
	dir := filepath.Join(n.Dir, "domains-latency")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf(`config main 'main'
	option enabled '1'
	list lan_iface '%s'
	option health_target '%s:%d'
	option update_interval '0'
	option log_level 'warn'
	option dns_upstream '%s:53'

config service 'telegram'
	option enabled '0'

config custom 'messenger'
	list domain '%s'

config proxy 'dante'
	option server '%s'
	option port '%d'
`, testnet.LANIface, testnet.MsgrV4, testnet.EchoPort, testnet.MsgrV4, listed, b.dante.Addr(), b.dante.Port())
	confPath, sock := filepath.Join(dir, "tgtun.conf"), filepath.Join(dir, "tgtun.sock")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	p, err := n.Start(n.Router, b.tgtun, "run", "-c", confPath, "--socket", sock, "--list-cache", filepath.Join(dir, "lists"),
		"--dnsmasq-dir", dm.ConfDir, "--dnsmasq-restart", dm.Restart)
	if err != nil {
		return err
	}
	defer func() { _ = p.Stop() }()
	// Warm up: the daemon answers, the proxy is healthy, dnsmasq has tgtun's file.
	deadline := time.Now().Add(60 * time.Second)
	for firstByte(ctx, n, "warm."+listed, testnet.MsgrV4) != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("listed domain never worked through tgtun:\n%s\n%s", p.Output(), dm.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	through, err := measure(listed, testnet.MsgrV4)
	if err != nil {
		return fmt.Errorf("first connection through tgtun: %w", err)
	}
	b.add(figure{Name: "first connection to a listed domain (resolve+connect+byte)", Value: through, Baseline: direct, Unit: "ms", Against: "unlisted domain, direct, no tgtun"})
	return nil
}

// firstByte resolves name through the router's dnsmasq from the client, checks the answer,
// connects to port 80 there and reads the first byte of the answer to a GET.
func firstByte(ctx context.Context, n *testnet.Net, name string, want netip.Addr) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := n.LookupA(ctx, n.Client, netip.AddrPortFrom(testnet.LANV4, 53), name)
	if err != nil {
		return err
	}
	if len(addrs) != 1 || addrs[0] != want {
		return fmt.Errorf("%s resolved to %v, want %s", name, addrs, want)
	}
	c, err := n.Dial(ctx, n.Client, "tcp", netip.AddrPortFrom(addrs[0], testnet.HTTPPort).String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\nHost: " + name + "\r\n\r\n")); err != nil {
		return err
	}
	var one [1]byte
	_, err = c.Read(one[:])
	return err
}

// domainsRun runs a daemon with conf (dnsmasq's file goes to a scratch directory), calls
// during (if any) while it runs, and returns its idle VmRSS.
func (b *bench) domainsRun(ctx context.Context, name, conf string, during func() error) (float64, error) {
	dir := filepath.Join(b.n.Dir, "domains-"+name)
	if err := os.MkdirAll(filepath.Join(dir, "dnsmasq.d"), 0o755); err != nil {
		return 0, err
	}
	confPath, sock := filepath.Join(dir, "tgtun.conf"), filepath.Join(dir, "tgtun.sock")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return 0, err
	}
	p, err := b.n.Start(b.n.Router, b.tgtun, "run", "-c", confPath, "--socket", sock, "--list-cache", filepath.Join(dir, "lists"),
		"--dnsmasq-dir", filepath.Join(dir, "dnsmasq.d"), "--dnsmasq-restart", "true")
	if err != nil {
		return 0, err
	}
	defer func() { _ = p.Stop() }()
	deadline := time.Now().Add(60 * time.Second)
	for exec.CommandContext(ctx, b.tgtun, "status", "--socket", sock).Run() != nil {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("tgtun (%s) did not start:\n%s", name, p.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // let start-up garbage settle before the idle reading
	rss, _, err := memory(p.Pid())
	if err != nil {
		return 0, err
	}
	if during != nil {
		if err := during(); err != nil {
			return 0, err
		}
	}
	return rss, nil
}

// setUpdate times `nft -f` adding 10 000 IPv6 documentation addresses to dst6_dns, one
// command each, then (after a flush) all in one command. Milliseconds.
func (b *bench) setUpdate(ctx context.Context) (each, batch float64, err error) {
	var one, all strings.Builder
	all.WriteString("add element inet tgtun dst6_dns { ")
	for i := range 10000 {
		a := fmt.Sprintf("2001:db8:ffff::%x:%x", i>>16, i&0xffff)
		fmt.Fprintf(&one, "add element inet tgtun dst6_dns { %s }\n", a)
		if i > 0 {
			all.WriteString(", ")
		}
		all.WriteString(a)
	}
	all.WriteString(" }\n")
	timeIt := func(script string) (float64, error) {
		f := filepath.Join(b.n.Dir, "set-update.nft")
		if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
			return 0, err
		}
		if _, err := b.n.Exec(ctx, b.n.Router, "nft", "flush", "set", "inet", "tgtun", "dst6_dns"); err != nil {
			return 0, err
		}
		start := time.Now()
		if out, err := b.n.Exec(ctx, b.n.Router, "nft", "-f", f); err != nil {
			return 0, fmt.Errorf("nft -f: %w: %s", err, out)
		}
		return float64(time.Since(start).Microseconds()) / 1000, nil
	}
	if each, err = timeIt(one.String()); err != nil {
		return 0, 0, err
	}
	if batch, err = timeIt(all.String()); err != nil {
		return 0, 0, err
	}
	return each, batch, nil
}
