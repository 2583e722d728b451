package subs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Device is what the device headers tell a panel about the router: X-HWID,
// X-Device-OS, X-Ver-OS and X-Device-Model (Happ's headers, on which Remnawave-style
// panels count an account's devices).
type Device struct {
	HWID, OS, OSVersion, Model string
}

// LocalDevice describes this router to the panel at host. root is the file system root
// ("/"; tests pass a directory). The HWID is stable across restarts and reboots but
// never the MAC address itself: the first 16 hex digits of SHA-256 over a fixed label,
// the MAC of the first physical network device and the panel's host name, so two
// panels cannot match their ids either.
func LocalDevice(root, host string) Device {
	d := Device{OS: "Linux", Model: "router"}
	if rel, err := os.ReadFile(filepath.Join(root, "etc/openwrt_release")); err == nil {
		d.OS = "OpenWrt"
		d.OSVersion = shellVar(rel, "DISTRIB_RELEASE")
	}
	if d.OSVersion == "" {
		d.OSVersion = readLine(filepath.Join(root, "proc/sys/kernel/osrelease"))
	}
	for _, p := range []string{"tmp/sysinfo/model", "sys/firmware/devicetree/base/model"} {
		if m := readLine(filepath.Join(root, p)); m != "" {
			d.Model = m
			break
		}
	}
	d.OSVersion, d.Model = headerText(d.OSVersion), headerText(d.Model)
	seed := hardwareAddr(root)
	if seed == "" {
		seed = "host:" + readLine(filepath.Join(root, "proc/sys/kernel/hostname"))
	}
	sum := sha256.Sum256([]byte("tgtun-hwid\x00" + seed + "\x00" + strings.ToLower(host)))
	d.HWID = hex.EncodeToString(sum[:8])
	return d
}

// hardwareAddr is the MAC of the first physical network device by name (one with a
// device link in sysfs), else of the first other one with a non-zero address.
func hardwareAddr(root string) string {
	dir := filepath.Join(root, "sys/class/net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	var fallback string
	for _, name := range names {
		mac, err := net.ParseMAC(readLine(filepath.Join(dir, name, "address")))
		if err != nil || len(mac) != 6 || bytes.Equal(mac, make([]byte, 6)) {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name, "device")); err == nil {
			return mac.String()
		}
		if fallback == "" && name != "lo" {
			fallback = mac.String()
		}
	}
	return fallback
}

func readLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(bytes.TrimRight(b, "\x00")), "\n")
	return strings.TrimSpace(line)
}

// shellVar reads NAME='value' from a shell file such as /etc/openwrt_release.
func shellVar(data []byte, name string) string {
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+"="); ok {
			return strings.Trim(v, `'"`)
		}
	}
	return ""
}

// headerText keeps printable ASCII, at most 64 bytes, for a header value.
func headerText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, s)
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.TrimSpace(s)
}
