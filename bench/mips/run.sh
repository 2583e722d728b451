#!/bin/sh
# run.sh: the bench disk's script, the emulated router's first process after the
# initramfs (bench/mips/initrd) mounted everything. It loads the kernel modules the relays
# need, says which are missing, and runs the guest program on plan.json; the guest prints
# the results on this console and writes its logs and profiles as a tar onto the raw
# result disk (RESULT_DEV). Then it powers the machine off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
dmesg -n 1 2>/dev/null
echo "@@progress kernel $(uname -r), $(sed -n 's/^cpu model[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
echo "@@progress $(dmesg | grep -m1 -o 'CPU frequency [0-9.]* MHz'), $(grep -m1 BogoMIPS /proc/cpuinfo | tr -s ' \t' ' ')"
cs=/sys/devices/system/clocksource/clocksource0
echo "@@progress clocksource $(cat $cs/current_clocksource) (available: $(cat $cs/available_clocksource))"
missing=""
# tun for the TUN relays; nft_tproxy, nft_socket and their dependencies for the
# kernel-TCP engine (nft tproxy); the rest loads on demand.
for m in tun veth nf_tables nft_tproxy nf_tproxy_ipv4 nf_tproxy_ipv6 nft_socket nf_socket_ipv4 nf_socket_ipv6 nft_chain_nat nft_masq nft_reject_inet nft_ct; do
	modprobe "$m" 2>/dev/null || missing="$missing $m"
done
if [ -n "$missing" ]; then
	echo "@@progress kernel modules that did not load:$missing"
fi
hostname tgtun-mips
mkdir -p /run/netns /tmp/logs
/bench/guest run /bench/plan.json "$RESULT_DEV"
echo "@@progress guest exit $?"
sync
echo o >/proc/sysrq-trigger
sleep 30
