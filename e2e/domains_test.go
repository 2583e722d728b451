package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// lookupA asks the router's dnsmasq from the client, as a LAN device does.
func lookupA(n *testnet.Net, name string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	return n.LookupA(ctx, n.Client, netip.AddrPortFrom(testnet.LANV4, 53), name)
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

// startLANDnsmasq runs Debian's dnsmasq as the router's LAN resolver, forwarding to the
// ISP's resolver in inet; its log is shown when the test fails.
func startLANDnsmasq(t *testing.T, n *testnet.Net) *testnet.Dnsmasq {
	t.Helper()
	dm, err := n.StartLANDnsmasq(testnet.InetV4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", lastLines(dm.Log(), 40))
		}
	})
	return dm
}

func startDNSServer(t *testing.T, n *testnet.Net, ns string, addr netip.Addr, answers testnet.DNSAnswers) {
	t.Helper()
	if err := n.StartDNSServer(ns, addr, answers); err != nil {
		t.Fatal(err)
	}
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
	startDNSServer(t, n, n.Inet, testnet.InetV4, testnet.DNSAnswers{listedDomain: {testnet.DirectV4, testnet.DirectV6}, unlistedDomain: {testnet.DirectV4, testnet.DirectV6}})
	startDNSServer(t, n, n.Messenger, testnet.MsgrV4, testnet.DNSAnswers{listedDomain: {testnet.MsgrV4, testnet.MsgrV6}, unlistedDomain: {testnet.DirectV4, testnet.DirectV6}})
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
	d := startTgtun(t, n, conf, "--dnsmasq-dir", dm.ConfDir, "--dnsmasq-restart", dm.Restart,
		"--dnsmasq-addr", netip.AddrPortFrom(testnet.LANV4, 53).String())
	eventually(t, 30*time.Second, "a healthy proxy", func() error {
		for _, p := range d.status().Proxies {
			if p.Healthy {
				return nil
			}
		}
		return errors.New("no healthy proxy yet")
	})
	written, err := os.ReadFile(filepath.Join(dm.ConfDir, "tgtun.conf"))
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
	t.Run("listed domain over IPv6", func(t *testing.T) {
		eventually(t, 30*time.Second, "AAAA of "+listedDomain, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			got, err := n.Lookup(ctx, n.Client, netip.AddrPortFrom(testnet.LANV4, 53), "v6."+listedDomain, dnsmessage.TypeAAAA)
			if err != nil {
				return err
			}
			if !slices.Equal(got, []netip.Addr{testnet.MsgrV6}) {
				return fmt.Errorf("AAAA %v, want %s", got, testnet.MsgrV6)
			}
			return nil
		})
		if out := routerExec(t, n, "nft", "list", "set", "inet", "tgtun", "dst6_dns"); !strings.Contains(out, testnet.MsgrV6.String()) {
			t.Fatalf("%s is not in set dst6_dns:\n%s", testnet.MsgrV6, out)
		}
		seesAs(t, n, msgrURL(true), testnet.ProxyV6.String())
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

	t.Run("removing the domain removes its directives", func(t *testing.T) {
		c := conf
		c.customExtra = []string{"list domain 'other.example'"}
		d.writeConf(c)
		if _, err := d.call("reload"); err != nil {
			t.Fatal(err)
		}
		written, err := os.ReadFile(filepath.Join(dm.ConfDir, "tgtun.conf"))
		if err != nil || strings.Contains(string(written), listedDomain) || !strings.Contains(string(written), "server=/other.example/") {
			t.Fatalf("tgtun's dnsmasq file after removing %s: %v\n%s", listedDomain, err, written)
		}
		// dnsmasq was restarted with the new file: the ISP answers the name again.
		resolvesTo(t, n, "again."+listedDomain, testnet.DirectV4)
	})
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
		if _, err := os.Stat(filepath.Join(dm.ConfDir, "tgtun.conf")); !os.IsNotExist(err) {
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
	startDNSServer(t, n, n.Inet, testnet.InetV4, testnet.DNSAnswers{listedDomain: {testnet.DirectV4}})
	startDNSServer(t, n, n.Messenger, testnet.MsgrV4, testnet.DNSAnswers{listedDomain: {testnet.MsgrV4}})
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
	d := startTgtun(t, n, conf, "--dnsmasq-dir", dm.ConfDir, "--dnsmasq-restart", dm.Restart, "--dnsmasq-binary", fake)
	written, err := os.ReadFile(filepath.Join(dm.ConfDir, "tgtun.conf"))
	if err != nil || strings.Contains(string(written), "nftset=") || !strings.Contains(string(written), "server=/"+listedDomain+"/127.0.0.1#5354") {
		t.Fatalf("tgtun's dnsmasq file without nftset support: %v\n%s", err, written)
	}
	if st := d.status(); !strings.Contains(st.DNS.Dnsmasq, "no nftset support") {
		t.Errorf("status dns.dnsmasq = %q", st.DNS.Dnsmasq)
	}
	// The forwarding still gives the true answer.
	resolvesTo(t, n, listedDomain, testnet.MsgrV4)
	// check names the problem and what to install.
	raw, err := d.call("check")
	if err != nil {
		t.Fatal(err)
	}
	var res control.CheckResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("decode check: %v\n%s", err, raw)
	}
	i := slices.IndexFunc(res.Steps, func(s control.CheckStep) bool { return s.Name == "dnsmasq" })
	if i < 0 || res.Steps[i].OK || !strings.Contains(res.Steps[i].Hint, "dnsmasq-full") || res.OK {
		t.Errorf("check without nftset support:\n%s", raw)
	}
}
