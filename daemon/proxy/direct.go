package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Direct connects straight to the destination, with the bypass mark. It is
// used for list downloads when no proxy is configured and for fail_mode
// direct.
type Direct struct {
	base base
}

// NewDirect returns a Direct dialer.
func NewDirect(opts Options) *Direct {
	return &Direct{base: newBaseDialer(Spec{Name: "direct", Type: TypeDirect}, opts)}
}

// DialContext makes Direct usable as net/http's Transport.DialContext.
func (d *Direct) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.base.timeout)
	defer cancel()
	return d.base.net.DialContext(ctx, network, address)
}

// DialTCP connects to dst.
func (d *Direct) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, fmt.Errorf("direct: %w", err)
	}
	return c, nil
}

// DialUDP returns a connected UDP socket: the kernel drops datagrams from
// any source other than dst.
func (d *Direct) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	c, err := d.DialContext(ctx, "udp", dst.String())
	if err != nil {
		return nil, fmt.Errorf("direct: %w", err)
	}
	return c, nil
}
