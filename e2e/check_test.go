package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// TestCheckExplainsFailure answers "why doesn't Telegram work?" for a proxy that refuses
// the password: check fails that step, says why and what to do, and exits non-zero, while
// the steps that are fine say so.
func TestCheckExplainsFailure(t *testing.T) {
	n := testnet.New(t)
	if err := n.StartMessengerServers(); err != nil {
		t.Fatal(err)
	}
	micro, err := n.StartMicrosocks("alice", "right-password")
	if err != nil {
		t.Fatal(err)
	}
	d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{{name: "work", typ: "socks5", server: micro.Addr().String(),
		port: micro.Port(), user: "alice", pass: "wrong-password"}}})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tgtunBin, "check", "--socket", d.socket).CombinedOutput()
	if err == nil {
		t.Fatalf("check exited 0 with a refused password:\n%s", out)
	}
	text := string(out)
	for _, want := range []string{
		"[ok  ] tun", "[ok  ] routing", "[ok  ] route", "leaves by tgtun0",
		"[FAIL] proxy 'work'", "authentication failed", "hint: the proxy refused the username or password",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("check output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "wrong-password") {
		t.Errorf("check output shows the password:\n%s", text)
	}
}
