package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// XrayVersion is the Xray-core release `make deps` installs: `go install
// github.com/xtls/xray-core/main@XrayModuleVersion`, the binary renamed from main to
// xray. The tests check it.
const (
	XrayVersion       = "26.3.27"
	XrayModuleVersion = "v1.260327.0"
)

// XrayPath finds Xray-core: $TGTUN_XRAY, then xray in $PATH, then the directory `go
// install` writes to. A missing binary is an error naming the make target that
// installs it.
func XrayPath() (string, error) {
	if p := os.Getenv("TGTUN_XRAY"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("xray"); err == nil {
		return p, nil
	}
	if p, ok := goInstalled("xray"); ok {
		return p, nil
	}
	return "", fmt.Errorf("xray (Xray-core %s) not found in $PATH, $GOBIN, $GOPATH/bin or ~/go/bin: run `make deps`", XrayVersion)
}

// XrayOptions configures StartXray.
type XrayOptions struct {
	// Namespace to run in; "" means the proxy host.
	Namespace string
	// Config is Xray's JSON configuration: a value that encodes to JSON, or JSON text.
	Config any
	// WaitTCP lists addresses that must accept TCP connections before StartXray
	// returns.
	WaitTCP []netip.AddrPort
}

// StartXray writes opts.Config to a file, checks it with `xray run -test`, runs
// `xray run` in the namespace and waits until every WaitTCP address accepts
// connections. The process is stopped at cleanup; its output is in Proc.Output.
func (n *Net) StartXray(opts XrayOptions) (*Proc, error) {
	bin, err := XrayPath()
	if err != nil {
		return nil, err
	}
	ns := opts.Namespace
	if ns == "" {
		ns = n.Proxy
	}
	var conf []byte
	switch c := opts.Config.(type) {
	case []byte:
		conf = c
	case json.RawMessage:
		conf = c
	case string:
		conf = []byte(c)
	default:
		if conf, err = json.MarshalIndent(c, "", "  "); err != nil {
			return nil, fmt.Errorf("xray config: %w", err)
		}
	}
	dir, err := os.MkdirTemp(n.Dir, "xray-")
	if err != nil {
		return nil, fmt.Errorf("xray dir: %w", err)
	}
	confPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		return nil, fmt.Errorf("xray config: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), listenTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "run", "-test", "-c", confPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("xray run -test: %w: %s\nconfig: %s", err, strings.TrimSpace(string(out)), conf)
	}
	p, err := n.Start(ns, bin, "run", "-c", confPath)
	if err != nil {
		return nil, err
	}
	for _, a := range opts.WaitTCP {
		if err := n.waitListening(ns, a, p, listenTimeout); err != nil {
			return nil, fmt.Errorf("xray: %w", err)
		}
	}
	return p, nil
}

// XrayInbound is one VLESS or Trojan inbound of an Xray server, over a transport
// and TLS or REALITY, listening on all addresses at Port.
type XrayInbound struct {
	Protocol  string // vless, trojan
	Port      uint16
	Network   string         // raw, ws, httpupgrade, grpc, xhttp
	Settings  map[string]any // Xray's <network>Settings
	Security  string         // tls, reality
	ALPN      []string       // the TLS server's ALPN (nil: Xray's default)
	UUID      string         // vless
	Flow      string         // vless: the user's flow
	Password  string         // trojan
	CertPath  string         // tls
	KeyPath   string         // tls
	Reality   *XrayReality   // reality
	SniffOff  bool
	ExtraTags map[string]any // merged into the inbound (e.g. "tag")
}

// XrayReality are a REALITY inbound's settings.
type XrayReality struct {
	Target      netip.AddrPort // the site it imitates
	ServerNames []string
	PrivateKey  string
	ShortIDs    []string
}

// JSON returns the inbound as Xray's configuration writes it.
func (in XrayInbound) JSON() map[string]any {
	stream := map[string]any{"network": in.Network, "security": in.Security}
	if in.Settings != nil {
		stream[in.Network+"Settings"] = in.Settings
	}
	switch in.Security {
	case "tls":
		tls := map[string]any{"certificates": []any{map[string]any{"certificateFile": in.CertPath, "keyFile": in.KeyPath}}}
		if in.ALPN != nil {
			tls["alpn"] = in.ALPN
		}
		stream["tlsSettings"] = tls
	case "reality":
		stream["realitySettings"] = map[string]any{
			"target": in.Reality.Target.String(), "serverNames": in.Reality.ServerNames,
			"privateKey": in.Reality.PrivateKey, "shortIds": in.Reality.ShortIDs,
		}
	}
	var settings map[string]any
	if in.Protocol == "trojan" {
		settings = map[string]any{"clients": []any{map[string]any{"password": in.Password}}}
	} else {
		client := map[string]any{"id": in.UUID}
		if in.Flow != "" {
			client["flow"] = in.Flow
		}
		settings = map[string]any{"clients": []any{client}, "decryption": "none"}
	}
	out := map[string]any{"listen": "::", "port": in.Port, "protocol": in.Protocol, "settings": settings, "streamSettings": stream}
	for k, v := range in.ExtraTags {
		out[k] = v
	}
	return out
}

// XrayConfig is a server configuration with the inbounds and a direct outbound.
func XrayConfig(inbounds ...XrayInbound) map[string]any {
	var ins []any
	for _, in := range inbounds {
		ins = append(ins, in.JSON())
	}
	return map[string]any{
		"log":       map[string]any{"loglevel": "warning"},
		"inbounds":  ins,
		"outbounds": []any{map[string]any{"protocol": "freedom", "tag": "direct"}},
	}
}
