package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// ss2022Throughput compares iperf3 through tgtun using a sing-box Shadowsocks 2022
// server with the same server used by a sing-box client (its SOCKS inbound in the
// router namespace, fed by the same relay as the dante baseline).
func (b *bench) ss2022Throughput(ctx context.Context) error {
	const method = "2022-blake3-aes-128-gcm"
	k := make([]byte, 16)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	key := base64.StdEncoding.EncodeToString(k)
	port, err := b.n.FreePort(b.n.Proxy, testnet.ProxyV4)
	if err != nil {
		return err
	}
	server := map[string]any{
		"log": map[string]any{"level": "warn"},
		"inbounds": []any{map[string]any{
			"type": "shadowsocks", "listen": "::", "listen_port": port, "method": method, "password": key,
		}},
		"outbounds": []any{map[string]any{"type": "direct"}},
	}
	outbound := map[string]any{
		"type": "shadowsocks", "server": testnet.ProxyV4.String(), "server_port": port, "method": method, "password": key,
	}
	conf := fmt.Sprintf("config proxy 'ss2022'\n\toption type 'shadowsocks'\n\toption server '%s'\n\toption port '%d'\n\toption cipher '%s'\n\toption password '%s'\n",
		testnet.ProxyV4, port, method, key)
	return b.throughputVsSingBox(ctx, "shadowsocks-2022", server, port, outbound, conf)
}
