#!/bin/bash
# Runs every test of luci-app-tgtun: static checks, form validation against
# `tgtun config check`, the share-link parser, and the views under LuCI's real runtime in
# headless Chromium against a router of OpenWrt's own programs (ubus.test.js,
# runtime.test.js). As root on Debian: it installs the Debian packages it needs with
# tools/deps.sh and builds OpenWrt's programs once into $TGTUN_OPENWRT_HOST (default
# /var/cache/tgtun-openwrt) with ../shared/openwrt/build.sh. Exits non-zero if any test
# fails or a prerequisite is missing.
#
#   LUCI_TESTS='runtime.test.js' LUCI_TEST_PATTERN=screenshots bash luci-app/tests/run.sh
#
# runs some tests only (make docs-img does). Screenshots go to e2e/artifacts/luci/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$here"

# Chromium and fonts for the views; gettext for the translations; openssl for rpcd's
# crypt()ed passwords; the test network's programs (e2e/testnet: the daemon's router and
# its proxy, dante).
bash "$repo/tools/deps.sh" nodejs chromium gettext fonts-dejavu-core openssl \
	iproute2 nftables procps socat curl iperf3 dante-server microsocks shadowsocks-libev \
	tinyproxy util-linux dnsmasq-base

# The daemon and the router command are built with go from PATH, else /usr/local/go.
if [ -z "${GO:-}" ]; then
	if command -v go >/dev/null 2>&1; then GO=go; else GO=/usr/local/go/bin/go; fi
fi
export GO

# LuCI's real client runtime and OpenWrt's sources (../shared next to the repository):
# without them the view tests cannot run, and that is a failure, not a skip.
node -e 'console.log("LuCI runtime: " + require("./lib/luci-runtime").luciRoot())' || exit 1
shared_openwrt=$(node -e 'console.log(require("./lib/luci-runtime").sharedDir("openwrt", "build.sh"))') || {
	echo "luci-app tests: ../shared/openwrt (OpenWrt's sources and build.sh) is missing next to the repository" >&2
	exit 1
}
# OpenWrt's ubusd, rpcd, uhttpd, uci: built once, kept while ../shared/openwrt/src is unchanged.
export TGTUN_OPENWRT_HOST=${TGTUN_OPENWRT_HOST:-/var/cache/tgtun-openwrt}
bash "$shared_openwrt/build.sh" "$TGTUN_OPENWRT_HOST"

# The daemon of this checkout and the router command, built once for every test file.
bin=$(mktemp -d /tmp/tgtun-luci-bin.XXXXXX)
trap 'rm -rf "$bin"' EXIT
(cd "$repo" && "$GO" build -o "$bin/tgtun" ./daemon && "$GO" build -o "$bin/lucirouter" ./e2e/lucirouter)
export TGTUN_TEST_BIN="$bin/tgtun" LUCIROUTER_BIN="$bin/lucirouter"

rc=0
tests=${LUCI_TESTS:-static.test.js validate.test.js links.test.js ubus.test.js runtime.test.js}
for t in $tests; do
	echo "== luci-app: $t"
	start=$(date +%s)
	node --test --test-reporter=spec ${LUCI_TEST_PATTERN:+--test-name-pattern="$LUCI_TEST_PATTERN"} "$t" || rc=1
	echo "== luci-app: $t took $(($(date +%s) - start))s"
done
if [ $rc -ne 0 ]; then echo "luci-app tests FAILED" >&2; fi
exit $rc
