package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strconv"
	"time"

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
			"type": "shadowsocks", "server": testnet.ProxyV4.String(), "server_port": port, "method": method, "password": key,
		}},
	}
	if _, err := b.n.StartSingBox(testnet.SingBoxOptions{Namespace: b.n.Router, Config: client, WaitTCP: []netip.AddrPort{socks}}); err != nil {
		return err
	}
	b.proxyConf = fmt.Sprintf("config proxy 'ss2022'\n\toption type 'shadowsocks'\n\toption server '%s'\n\toption port '%d'\n\toption cipher '%s'\n\toption password '%s'\n",
		testnet.ProxyV4, port, method, key)
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
			b.add(figure{Name: fmt.Sprintf("shadowsocks-2022 %d stream(s) %s vs sing-box", streams, dir), Value: via, Baseline: ref,
				Unit: "Gbit/s", Against: "the same sing-box server through a sing-box client's SOCKS inbound",
				Target: ">= 0.8 x sing-box", Met: met(via >= 0.8*ref)})
		}
	}
	return nil
}
