package subs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, "/device") {
			if err := os.Mkdir(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLocalDevice(t *testing.T) {
	const mac = "aa:bb:cc:dd:ee:01"
	openwrt := map[string]string{
		"etc/openwrt_release":          "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='24.10.2'\n",
		"tmp/sysinfo/model":            "GL.iNet GL-MT6000\n",
		"proc/sys/kernel/osrelease":    "6.6.93\n",
		"sys/class/net/lo/address":     "00:00:00:00:00:00\n",
		"sys/class/net/br-lan/address": "aa:bb:cc:dd:ee:99\n", // a bridge: no device link
		"sys/class/net/eth0/address":   mac + "\n",
		"sys/class/net/eth0/device":    "",
		"sys/class/net/eth1/address":   "aa:bb:cc:dd:ee:02\n",
		"sys/class/net/eth1/device":    "",
	}
	root := fakeRoot(t, openwrt)
	d := LocalDevice(root, "panel.example.org")
	if d.OS != "OpenWrt" || d.OSVersion != "24.10.2" || d.Model != "GL.iNet GL-MT6000" {
		t.Fatalf("device %+v", d)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(d.HWID) {
		t.Fatalf("hwid %q is not 16 hex digits", d.HWID)
	}
	hexMAC := strings.ReplaceAll(mac, ":", "")
	if strings.Contains(d.HWID, hexMAC[:6]) || strings.Contains(d.HWID, hexMAC[6:]) {
		t.Fatalf("hwid %q shows the MAC %s", d.HWID, mac)
	}
	if again := LocalDevice(root, "PANEL.example.org"); again != d {
		t.Fatalf("not stable: %+v then %+v", d, again)
	}
	if other := LocalDevice(root, "other.example.org"); other.HWID == d.HWID {
		t.Fatal("two panels get the same hwid")
	}
	// The first physical device decides: another MAC, another id.
	openwrt["sys/class/net/eth0/address"] = "aa:bb:cc:dd:ee:03\n"
	if changed := LocalDevice(fakeRoot(t, openwrt), "panel.example.org"); changed.HWID == d.HWID {
		t.Fatal("the hwid does not depend on the MAC")
	}

	debian := LocalDevice(fakeRoot(t, map[string]string{
		"proc/sys/kernel/osrelease": "6.1.0-30-amd64\n",
		"proc/sys/kernel/hostname":  "box\n",
	}), "panel.example.org")
	if debian.OS != "Linux" || debian.OSVersion != "6.1.0-30-amd64" || debian.Model != "router" || len(debian.HWID) != 16 {
		t.Fatalf("without OpenWrt and network devices: %+v", debian)
	}
}
