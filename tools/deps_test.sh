#!/usr/bin/env bash
# Tests tools/deps.sh against stand-ins for dpkg-query, apt-get, systemctl and id (no
# package is installed, no service touched): apt waits for the lock and is quiet unless
# it fails, policy-rc.d forbids starts during the install and is removed after, newly
# installed services end up disabled and stopped, a service that ran before is not.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/tgtun-deps-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

mkdir -p "$tmp/bin"
export STATE="$tmp/state" POLICY_RC_D="$tmp/policy-rc.d"
cat >"$tmp/bin/dpkg-query" <<'F'
#!/bin/sh
pkg=$(eval echo "\${$#}")
grep -qx "$pkg" "$STATE/installed" && printf 'install ok installed' && exit 0
exit 1
F
cat >"$tmp/bin/apt-get" <<'F'
#!/bin/sh
echo "apt-get $*" >>"$STATE/apt.log"
echo "Reading package lists... (apt noise)"
[ -e "$STATE/apt-fails" ] && { echo "E: Unable to locate package nope"; exit 100; }
case " $* " in *" install "*) ;; *) exit 0 ;; esac
for a in "$@"; do
	case "$a" in -* | install | *=*) continue ;; esac
	echo "$a" >>"$STATE/installed"
	# A postinst starts its service unless policy-rc.d says 101; this one also ignores it.
	unit=$a; [ "$a" = dante-server ] && unit=danted
	if [ "$a" = tinyproxy ] || ! { [ -x "$POLICY_RC_D" ] && { "$POLICY_RC_D"; [ $? = 101 ]; }; }; then
		echo "$unit" >>"$STATE/active"
	fi
	[ -x "$POLICY_RC_D" ] && echo "$a" >>"$STATE/policy-during"
	echo "$unit" >>"$STATE/enabled"
done
F
cat >"$tmp/bin/systemctl" <<'F'
#!/bin/sh
echo "systemctl $*" >>"$STATE/systemctl.log"
for unit; do :; done
case "$1" in
is-active) grep -qx "$unit" "$STATE/active" ;;
disable) grep -vx "$unit" "$STATE/enabled" >"$STATE/e.tmp" || true; mv "$STATE/e.tmp" "$STATE/enabled" ;;
stop) grep -vx "$unit" "$STATE/active" >"$STATE/a.tmp" || true; mv "$STATE/a.tmp" "$STATE/active" ;;
esac
F
printf '#!/bin/sh\necho 0\n' >"$tmp/bin/id"
# update-rc.d must never reach the host's /etc/rc?.d: a stand-in that only logs.
# shellcheck disable=SC2016 # expanded by the stand-in, not here
printf '#!/bin/sh\necho "update-rc.d $*" >>"$STATE/update-rc.d.log"\n' >"$tmp/bin/update-rc.d"
chmod +x "$tmp/bin/"*
export PATH="$tmp/bin:$PATH"
# deps.sh stops services only under a running systemd (the stand-in always is one), and
# disables sysv links of the units in /etc/init.d (here: every unit, in no real place).
# shellcheck disable=SC2016 # literal $unit in the patterns
sed -e "s|\[ -d /run/systemd/system \]|true|" -e 's|\[ -e "/etc/init.d/\$unit" \]|true|' "$here/deps.sh" >"$tmp/deps.sh"
# shellcheck disable=SC2016 # literal $unit in the pattern
if grep -q '/etc/init.d/\$unit\|/run/systemd/system' "$tmp/deps.sh"; then
	echo "FAIL: tools/deps_test.sh could not replace deps.sh's host paths"
	exit 1
fi

# Every command that could change the host must be a stand-in.
for c in apt-get dpkg-query systemctl update-rc.d id; do
	if [ "$(command -v "$c")" != "$tmp/bin/$c" ]; then
		echo "FAIL: $c is not the stand-in; not running deps.sh"
		exit 1
	fi
done

reset() { rm -rf "$STATE"; mkdir -p "$STATE"; touch "$STATE/installed" "$STATE/active" "$STATE/enabled"; }

# 1. A fresh machine; shadowsocks-libev's unit already runs (the host's own).
reset
echo shadowsocks-libev >>"$STATE/active"
out=$(bash "$tmp/deps.sh" curl dante-server tinyproxy 2>&1) || fail "deps.sh failed: $out"
grep -q 'DPkg::Lock::Timeout=' "$STATE/apt.log" || fail "apt-get without DPkg::Lock::Timeout: $(cat "$STATE/apt.log")"
case "$out" in *"apt noise"*) fail "apt's output shown on success: $out" ;; esac
[ "$(wc -l <"$STATE/policy-during")" = 3 ] || fail "policy-rc.d not in place during the install"
[ -e "$POLICY_RC_D" ] && fail "policy-rc.d left behind"
grep -qx danted "$STATE/active" && fail "danted started by the install"
grep -qx tinyproxy "$STATE/active" && fail "tinyproxy (started despite policy-rc.d) left running"
grep -Eqx 'danted|tinyproxy' "$STATE/enabled" && fail "services left enabled: $(cat "$STATE/enabled")"
grep -qx shadowsocks-libev "$STATE/active" || fail "the host's running shadowsocks-libev was stopped"
grep -q "stop shadowsocks-libev" "$STATE/systemctl.log" && fail "tried to stop the host's shadowsocks-libev"
grep -q "update-rc.d danted disable" "$STATE/update-rc.d.log" || fail "danted's sysv links not disabled"
grep -q "update-rc.d shadowsocks-libev" "$STATE/update-rc.d.log" && fail "the host's shadowsocks-libev links touched"

# 2. Everything there: no apt at all.
rm -f "$STATE/apt.log"
out=$(bash "$tmp/deps.sh" curl dante-server 2>&1) || fail "deps.sh failed with everything installed: $out"
[ -e "$STATE/apt.log" ] && fail "apt-get run with everything installed"

# 3. A policy-rc.d the host has is kept.
reset
printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC_D"; chmod +x "$POLICY_RC_D"
bash "$tmp/deps.sh" curl >/dev/null 2>&1 || fail "deps.sh failed with a host policy-rc.d"
[ -e "$POLICY_RC_D" ] || fail "the host's policy-rc.d was removed"
rm -f "$POLICY_RC_D"

# 4. apt fails: its output is shown, the exit is non-zero.
reset
touch "$STATE/apt-fails"
if out=$(bash "$tmp/deps.sh" nope 2>&1); then fail "deps.sh succeeded although apt failed"; fi
case "$out" in *"Unable to locate package nope"*) ;; *) fail "apt's error not shown: $out" ;; esac

if [ $fails -ne 0 ]; then echo "tools/deps_test.sh: $fails failure(s)"; exit 1; fi
echo "tools/deps_test.sh: ok"
