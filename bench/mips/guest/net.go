package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// buildNet makes the emulated router's test network, the topology of e2e/testnet:
//
//	cli ──lan0── rtr ──wan0── inet (censor) ── proxy ── msgr
//
// The router masquerades the LAN to its WAN address; inet rejects whatever heads for
// the messenger unless it comes from the proxy host; only the proxy host routes to the
// messenger.
func buildNet() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	all := []string{nsCli, nsRtr, nsInet, nsProxy, nsMsgr}
	for _, ns := range all {
		if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		fwd, rp := "0", "0"
		if ns == nsRtr || ns == nsInet {
			fwd = "1"
		}
		if ns == nsRtr {
			rp = "1" // strict, as on the host's e2e network
		}
		if _, err := run(ctx, inNS(ns, "sysctl", "-qw",
			"net.ipv4.ip_forward="+fwd,
			"net.ipv6.conf.all.forwarding="+fwd,
			"net.ipv6.conf.all.accept_dad=0",
			"net.ipv6.conf.default.accept_dad=0",
			"net.ipv4.conf.all.rp_filter=0",
			"net.ipv4.conf.default.rp_filter="+rp)...); err != nil {
			return err
		}
		if _, err := run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"link", "add", "eth0", "netns", nsCli, "type", "veth", "peer", "name", "lan0", "netns", nsRtr},
		{"link", "add", "wan0", "netns", nsRtr, "type", "veth", "peer", "name", "r0", "netns", nsInet},
		{"link", "add", "px0", "netns", nsInet, "type", "veth", "peer", "name", "eth0", "netns", nsProxy},
		{"link", "add", "m0", "netns", nsProxy, "type", "veth", "peer", "name", "eth0", "netns", nsMsgr},

		{"-n", nsCli, "addr", "add", "192.0.2.10/24", "dev", "eth0"},
		{"-n", nsCli, "link", "set", "eth0", "up"},
		{"-n", nsCli, "route", "add", "default", "via", "192.0.2.1"},

		{"-n", nsRtr, "addr", "add", "192.0.2.1/24", "dev", "lan0"},
		{"-n", nsRtr, "addr", "add", "198.51.100.1/24", "dev", "wan0"},
		{"-n", nsRtr, "link", "set", "lan0", "up"},
		{"-n", nsRtr, "link", "set", "wan0", "up"},
		{"-n", nsRtr, "route", "add", "default", "via", "198.51.100.254"},

		{"-n", nsInet, "addr", "add", "198.51.100.254/24", "dev", "r0"},
		{"-n", nsInet, "link", "set", "r0", "up"},
		{"-n", nsInet, "link", "set", "px0", "up"},
		{"-n", nsInet, "route", "add", "198.51.100.6/32", "dev", "px0"},
		{"-n", nsInet, "route", "add", "203.0.113.0/24", "via", "198.51.100.6"},

		{"-n", nsProxy, "addr", "add", "198.51.100.6/32", "dev", "eth0"},
		{"-n", nsProxy, "link", "set", "eth0", "up"},
		{"-n", nsProxy, "link", "set", "m0", "up"},
		{"-n", nsProxy, "route", "add", "198.51.100.254/32", "dev", "eth0"},
		{"-n", nsProxy, "route", "add", "default", "via", "198.51.100.254"},
		{"-n", nsProxy, "route", "add", "203.0.113.0/24", "dev", "m0"},

		{"-n", nsMsgr, "addr", "add", "203.0.113.10/24", "dev", "eth0"},
		{"-n", nsMsgr, "link", "set", "eth0", "up"},
		{"-n", nsMsgr, "route", "add", "198.51.100.6/32", "dev", "eth0"},
		{"-n", nsMsgr, "route", "add", "default", "via", "198.51.100.6"},
	}
	for _, s := range steps {
		if _, err := run(ctx, append([]string{"ip"}, s...)...); err != nil {
			return err
		}
	}
	if _, err := run(ctx, inNS(nsInet, "sysctl", "-qw", "net.ipv4.conf.r0.proxy_arp=1")...); err != nil {
		return err
	}
	if err := nft(ctx, nsRtr, routerNAT); err != nil {
		return err
	}
	return nft(ctx, nsInet, censor)
}

const routerNAT = `
table ip testnet_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
}
`

const censor = `
table inet censor {
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "px0" accept
		ip daddr 203.0.113.0/24 meta l4proto tcp reject with tcp reset
		ip daddr 203.0.113.0/24 reject with icmpx type admin-prohibited
	}
}
`

func nft(ctx context.Context, ns, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ns, err, out)
	}
	return nil
}

// inNamespace runs fn on a thread in network namespace ns; sockets it opens stay there.
func inNamespace(ns string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			done <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter %s: %w", ns, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(fnErr, err)
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		done <- fnErr
	}()
	return <-done
}

func dialNS(ctx context.Context, ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNamespace(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// serve runs a TCP server in ns on addr inside this process.
func serve(ns, addr string, handle func(net.Conn)) error {
	var l net.Listener
	if err := inNamespace(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("listen %s in %s: %w", addr, ns, err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return nil
}

// serveHTTP answers the first request line with a short HTTP answer and closes.
func serveHTTP(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 512)
	if _, err := c.Read(buf); err != nil {
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
}

func serveEcho(c net.Conn) {
	defer c.Close()
	_, _ = io.Copy(c, c)
}

// client connects from the LAN client's namespace: to the destination itself (through
// whatever the router does with it), or through a SOCKS5 server (the baseline).
type client struct {
	socks string
}

func (cl client) dial(ctx context.Context, dst string) (net.Conn, error) {
	if cl.socks == "" {
		return dialNS(ctx, nsCli, dst, 30*time.Second)
	}
	c, err := dialNS(ctx, nsCli, cl.socks, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if err := socksConnect(c, dst); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// socksConnect is RFC 1928 as ordinary clients do it: greeting, answer, CONNECT, answer.
func socksConnect(c net.Conn, dst string) error {
	ap, err := netip.ParseAddrPort(dst)
	if err != nil {
		return err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	g := make([]byte, 2)
	if _, err := io.ReadFull(c, g); err != nil || g[1] != 0 {
		return fmt.Errorf("socks greeting: %v %v", err, g)
	}
	a4 := ap.Addr().As4()
	req := append([]byte{5, 1, 0, 1}, a4[:]...)
	req = binary.BigEndian.AppendUint16(req, ap.Port())
	if _, err := c.Write(req); err != nil {
		return err
	}
	rep := make([]byte, 10)
	if _, err := io.ReadFull(c, rep); err != nil || rep[1] != 0 {
		return fmt.Errorf("socks connect: %v %v", err, rep)
	}
	return nil
}

// firstByte is one connect + request + first byte of the answer from the messenger.
func (cl client) firstByte(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	c, err := cl.dial(ctx, httpAddr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return 0, err
	}
	var one [1]byte
	if _, err := c.Read(one[:]); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
