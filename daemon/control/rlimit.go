package control

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Descriptors a flow costs: a TCP flow holds one socket to the proxy; a SOCKS5 UDP flow
// two (the TCP control connection and the UDP socket). The netstack side of a flow is
// no descriptor.
const fdsPerFlow = 2

// fdReserve is kept free of flows for the daemon's own needs: the control socket and
// its clients, ubus, the health probes, list downloads, the TUN, netlink and nftables
// sockets, the poller. Running out of descriptors must never cost the daemon its
// control socket or make a probe fail and judge a working proxy dead.
const fdReserve = 256

// rlimiter reads and sets RLIMIT_NOFILE (unix.Getrlimit/Setrlimit; a fake in tests).
type rlimiter interface {
	Get() (unix.Rlimit, error)
	Set(unix.Rlimit) error
}

type sysRlimit struct{}

func (sysRlimit) Get() (unix.Rlimit, error) {
	var r unix.Rlimit
	err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r)
	return r, err
}

func (sysRlimit) Set(r unix.Rlimit) error { return unix.Setrlimit(unix.RLIMIT_NOFILE, &r) }

// fitDescriptors raises the descriptor limit to what maxFlows flows plus the reserve
// need and returns the max_flows the limit carries: maxFlows itself, or fewer when not
// even the hard limit (raised if the daemon may) holds them, with a warning saying so.
func fitDescriptors(rl rlimiter, maxFlows int) (int, string) {
	need := uint64(maxFlows)*fdsPerFlow + fdReserve
	cur, err := rl.Get()
	if err != nil {
		return maxFlows, fmt.Sprintf("cannot read the descriptor limit (%v); max_flows %d is not checked against it", err, maxFlows)
	}
	if cur.Cur >= need {
		return maxFlows, ""
	}
	want := unix.Rlimit{Cur: need, Max: max(cur.Max, need)}
	if rl.Set(want) == nil {
		return maxFlows, ""
	}
	// Not allowed above the hard limit: take all of it.
	if cur.Max > cur.Cur {
		if err := rl.Set(unix.Rlimit{Cur: cur.Max, Max: cur.Max}); err == nil {
			cur.Cur = cur.Max
		}
	}
	fit := 1
	if cur.Cur > fdReserve+fdsPerFlow {
		fit = int((cur.Cur - fdReserve) / fdsPerFlow)
	}
	if fit >= maxFlows {
		return maxFlows, ""
	}
	return fit, fmt.Sprintf("the descriptor limit (%d) carries %d flows, not max_flows %d (each flow takes up to %d descriptors, %d are kept for the daemon): max_flows is %d until the limit is raised (ulimit -n, procd limits)",
		cur.Cur, fit, maxFlows, fdsPerFlow, fdReserve, fit)
}
