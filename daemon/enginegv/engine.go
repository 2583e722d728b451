// Package enginegv is tgtun's userspace TCP/IP stack: a gVisor netstack attached
// to the TUN device. Every TCP connection and UDP flow that the kernel routes
// into the TUN is for some messenger address; the engine terminates it in the
// netstack and relays its bytes through a proxy Dialer.
package enginegv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Dialer is what the engine needs from an outbound proxy.
type Dialer interface {
	// DialTCP opens a stream to dst through the proxy.
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// DialUDP opens a datagram conn to dst through the proxy: every Write
	// sends one datagram to dst, every Read returns one datagram from it.
	// It returns an error wrapping errors.ErrUnsupported when the proxy
	// cannot carry UDP.
	DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
}

// Config tunes the engine. Zero values take the defaults below.
type Config struct {
	// MTU of the TUN device (default 1500, at least 1280 because of IPv6;
	// 576 with IPv4Only).
	MTU int
	// IPv4Only leaves IPv6 out of the netstack (config ipv6 '0'), which lets
	// the MTU go down to 576 like the rest of tgtun's settings.
	IPv4Only bool
	// MaxFlows caps concurrent TCP plus UDP flows, TCP flows still dialling
	// included (default 4096). Beyond it TCP SYNs get a RST and UDP
	// datagrams are dropped; both count as Rejected.
	MaxFlows int
	// MaxFlowsPerDevice caps the flows of one client (source) address
	// (default MaxFlows/4, at least 1), so that one device cannot take
	// every slot. Beyond it flows are refused as over MaxFlows, and counted
	// in RefusedPerDevice.
	MaxFlowsPerDevice int
	// MaxHandshakes caps TCP connections whose proxy dial is in progress
	// (default 256); SYNs beyond it are dropped and the client retransmits.
	MaxHandshakes int
	// DialTimeout bounds one proxy dial (default 10s).
	DialTimeout time.Duration
	// TCPIdleTimeout closes a TCP flow without traffic in either direction
	// (default 2h: the Linux keepalive interval, so a client that keeps its
	// connection alive with OS keepalives is never cut; messenger clients
	// ping far more often).
	TCPIdleTimeout time.Duration
	// UDPIdleTimeout closes a UDP flow without traffic (default 60s).
	UDPIdleTimeout time.Duration
	// UDPDialBackoff is how long the datagrams of a (client, destination)
	// pair are dropped without a new dial after its proxy dial failed
	// (default 1s); it doubles with each failure in a row, up to 32 times.
	// A proxy that cannot carry UDP is asked again after UDPIdleTimeout.
	UDPDialBackoff time.Duration
	// BufferSize is the buffer a busy TCP flow borrows from a pool while data
	// moves in one direction (default 64 KiB: against 16 KiB, 10-40% more
	// throughput from fewer syscalls; an idle flow holds none).
	BufferSize int
	// HeldBufferSize is the buffer a flow holds for its whole life when
	// nothing can tell it that data is waiting: each UDP flow, and a TCP flow
	// whose proxy conn is not a plain socket (default 16 KiB). A UDP datagram
	// larger than it is dropped.
	HeldBufferSize int
}

// MinMTUv4 is the lowest MTU the engine takes with IPv4Only: what every IPv4 host must
// accept (RFC 791).
const MinMTUv4 = 576

const (
	defaultMTU            = 1500
	defaultMaxFlows       = 4096
	defaultMaxHandshakes  = 256
	defaultDialTimeout    = 10 * time.Second
	defaultTCPIdleTimeout = 2 * time.Hour
	defaultUDPIdleTimeout = 60 * time.Second
	defaultUDPDialBackoff = time.Second
	defaultBufferSize     = 64 << 10
	defaultHeldBufferSize = 16 << 10
)

// TCP buffer sizes of the netstack, chosen for a 128 MB router. The client
// side is a LAN hop (RTT of a few ms), so a 128 KiB window already fills
// ~100 Mbit/s at 10 ms and 1 Gbit/s at 1 ms; the WAN path to the proxy is a
// kernel socket with its own buffers. Receive buffers are auto-tuned
// ("moderated"): a window only grows when the relay actually drains it fast,
// so a flow behind a slow proxy stays small; 512 KiB caps the growth. The
// gVisor defaults (1 MiB, growing to 4 MiB) would let a few dozen stalled
// flows eat the router's memory. Memory is only taken while data is queued.
const (
	tcpBufMin        = 4 << 10
	tcpRcvBufDefault = 128 << 10
	tcpRcvBufMax     = 512 << 10
	tcpSndBufDefault = 256 << 10
	tcpSndBufMax     = 1 << 20
)

const nicID tcpip.NICID = 1

// Stats is a snapshot of the engine's counters.
type Stats struct {
	ActiveTCP  int64  `json:"active_tcp"`
	ActiveUDP  int64  `json:"active_udp"`
	TotalTCP   uint64 `json:"total_tcp"`   // TCP flows relayed since start
	TotalUDP   uint64 `json:"total_udp"`   // UDP flows relayed since start
	Rejected   uint64 `json:"rejected"`    // flows refused: dial failed or timed out, over MaxFlows
	DroppedUDP uint64 `json:"dropped_udp"` // datagrams dropped: no UDP through the proxy, dial failed, over cap, too large
	BytesUp    uint64 `json:"bytes_up"`    // client → proxy
	BytesDown  uint64 `json:"bytes_down"`  // proxy → client

	PerDeviceLimit   int           `json:"per_device_limit"`   // Config.MaxFlowsPerDevice
	RefusedPerDevice uint64        `json:"refused_per_device"` // flows refused because their device was at its limit (flows, or dials in flight)
	TopDevices       []DeviceFlows `json:"top_devices"`        // the devices holding most flows, up to 5
}

// DeviceFlows is how many flows one client address holds.
type DeviceFlows struct {
	Address string `json:"address"`
	Flows   int    `json:"flows"`
}

// topDevicesShown is how many devices Stats lists.
const topDevicesShown = 5

// Engine relays the flows of a TUN device through a Dialer.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	bufs     sync.Pool // *[]byte of cfg.BufferSize
	heldBufs sync.Pool // *[]byte of cfg.HeldBufferSize

	dialer  atomic.Pointer[dialerRef]
	started atomic.Bool

	slots                                    atomic.Int64 // flows holding a MaxFlows slot
	activeTCP, activeUDP                     atomic.Int64
	totalTCP, totalUDP, rejected, droppedUDP atomic.Uint64
	bytesUp, bytesDown                       atomic.Uint64
	refusedPerDevice                         atomic.Uint64

	devMu   sync.Mutex
	devices map[netip.Addr]int // guarded by devMu: slots held per source address
	dialing map[netip.Addr]int // guarded by devMu: proxy dials in flight per source address

	poller *readPoller // set by Run

	udpDialing atomic.Int64 // UDP proxy dials in progress, at most MaxHandshakes
	udpBackoff *dialBackoff
	// done is closed when Run has returned or the TUN reader died; err says why.
	done     chan struct{}
	doneOnce sync.Once
	errMu    sync.Mutex
	err      error // guarded by errMu
	// readerDied is closed when the TUN reader stops by itself.
	readerDied     chan struct{}
	readerDiedOnce sync.Once

	mu      sync.Mutex
	closing bool              // guarded by mu; no flow is admitted once set
	flows   map[flow]struct{} // guarded by mu
	flowsWG sync.WaitGroup    // one per admitted flow
}

// flow is a relayed connection the engine can tear down at shutdown.
type flow interface {
	abort()
}

// dialerRef boxes the interface so it can be swapped atomically.
type dialerRef struct{ Dialer }

// New validates cfg, fills its defaults and returns an engine ready to Run.
func New(cfg Config, d Dialer, log *slog.Logger) (*Engine, error) {
	if d == nil {
		return nil, errors.New("engine: nil dialer")
	}
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, log: log, flows: make(map[flow]struct{}), devices: make(map[netip.Addr]int),
		dialing: make(map[netip.Addr]int), done: make(chan struct{}), readerDied: make(chan struct{})}
	e.bufs.New = newBuffer(cfg.BufferSize)
	e.heldBufs.New = newBuffer(cfg.HeldBufferSize)
	e.udpBackoff = newDialBackoff(cfg.UDPDialBackoff, 32*cfg.UDPDialBackoff, cfg.MaxFlows)
	e.dialer.Store(&dialerRef{d})
	return e, nil
}

func (c *Config) withDefaults() error {
	setDefault(&c.MTU, defaultMTU)
	setDefault(&c.MaxFlows, defaultMaxFlows)
	setDefault(&c.MaxFlowsPerDevice, max(c.MaxFlows/4, 1))
	setDefault(&c.MaxHandshakes, defaultMaxHandshakes)
	setDefault(&c.DialTimeout, defaultDialTimeout)
	setDefault(&c.TCPIdleTimeout, defaultTCPIdleTimeout)
	setDefault(&c.UDPIdleTimeout, defaultUDPIdleTimeout)
	setDefault(&c.UDPDialBackoff, defaultUDPDialBackoff)
	setDefault(&c.BufferSize, defaultBufferSize)
	setDefault(&c.HeldBufferSize, defaultHeldBufferSize)
	minMTU := header.IPv6MinimumMTU
	if c.IPv4Only {
		minMTU = MinMTUv4
	}
	switch {
	case c.MTU < minMTU || c.MTU > 65535:
		return fmt.Errorf("engine: MTU %d out of range %d..65535", c.MTU, minMTU)
	case c.MaxFlowsPerDevice < 0 || c.MaxFlowsPerDevice > c.MaxFlows:
		return fmt.Errorf("engine: MaxFlowsPerDevice %d out of range 1..%d (MaxFlows)", c.MaxFlowsPerDevice, c.MaxFlows)
	case c.MaxFlows < 0, c.MaxHandshakes < 0, c.DialTimeout < 0, c.TCPIdleTimeout < 0, c.UDPIdleTimeout < 0, c.UDPDialBackoff < 0:
		return errors.New("engine: negative limit in config")
	case c.BufferSize < 2048, c.HeldBufferSize < 2048:
		return fmt.Errorf("engine: buffer sizes %d and %d: below 2048", c.BufferSize, c.HeldBufferSize)
	}
	return nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// SetDialer swaps the dialer: new flows use d, existing flows keep theirs.
func (e *Engine) SetDialer(d Dialer) {
	if d == nil {
		return
	}
	e.dialer.Store(&dialerRef{d})
}

func (e *Engine) currentDialer() Dialer { return e.dialer.Load().Dialer }

// Stats returns the counters. Each is read atomically; together they are
// not one consistent snapshot.
func (e *Engine) Stats() Stats {
	return Stats{
		ActiveTCP:  e.activeTCP.Load(),
		ActiveUDP:  e.activeUDP.Load(),
		TotalTCP:   e.totalTCP.Load(),
		TotalUDP:   e.totalUDP.Load(),
		Rejected:   e.rejected.Load(),
		DroppedUDP: e.droppedUDP.Load(),
		BytesUp:    e.bytesUp.Load(),
		BytesDown:  e.bytesDown.Load(),

		PerDeviceLimit:   e.cfg.MaxFlowsPerDevice,
		RefusedPerDevice: e.refusedPerDevice.Load(),
		TopDevices:       e.topDevices(topDevicesShown),
	}
}

// topDevices lists the n devices holding most flows, most first.
func (e *Engine) topDevices(n int) []DeviceFlows {
	e.devMu.Lock()
	out := make([]DeviceFlows, 0, len(e.devices))
	for a, c := range e.devices {
		out = append(out, DeviceFlows{Address: a.String(), Flows: c})
	}
	e.devMu.Unlock()
	slices.SortFunc(out, func(a, b DeviceFlows) int {
		return cmp.Or(cmp.Compare(b.Flows, a.Flows), cmp.Compare(a.Address, b.Address))
	})
	return out[:min(n, len(out))]
}

// Done is closed when the engine stops serving: Run returned, or the TUN reader ended by
// itself (the device was deleted under it), after which Run tears down and returns the
// reason. Err says why.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Err is why the engine stopped: nil while it runs or after a stop asked for by
// cancelling Run's context.
func (e *Engine) Err() error {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	return e.err
}

func (e *Engine) finish(err error) {
	e.errMu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.errMu.Unlock()
	e.doneOnce.Do(func() { close(e.done) })
}

// readerExited records that the TUN reader stopped by itself.
func (e *Engine) readerExited(err error) {
	if err == nil {
		err = errors.New("TUN reader stopped")
	}
	e.readerDiedOnce.Do(func() {
		e.errMu.Lock()
		e.err = fmt.Errorf("engine: %w", err)
		e.errMu.Unlock()
		close(e.readerDied)
	})
}

// Run attaches the netstack to tunFD (an IFF_TUN|IFF_NO_PI device: raw IP
// packets, each prefixed by a virtio_net_hdr if it was opened with
// IFF_VNET_HDR, which Run detects) and serves flows until ctx is done. Then it resets every flow,
// waits for all of its goroutines and returns nil. Run sets tunFD
// non-blocking but does not close it: the caller owns it and may close it
// once Run has returned. An engine runs once.
func (e *Engine) Run(ctx context.Context, tunFD int) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("engine: Run called twice")
	}
	poller, err := newReadPoller(e.log)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	e.poller = poller
	s, link, err := e.newStack(ctx, tunFD)
	if err != nil {
		poller.close()
		e.finish(err)
		return err
	}
	e.log.Info("netstack attached to TUN", "mtu", e.cfg.MTU, "max_flows", e.cfg.MaxFlows, "max_flows_per_device", e.cfg.MaxFlowsPerDevice, "vnet_hdr", hasVnetHdr(tunFD))
	err = nil
	select {
	case <-ctx.Done():
	case <-e.readerDied:
		err = e.Err()
		e.log.Error("TUN reader stopped: the engine cannot serve", "err", err)
		e.doneOnce.Do(func() { close(e.done) })
	}
	e.shutdown(s, link)
	e.log.Info("netstack stopped")
	e.finish(err)
	return err
}

func (e *Engine) newStack(ctx context.Context, tunFD int) (*stack.Stack, stack.LinkEndpoint, error) {
	protos := []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol}
	routes := []tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	}
	if e.cfg.IPv4Only {
		protos, routes = protos[:1], routes[:1]
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   protos,
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	fail := func(what string, err any) (*stack.Stack, stack.LinkEndpoint, error) {
		s.Destroy()
		return nil, nil, fmt.Errorf("engine: %s: %v", what, err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	// Cubic recovers the window faster than gVisor's default Reno.
	cubic := tcpip.CongestionControlOption("cubic")
	// The relay writes whatever the proxy delivered; Nagle would only add
	// latency to small interactive messages.
	noDelay := tcpip.TCPDelayEnabled(false)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpRcvBufDefault, Max: tcpRcvBufMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpSndBufDefault, Max: tcpSndBufMax}
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &moderate, &cubic, &noDelay, &rcv, &snd} {
		if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); terr != nil {
			return fail(fmt.Sprintf("set TCP option %T", opt), terr)
		}
	}

	tcpFwd := tcp.NewForwarder(s, tcpRcvBufDefault, e.cfg.MaxHandshakes, func(r *tcp.ForwarderRequest) {
		e.handleTCP(ctx, r)
	})
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(s, func(r *udp.ForwarderRequest) bool {
		return e.handleUDP(ctx, r)
	})
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)

	inner, err := newTUNLink(tunFD, uint32(e.cfg.MTU), e.readerExited)
	if err != nil {
		return fail("attach TUN fd", err)
	}
	link := &gatedLink{LinkEndpoint: inner}
	// The NIC starts disabled so that no packet is dispatched before it
	// accepts every destination.
	if terr := s.CreateNICWithOptions(nicID, link, stack.NICOptions{Name: "tun", Disabled: true}); terr != nil {
		link.Close() // the stack closes it only once it belongs to a NIC
		return fail("create NIC", terr)
	}
	// Promiscuous: accept packets for any destination address, not only
	// the NIC's own. Spoofing: reply from that destination address.
	if terr := s.SetPromiscuousMode(nicID, true); terr != nil {
		return fail("set promiscuous mode", terr)
	}
	if terr := s.SetSpoofing(nicID, true); terr != nil {
		return fail("set spoofing", terr)
	}
	s.SetRouteTable(routes)
	if terr := s.EnableNIC(nicID); terr != nil {
		return fail("enable NIC", terr)
	}
	link.open()
	return s, link, nil
}

// newTUNLink attaches to the TUN fd. A device opened with IFF_VNET_HDR
// (netcfg does so unless told not to) exchanges whole 64 KiB TCP segments
// with the kernel and leaves checksums to it. Measured on a 2-core VM
// (medians of 3 runs of 3s, same session): upload (BenchmarkTCPThroughput)
// 336 against 96 MB/s on a plain TUN, 3.5x; download (BenchmarkTCPDownload)
// 457 against 85 MB/s, 5.4x. A plain device gets gVisor's fdbased endpoint:
// one MTU-sized packet per read or write.
func newTUNLink(fd int, mtu uint32, onExit func(error)) (stack.LinkEndpoint, error) {
	if hasVnetHdr(fd) {
		return newVnetTUN(fd, mtu, onExit)
	}
	return fdbased.New(&fdbased.Options{FDs: []int{fd}, MTU: mtu, ClosedFunc: func(terr tcpip.Error) {
		if terr != nil { // nil: stopped on purpose
			onExit(fmt.Errorf("read TUN: %s", terr))
		}
	}})
}

// shutdown resets every flow (clients see a RST at once rather than a
// silent hang), waits for the relay goroutines, then stops reading the TUN
// and tears the stack down.
func (e *Engine) shutdown(s *stack.Stack, link stack.LinkEndpoint) {
	e.mu.Lock()
	e.closing = true
	flows := make([]flow, 0, len(e.flows))
	for f := range e.flows {
		flows = append(flows, f)
	}
	e.mu.Unlock()
	for _, f := range flows {
		f.abort()
	}
	e.flowsWG.Wait()
	e.poller.close()
	// The TUN reader stops before the NIC goes: RemoveNIC stops it too, but
	// holding the stack's lock, and a packet the reader is delivering at that
	// moment waits for the same lock (IPv4 and IPv6 look the NIC's name up
	// under it), so each waits for the other for ever. A SYN that got through
	// just before may still have a TCP forwarder goroutine between its start
	// and its first lock; it finds closing set and only completes its request
	// with a RST.
	link.Attach(nil)
	if terr := s.RemoveNIC(nicID); terr != nil {
		e.log.Warn("remove netstack NIC", "err", terr)
	}
	s.Destroy()
}

// admit registers f, unless the engine is shutting down.
func (e *Engine) admit(f flow) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing {
		return false
	}
	e.flows[f] = struct{}{}
	e.flowsWG.Add(1)
	return true
}

func (e *Engine) release(f flow) {
	e.mu.Lock()
	delete(e.flows, f)
	e.mu.Unlock()
	e.flowsWG.Done()
}

// reserveSlot takes one of the MaxFlows slots for a flow from src, unless src
// already holds MaxFlowsPerDevice of them.
func (e *Engine) reserveSlot(src netip.Addr) bool {
	if e.slots.Add(1) > int64(e.cfg.MaxFlows) {
		e.slots.Add(-1)
		return false
	}
	src = src.Unmap()
	e.devMu.Lock()
	n := e.devices[src]
	if n >= e.cfg.MaxFlowsPerDevice {
		e.devMu.Unlock()
		e.slots.Add(-1)
		e.refusedPerDevice.Add(1)
		return false
	}
	e.devices[src] = n + 1
	e.devMu.Unlock()
	return true
}

// startDial counts a proxy dial of src in flight, unless src already has a
// quarter of MaxHandshakes: dials to unreachable targets take seconds, and one
// device's flood of them must not take every handshake slot of the netstack
// (a SYN beyond those is dropped, whoever sent it).
func (e *Engine) startDial(src netip.Addr) bool {
	src = src.Unmap()
	e.devMu.Lock()
	defer e.devMu.Unlock()
	if e.dialing[src] >= max(e.cfg.MaxHandshakes/4, 1) {
		e.refusedPerDevice.Add(1)
		return false
	}
	e.dialing[src]++
	return true
}

// endDial ends a dial startDial counted.
func (e *Engine) endDial(src netip.Addr) {
	src = src.Unmap()
	e.devMu.Lock()
	decrement(e.dialing, src)
	e.devMu.Unlock()
}

// decrement counts one off src's entry in a per-source count, dropping the
// entry at zero so that the map holds only sources with something counted.
func decrement(m map[netip.Addr]int, src netip.Addr) {
	if n := m[src] - 1; n > 0 {
		m[src] = n
	} else {
		delete(m, src)
	}
}

// freeSlot gives back a slot reserveSlot(src) took.
func (e *Engine) freeSlot(src netip.Addr) {
	src = src.Unmap()
	e.devMu.Lock()
	decrement(e.devices, src)
	e.devMu.Unlock()
	e.slots.Add(-1)
}

func newBuffer(size int) func() any {
	return func() any {
		b := make([]byte, size)
		return &b
	}
}

func (e *Engine) getBuf() *[]byte      { return e.bufs.Get().(*[]byte) }
func (e *Engine) putBuf(b *[]byte)     { e.bufs.Put(b) }
func (e *Engine) getHeldBuf() *[]byte  { return e.heldBufs.Get().(*[]byte) }
func (e *Engine) putHeldBuf(b *[]byte) { e.heldBufs.Put(b) }

// addrPort converts a netstack address; IPv4 stays a 4-byte address.
func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip, port)
}
