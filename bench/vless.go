package main

import (
	"context"
	"fmt"
	"net/netip"

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
	outbound := map[string]any{
		"type": "vless", "server": testnet.ProxyV4.String(), "server_port": port, "uuid": uuid,
		"tls": map[string]any{"enabled": true, "server_name": sni,
			"utls":    map[string]any{"enabled": true, "fingerprint": "chrome"},
			"reality": map[string]any{"enabled": true, "public_key": pub, "short_id": shortID}},
	}
	conf := fmt.Sprintf(`config proxy 'reality'
	option type 'vless'
	option server '%s'
	option port '%d'
	option uuid '%s'
	option security 'reality'
	option sni '%s'
	option public_key '%s'
	option short_id '%s'
`, testnet.ProxyV4, port, uuid, sni, pub, shortID)
	return b.throughputVsSingBox(ctx, "vless+reality", server, port, outbound, conf)
}
