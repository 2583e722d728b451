#!/usr/bin/env bash
# rootfs.sh CACHE_DIR PACKAGES... builds the emulated MIPS router of `make bench-mips`
# once: a Debian bookworm mipsel root file system (debootstrap, its second stage under
# qemu-user through binfmt_misc), turned into an ext4 image without mounting it, the
# kernel of its linux-image-4kc-malta and the few modules the bench's own initramfs loads
# to mount it (bench/mips/initrd). Everything goes into CACHE_DIR (outside the checkout):
# rootfs.img, vmlinux, modules/ and, last, a file named "ok"; a directory without "ok" is
# half built and is built again. It takes 5-15 minutes once, then the image is reused.
#
# Pitfalls it avoids: the second stage builds Debian's initrd twice under qemu-user (7 to
# 30 minutes each on a loaded host, and debootstrap retries a failed one five times):
# INITRD=No skips it, the bench brings its own. debootstrap's second stage leaves /proc
# and /sys mounted in the target when it fails, and copying a tree with /proc mounted
# fills the disk: they are unmounted (on every exit) before anything reads the tree.
# Run as root.
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: rootfs.sh CACHE_DIR PACKAGE..." >&2
	exit 2
fi
cache=$1
shift
pkgs=$(IFS=,; echo "$*")
mirror=${MIPS_MIRROR:-http://deb.debian.org/debian}

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

# finish TREE OUT copies the kernel and the modules that mount the root disk (the IDE
# controller, ext4 and what they need, dependencies first, listed in OUT/modules/order)
# and writes OUT/rootfs.img from TREE.
finish() {
	local tree=$1 out=$2 kernel kver dep
	# Debian's mipsel vmlinuz is an ELF that qemu's -kernel loads as it is.
	kernel=$(find "$tree/boot" -name 'vmlinu[xz]-*' | sort | tail -n 1)
	if [ -z "$kernel" ]; then
		echo "rootfs.sh: no kernel in $tree/boot (linux-image-4kc-malta missing?)" >&2
		exit 1
	fi
	cp "$kernel" "$out/vmlinux"
	kver=$(basename "$kernel" | sed 's/^vmlinu[xz]-//')
	dep="$tree/lib/modules/$kver/modules.dep"
	mkdir -p "$out/modules"
	: >"$out/modules/order"
	add_module() {
		local m=$1 d
		# shellcheck disable=SC2013 # the dependencies are one line of words
		for d in $(awk -F: -v m="$m" '$1 == m {print $2}' "$dep"); do
			add_module "$d"
		done
		if ! grep -qx "$(basename "$m")" "$out/modules/order"; then
			cp "$tree/lib/modules/$kver/$m" "$out/modules/"
			basename "$m" >>"$out/modules/order"
		fi
	}
	for m in ata_piix crc32c_generic ext4; do
		add_module "$(awk -F: -v m="$m" '{n=$1; sub(".*/", "", n)} n == m".ko" {print $1}' "$dep")"
	done
	# An ext4 image populated from the tree (mke2fs -d): no loop device, no mount.
	local size_mib=$(( $(du -sm "$tree" | cut -f1) + 512 ))
	mke2fs -q -t ext4 -L tgtun-mips -d "$tree" "$out/rootfs.img" "${size_mib}M"
}

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
echo "bench-mips: second stage under qemu-user (5-10 minutes)"
# INITRD=No: linux-image's postinst builds no initrd (/etc/kernel/postinst.d/initramfs-tools).
if ! INITRD=No chroot "$target" /debootstrap/debootstrap --second-stage >"$work/debootstrap2.log" 2>&1; then
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

# No init, getty or service of Debian's runs: the bench's initramfs hands over to the
# bench disk's run.sh.
echo tgtun-mips >"$target/etc/hostname"
rm -f "$target"/var/cache/apt/archives/*.deb "$target"/boot/initrd.img-*
finish "$target" "$work"
rm -rf "$target"
rm -rf "$cache"
mv "$work" "$cache"
touch "$cache/ok"
echo "bench-mips: root file system ready in $cache ($(( $(date +%s) - start ))s)"
