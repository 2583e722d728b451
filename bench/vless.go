package main

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// vlessThroughput compares iperf3 through tgtun using a sing-box VLESS+REALITY server
// with the same server used by a sing-box client (its SOCKS inbound, in the router
// namespace, fed by the same relay as the dante baseline): the protocol's own ceiling
// on this path with the reference implementation.
func (b *bench) vlessThroughput(ctx context.Context) error {
	const (
		uuid    = "b831381d-6324-4d53-ad4f-8cda48b30811"
		sni     = "www.example.com"
		shortID = "0123abcd"
	)
	if _, err := b.n.StartTLSSite(b.n.Inet, netip.AddrPortFrom(testnet.DirectV4, 443), sni); err != nil {
		return err
	}
	priv, pub, err := testnet.RealityKeyPair()
	if err != nil {
		return err
	}
	port, err := b.n.FreePort(b.n.Proxy, testnet.ProxyV4)
	if err != nil {
		return err
	}
	server := map[string]any{
		"log": map[string]any{"level": "warn"},
		"inbounds": []any{map[string]any{
			"type": "vless", "listen": "::", "listen_port": port,
			"users": []any{map[string]any{"uuid": uuid}},
			"tls": map[string]any{"enabled": true, "server_name": sni, "reality": map[string]any{
				"enabled": true, "private_key": priv, "short_id": []string{shortID},
				"handshake": map[string]any{"server": testnet.DirectV4.String(), "server_port": 443},
			}},
		}},
		"outbounds": []any{map[string]any{"type": "direct"}},
	}
	if _, err := b.n.StartSingBox(testnet.SingBoxOptions{Config: server, WaitTCP: []netip.AddrPort{netip.AddrPortFrom(testnet.ProxyV4, port)}}); err != nil {
		return err
	}
	socksPort, err := b.n.FreePort(b.n.Router, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		return err
	}
	socks := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), socksPort)
	client := map[string]any{
		"log":      map[string]any{"level": "warn"},
		"inbounds": []any{map[string]any{"type": "socks", "listen": "127.0.0.1", "listen_port": socksPort}},
		"outbounds": []any{map[string]any{
			"type": "vless", "server": testnet.ProxyV4.String(), "server_port": port, "uuid": uuid,
			"tls": map[string]any{"enabled": true, "server_name": sni,
				"utls":    map[string]any{"enabled": true, "fingerprint": "chrome"},
				"reality": map[string]any{"enabled": true, "public_key": pub, "short_id": shortID}},
		}},
	}
	if _, err := b.n.StartSingBox(testnet.SingBoxOptions{Namespace: b.n.Router, Config: client, WaitTCP: []netip.AddrPort{socks}}); err != nil {
		return err
	}

	b.proxyConf = fmt.Sprintf(`config proxy 'reality'
	option type 'vless'
	option server '%s'
	option port '%d'
	option uuid '%s'
	option security 'reality'
	option sni '%s'
	option public_key '%s'
	option short_id '%s'
`, testnet.ProxyV4, port, uuid, sni, pub, shortID)
	if err := b.restartTgtun(ctx); err != nil {
		return err
	}

	iperfPort, err := b.n.FreePort(b.n.Messenger, testnet.MsgrV4)
	if err != nil {
		return err
	}
	if _, err := b.n.Start(b.n.Messenger, "iperf3", "-s", "-B", testnet.MsgrV4.String(), "-p", strconv.Itoa(int(iperfPort))); err != nil {
		return err
	}
	relay, err := b.socksRelayVia(socks, netip.AddrPortFrom(testnet.MsgrV4, iperfPort))
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // iperf3 server listening
	for _, streams := range []int{1, 4} {
		for _, reverse := range []bool{false, true} {
			dir := "up"
			if reverse {
				dir = "down"
			}
			via, err := b.iperf(ctx, b.n.Client, testnet.MsgrV4.String(), iperfPort, streams, reverse)
			if err != nil {
				return err
			}
			ref, err := b.iperf(ctx, b.n.Router, "127.0.0.1", relay.Port(), streams, reverse)
			if err != nil {
				return err
			}
			b.add(figure{Name: fmt.Sprintf("vless+reality %d stream(s) %s vs sing-box", streams, dir), Value: via, Baseline: ref,
				Unit: "Gbit/s", Against: "the same sing-box server through a sing-box client's SOCKS inbound",
				Target: ">= 0.8 x sing-box", Met: met(via >= 0.8*ref)})
		}
	}
	return nil
}
