package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TypeInterface is an existing network interface (a WireGuard or AmneziaWG
// tunnel, say): marked traffic is routed into it by the kernel (control
// switches table T's default route), not through the netstack. Its dialer
// is what the health probe uses, and what carries a flow that still reached
// the TUN while the route was switching: a socket bound to the device.
const TypeInterface = "interface"

// ErrDeviceDown is wrapped by an interface proxy's errors when its device is missing
// or down: a verdict at once, not a failure to count.
var ErrDeviceDown = errors.New("device missing or down")

// DevicePreparer readies an interface proxy's device for the replies that come back
// out of it (netcfg.DeviceSysctls: src_valid_mark, a loose rp_filter), remembering
// what to restore when tgtun stops.
type DevicePreparer interface {
	Prepare(dev string) error
}

// Interface dials through one network device with SO_BINDTODEVICE.
type Interface struct {
	base base
	name string // the configured name: a device or a netifd interface
	mark uint32
	prep DevicePreparer // nil: the device is used as it is
}

func newInterface(b base, spec Spec, opts Options) (*Interface, error) {
	if spec.Interface == "" {
		return nil, fmt.Errorf("proxy %q: option interface is required", spec.Name)
	}
	b.prefix = "interface " + spec.Interface
	return &Interface{base: b, name: spec.Interface, mark: opts.BypassMark, prep: opts.Devices}, nil
}

// Name is the configured device or netifd interface name.
func (i *Interface) Name() string { return i.name }

// Device resolves the configured name to the kernel device that is up now:
// the name itself when such a device exists, else the l3_device of the
// netifd interface of that name (OpenWrt's ubus). An error says why the
// interface cannot carry traffic.
func (i *Interface) Device() (netlink.Link, error) {
	link, err := netlink.LinkByName(i.name)
	if err != nil {
		dev, uerr := netifdDevice(i.name)
		if uerr != nil {
			return nil, fmt.Errorf("%s: no such device, and no netifd interface of that name is up (%v): %w", i.base.prefix, uerr, ErrDeviceDown)
		}
		if link, err = netlink.LinkByName(dev); err != nil {
			return nil, fmt.Errorf("%s: device %s: %w: %w", i.base.prefix, dev, ErrDeviceDown, err)
		}
	}
	a := link.Attrs()
	if a.Flags&net.FlagUp == 0 || (a.OperState != netlink.OperUp && a.OperState != netlink.OperUnknown) {
		return nil, fmt.Errorf("%s: device %s is down (state %s): %w", i.base.prefix, a.Name, a.OperState, ErrDeviceDown)
	}
	if i.prep != nil {
		if err := i.prep.Prepare(a.Name); err != nil {
			return nil, fmt.Errorf("%s: %w", i.base.prefix, err)
		}
	}
	return link, nil
}

// netifdDevice asks netifd for the layer-3 device of an interface.
func netifdDevice(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ubus", "call", "network.interface."+name, "status").Output()
	if err != nil {
		return "", fmt.Errorf("ubus call network.interface.%s status: %w", name, err)
	}
	var st struct {
		Up       bool   `json:"up"`
		L3Device string `json:"l3_device"`
		Device   string `json:"device"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("netifd status of %s: %w", name, err)
	}
	dev := st.L3Device
	if dev == "" {
		dev = st.Device
	}
	if !st.Up || dev == "" {
		return "", fmt.Errorf("netifd interface %s is not up", name)
	}
	return dev, nil
}

func (i *Interface) dialer(dev string) *net.Dialer {
	d := i.base.net // copy: resolver and timeouts
	d.Control = func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.BindToDevice(int(fd), dev)
			if serr == nil && i.mark != 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(i.mark))
			}
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("bind to device %s: %w", dev, err)
		}
		return nil
	}
	return &d
}

func (i *Interface) dial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	link, err := i.Device()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, i.base.timeout)
	defer cancel()
	c, err := i.dialer(link.Attrs().Name).DialContext(ctx, network, dst.String())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", i.base.prefix, err)
	}
	return c, nil
}

// DialTCP connects to dst out of the device.
func (i *Interface) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return i.dial(ctx, "tcp", dst)
}

// DialUDP returns a connected UDP socket to dst out of the device.
func (i *Interface) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if !i.base.spec.UDP {
		return nil, fmt.Errorf("%s: udp is disabled for this proxy: %w", i.base.prefix, errors.ErrUnsupported)
	}
	return i.dial(ctx, "udp", dst)
}
