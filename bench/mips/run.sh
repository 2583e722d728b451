#!/bin/sh
# run.sh: the bench disk's script, started by the guest's init (/sbin/tgtun-bench-init).
# It loads the kernel modules the relays need, says which are missing, and runs the
# guest program on plan.json; the guest prints the results on this console and writes
# its logs and profiles as a tar onto the raw third disk (/dev/sdc).
dmesg -n 1 2>/dev/null
echo "@@progress kernel $(uname -r), $(awk '/^cpu model/ {print $4; exit}' /proc/cpuinfo) $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
missing=""
# tun for the TUN relays; nft_tproxy, nft_socket and their dependencies for the
# kernel-TCP engine (nft tproxy); the rest loads on demand.
for m in tun veth nf_tables nft_tproxy nf_tproxy_ipv4 nf_tproxy_ipv6 nft_socket nf_socket_ipv4 nf_socket_ipv6 nft_chain_nat nft_masq nft_reject_inet nft_ct; do
	modprobe "$m" 2>/dev/null || missing="$missing $m"
done
if [ -n "$missing" ]; then
	echo "@@progress kernel modules that did not load:$missing"
fi
mkdir -p /run/netns /tmp/logs
exec /bench/guest run /bench/plan.json /dev/sdc
