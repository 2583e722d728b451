#!/bin/sh
# tgtun-bench-init: the guest's init (kernel command line init=/sbin/tgtun-bench-init).
# It mounts what the bench needs and runs the script of the bench disk (/dev/sdb, ext2),
# which prints its results on the serial console and powers the machine off.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /dev/pts /bench
mount -t devpts devpts /dev/pts
mount -o remount,rw /
if ! mount -t ext2 -o ro /dev/sdb /bench; then
	echo "@@bench fatal: cannot mount the bench disk /dev/sdb"
	echo o >/proc/sysrq-trigger
fi
/bin/sh /bench/run.sh
echo "@@bench exit $?"
sync
echo o >/proc/sysrq-trigger
sleep 10
