package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/ubus"
	"github.com/tgtun/tgtun/daemon/ubus/ubustest"
	"github.com/tgtun/tgtun/e2e/testnet"
)

// TestUbusObject runs the daemon against a ubus broker and calls it as `ubus call tgtun …`
// would. The broker (ubustest) stands in for OpenWrt's ubusd, which has no Debian package;
// it follows the message exchanges recorded from the real ubusd in daemon/ubus/testdata.
func TestUbusObject(t *testing.T) {
	n := testnet.New(t)
	dante, err := n.StartDante(testnet.DanteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(n.Dir, "ubus.sock")
	broker, err := ubustest.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broker.Close() })
	d := startTgtun(t, n, tgtunConf{proxies: []proxyConf{{name: "dante", typ: "socks5", server: dante.Addr().String(), port: dante.Port()}}},
		"--ubus-socket", sock)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := waitForObject(ctx, t, sock)
	defer conn.Close()

	objs, err := conn.Lookup(ctx, "tgtun")
	if err != nil || len(objs) != 1 {
		t.Fatalf("lookup tgtun: %v %v", objs, err)
	}
	var methods []string
	for _, m := range objs[0].Methods {
		methods = append(methods, m.Name)
	}
	slices.Sort(methods)
	if want := []string{"check", "reload", "status", "update_lists", "update_subscriptions"}; !slices.Equal(methods, want) {
		t.Errorf("ubus -v list tgtun methods = %v, want %v", methods, want)
	}

	st, err := conn.Invoke(ctx, "tgtun", "status", nil)
	if err != nil {
		t.Fatalf("ubus call tgtun status: %v", err)
	}
	if v, _ := st.Get("running"); v != true {
		t.Errorf("status.running = %v, want true (status: %s)", v, mustJSON(st))
	}
	proxies, _ := st.Get("proxies")
	if arr, ok := proxies.(ubus.Array); !ok || len(arr) != 1 {
		t.Errorf("status.proxies = %#v, want one proxy", proxies)
	}

	if _, err := conn.Invoke(ctx, "tgtun", "reload", nil); err != nil {
		t.Errorf("ubus call tgtun reload: %v", err)
	}
	if _, err := conn.Invoke(ctx, "tgtun", "nosuch", nil); ubus.StatusOf(err) != ubus.StatusMethodNotFound {
		t.Errorf("unknown method: err = %v (%v), want METHOD_NOT_FOUND", err, ubus.StatusOf(err))
	}
	_, err = conn.Invoke(ctx, "tgtun", "status", ubus.Table{{Name: "bogus", Value: int32(1)}})
	if ubus.StatusOf(err) != ubus.StatusInvalidArgument {
		t.Errorf("unknown argument: err = %v (%v), want INVALID_ARGUMENT", err, ubus.StatusOf(err))
	}

	// ubusd restarts: the daemon registers again.
	conn.Close()
	broker.Close()
	broker, err = ubustest.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	conn2 := waitForObject(ctx, t, sock)
	defer conn2.Close()
	if _, err := conn2.Invoke(ctx, "tgtun", "status", nil); err != nil {
		t.Errorf("status after a ubusd restart: %v", err)
	}
	d.stop()
}

// waitForObject connects to the broker and waits until the daemon's object is there.
func waitForObject(ctx context.Context, t *testing.T, sock string) *ubus.Conn {
	t.Helper()
	for {
		conn, err := ubus.Dial(ctx, sock)
		if err == nil {
			if objs, err := conn.Lookup(ctx, "tgtun"); err == nil && len(objs) == 1 {
				return conn
			}
			conn.Close()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("object tgtun never registered on %s: %v", sock, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func mustJSON(t ubus.Table) string {
	b, _ := t.MarshalJSON()
	return string(b)
}
