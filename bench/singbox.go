package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// throughputVsSingBox starts the sing-box server (on ProxyV4:port) and a sing-box
// client in the router namespace whose SOCKS inbound goes out through outbound to
// that server, points tgtun at the same server with proxyConf, and compares iperf3
// through tgtun with iperf3 through the client's SOCKS inbound (fed by the same
// relay as the dante baseline): 1 and 4 streams, up and down, as figures named
// after name.
func (b *bench) throughputVsSingBox(ctx context.Context, name string, server any, port uint16, outbound map[string]any, proxyConf string) error {
	if _, err := b.n.StartSingBox(testnet.SingBoxOptions{Config: server, WaitTCP: []netip.AddrPort{netip.AddrPortFrom(testnet.ProxyV4, port)}}); err != nil {
		return err
	}
	socksPort, err := b.n.FreePort(b.n.Router, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		return err
	}
	socks := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), socksPort)
	client := map[string]any{
		"log":       map[string]any{"level": "warn"},
		"inbounds":  []any{map[string]any{"type": "socks", "listen": "127.0.0.1", "listen_port": socksPort}},
		"outbounds": []any{outbound},
	}
	if _, err := b.n.StartSingBox(testnet.SingBoxOptions{Namespace: b.n.Router, Config: client, WaitTCP: []netip.AddrPort{socks}}); err != nil {
		return err
	}
	b.proxyConf = proxyConf
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
			b.add(figure{Name: fmt.Sprintf("%s %d stream(s) %s vs sing-box", name, streams, dir), Value: via, Baseline: ref,
				Unit: "Gbit/s", Against: "the same sing-box server through a sing-box client's SOCKS inbound",
				Target: ">= 0.8 x sing-box", Met: met(via >= 0.8*ref)})
		}
	}
	return b.idleFlowsPerFlow(ctx, name, 1000)
}

// idleFlowsPerFlow restarts tgtun (with the proxy configuration of the row) and holds n
// idle TCP flows through it, each one echo and then silent: the figure is the growth of
// VmRSS over the fresh daemon's idle reading, divided by the flows.
func (b *bench) idleFlowsPerFlow(ctx context.Context, name string, n int) error {
	if err := b.restartTgtun(ctx); err != nil {
		return err
	}
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
	buf := make([]byte, 1)
	for len(open) < n {
		c, err := b.n.Dial(ctx, b.n.Client, "tcp", dst)
		if err != nil {
			fmt.Printf("%s: memory per idle flow: not measured: flow %d: %v\n", name, len(open)+1, err)
			return nil
		}
		open = append(open, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("%s: echo on flow %d: %w", name, len(open), err)
		}
	}
	time.Sleep(time.Second)
	rss, _, err := memory(b.tgtunPID)
	if err != nil {
		return err
	}
	perFlow := (rss - idle) * 1024 / float64(n)
	b.add(figure{Name: fmt.Sprintf("%s memory per idle TCP flow (VmRSS growth / %d flows)", name, n), Value: perFlow, Unit: "KiB",
		Target: "<= 16 KiB", Met: met(perFlow <= 16)})
	return nil
}
