#!/usr/bin/env bash
# rootfs.sh CACHE_DIR PACKAGES... builds the emulated MIPS router of `make bench-mips`
# once: a Debian bookworm mipsel root file system (debootstrap, its second stage under
# qemu-user through binfmt_misc), turned into an ext4 image without mounting it, and the
# kernel and initrd of its linux-image-4kc-malta. Everything goes into CACHE_DIR (outside
# the checkout): rootfs.img, vmlinux, initrd.img and, last, a file named "ok"; a directory
# without "ok" is half built and is built again. It takes about 15 minutes (the second
# stage builds the initrd twice under qemu-user), then the image is reused.
#
# Pitfalls it avoids: debootstrap's second stage leaves /proc and /sys mounted in the
# target when it fails, and copying a tree with /proc mounted fills the disk: they are
# unmounted (on every exit) before anything reads the tree. Run as root.
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: rootfs.sh CACHE_DIR PACKAGE..." >&2
	exit 2
fi
cache=$1
shift
pkgs=$(IFS=,; echo "$*")
mirror=${MIPS_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)

if [ -e "$cache/ok" ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "rootfs.sh: building the MIPS root file system needs root" >&2
	exit 1
fi

# debootstrap's second stage runs mipsel programs: the kernel hands them to qemu-mipsel
# through binfmt_misc (qemu-user-static registers it with the F flag, so the chroot needs
# no copy of qemu).
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-mipsel ]; then
	if ! update-binfmts --enable qemu-mipsel >/dev/null 2>&1 || [ ! -e /proc/sys/fs/binfmt_misc/qemu-mipsel ]; then
		echo "rootfs.sh: qemu-mipsel is not registered with binfmt_misc (apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-mipsel)" >&2
		exit 1
	fi
fi

work="$cache.build"
target="$work/root"
unmount_target() {
	local m
	# Deepest first; lazily, so a busy mount cannot keep the rest mounted.
	awk -v t="$target" '$2 ~ "^"t"(/|$)" {print $2}' /proc/mounts | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
}
trap unmount_target EXIT

rm -rf "$work"
mkdir -p "$work"
start=$(date +%s)
echo "bench-mips: debootstrap bookworm mipsel, first stage ($pkgs)"
if ! debootstrap --arch=mipsel --foreign --variant=minbase --include="$pkgs" bookworm "$target" "$mirror" >"$work/debootstrap1.log" 2>&1; then
	tail -n 30 "$work/debootstrap1.log" >&2
	echo "rootfs.sh: debootstrap first stage failed (log: $work/debootstrap1.log)" >&2
	exit 1
fi
echo "bench-mips: second stage under qemu-user (10-15 minutes: it builds the initrd twice)"
if ! chroot "$target" /debootstrap/debootstrap --second-stage >"$work/debootstrap2.log" 2>&1; then
	unmount_target
	tail -n 30 "$work/debootstrap2.log" >&2
	echo "rootfs.sh: debootstrap second stage failed (log: $work/debootstrap2.log)" >&2
	exit 1
fi
unmount_target
if awk -v t="$target" '$2 ~ "^"t"(/|$)" {found=1} END {exit !found}' /proc/mounts; then
	echo "rootfs.sh: something is still mounted under $target; not imaging it" >&2
	exit 1
fi

# The guest's own settings: no getty, no services (init= is the bench's stub), the
# stub that mounts the bench disk and runs its script.
install -m 0755 "$here/init.sh" "$target/sbin/tgtun-bench-init"
echo tgtun-mips >"$target/etc/hostname"
rm -f "$target"/var/cache/apt/archives/*.deb

# Debian's mipsel vmlinuz is an ELF that qemu's -kernel loads as it is.
kernel=$(find "$target/boot" -name 'vmlinu[xz]-*' | sort | tail -n 1)
initrd=$(find "$target/boot" -name 'initrd.img-*' | sort | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
	echo "rootfs.sh: no vmlinux or initrd.img in $target/boot (linux-image-4kc-malta missing?)" >&2
	ls -l "$target/boot" >&2
	exit 1
fi
cp "$kernel" "$work/vmlinux"
cp "$initrd" "$work/initrd.img"

# An ext4 image populated from the tree (mke2fs -d): no loop device, no mount.
size_mib=$(( $(du -sm "$target" | cut -f1) + 512 ))
mke2fs -q -t ext4 -L tgtun-mips -d "$target" "$work/rootfs.img" "${size_mib}M"
rm -rf "$target"
rm -rf "$cache"
mv "$work" "$cache"
touch "$cache/ok"
echo "bench-mips: root file system ready in $cache ($(( $(date +%s) - start ))s)"
