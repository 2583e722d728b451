package testnet

import (
	"context"
	"fmt"
	"net/netip"
)

// The second LAN client, added by AddSecondClient.
var Client2V4 = netip.MustParseAddr("192.0.2.20")

// LAN2Iface is the router's side of the second LAN client's link; tgtun serves the
// second client only with it in lan_iface.
const LAN2Iface = "lan1"

// AddSecondClient adds a second LAN client: namespace "<prefix>client2", on its own link
// to the router (LAN2Iface ↔ eth0), with address Client2V4/32 routed to it (IPv4 only).
// It returns the namespace's name; like the others it is removed at cleanup.
func (n *Net) AddSecondClient(ctx context.Context) (string, error) {
	ns := n.Client + "2"
	if err := n.ip(ctx, "netns", "add", ns); err != nil {
		return "", err
	}
	n.addCloser(nsDeleter{n, ns})
	if _, err := n.Exec(ctx, ns, "sysctl", "-qw",
		"net.ipv4.ip_forward=0",
		"net.ipv6.conf.all.forwarding=0",
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
	); err != nil {
		return "", err
	}
	c2 := Client2V4.String()
	for _, args := range [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", LAN2Iface, "netns", n.Router},
		{"-n", ns, "addr", "add", c2 + "/32", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", LANV4.String() + "/32", "dev", "eth0"},
		{"-n", ns, "route", "add", "default", "via", LANV4.String()},
		{"-n", n.Router, "link", "set", LAN2Iface, "up"},
		{"-n", n.Router, "route", "add", c2 + "/32", "dev", LAN2Iface},
	} {
		if err := n.ip(ctx, args...); err != nil {
			return "", fmt.Errorf("second client: %w", err)
		}
	}
	return ns, nil
}
