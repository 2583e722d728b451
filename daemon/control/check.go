package control

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/proxy"
)

// CheckStep is one diagnostic of `check`: what was looked at, whether it is fine, and what
// to do when it is not.
type CheckStep struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Hint   string `json:"hint,omitempty"`
}

// CheckResult is the answer to "why doesn't Telegram work?".
type CheckResult struct {
	OK    bool        `json:"ok"`
	Steps []CheckStep `json:"steps"`
}

func (r *CheckResult) add(name string, ok bool, detail, hint string) {
	s := CheckStep{Name: name, OK: ok, Detail: detail}
	if !ok {
		s.Hint = hint
	}
	r.Steps = append(r.Steps, s)
}

// Check walks the path a messenger connection takes, from the configuration to a test
// connection through each proxy, and says for each step what is wrong and what to do.
func (d *Daemon) Check(ctx context.Context) CheckResult {
	var r CheckResult

	_, _, err := LoadConfig(d.opts.ConfigPath)
	if err != nil {
		r.add("config", false, oneLine(err.Error()),
			"fix the file (tgtun config check -c "+d.opts.ConfigPath+" lists every error), then reload; the last good configuration keeps running meanwhile")
	} else {
		r.add("config", true, d.opts.ConfigPath+" is valid", "")
	}

	d.mu.Lock()
	n, cfg, pool, routeDev := d.net, d.cfg, d.pool, d.routeDev
	d.mu.Unlock()

	if n == nil {
		r.add("tun", false, "the network side is not installed", "see the daemon log (logread -e tgtun) for why the setup failed")
	} else {
		st, err := n.Status()
		switch {
		case err != nil:
			r.add("tun", false, err.Error(), "see the daemon log (logread -e tgtun)")
		case !st.TUNPresent || !st.TUNUp:
			r.add("tun", false, fmt.Sprintf("%s present=%v up=%v", cfg.Main.TunName, st.TUNPresent, st.TUNUp),
				"is kmod-tun installed (opkg install kmod-tun)? restart tgtun")
		default:
			r.add("tun", true, cfg.Main.TunName+" is up", "")
		}
		if err == nil {
			r.add("nftables", st.Table && (st.Targets4+st.Targets6 > 0 || len(d.lists.Domains()) > 0),
				fmt.Sprintf("table inet tgtun present=%v, target ranges v4=%d v6=%d, marking=%v", st.Table, st.Targets4, st.Targets6, st.Marking),
				"no targets: enable a service (config service 'telegram') or add a custom subnet; a missing table means another program flushed nftables: reload tgtun")
			rulesOK := st.Rules4 && st.Route4 && (!cfg.Main.IPv6 || (st.Rules6 && st.Route6))
			r.add("routing", rulesOK,
				fmt.Sprintf("ip rules v4=%v v6=%v, routes in table %d v4=%v v6=%v", st.Rules4, st.Rules6, cfg.Main.RouteTable, st.Route4, st.Route6),
				"a rule or route is missing: another tool may have removed it (ip rule; ip route show table "+fmt.Sprint(cfg.Main.RouteTable)+"); reload tgtun")
			if v4, v6 := d.lists.Targets(); len(v4)+len(v6) > 0 {
				var sample netip.Addr
				if len(v4) > 0 {
					sample = v4[0].Addr()
				} else {
					sample = v6[0].Addr()
				}
				dev, err := n.RouteDevice(sample)
				if err != nil {
					r.add("route", false, err.Error(), "the kernel has no route for marked traffic: reload tgtun")
				} else {
					want := cfg.Main.TunName
					if routeDev != "" {
						want = routeDev // an interface proxy is active
					}
					r.add("route", dev == want, fmt.Sprintf("a marked packet to %s leaves by %s", sample, dev),
						"marked traffic does not reach the TUN: another policy rule (mwan3, pbr) may come first; check ip rule")
				}
			}
			if cfg.Main.FailMode == config.FailDirect && !st.Marking {
				r.add("fail mode", false, "no proxy is healthy: messenger traffic takes the normal path (fail_mode direct)",
					"fix a proxy; traffic moves back to it within one health interval")
			}
		}
	}

	if pool == nil || len(cfg.Proxies) == 0 {
		r.add("proxy", false, "no proxy is configured", "set a proxy: server, port and type in a config proxy section")
	} else {
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		pool.ProbeAll(pctx)
		cancel()
		for _, m := range pool.Status() {
			detail := fmt.Sprintf("%s %s: healthy, test connection to %s in %s", m.Type, m.Server, cfg.Main.HealthTarget, m.Latency.Round(time.Millisecond))
			if m.Active {
				detail += " (active)"
			}
			if !m.Healthy {
				detail = fmt.Sprintf("%s %s: %s", m.Type, m.Server, m.LastError)
				if m.State == proxy.StateUnknown {
					detail = fmt.Sprintf("%s %s: not judged yet (one failed probe is no verdict): %s", m.Type, m.Server, m.LastError)
				}
			}
			r.add("proxy '"+m.Name+"'", m.Healthy, detail, proxyHint(m.LastError))
		}
	}

	d.checkDomains(ctx, &r, n)
	d.checkSubscriptions(&r)

	for _, l := range d.lists.Status() {
		ok := l.Entries4+l.Entries6+l.Domains > 0
		detail := fmt.Sprintf("%d IPv4 and %d IPv6 ranges, %d domains (%s)", l.Entries4, l.Entries6, l.Domains, l.Origin)
		if l.LastError != "" {
			detail += "; last update failed: " + l.LastError
		}
		r.add("list '"+l.Name+"'", ok, detail, "the list is empty: check its URL, or run tgtun update-lists once a proxy works")
	}

	r.OK = true
	for _, s := range r.Steps {
		r.OK = r.OK && s.OK
	}
	return r
}

// withHints fills in the hint of every proxy that is not healthy.
func withHints(ms []proxy.MemberStatus) []proxy.MemberStatus {
	for i := range ms {
		if !ms[i].Healthy && ms[i].LastError != "" {
			ms[i].Hint = proxyHint(ms[i].LastError)
		}
	}
	return ms
}

// proxyHint turns a proxy error into what to do about it.
func proxyHint(msg string) string {
	m := strings.ToLower(msg)
	switch {
	case strings.HasPrefix(m, "interface ") && (strings.Contains(m, " is down") || strings.Contains(m, "no such device")):
		return "the VPN interface is down or missing: check it (ifstatus NAME, wg show); while it is down the next proxy by priority, or fail_mode, takes over"
	case strings.HasPrefix(m, "interface "):
		return "the VPN interface is up but the health probe does not get through it: check the tunnel's peer (wg show: latest handshake) and that its firewall zone masquerades"
	// The transports' answers (daemon/proxy/transport); before "reality", which the
	// prefix of a transport over REALITY also names.
	case strings.Contains(m, "http 404 from the server"), strings.Contains(m, "instead of answering the upgrade"):
		return "the server is there but serves no transport at that address: check path (ws, httpupgrade, xhttp), service_name (grpc) and host against the server's settings"
	case strings.Contains(m, "grpc: status 12"):
		return "the gRPC server does not know this service: check service_name (serviceName in links)"
	case strings.Contains(m, "xhttp: http 400"):
		return "the XHTTP server refused the request: check mode, padding_bytes (x_padding_bytes) and extra against the server's settings"
	case strings.Contains(m, "the server chose http/1.1"):
		return "the server's TLS offers HTTP/1.1 only: grpc and XHTTP's stream modes need h2 (for XHTTP use mode packet-up, or add h2 to the server's alpn)"
	case strings.Contains(m, "the server chose http/2"):
		return "ws and httpupgrade need HTTP/1.1: remove h2 from option alpn"
	case strings.Contains(m, "not a grpc call"), strings.Contains(m, "websocket key"), strings.Contains(m, "switched to"):
		return "the server at that address speaks another transport: check option transport against the server's settings"
	case strings.Contains(m, "server clock differs"):
		return "Shadowsocks 2022 needs the router's clock within 30 s of the server's: check NTP on the router (System → System → Time synchronization)"
	case strings.Contains(m, "did not come from the health target"):
		return "something other than the health target answered through this proxy: a VLESS or Trojan server hands a wrong uuid or password to its fallback web site; check them. If health_target is not a Telegram data centre, set health_check to what it speaks ('tls' with health_name, or 'connect')"
	case strings.Contains(m, "reality handshake failed"):
		return "the REALITY server did not prove it holds the key: check public_key (pbk) and short_id (sid) against the server's; if they are right, something on the way intercepts the connection"
	case strings.Contains(m, "reality"):
		return "the REALITY handshake failed: check sni (a name the server accepts), fingerprint, server and port"
	case strings.Contains(m, "tls certificate matches no pinned_sha256"):
		return "the server's certificate is not the pinned one (pinned_sha256, pcs in links): if the provider changed it, take the new pcs from them (or re-import the link); otherwise someone between the router and the server is intercepting"
	case strings.Contains(m, "tls certificate is signed by an unknown authority"), strings.Contains(m, "signed by unknown authority"):
		return "the server's certificate is not signed by a CA the router trusts (a self-signed server): set pinned_sha256 to its SHA-256 from the provider (pcs in links; `openssl x509 -noout -fingerprint -sha256 -in cert.pem` on your own server) or ca_file to its CA; insecure '1' only as a last resort"
	case strings.Contains(m, "tls certificate is not valid for"), strings.Contains(m, "certificate is valid for"):
		return "the server's certificate is for another name: set sni to the name it was issued for (sni in the link)"
	case strings.Contains(m, "tls certificate has expired"), strings.Contains(m, "expired or is not yet valid"):
		return "the server's certificate is outside its validity: check the router's clock (System → Time synchronization) and ask the provider to renew it"
	case strings.Contains(m, "certificate"):
		return "the server's TLS certificate is not valid for sni: check sni; for a self-signed server set pinned_sha256 or ca_file (insecure '1' only as a last resort)"
	case strings.Contains(m, "closed right after it opened"), strings.Contains(m, "without answering"), strings.Contains(m, "closed without an answer"):
		return "the server closed the connection at once: check the credentials (vless: uuid and flow; trojan: password) and that it allows the target"
	case strings.Contains(m, "auth"), strings.Contains(m, "password"):
		return "the proxy refused the username or password: check them (for Shadowsocks, the password and cipher)"
	case strings.Contains(m, "refused"):
		return "nothing accepts connections at that server and port: check them, and that the proxy runs"
	case strings.Contains(m, "timeout"), strings.Contains(m, "deadline"):
		return "no answer in time: the proxy may be down or blocked itself; try another proxy"
	case strings.Contains(m, "no route"), strings.Contains(m, "unreachable"):
		return "the router has no route to the proxy: check the WAN connection"
	case strings.Contains(m, "no such host"):
		return "the proxy's host name does not resolve: use its IP address or check DNS"
	default:
		return "check the proxy's type, server and port, and that it allows CONNECT to the messenger"
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }
