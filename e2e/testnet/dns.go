package testnet

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSAnswers maps a domain (and its subdomains) to the addresses a test DNS server gives:
// the IPv4 ones as A records, the IPv6 ones as AAAA; other names get NXDOMAIN.
type DNSAnswers map[string][]netip.Addr

func (a DNSAnswers) lookup(name string) ([]netip.Addr, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for d, addrs := range a {
		if name == d || strings.HasSuffix(name, "."+d) {
			return addrs, true
		}
	}
	return nil, false
}

func (a DNSAnswers) answer(query []byte) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(query); err != nil || len(m.Questions) != 1 {
		return nil
	}
	q := m.Questions[0]
	resp := dnsmessage.Message{Header: dnsmessage.Header{ID: m.Header.ID, Response: true, Authoritative: true,
		RecursionDesired: m.Header.RecursionDesired, RecursionAvailable: true}, Questions: []dnsmessage.Question{q}}
	addrs, ok := a.lookup(q.Name.String())
	if !ok {
		resp.Header.RCode = dnsmessage.RCodeNameError
	}
	for _, addr := range addrs {
		h := dnsmessage.ResourceHeader{Name: q.Name, Type: q.Type, Class: dnsmessage.ClassINET, TTL: 60}
		switch {
		case q.Type == dnsmessage.TypeA && addr.Is4():
			resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: addr.As4()}})
		case q.Type == dnsmessage.TypeAAAA && addr.Is6():
			resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: addr.As16()}})
		}
	}
	b, err := resp.Pack()
	if err != nil {
		return nil
	}
	return b
}

// StartDNSServer answers from answers on UDP and TCP port 53 at addr in namespace ns,
// until cleanup.
func (n *Net) StartDNSServer(ns string, addr netip.Addr, answers DNSAnswers) error {
	ap := netip.AddrPortFrom(addr, 53).String()
	pc, err := n.ListenPacket(ns, "udp", ap)
	if err != nil {
		return err
	}
	ln, err := n.Listen(ns, "tcp", ap)
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if b := answers.answer(buf[:k]); b != nil {
				_, _ = pc.WriteTo(b, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveDNSStream(c, answers)
		}
	}()
	return nil
}

func serveDNSStream(c net.Conn, answers DNSAnswers) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var l [2]byte
	for {
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		b := answers.answer(q)
		if b == nil {
			return
		}
		if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(b)))); err != nil {
			return
		}
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

// LookupA asks the DNS server at server (UDP) from namespace ns for name's A records.
func (n *Net) LookupA(ctx context.Context, ns string, server netip.AddrPort, name string) ([]netip.Addr, error) {
	return n.Lookup(ctx, ns, server, name, dnsmessage.TypeA)
}

// Lookup asks the DNS server at server (UDP) from namespace ns for name's A or AAAA records.
func (n *Net) Lookup(ctx context.Context, ns string, server netip.AddrPort, name string, typ dnsmessage.Type) ([]netip.Addr, error) {
	c, err := n.Dial(ctx, ns, "udp", server.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: uint16(time.Now().UnixNano()), RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(strings.TrimSuffix(name, ".") + "."), Type: typ, Class: dnsmessage.ClassINET}}}
	raw, err := q.Pack()
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(raw); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	k, err := c.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("ask %s for %s: %w", server, name, err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:k]); err != nil {
		return nil, err
	}
	if m.Header.ID != q.Header.ID {
		return nil, fmt.Errorf("ask %s for %s: answer to another query", server, name)
	}
	if m.Header.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("%s: %s", name, m.Header.RCode)
	}
	var out []netip.Addr
	for _, r := range m.Answers {
		switch b := r.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(b.A))
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(b.AAAA))
		}
	}
	return out, nil
}

// Dnsmasq is Debian's dnsmasq running as the router's LAN resolver (on LANV4:53), with
// a conf-dir for tgtun's file and a restart script, as OpenWrt's init script would do.
type Dnsmasq struct {
	Dir     string // its files
	ConfDir string // the conf-dir: tgtun's --dnsmasq-dir
	Restart string // stops the running dnsmasq and starts one: tgtun's --dnsmasq-restart
	pidFile string
}

// Log returns dnsmasq's query log.
func (d *Dnsmasq) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "dnsmasq.log"))
	return string(b)
}

// Close kills the running dnsmasq.
func (d *Dnsmasq) Close() error {
	b, err := os.ReadFile(d.pidFile)
	if err != nil {
		return nil
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return nil
}

// StartLANDnsmasq runs dnsmasq in the router, forwarding to upstream (the ISP's resolver),
// until cleanup.
func (n *Net) StartLANDnsmasq(upstream netip.Addr) (*Dnsmasq, error) {
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		return nil, fmt.Errorf("dnsmasq is not installed (apt-get install dnsmasq-base): %w", err)
	}
	d := &Dnsmasq{Dir: filepath.Join(n.Dir, "dnsmasq")}
	d.ConfDir = filepath.Join(d.Dir, "conf.d")
	d.pidFile = filepath.Join(d.Dir, "dnsmasq.pid")
	d.Restart = filepath.Join(d.Dir, "restart")
	if err := os.MkdirAll(d.ConfDir, 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`port=53
listen-address=%s
bind-interfaces
no-resolv
no-hosts
server=%s
conf-dir=%s
pid-file=%s
user=root
group=root
log-queries
log-facility=%s
`, LANV4, upstream, d.ConfDir, d.pidFile, filepath.Join(d.Dir, "dnsmasq.log"))
	if err := os.WriteFile(filepath.Join(d.Dir, "dnsmasq.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// Stop the running dnsmasq (waiting for it to go), then start one that reads the
	// conf-dir afresh: what /etc/init.d/dnsmasq restart does on OpenWrt.
	script := fmt.Sprintf(`#!/bin/sh
pid=$(cat %[1]s 2>/dev/null)
if [ -n "$pid" ]; then
	kill "$pid" 2>/dev/null
	i=0
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i+1)); [ $i -gt 200 ] && { echo "dnsmasq $pid does not stop" >&2; exit 1; }
		sleep 0.05
	done
fi
rm -f %[1]s
exec %[2]s --conf-file=%[3]s
`, d.pidFile, bin, filepath.Join(d.Dir, "dnsmasq.conf"))
	if err := os.WriteFile(d.Restart, []byte(script), 0o755); err != nil {
		return nil, err
	}
	n.addCloser(d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := n.Exec(ctx, n.Router, d.Restart); err != nil {
		return nil, fmt.Errorf("start dnsmasq: %w: %s", err, out)
	}
	return d, nil
}
