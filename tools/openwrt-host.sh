#!/usr/bin/env bash
# openwrt-host.sh PREFIX builds OpenWrt's own programs that the tests run (ubusd, ubus,
# uci, jshn, rpcd, uhttpd, ucode + fw4, opkg-cl, apk) into PREFIX, a cache outside the
# checkout, from the pinned sources in ../shared/openwrt (its build.sh; it returns at
# once when PREFIX already holds the build of src/COMMITS). `make deps` runs it with
# PREFIX = $(OPENWRT_HOST), which the tests read as TGTUN_OPENWRT_HOST.
#
# One addition: build.sh builds opkg-cl without usign support (ENABLE_USIGN=OFF), and
# such an opkg never checks a feed's Packages.sig. The package tests need the opkg of a
# router, which does: the same pinned opkg-lede is built again with ENABLE_USIGN=ON into
# PREFIX/opkg-usign/bin/opkg-cl (half a minute; kept while src/COMMITS is unchanged).
# OpenWrt's base shell libraries (../shared/openwrt/files) are copied to PREFIX/files.
set -euo pipefail

prefix=${1:?usage: tools/openwrt-host.sh PREFIX (e.g. /var/cache/tgtun-openwrt)}
here=$(cd "$(dirname "$0")" && pwd)
shared=${OPENWRT_SHARED:-$here/../../shared/openwrt}

if [ ! -x "$shared/build.sh" ] || [ ! -f "$shared/src/COMMITS" ]; then
	echo "openwrt-host: $shared is missing (no build.sh or src/COMMITS there)." >&2
	echo "  The tests run OpenWrt's own ubusd, fw4, opkg and apk, built from the pinned sources" >&2
	echo "  in ../shared/openwrt beside the checkout; put the project's shared/ directory there" >&2
	echo "  (or set OPENWRT_SHARED to it)." >&2
	exit 1
fi

"$shared/build.sh" "$prefix"

# opkg with signature checks, from the same source tarball, against the libubox above.
usign_dir=$prefix/opkg-usign
if ! { [ -x "$usign_dir/bin/opkg-cl" ] && cmp -s "$usign_dir/.commits" "$shared/src/COMMITS"; }; then
	echo "openwrt-host: building opkg-cl with usign support into $usign_dir"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	tar -xzf "$shared/src/opkg-lede.tar.gz" -C "$tmp"
	src=$tmp/opkg-lede
	if ! cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTS=OFF -DENABLE_USIGN=ON \
		-DVERSION=tgtun-test -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="-I$prefix/include" \
		-DCMAKE_EXE_LINKER_FLAGS="-L$prefix/lib -Wl,-rpath,$prefix/lib" >"$tmp/cmake.log" 2>&1 ||
		! make -C "$src/build" -j"$(nproc)" opkg-cl >"$tmp/make.log" 2>&1; then
		echo "openwrt-host: building opkg-cl with usign failed:" >&2
		tail -30 "$tmp"/*.log >&2
		exit 1
	fi
	rm -rf "$usign_dir"
	mkdir -p "$usign_dir/bin"
	cp "$src/build/src/opkg-cl" "$usign_dir/bin/opkg-cl"
	cp "$shared/src/COMMITS" "$usign_dir/.commits"
fi

# OpenWrt's base shell libraries (rc.common, functions.sh, procd.sh, jshn.sh...), which
# the tests lay into their scratch roots: beside the programs, so the cache is all they need.
if ! diff -rq "$shared/files" "$prefix/files" >/dev/null 2>&1; then
	rm -rf "$prefix/files"
	cp -R "$shared/files" "$prefix/files"
	chmod -R u+w "$prefix/files"
fi

missing=()
for f in sbin/ubusd bin/ubus bin/uci bin/jshn bin/ucode bin/utpl sbin/rpcd bin/uhttpd bin/apk \
	bin/opkg-cl opkg-usign/bin/opkg-cl firewall4/root/sbin/fw4 firewall4/root/usr/share/firewall4/main.uc files/etc/rc.common \
	files/lib/functions/procd.sh; do
	[ -e "$prefix/$f" ] || missing+=("$f")
done
if [ ${#missing[@]} -ne 0 ]; then
	echo "openwrt-host: $prefix lacks ${missing[*]} after the build" >&2
	exit 1
fi
echo "openwrt-host: OpenWrt's programs are in $prefix"
