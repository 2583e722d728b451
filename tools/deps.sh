#!/usr/bin/env bash
# deps.sh PKG... installs the Debian packages the tests and the demo use, on a fresh
# Debian machine, as root, without changing what the host runs:
#   - it waits for another apt or dpkg to finish (DPkg::Lock::Timeout) instead of failing;
#   - services that come with the packages (danted, tinyproxy, shadowsocks-libev,
#     dnsmasq) are not started while installing (policy-rc.d) and are disabled again
#     afterwards, so they do not start at the next boot either; a package that was already
#     installed is left alone, and a service the host ran before is never stopped;
#   - it prints one line, or apt's whole output when something fails.
set -euo pipefail

# Packages whose services the tests run themselves, in their own namespaces: package:unit.
SERVICES="dante-server:danted tinyproxy:tinyproxy shadowsocks-libev:shadowsocks-libev dnsmasq:dnsmasq"
LOCK_WAIT=600 # seconds to wait for another apt/dpkg (unattended-upgrades, a second make)

missing=()
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#} Debian packages are installed"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "deps: installing ${missing[*]} needs root (run make as root)" >&2
	exit 1
fi

log=$(mktemp /tmp/tgtun-deps.XXXXXX)
policy=${POLICY_RC_D:-/usr/sbin/policy-rc.d} # overridable for tools/deps_test.sh
own_policy=0
cleanup() {
	if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
	rm -f "$log"
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
	# 101 = "action not allowed": invoke-rc.d and deb-systemd-invoke start nothing.
	printf '#!/bin/sh\n# written by tgtun tools/deps.sh while installing test packages\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	own_policy=1
fi

# Which of the services ran before: those are never stopped.
was_active=()
for entry in $SERVICES; do
	unit=${entry#*:}
	if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
		was_active+=("$unit")
	fi
done

echo "deps: installing ${missing[*]} (quiet; up to a few minutes on a fresh machine)"
start=$(date +%s)
apt_opts=(-o "DPkg::Lock::Timeout=$LOCK_WAIT" -o Dpkg::Use-Pty=0 -q)
if ! { apt-get "${apt_opts[@]}" update &&
	DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
	echo "deps: apt-get failed; its output:" >&2
	cat "$log" >&2
	exit 1
fi

for entry in $SERVICES; do
	pkg=${entry%%:*} unit=${entry#*:}
	case " ${missing[*]} " in *" $pkg "*) ;; *) continue ;; esac
	case " ${was_active[*]-} " in *" $unit "*) continue ;; esac
	if command -v systemctl >/dev/null; then
		# disable works without a running systemd too: it removes the unit's links.
		systemctl disable --quiet "$unit" >/dev/null 2>&1 || true
		# Only a package that started its service despite policy-rc.d: it was not
		# running before this install.
		if [ -d /run/systemd/system ] && systemctl is-active --quiet "$unit" 2>/dev/null; then
			systemctl stop "$unit" >/dev/null 2>&1 || true
		fi
	fi
	if command -v update-rc.d >/dev/null && [ -e "/etc/init.d/$unit" ]; then
		update-rc.d "$unit" disable >/dev/null 2>&1 || true
	fi
done
echo "deps: installed ${#missing[@]} package(s) in $(($(date +%s) - start))s; their services are not enabled"
