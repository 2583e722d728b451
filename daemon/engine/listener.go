package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listener is the engine's transparent TCP listener: nftables' tproxy hands it
// the new TCP connections to targets (netcfg, Spec.TProxyPort), and an accepted
// connection's local address is the destination the client asked for. It binds
// the loopback addresses, so nothing reaches it from outside, and the engine
// refuses a connection whose local address is a loopback one (a local program
// connecting to the port itself): it accepts only what tproxy captured.
type Listener struct {
	v4, v6 *net.TCPListener
	port   uint16
}

// listenAttempts bounds the search for a port free on both loopback addresses.
const listenAttempts = 16

// Listen opens the listener on 127.0.0.1 and, with ipv6, on [::1], on one
// ephemeral port. It needs CAP_NET_ADMIN (IP_TRANSPARENT).
func Listen(ipv6 bool) (*Listener, error) {
	var lastErr error
	for range listenAttempts {
		v4, err := listenTransparent("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		l := &Listener{v4: v4, port: uint16(v4.Addr().(*net.TCPAddr).Port)}
		if !ipv6 {
			return l, nil
		}
		l.v6, err = listenTransparent("tcp6", fmt.Sprintf("[::1]:%d", l.port))
		if err == nil {
			return l, nil
		}
		v4.Close()
		lastErr = err
		if !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	return nil, lastErr
}

// listenTransparent listens with IP_TRANSPARENT (IPV6_TRANSPARENT), which lets
// tproxy give the socket connections to addresses that are not the router's.
// Keep-alive is off: an idle messenger connection must cost nothing, and the
// client's own keep-alives cross the relay anyway.
func listenTransparent(network, addr string) (*net.TCPListener, error) {
	lc := net.ListenConfig{
		KeepAlive: -1,
		Control: func(network, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if network == "tcp6" {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				}
			})
			if err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("set transparent: %w", serr)
			}
			return nil
		},
	}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("engine: listen %s: %w", addr, err)
	}
	return ln.(*net.TCPListener), nil
}

// Port is the port tproxy hands connections to.
func (l *Listener) Port() uint16 { return l.port }

// Close stops accepting. Run closes its listener when it returns.
func (l *Listener) Close() error {
	var errs []error
	for _, ln := range l.listeners() {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *Listener) listeners() []*net.TCPListener {
	if l.v6 == nil {
		return []*net.TCPListener{l.v4}
	}
	return []*net.TCPListener{l.v4, l.v6}
}

// captured returns the (client, destination) of a connection tproxy handed
// over; ok is false for one that was not (made to the listener's own address).
func captured(c *net.TCPConn) (src, dst netip.AddrPort, ok bool) {
	la, lok := c.LocalAddr().(*net.TCPAddr)
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return src, dst, false
	}
	dst, src = la.AddrPort(), ra.AddrPort()
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	return src, dst, !dst.Addr().IsLoopback() && !dst.Addr().IsUnspecified()
}
