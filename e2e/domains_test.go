package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tgtun/tgtun/daemon/control"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// Names the test DNS servers know. The ISP's resolver poisons the listed one (it points
// it at the ordinary direct server); the true resolver sits behind the censor with the
// messenger, reachable only through the proxy.
const (
	listedDomain   = "msgr.example"
	unlistedDomain = "direct.example"
)

// dnsAnswers maps a domain (and its subdomains) to the A record a test server gives.
type dnsAnswers map[string]netip.Addr

func (a dnsAnswers) lookup(name string) (netip.Addr, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for d, addr := range a {
		if name == d || strings.HasSuffix(name, "."+d) {
			return addr, true
		}
	}
	return netip.Addr{}, false
}

func (a dnsAnswers) answer(query []byte) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(query); err != nil || len(m.Questions) != 1 {
		return nil
	}
	q := m.Questions[0]
	resp := dnsmessage.Message{Header: dnsmessage.Header{ID: m.Header.ID, Response: true, Authoritative: true, RecursionDesired: m.Header.RecursionDesired, RecursionAvailable: true},
		Questions: []dnsmessage.Question{q}}
	addr, ok := a.lookup(q.Name.String())
	switch {
	case !ok:
		resp.Header.RCode = dnsmessage.RCodeNameError
	case q.Type == dnsmessage.TypeA:
		resp.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body: &dnsmessage.AResource{A: addr.As4()}}}
	}
	b, err := resp.Pack()
	if err != nil {
		return nil
	}
	return b
}

// startDNSServer answers on UDP and TCP port 53 at addr in namespace ns.
func startDNSServer(t *testing.T, n *testnet.Net, ns string, addr netip.Addr, answers dnsAnswers) {
	t.Helper()
	ap := netip.AddrPortFrom(addr, 53).String()
	pc, err := n.ListenPacket(ns, "udp", ap)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := n.Listen(ns, "tcp", ap)
	if err != nil {
		t.Fatal(err)
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
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				var l [2]byte
				for {
					if _, err := readFull(c, l[:]); err != nil {
						return
					}
					q := make([]byte, int(l[0])<<8|int(l[1]))
					if _, err := readFull(c, q); err != nil {
						return
					}
					b := answers.answer(q)
					if b == nil {
						return
					}
					if _, err := c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// lookupA asks the router's dnsmasq from the client, as a LAN device does.
func lookupA(n *testnet.Net, name string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	c, err := n.Dial(ctx, n.Client, "udp", netip.AddrPortFrom(testnet.LANV4, 53).String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: uint16(time.Now().UnixNano()), RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	raw, _ := q.Pack()
	if _, err := c.Write(raw); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	k, err := c.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("ask dnsmasq for %s: %w", name, err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:k]); err != nil {
		return nil, err
	}
	if m.Header.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("%s: %s", name, m.Header.RCode)
	}
	var out []netip.Addr
	for _, r := range m.Answers {
		if a, ok := r.Body.(*dnsmessage.AResource); ok {
			out = append(out, netip.AddrFrom4(a.A))
		}
	}
	return out, nil
}

// resolvesTo waits until the client gets exactly want for name.
func resolvesTo(t *testing.T, n *testnet.Net, name string, want netip.Addr) {
	t.Helper()
	eventually(t, 30*time.Second, "resolve "+name, func() error {
		got, err := lookupA(n, name)
		if err != nil {
			return err
		}
		if !slices.Equal(got, []netip.Addr{want}) {
			return fmt.Errorf("%s resolves to %v, want %s", name, got, want)
		}
		return nil
	})
}

// lanDnsmasq is Debian's dnsmasq as the router's LAN resolver, restarted by a script the
// way OpenWrt's init script restarts it.
type lanDnsmasq struct {
	dir, confDir, pidFile, restart string
}

func startLANDnsmasq(t *testing.T, n *testnet.Net) *lanDnsmasq {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Fatal("dnsmasq is not installed (make deps installs dnsmasq-base)")
	}
	dm := &lanDnsmasq{dir: filepath.Join(n.Dir, "dnsmasq")}
	dm.confDir = filepath.Join(dm.dir, "conf.d")
	dm.pidFile = filepath.Join(dm.dir, "dnsmasq.pid")
	dm.restart = filepath.Join(dm.dir, "restart")
	if err := os.MkdirAll(dm.confDir, 0o755); err != nil {
		t.Fatal(err)
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
`, testnet.LANV4, testnet.InetV4, dm.confDir, dm.pidFile, filepath.Join(dm.dir, "dnsmasq.log"))
	if err := os.WriteFile(filepath.Join(dm.dir, "dnsmasq.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
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
`, dm.pidFile, bin, filepath.Join(dm.dir, "dnsmasq.conf"))
	if err := os.WriteFile(dm.restart, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(dm.pidFile); err == nil {
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dm.dir, "dnsmasq.log")); err == nil {
				t.Logf("dnsmasq log:\n%s", lastLines(string(b), 40))
			}
		}
	})
	routerExec(t, n, dm.restart)
	return dm
}

// setHas tells whether addr is in tgtun's domain set, read with nft in the router.
func setHas(t *testing.T, n *testnet.Net, addr netip.Addr) bool {
	t.Helper()
	out := routerExec(t, n, "nft", "list", "set", "inet", "tgtun", "dst4_dns")
	return strings.Contains(out, addr.String()+" ") || strings.Contains(out, addr.String()+",") || strings.Contains(out, addr.String()+" expires")
}

// TestDomainTargets: the router's real dnsmasq, fed tgtun's directives, sends a listed
// domain (and its subdomains) to tgtun's forwarder, which resolves it through the proxy
// past the ISP's poisoned answer; the address lands in the domain set and the connection
// goes through the proxy, while unlisted domains and excluded devices stay direct. The
// set's entries expire; stopping tgtun leaves dnsmasq working without tgtun's directives.
func TestDomainTargets(t *testing.T) {
	n, dante := newNetWithDante(t)
	// The ISP's resolver lies about the listed domain; the true one is behind the censor.
	startDNSServer(t, n, n.Inet, testnet.InetV4, dnsAnswers{listedDomain: testnet.DirectV4, unlistedDomain: testnet.DirectV4})
	startDNSServer(t, n, n.Messenger, testnet.MsgrV4, dnsAnswers{listedDomain: testnet.MsgrV4, unlistedDomain: testnet.DirectV4})
	dm := startLANDnsmasq(t, n)

	// Without tgtun the client gets the poisoned answer, and the messenger is censored.
	resolvesTo(t, n, listedDomain, testnet.DirectV4)
	directV4, err := curl(t, n, directURL(false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := curl(t, n, msgrURL(false)); err == nil {
		t.Fatal("the messenger is reachable without tgtun: the censor of the test network is not working")
	}

	conf := danteConf(dante)
	conf.noStaticTarget = true
	conf.customExtra = []string{"list domain '" + listedDomain + "'"}
	conf.mainExtra = []string{fmt.Sprintf("option dns_upstream '%s:53'", testnet.MsgrV4)}
	d := startTgtun(t, n, conf, "--dnsmasq-dir", dm.confDir, "--dnsmasq-restart", dm.restart,
		"--dnsmasq-addr", netip.AddrPortFrom(testnet.LANV4, 53).String())
	eventually(t, 30*time.Second, "a healthy proxy", func() error {
		for _, p := range d.status().Proxies {
			if p.Healthy {
				return nil
			}
		}
		return errors.New("no healthy proxy yet")
	})
	written, err := os.ReadFile(filepath.Join(dm.confDir, "tgtun.conf"))
	if err != nil || !strings.Contains(string(written), "nftset=/"+listedDomain+"/4#inet#tgtun#dst4_dns") ||
		!strings.Contains(string(written), "server=/"+listedDomain+"/127.0.0.1#5354") {
		t.Fatalf("tgtun's dnsmasq file: %v\n%s", err, written)
	}

	t.Run("listed domain resolves through the proxy and is tunnelled", func(t *testing.T) {
		resolvesTo(t, n, listedDomain, testnet.MsgrV4)
		if !setHas(t, n, testnet.MsgrV4) {
			t.Fatalf("%s is not in set dst4_dns:\n%s", testnet.MsgrV4, routerExec(t, n, "nft", "list", "set", "inet", "tgtun", "dst4_dns"))
		}
		seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
	})
	t.Run("subdomain matches", func(t *testing.T) {
		resolvesTo(t, n, "cdn.eu."+listedDomain, testnet.MsgrV4)
	})
	t.Run("unlisted domain stays direct", func(t *testing.T) {
		resolvesTo(t, n, unlistedDomain, testnet.DirectV4)
		if setHas(t, n, testnet.DirectV4) {
			t.Errorf("%s (unlisted) is in the domain set", testnet.DirectV4)
		}
		seesAs(t, n, directURL(false), directV4)
	})
	t.Run("status and check", func(t *testing.T) {
		st := d.status()
		if st.DNS.Listen != "127.0.0.1:5354" || st.DNS.Upstream != testnet.MsgrV4.String()+":53" || st.DNS.Dnsmasq != "ok" || st.DNS.Queries == 0 {
			t.Errorf("status dns %+v", st.DNS)
		}
		var names []string
		for _, s := range st.Services {
			names = append(names, s.Name)
		}
		if !slices.Equal(names, []string{"telegram", "whatsapp", "signal", "discord", "viber"}) {
			t.Errorf("status services %+v", st.Services)
		}
		raw, err := d.call("check")
		if err != nil {
			t.Fatal(err)
		}
		var res control.CheckResult
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("decode check: %v\n%s", err, raw)
		}
		for _, want := range []string{"dnsmasq", "domain " + listedDomain} {
			i := slices.IndexFunc(res.Steps, func(s control.CheckStep) bool { return s.Name == want })
			if i < 0 || !res.Steps[i].OK {
				t.Errorf("check step %q missing or failing:\n%s", want, raw)
			}
		}
	})

	clientMAC := strings.Fields(strings.TrimSpace(mustExec(t, n, n.Client, "cat", "/sys/class/net/eth0/address")))[0]
	devices := []struct {
		name    string
		lines   []string
		tunnels bool
	}{
		{"exclude by IP", []string{"list exclude_device '" + testnet.ClientV4.String() + "'"}, false},
		{"exclude by MAC", []string{"list exclude_device '" + clientMAC + "'"}, false},
		{"include another device only", []string{"list include_device '192.0.2.99'"}, false},
		{"include by MAC", []string{"list include_device '" + clientMAC + "'"}, true},
		{"include by prefix, exclude by MAC", []string{"list include_device '192.0.2.0/28'", "list exclude_device '" + clientMAC + "'"}, false},
		{"include by IP", []string{"list include_device '" + testnet.ClientV4.String() + "'"}, true},
	}
	for _, dev := range devices {
		t.Run(dev.name, func(t *testing.T) {
			c := conf
			c.mainExtra = append(slices.Clone(conf.mainExtra), dev.lines...)
			d.writeConf(c)
			if _, err := d.call("reload"); err != nil {
				t.Fatal(err)
			}
			resolvesTo(t, n, listedDomain, testnet.MsgrV4)
			if dev.tunnels {
				seesAs(t, n, msgrURL(false), testnet.ProxyV4.String())
				return
			}
			// Not tunnelled: the connection takes the normal path, where the censor
			// refuses it. Retried until the reload's rules are in place.
			eventually(t, 20*time.Second, "messenger blocked for an untunnelled device", func() error {
				if got, err := curl(t, n, msgrURL(false)); err == nil {
					return fmt.Errorf("the messenger answered (saw %s): the device was tunnelled", got)
				}
				return nil
			})
		})
	}

	t.Run("entries expire", func(t *testing.T) {
		c := conf
		c.mainExtra = append(slices.Clone(conf.mainExtra), "option domain_timeout '3s'")
		d.writeConf(c)
		if _, err := d.call("reload"); err != nil {
			t.Fatal(err)
		}
		// The rebuilt set is empty; a fresh answer (dnsmasq's cache was emptied by its
		// restart... or holds at most 3 s, the forwarder's TTL cap) fills it again.
		eventually(t, 30*time.Second, "address in the set after a lookup", func() error {
			if _, err := lookupA(n, "expire."+listedDomain); err != nil {
				return err
			}
			if !setHas(t, n, testnet.MsgrV4) {
				return errors.New("not in the set")
			}
			return nil
		})
		eventually(t, 30*time.Second, "address gone after domain_timeout", func() error {
			if setHas(t, n, testnet.MsgrV4) {
				return errors.New("still in the set")
			}
			return nil
		})
	})

	t.Run("stopping tgtun leaves dnsmasq without its directives", func(t *testing.T) {
		d.stop()
		if _, err := os.Stat(filepath.Join(dm.confDir, "tgtun.conf")); !os.IsNotExist(err) {
			t.Fatalf("tgtun.conf still in dnsmasq's conf-dir (%v)", err)
		}
		// dnsmasq works, and answers as it did before tgtun: from the ISP's resolver.
		resolvesTo(t, n, unlistedDomain, testnet.DirectV4)
		resolvesTo(t, n, listedDomain, testnet.DirectV4)
	})
}

func mustExec(t *testing.T, n *testnet.Net, ns string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, ns, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestDomainsWithoutNftset: with a dnsmasq built without nftset (OpenWrt's default
// "dnsmasq" package), tgtun writes only the forwarding lines, on which that dnsmasq still
// starts (nftset lines would stop it and take the LAN's DNS down), and says why in status.
func TestDomainsWithoutNftset(t *testing.T) {
	n, dante := newNetWithDante(t)
	startDNSServer(t, n, n.Inet, testnet.InetV4, dnsAnswers{listedDomain: testnet.DirectV4})
	startDNSServer(t, n, n.Messenger, testnet.MsgrV4, dnsAnswers{listedDomain: testnet.MsgrV4})
	dm := startLANDnsmasq(t, n)
	fake := filepath.Join(n.Dir, "dnsmasq-basic")
	script := "#!/bin/sh\necho 'Dnsmasq version 2.90'\necho 'Compile time options: IPv6 GNU-getopt no-DBus UBus no-i18n no-IDN DHCP DHCPv6 no-Lua TFTP no-conntrack no-ipset no-nftset auth no-cryptohash no-DNSSEC'\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := danteConf(dante)
	conf.noStaticTarget = true
	conf.customExtra = []string{"list domain '" + listedDomain + "'"}
	conf.mainExtra = []string{fmt.Sprintf("option dns_upstream '%s:53'", testnet.MsgrV4)}
	d := startTgtun(t, n, conf, "--dnsmasq-dir", dm.confDir, "--dnsmasq-restart", dm.restart, "--dnsmasq-binary", fake)
	written, err := os.ReadFile(filepath.Join(dm.confDir, "tgtun.conf"))
	if err != nil || strings.Contains(string(written), "nftset=") || !strings.Contains(string(written), "server=/"+listedDomain+"/127.0.0.1#5354") {
		t.Fatalf("tgtun's dnsmasq file without nftset support: %v\n%s", err, written)
	}
	if st := d.status(); !strings.Contains(st.DNS.Dnsmasq, "no nftset support") {
		t.Errorf("status dns.dnsmasq = %q", st.DNS.Dnsmasq)
	}
	// The forwarding still gives the true answer.
	resolvesTo(t, n, listedDomain, testnet.MsgrV4)
}
