package testnet

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSingBox: the installed sing-box is the pinned release with REALITY support,
// StartSingBox runs it in the proxy namespace, and a client reaches the messenger
// through its SOCKS inbound; a bad config is an error, not a hang.
func TestSingBox(t *testing.T) {
	bin, err := SingBoxPath()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("sing-box version: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "sing-box version "+SingBoxVersion) || !strings.Contains(string(out), "with_utls") {
		t.Fatalf("sing-box is not %s built with with_utls (run make deps):\n%s", SingBoxVersion, out)
	}

	n := New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	port, err := n.FreePort(n.Proxy, ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	conf := map[string]any{
		"log": map[string]any{"level": "warn"},
		"inbounds": []any{map[string]any{
			"type": "socks", "tag": "in", "listen": "::", "listen_port": port,
		}},
		"outbounds": []any{map[string]any{"type": "direct", "tag": "direct"}},
	}
	addr := fmt.Sprintf("%s:%d", ProxyV4, port)
	if _, err := n.StartSingBox(SingBoxOptions{Config: conf, WaitTCP: []netip.AddrPort{netip.MustParseAddrPort(addr)}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := curl(ctx, n, n.Router, "http://203.0.113.10/", "-x", "socks5://"+addr)
	if err != nil || got != ProxyV4 {
		t.Errorf("through sing-box SOCKS: got %v, %v; want %v", got, err, ProxyV4)
	}

	if _, err := n.StartSingBox(SingBoxOptions{Config: []byte(`{"inbounds":[{"type":"nonsense"}]}`)}); err == nil {
		t.Error("a bad config was accepted")
	}
}

// TestXray: the installed Xray-core is the pinned release, StartXray runs it in the
// proxy namespace, and a client reaches the messenger through its SOCKS inbound; a
// bad config is an error, not a hang.
func TestXray(t *testing.T) {
	bin, err := XrayPath()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "Xray "+XrayVersion+" ") {
		t.Fatalf("xray is not Xray-core %s (run make deps): %v\n%s", XrayVersion, err, out)
	}
	n := New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	port, err := n.FreePort(n.Proxy, ProxyV4)
	if err != nil {
		t.Fatal(err)
	}
	conf := map[string]any{
		"inbounds":  []any{map[string]any{"listen": ProxyV4.String(), "port": port, "protocol": "socks", "settings": map[string]any{"udp": true}}},
		"outbounds": []any{map[string]any{"protocol": "freedom"}},
	}
	addr := fmt.Sprintf("%s:%d", ProxyV4, port)
	if _, err := n.StartXray(XrayOptions{Config: conf, WaitTCP: []netip.AddrPort{netip.MustParseAddrPort(addr)}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := curl(ctx, n, n.Router, "http://203.0.113.10/", "-x", "socks5://"+addr)
	if err != nil || got != ProxyV4 {
		t.Errorf("through Xray's SOCKS: got %v, %v; want %v", got, err, ProxyV4)
	}
	if _, err := n.StartXray(XrayOptions{Config: []byte(`{"inbounds":[{"protocol":"nonsense"}]}`)}); err == nil {
		t.Error("a bad config was accepted")
	}
}
