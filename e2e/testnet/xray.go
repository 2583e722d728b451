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

// XrayPath finds the Xray-core binary: $TGTUN_XRAY, then `xray` in $PATH, then
// the directory `go install` writes to (`go install
// github.com/xtls/xray-core/main@v1.260327.0` names it main; the test machines
// keep it as xray). A missing binary is an error: tests using it fail loudly.
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
	return "", fmt.Errorf("xray not found in $TGTUN_XRAY, $PATH, $GOBIN, $GOPATH/bin or ~/go/bin: install Xray-core v1.260327.0 as xray")
}

// StartXray writes config (a value that encodes to JSON) to a file, checks it with
// `xray run -test`, runs Xray in namespace ns ("" = the proxy host) and waits until
// every waitTCP address accepts connections. It stops at cleanup.
func (n *Net) StartXray(ns string, config any, waitTCP ...netip.AddrPort) (*Proc, error) {
	bin, err := XrayPath()
	if err != nil {
		return nil, err
	}
	if ns == "" {
		ns = n.Proxy
	}
	conf, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("xray config: %w", err)
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
	for _, a := range waitTCP {
		if err := n.waitListening(ns, a, p, listenTimeout); err != nil {
			return nil, fmt.Errorf("xray: %w", err)
		}
	}
	return p, nil
}
