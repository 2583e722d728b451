package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/openwrt"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// routerUbusd starts OpenWrt's real ubusd in the router namespace, as the bus tgtun
// registers on.
func routerUbusd(t *testing.T, n *testnet.Net) *openwrt.Ubusd {
	t.Helper()
	return openwrt.StartUbusd(t, openwrt.NeedHost(t), n.Router, filepath.Join(n.Dir, "ubus", "ubus.sock"))
}

// waitForObject waits with the real `ubus wait_for` until the daemon's object is on the
// bus (again, after a ubusd restart).
func waitForObject(ctx context.Context, t *testing.T, u *openwrt.Ubusd) {
	t.Helper()
	for {
		_, err := u.Call(ctx, "wait_for", "tgtun")
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("object tgtun never registered on %s: %v", u.Sock, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ubusCall is `ubus call tgtun METHOD [ARGS]` through the real CLI; it returns the reply
// as JSON values.
func ubusCall(ctx context.Context, u *openwrt.Ubusd, method string, args ...string) (map[string]any, error) {
	out, err := u.Call(ctx, append([]string{"call", "tgtun", method}, args...)...)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if strings.TrimSpace(out) == "" {
		return m, nil
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return nil, err
	}
	return m, nil
}

var listedMethod = regexp.MustCompile(`(?m)^\s+"([a-z_]+)":`)

// TestUbusObject runs the daemon against OpenWrt's ubusd in the router namespace and calls
// it with the `ubus` CLI, as an admin or LuCI's rpcd would: `ubus -v list tgtun`, `ubus
// call tgtun status|reload|check|update_lists`, an unknown method and a bad argument, and
// the object is back after ubusd restarts.
func TestUbusObject(t *testing.T) {
	n := testnet.New(t)
	dante, err := n.StartDante(testnet.DanteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := routerUbusd(t, n)
	d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{{name: "dante", typ: "socks5", server: dante.Addr().String(), port: dante.Port()}}},
		"--ubus-socket", u.Sock)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitForObject(ctx, t, u)

	list, err := u.Call(ctx, "-v", "list", "tgtun")
	if err != nil {
		t.Fatal(err)
	}
	var methods []string
	for _, m := range listedMethod.FindAllStringSubmatch(list, -1) {
		methods = append(methods, m[1])
	}
	slices.Sort(methods)
	if want := []string{"check", "reload", "status", "update_lists", "update_subscriptions"}; !slices.Equal(methods, want) {
		t.Errorf("ubus -v list tgtun methods = %v, want %v:\n%s", methods, want, list)
	}

	st, err := ubusCall(ctx, u, "status")
	if err != nil {
		t.Fatalf("ubus call tgtun status: %v", err)
	}
	if st["running"] != true {
		t.Errorf("status.running = %v, want true (status: %v)", st["running"], st)
	}
	if proxies, ok := st["proxies"].([]any); !ok || len(proxies) != 1 {
		t.Errorf("status.proxies = %#v, want one proxy", st["proxies"])
	}
	if _, err := ubusCall(ctx, u, "reload"); err != nil {
		t.Errorf("ubus call tgtun reload: %v", err)
	}
	chk, err := ubusCall(ctx, u, "check")
	if err != nil {
		t.Errorf("ubus call tgtun check: %v", err)
	} else if _, ok := chk["steps"]; !ok {
		t.Errorf("ubus call tgtun check: no steps in %v", chk)
	}
	if _, err := ubusCall(ctx, u, "update_lists"); err != nil {
		t.Errorf("ubus call tgtun update_lists: %v", err)
	}
	if _, err := ubusCall(ctx, u, "nosuch"); err == nil || !strings.Contains(err.Error(), "Method not found") {
		t.Errorf("unknown method: err = %v, want ubus's \"Method not found\"", err)
	}
	if _, err := ubusCall(ctx, u, "status", `{"bogus": 1}`); err == nil || !strings.Contains(err.Error(), "Invalid argument") {
		t.Errorf("unknown argument: err = %v, want ubus's \"Invalid argument\"", err)
	}

	// ubusd restarts (procd respawns it): the daemon registers again.
	u.Stop()
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	waitForObject(ctx, t, u)
	if _, err := ubusCall(ctx, u, "status"); err != nil {
		t.Errorf("status after a ubusd restart: %v", err)
	}
	d.stop()
}
