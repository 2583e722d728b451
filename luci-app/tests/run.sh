#!/bin/bash
# Runs every test of luci-app-tgtun (static checks, form validation against
# `tgtun config check`, the views under LuCI's real runtime in headless Chromium). Installs the Debian packages
# it needs when they are missing. Exits non-zero on any failure.
# Screenshots go to e2e/artifacts/luci/ of the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
command -v msgfmt >/dev/null 2>&1 && command -v msgmerge >/dev/null 2>&1 || need+=(gettext)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "luci-app tests need: ${need[*]} (run as root to install them with apt-get)" >&2
		exit 1
	fi
	echo "installing: ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The validation test builds the daemon: go from PATH, else the toolchain in /usr/local/go.
if [ -z "${GO:-}" ]; then
	if command -v go >/dev/null 2>&1; then GO=go; else GO=/usr/local/go/bin/go; fi
fi
export GO

rc=0
# LuCI's real client runtime (../shared/luci next to the repository, or $LUCI_RUNTIME):
# without it the view tests cannot run, and that is a failure, not a skip.
node -e 'console.log("LuCI runtime: " + require("./lib/luci-runtime").luciRoot())' || exit 1

for t in static.test.js validate.test.js links.test.js rpcd.test.js runtime.test.js; do
	echo "== luci-app: $t"
	node --test --test-reporter=spec "$t" || rc=1
done
if [ $rc -ne 0 ]; then echo "luci-app tests FAILED" >&2; fi
exit $rc
