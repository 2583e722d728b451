package proxy

import "net"

// MarkedResolver looks names up with SO_MARK = mark on its sockets (the bypass mark),
// like every other connection of the daemon's: with router_traffic a query to a resolver
// address that a list covers would otherwise be marked and sent into the TUN.
func MarkedResolver(mark uint32) *net.Resolver {
	dialer := &net.Dialer{Control: markControl(mark)}
	return &net.Resolver{PreferGo: true, Dial: dialer.DialContext}
}
