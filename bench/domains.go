package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	return nil
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
