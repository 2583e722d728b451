package netcfg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// openTUN creates the non-persistent TUN device (it vanishes when the last
// descriptor closes, so a killed daemon leaves no device behind). It carries
// one IP packet per read and write, no virtio_net_hdr: TCP goes to the
// kernel's stack through tproxy, only UDP datagrams cross the device, and
// segmentation offloads would buy them nothing.
func openTUN(name string) (*os.File, error) {
	// O_CLOEXEC: a child process inheriting the descriptor would keep the
	// device (and its routes) alive after the daemon dies. O_NONBLOCK puts
	// the *os.File on the runtime poller, so Close wakes a blocked Read.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create tun %s: open /dev/net/tun: %w", name, err)
	}
	fail := func(what string, err error) (*os.File, error) {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %s: %w", name, what, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fail("name", err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fail("TUNSETIFF", err)
	}
	return os.NewFile(uintptr(fd), "tun"), nil
}

// configureTUN sets the device's parameters and per-device sysctls, gives it
// its IPv4 address and brings it up.
func configureTUN(s Spec) (netlink.Link, error) {
	link, err := netlink.LinkByName(s.TunName)
	if err != nil {
		return nil, fmt.Errorf("find tun %s: %w", s.TunName, err)
	}
	if err := netlink.LinkSetMTU(link, s.MTU); err != nil {
		return nil, fmt.Errorf("tun %s: set mtu %d: %w", s.TunName, s.MTU, err)
	}
	if err := netlink.LinkSetTxQLen(link, s.TxQueueLen); err != nil {
		return nil, fmt.Errorf("tun %s: set txqueuelen %d: %w", s.TunName, s.TxQueueLen, err)
	}
	for _, sc := range tunSysctls(s) {
		if err := writeSysctl(sc.path, sc.value); err != nil {
			return nil, err
		}
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(s.TunAddr4)}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return nil, fmt.Errorf("tun %s: add address %s: %w", s.TunName, s.TunAddr4, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("tun %s: set up: %w", s.TunName, err)
	}
	return link, nil
}

type sysctl struct{ path, value string }

// tunSysctls are set on the TUN device only, never globally.
func tunSysctls(s Spec) []sysctl {
	v4 := func(key, v string) sysctl { return sysctl{filepath.Join("/proc/sys/net/ipv4/conf", s.TunName, key), v} }
	v6 := func(key, v string) sysctl { return sysctl{filepath.Join("/proc/sys/net/ipv6/conf", s.TunName, key), v} }
	// The reverse-path lookup of a reply coming out of the TUN uses the
	// packet mark (restored from conntrack) and so resolves to the TUN.
	out := []sysctl{v4("src_valid_mark", "1")}
	if !s.IPv6 {
		return append(out, v6("disable_ipv6", "1"))
	}
	// No link-local address, so no DAD, router or MLD chatter into the
	// netstack; routes through the device need no address.
	return append(out,
		v6("disable_ipv6", "0"),
		v6("addr_gen_mode", "1"),
		v6("accept_ra", "0"),
		v6("autoconf", "0"),
		v6("accept_dad", "0"),
		v6("router_solicitations", "0"),
	)
}

func writeSysctl(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(path, "/proc/sys/net/ipv6/") {
			// A kernel without IPv6, or a device without it: below an MTU of
			// 1280 (allowed with ipv6 '0') the kernel drops the device's IPv6
			// settings altogether.
			return nil
		}
		return fmt.Errorf("sysctl %s=%s: %w", path, value, err)
	}
	return nil
}

// deleteTUN removes a leftover tun device named name; other kinds of link
// with that name are not ours and are left alone.
func deleteTUN(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if link.Type() != "tuntap" {
		return fmt.Errorf("link %s exists and is a %s, not a tun device", name, link.Type())
	}
	// The device may vanish on its own meanwhile (its last descriptor closed).
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("delete tun %s: %w", name, err)
	}
	return nil
}
