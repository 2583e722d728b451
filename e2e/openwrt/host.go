// Package openwrt runs OpenWrt's own programs in tests instead of stand-ins for them: the
// real ubusd and ubus CLI, uci, jshn, rc.common with procd.sh, ucode + fw4, opkg and apk,
// built from the pinned sources in ../shared/openwrt by tools/openwrt-host.sh into the
// cache that TGTUN_OPENWRT_HOST names (`make deps` builds it and the Makefile exports the
// variable). A test that needs them fails, never skips, when the variable is unset or the
// cache is incomplete.
//
// Root is a scratch root laid out as a router's (busybox as /bin/sh and its tools,
// OpenWrt's base shell libraries, the OpenWrt programs at their router paths) in which
// commands run chrooted, in a mount namespace of their own, so init scripts, maintainer
// scripts and fw4 find /lib/functions.sh, /sbin/uci or /usr/share/firewall4 where they
// look for them, and nothing is written outside the scratch directory.
package openwrt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// EnvHost names the environment variable that holds the cache directory.
const EnvHost = "TGTUN_OPENWRT_HOST"

// Host is the cache directory of OpenWrt's programs.
type Host struct {
	Dir string
}

// hostFiles are what the tests use from the cache; tools/openwrt-host.sh checks the same.
var hostFiles = []string{
	"sbin/ubusd", "bin/ubus", "bin/uci", "bin/jshn", "bin/ucode", "bin/utpl", "bin/apk",
	"opkg-usign/bin/opkg-cl", "lib/libubus.so", "lib/ucode/uci.so", "lib/ucode/ubus.so",
	"firewall4/root/sbin/fw4", "firewall4/root/usr/share/firewall4/main.uc",
	"firewall4/root/usr/share/ucode/fw4.uc",
	"files/etc/rc.common", "files/lib/functions.sh", "files/lib/functions/procd.sh",
	"files/lib/functions/service.sh", "files/lib/config/uci.sh", "files/usr/share/libubox/jshn.sh",
}

// LookupHost returns the cache named by TGTUN_OPENWRT_HOST, or an error saying what is
// missing and how to get it.
func LookupHost() (Host, error) {
	dir := os.Getenv(EnvHost)
	if dir == "" {
		return Host{}, fmt.Errorf("%s is not set: it names the cache of OpenWrt's programs that `make deps` builds "+
			"(tools/openwrt-host.sh; run the tests through make, or set it to /var/cache/tgtun-openwrt after `make deps`)", EnvHost)
	}
	var missing []string
	for _, f := range hostFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return Host{}, fmt.Errorf("%s=%s lacks %s: run `make deps` (tools/openwrt-host.sh %s)",
			EnvHost, dir, strings.Join(missing, ", "), dir)
	}
	return Host{Dir: dir}, nil
}

// NeedHost returns the cache or fails the test: a missing prerequisite is a failure.
func NeedHost(t testing.TB) Host {
	t.Helper()
	h, err := LookupHost()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Path is a file of the cache.
func (h Host) Path(rel string) string { return filepath.Join(h.Dir, rel) }

// LibEnv is the environment entry ubus, uci and jshn need to find libubox and libubus.
func (h Host) LibEnv() string { return "LD_LIBRARY_PATH=" + h.Path("lib") }

// UbusCLI returns the argv of `ubus -s sock args...` with its environment entry.
func (h Host) UbusCLI(sock string, args ...string) (env string, argv []string) {
	return h.LibEnv(), append([]string{h.Path("bin/ubus"), "-s", sock}, args...)
}

var errNoProgram = errors.New("no program given")
