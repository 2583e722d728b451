package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// The transports (issue 22): per transport, iperf3 through tgtun against Xray-core's own
// client on the same Xray server (its SOCKS inbound in the router, fed by the same relay
// as the other baselines), up and down, with the CPU seconds each client spends per GiB;
// and the memory a held idle flow costs through each transport.

// xrayCase is one transport of the bench: the server's inbound, Xray's client outbound
// settings and tgtun's options.
type xrayCase struct {
	name     string
	network  string
	security string
	server   map[string]any // Xray's <network>Settings, server and client alike
	options  string         // tgtun's transport options (UCI lines)
}

func xrayCases() []xrayCase {
	return []xrayCase{
		// No transport: what tgtun's engine and VLESS reach on this path, for the rows below.
		{"tcp+reality", "raw", "reality", nil, ""},
		{"ws+tls", "ws", "tls", map[string]any{"path": "/ws"}, "\toption transport 'ws'\n\toption path '/ws'\n"},
		{"httpupgrade+tls", "httpupgrade", "tls", map[string]any{"path": "/hu"}, "\toption transport 'httpupgrade'\n\toption path '/hu'\n"},
		{"grpc+reality", "grpc", "reality", map[string]any{"serviceName": "svc"}, "\toption transport 'grpc'\n\toption service_name 'svc'\n"},
		{"xhttp packet-up+tls", "xhttp", "tls", map[string]any{"path": "/xp", "mode": "packet-up"}, "\toption transport 'xhttp'\n\toption path '/xp'\n\toption mode 'packet-up'\n"},
		{"xhttp stream-up+reality", "xhttp", "reality", map[string]any{"path": "/xu", "mode": "stream-up"}, "\toption transport 'xhttp'\n\toption path '/xu'\n\toption mode 'stream-up'\n"},
		{"xhttp stream-one+reality", "xhttp", "reality", map[string]any{"path": "/xo", "mode": "stream-one"}, "\toption transport 'xhttp'\n\toption path '/xo'\n\toption mode 'stream-one'\n"},
	}
}

// transportsVsXray runs the transport rows.
func (b *bench) transportsVsXray(ctx context.Context) error {
	const (
		uuid    = "b831381d-6324-4d53-ad4f-8cda48b30811"
		sni     = "www.example.com"
		shortID = "0123abcd"
	)
	site := netip.AddrPortFrom(testnet.DirectV4, 8443)
	if _, err := b.n.StartTLSSite(b.n.Inet, site, sni); err != nil {
		return err
	}
	priv, pub, err := testnet.RealityKeyPair()
	if err != nil {
		return err
	}
	certPath, keyPath, _, err := b.n.SelfSignedCert("proxy.test", testnet.ProxyV4.String())
	if err != nil {
		return err
	}
	pin, err := certSHA256(certPath, keyPath)
	if err != nil {
		return err
	}
	cases := xrayCases()
	if b.transport != "" {
		cases = slices.DeleteFunc(cases, func(c xrayCase) bool { return !strings.Contains(c.name, b.transport) })
	}
	var inbounds []testnet.XrayInbound
	var wait []netip.AddrPort
	for range cases {
		port, err := b.n.FreePort(b.n.Proxy, testnet.ProxyV4)
		if err != nil {
			return err
		}
		inbounds = append(inbounds, testnet.XrayInbound{Port: port})
		wait = append(wait, netip.AddrPortFrom(testnet.ProxyV4, port))
	}
	for i, c := range cases {
		in := &inbounds[i]
		in.Protocol, in.Network, in.Settings, in.Security, in.UUID = "vless", c.network, c.server, c.security, uuid
		in.CertPath, in.KeyPath = certPath, keyPath
		in.Reality = &testnet.XrayReality{Target: site, ServerNames: []string{sni}, PrivateKey: priv, ShortIDs: []string{shortID}}
	}
	if _, err := b.n.StartXray(testnet.XrayOptions{Config: testnet.XrayConfig(inbounds...), WaitTCP: wait}); err != nil {
		return err
	}
	iperfPort, err := b.n.FreePort(b.n.Messenger, testnet.MsgrV4)
	if err != nil {
		return err
	}
	if _, err := b.n.Start(b.n.Messenger, "iperf3", "-s", "-B", testnet.MsgrV4.String(), "-p", strconv.Itoa(int(iperfPort))); err != nil {
		return err
	}
	iperfDst := netip.AddrPortFrom(testnet.MsgrV4, iperfPort)
	for i, c := range cases {
		port := inbounds[i].Port
		// Xray's own client: a SOCKS inbound in the router, out through the case's transport.
		stream := map[string]any{"network": c.network, "security": c.security}
		if c.server != nil {
			stream[c.network+"Settings"] = c.server
		}
		sec := "\toption sni 'proxy.test'\n\toption insecure '1'\n"
		if c.security == "tls" {
			stream["tlsSettings"] = map[string]any{"serverName": "proxy.test", "fingerprint": "chrome", "pinnedPeerCertSha256": pin}
		} else {
			stream["realitySettings"] = map[string]any{"serverName": sni, "fingerprint": "chrome", "publicKey": pub, "shortId": shortID}
			sec = fmt.Sprintf("\toption security 'reality'\n\toption sni '%s'\n\toption public_key '%s'\n\toption short_id '%s'\n", sni, pub, shortID)
		}
		socksPort, err := b.n.FreePort(b.n.Router, netip.MustParseAddr("127.0.0.1"))
		if err != nil {
			return err
		}
		socks := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), socksPort)
		client, err := b.n.StartXray(testnet.XrayOptions{Namespace: b.n.Router, WaitTCP: []netip.AddrPort{socks}, Config: map[string]any{
			"log":      map[string]any{"loglevel": "warning"},
			"inbounds": []any{map[string]any{"listen": "127.0.0.1", "port": socksPort, "protocol": "socks"}},
			"outbounds": []any{map[string]any{"protocol": "vless", "streamSettings": stream, "settings": map[string]any{
				"vnext": []any{map[string]any{"address": testnet.ProxyV4.String(), "port": port,
					"users": []any{map[string]any{"id": uuid, "encryption": "none"}}}}}}},
		}})
		if err != nil {
			return err
		}
		b.proxyConf = fmt.Sprintf("config proxy 'p'\n\toption type 'vless'\n\toption server '%s'\n\toption port '%d'\n\toption uuid '%s'\n%s%s",
			testnet.ProxyV4, port, uuid, sec, c.options)
		if err := b.restartTgtun(ctx); err != nil {
			return err
		}
		relay, err := b.socksRelayVia(socks, iperfDst)
		if err != nil {
			return err
		}
		for _, reverse := range []bool{false, true} {
			dir := "up"
			if reverse {
				dir = "down"
			}
			via, viaCPU, err := b.iperfCPU(ctx, b.n.Client, testnet.MsgrV4.String(), iperfPort, reverse, b.tgtunPID)
			if err != nil {
				return fmt.Errorf("%s through tgtun: %w", c.name, err)
			}
			ref, refCPU, err := b.iperfCPU(ctx, b.n.Router, "127.0.0.1", relay.Port(), reverse, client.Pid())
			if err != nil {
				return fmt.Errorf("%s through Xray's client: %w", c.name, err)
			}
			b.add(figure{Name: fmt.Sprintf("vless %s 1 stream %s vs Xray", c.name, dir), Value: via, Baseline: ref, Unit: "Gbit/s",
				Against: "the same Xray server through Xray's own client (SOCKS inbound)", Target: ">= 0.8 x Xray", Met: met(via >= 0.8*ref)})
			b.add(figure{Name: fmt.Sprintf("vless %s CPU per GiB %s vs Xray", c.name, dir), Value: viaCPU, Baseline: refCPU, Unit: "s/GiB",
				Against: "Xray's client process"})
		}
		if err := b.idleFlowCost(ctx, "vless "+c.name); err != nil {
			return err
		}
		if err := client.Stop(); err != nil {
			fmt.Printf("note: Xray's client did not stop cleanly: %v\n", err)
		}
	}
	return nil
}

// iperfCPU runs one iperf3 stream and returns its rate and the CPU seconds pid spent
// per GiB received. A run that moved nothing is repeated (up to twice, a second
// apart): iperf3's server takes one test at a time, and after an upload through
// XHTTP packet-up the previous test may still be draining its last posts.
func (b *bench) iperfCPU(ctx context.Context, ns, server string, port uint16, reverse bool, pid int) (gbps, cpuPerGiB float64, err error) {
	for try := 0; ; try++ {
		gbps, cpuPerGiB, err = b.iperfCPUOnce(ctx, ns, server, port, reverse, pid)
		if err == nil || !errors.Is(err, errNothingReceived) || try == 2 {
			return gbps, cpuPerGiB, err
		}
		fmt.Printf("note: iperf3 moved nothing (%v); again in a second\n", err)
		time.Sleep(time.Second)
	}
}

var errNothingReceived = errors.New("nothing received")

func (b *bench) iperfCPUOnce(ctx context.Context, ns, server string, port uint16, reverse bool, pid int) (gbps, cpuPerGiB float64, err error) {
	before, err := cpuSeconds(pid)
	if err != nil {
		return 0, 0, err
	}
	args := []string{"iperf3", "-J", "-c", server, "-p", strconv.Itoa(int(port)), "-t", strconv.Itoa(b.seconds)}
	if reverse {
		args = append(args, "-R")
	}
	out, err := b.n.Exec(ctx, ns, args...)
	if err != nil {
		return 0, 0, fmt.Errorf("iperf3 %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	after, err := cpuSeconds(pid)
	if err != nil {
		return 0, 0, err
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	gib := res.End.SumReceived.Bytes / (1 << 30)
	if gib == 0 {
		return 0, 0, fmt.Errorf("iperf3 %s: %w", strings.Join(args, " "), errNothingReceived)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, (after - before) / gib, nil
}

// cpuSeconds is the user and system CPU time pid has used.
func cpuSeconds(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

// idleFlowCost opens idle TCP flows through tgtun (each with one round trip, so each
// is established through the proxy) and reports the growth of tgtun's VmRSS per flow.
func (b *bench) idleFlowCost(ctx context.Context, name string) error {
	const flows = 200
	time.Sleep(time.Second)
	idle, _, err := memory(b.tgtunPID)
	if err != nil {
		return err
	}
	dst := netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort).String()
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for len(open) < flows {
		c, err := b.n.Dial(ctx, b.n.Client, "tcp", dst)
		if err != nil {
			fmt.Printf("memory per idle flow %s: not measured: flow %d: %v\n", name, len(open)+1, err)
			return nil
		}
		open = append(open, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Write([]byte("x"))
		if err == nil {
			_, err = io.ReadFull(c, make([]byte, 1))
		}
		if err != nil {
			fmt.Printf("memory per idle flow %s: not measured: round trip on flow %d: %v\n", name, len(open), err)
			return nil
		}
	}
	time.Sleep(2 * time.Second)
	rss, _, err := memory(b.tgtunPID)
	if err != nil {
		return err
	}
	b.add(figure{Name: fmt.Sprintf("memory per idle flow %s (VmRSS growth / %d flows)", name, flows), Value: (rss - idle) * 1024 / flows, Unit: "KiB"})
	return nil
}

// certSHA256 is the hex SHA-256 of a certificate: Xray's pinnedPeerCertSha256 (Xray
// 26 refuses allowInsecure).
func certSHA256(certPath, keyPath string) (string, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pair.Certificate[0])
	return hex.EncodeToString(sum[:]), nil
}
