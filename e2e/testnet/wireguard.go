package testnet

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/curve25519"
)

// Addresses of a WireGuard link (StartWireGuard): the tunnel's own addresses, and the
// ones the proxy host translates the tunnel's traffic to, so the messenger tells it
// from traffic of the proxies on the same host (ProxyV4/ProxyV6).
var (
	WGRouterV4 = netip.MustParseAddr("198.51.100.201")
	WGProxyV4  = netip.MustParseAddr("198.51.100.202")
	WGRouterV6 = netip.MustParseAddr("2001:db8:4::1")
	WGProxyV6  = netip.MustParseAddr("2001:db8:4::2")
	WGExitV4   = netip.MustParseAddr("198.51.100.7")
	WGExitV6   = netip.MustParseAddr("2001:db8:2::7")
)

// WireGuard is a running WireGuard link between the router and the proxy host.
type WireGuard struct {
	RouterDev, ProxyDev string // device names (unique per link: the UAPI sockets are global)

	bin    string // wireguard-go
	router wgEnd  // how the router's end was set up, to set it up again
	proc   *Proc  // the router end's wireguard-go
}

// wgEnd is one end of a WireGuard link.
type wgEnd struct {
	ns, dev, privKey, peerPub, port, endpoint, allowed, addr4, peer4, addr6, peer6 string
}

var wgCounter atomic.Int64

// WireGuardGoPath finds the wireguard-go binary `make deps` installs (as "wireguard"
// in $GOBIN, $GOPATH/bin or ~/go/bin; "wireguard-go" in $PATH also does). Missing is an
// error naming the make target.
func WireGuardGoPath() (string, error) {
	for _, name := range []string{"wireguard-go", "wireguard"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	if p, ok := goInstalled("wireguard"); ok {
		return p, nil
	}
	return "", fmt.Errorf("wireguard-go not found in $PATH, $GOBIN, $GOPATH/bin or ~/go/bin: run `make deps`")
}

// StartWireGuard builds a WireGuard link with userspace wireguard-go and `wg`
// (wireguard-tools): the router's end takes any destination (AllowedIPs 0/0, no
// routes: what an OpenWrt wg interface with route_allowed_ips '0' looks like) and
// masquerades into it, like an OpenWrt firewall zone with masq; the proxy host's end
// forwards to the messenger and translates to WGExitV4/WGExitV6, like a VPN server.
func (n *Net) StartWireGuard() (*WireGuard, error) {
	bin, err := WireGuardGoPath()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("wg"); err != nil {
		return nil, fmt.Errorf("wg not found: apt-get install wireguard-tools (make deps)")
	}
	id := strconv.Itoa(os.Getpid()%100000) + "x" + strconv.FormatInt(wgCounter.Add(1), 10)
	w := &WireGuard{RouterDev: "wgr" + id, ProxyDev: "wgp" + id}
	if len(w.RouterDev) > 15 {
		return nil, fmt.Errorf("wireguard: device name %s too long", w.RouterDev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	keys := map[string][2]string{} // dev -> private key file, public key
	for _, dev := range []string{w.RouterDev, w.ProxyDev} {
		var priv [32]byte
		if _, err := rand.Read(priv[:]); err != nil {
			return nil, err
		}
		priv[0] &= 248
		priv[31] = priv[31]&127 | 64
		pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
		if err != nil {
			return nil, err
		}
		f := filepath.Join(n.Dir, dev+".key")
		if err := os.WriteFile(f, []byte(base64.StdEncoding.EncodeToString(priv[:])+"\n"), 0o600); err != nil {
			return nil, err
		}
		keys[dev] = [2]string{f, base64.StdEncoding.EncodeToString(pub)}
	}
	const routerPort, proxyPort = "51820", "51821"
	ends := []wgEnd{
		{n.Router, w.RouterDev, keys[w.RouterDev][0], keys[w.ProxyDev][1], routerPort, ProxyV4.String() + ":" + proxyPort, "0.0.0.0/0,::/0",
			WGRouterV4.String(), WGProxyV4.String(), WGRouterV6.String(), WGProxyV6.String()},
		{n.Proxy, w.ProxyDev, keys[w.ProxyDev][0], keys[w.RouterDev][1], proxyPort, "", WGRouterV4.String() + "/32," + WGRouterV6.String() + "/128",
			WGProxyV4.String(), WGRouterV4.String(), WGProxyV6.String(), WGRouterV6.String()},
	}
	w.bin, w.router = bin, ends[0]
	for i, e := range ends {
		p, err := n.startWGEnd(ctx, bin, e)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			w.proc = p
		}
	}
	if _, err := n.Exec(ctx, n.Proxy, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"); err != nil {
		return nil, err
	}
	for _, a := range [][]string{
		{"ip", "addr", "add", WGExitV4.String() + "/32", "dev", "lo"},
		{"ip", "-6", "addr", "add", WGExitV6.String() + "/128", "dev", "lo"},
		// The proxy host's own connections (its proxies) keep their address.
		{"ip", "route", "replace", MsgrPrefixV4.String(), "dev", "m0", "src", ProxyV4.String()},
		{"ip", "-6", "route", "replace", MsgrPrefixV6.String(), "dev", "m0", "src", ProxyV6.String()},
	} {
		if out, err := n.Exec(ctx, n.Proxy, a...); err != nil {
			return nil, fmt.Errorf("wireguard: %w: %s", err, out)
		}
	}
	if err := n.nft(ctx, n.Proxy, fmt.Sprintf(`
table inet wg_exit {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		iifname "%s" oifname "m0" meta nfproto ipv4 snat ip to %s
		iifname "%s" oifname "m0" meta nfproto ipv6 snat ip6 to %s
	}
}
`, w.ProxyDev, WGExitV4, w.ProxyDev, WGExitV6)); err != nil {
		return nil, err
	}
	if err := n.nft(ctx, n.Router, fmt.Sprintf(`
table inet wg_masq {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "%s" masquerade
	}
}
`, w.RouterDev)); err != nil {
		return nil, err
	}
	if err := n.wgHandshake(ctx, w.RouterDev); err != nil {
		return nil, err
	}
	return w, nil
}

// wgHandshake waits for the router's end to complete a handshake (it starts one: its
// persistent keepalive).
func (n *Net) wgHandshake(ctx context.Context, dev string) error {
	for deadline := time.Now().Add(listenTimeout); ; {
		out, err := n.Exec(ctx, n.Router, "wg", "show", dev, "latest-handshakes")
		if f := strings.Fields(out); err == nil && len(f) == 2 && f[1] != "0" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wireguard: no handshake within %v: %s %v", listenTimeout, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startWGEnd runs wireguard-go for one end and configures its device.
func (n *Net) startWGEnd(ctx context.Context, bin string, e wgEnd) (*Proc, error) {
	p, err := n.Start(e.ns, "env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", bin, "-f", e.dev)
	if err != nil {
		return nil, err
	}
	// The device and its UAPI socket appear once wireguard-go is up.
	sock := "/var/run/wireguard/" + e.dev + ".sock"
	for deadline := time.Now().Add(listenTimeout); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if exited, _ := p.Exited(); exited || time.Now().After(deadline) {
			return nil, fmt.Errorf("wireguard-go %s did not start: %s", e.dev, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	args := []string{"wg", "set", e.dev, "private-key", e.privKey, "listen-port", e.port,
		"peer", e.peerPub, "allowed-ips", e.allowed}
	if e.endpoint != "" {
		args = append(args, "endpoint", e.endpoint, "persistent-keepalive", "1")
	}
	for _, a := range [][]string{
		args,
		{"ip", "addr", "add", e.addr4, "peer", e.peer4, "dev", e.dev},
		{"ip", "-6", "addr", "add", e.addr6 + "/128", "dev", e.dev, "nodad"},
		{"ip", "link", "set", e.dev, "up"},
		// ("peer" makes no route to the peer in IPv6)
		{"ip", "-6", "route", "add", e.peer6 + "/128", "dev", e.dev},
	} {
		if out, err := n.Exec(ctx, e.ns, a...); err != nil {
			return nil, fmt.Errorf("wireguard: %w: %s", err, out)
		}
	}
	return p, nil
}

// DeleteRouterDev deletes the router's WireGuard device (`ip link del`, as netifd does
// when it restarts the interface) and waits for its wireguard-go to end.
func (w *WireGuard) DeleteRouterDev(n *Net) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := n.Exec(ctx, n.Router, "ip", "link", "del", w.RouterDev); err != nil {
		return fmt.Errorf("wireguard: %w: %s", err, out)
	}
	if err := w.proc.Wait(ctx); err != nil && ctx.Err() != nil {
		return fmt.Errorf("wireguard-go %s did not end after its device went: %w", w.RouterDev, err)
	}
	for deadline := time.Now().Add(listenTimeout); ; { // its UAPI socket goes with it
		if _, err := os.Stat("/var/run/wireguard/" + w.RouterDev + ".sock"); os.IsNotExist(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wireguard: the UAPI socket of %s stays", w.RouterDev)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CreateRouterDev creates the router's WireGuard device again, as it was, and waits
// for its handshake.
func (w *WireGuard) CreateRouterDev(n *Net) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := n.startWGEnd(ctx, w.bin, w.router)
	if err != nil {
		return err
	}
	w.proc = p
	return n.wgHandshake(ctx, w.RouterDev)
}
