package control

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// instanceLockName is the abstract unix socket a running daemon holds (`@tgtun` in `ss
// -xl`). Abstract sockets live in the network namespace, like everything tgtun
// installs; the kernel frees the name when the process dies, kill -9 included, so a
// stale lock cannot exist.
const instanceLockName = "@tgtun"

// lockInstance takes the single-instance lock before anything touches the kernel: a
// second `tgtun run` in the same network namespace would otherwise replace the running
// daemon's TUN, rules and table before it found the control socket taken.
func lockInstance(name string) (net.Listener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("tgtun is already running in this network namespace (it holds the unix socket %s); nothing was changed", name)
	}
	if err != nil {
		return nil, fmt.Errorf("single-instance lock %s: %w", name, err)
	}
	return ln, nil
}
