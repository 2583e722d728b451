package openwrt

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRootRunsOpenWrtTools: the router root runs busybox's ash, OpenWrt's shell libraries,
// uci on /etc/config, jshn, ucode and nft, chrooted.
func TestRootRunsOpenWrtTools(t *testing.T) {
	h := NeedHost(t)
	r := NewRoot(t, h)
	if err := r.WriteFile("etc/config/demo", []byte("config main 'main'\n\toption enabled '1'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := r.Sh(ctx, `. /lib/functions.sh; config_load demo; config_get_bool e main enabled 0; echo "enabled=$e"
. /usr/share/libubox/jshn.sh; json_init; json_add_string a b; json_dump
ucode -e 'print(1+1, "\n")'
nft list ruleset && echo nft-ok
readlink /proc/$$/exe`)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"enabled=1", `"a": "b"`, "2\n", "nft-ok", "/bin/busybox"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
