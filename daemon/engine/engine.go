// Package engine relays the flows the kernel hands tgtun through a proxy Dialer.
//
// TCP stays on the kernel's stack: nftables' tproxy gives every new LAN
// connection to a target to a transparent listener of the engine (Listen),
// which accepts it, dials the proxy and relays socket to socket (splice(2)
// when the proxy conn is a plain socket, a pooled buffer otherwise). UDP comes
// through the TUN device: the engine parses the IP and UDP headers itself,
// relays each (client, destination) pair as one proxy conn and writes the
// answers back as IP packets.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
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
	// 576 with IPv4Only). Answers larger than it are dropped (IPv6) or left
	// to the kernel to fragment (IPv4).
	MTU int
	// IPv4Only: no IPv6 listener, IPv6 packets on the TUN are dropped
	// (config ipv6 '0'), which lets the MTU go down to 576.
	IPv4Only bool
	// MaxFlows caps concurrent TCP plus UDP flows, TCP flows still dialling
	// included (default 4096). Beyond it TCP connections are reset and UDP
	// datagrams dropped; both count as Rejected.
	MaxFlows int
	// MaxFlowsPerDevice caps the flows of one client (source) address
	// (default MaxFlows/4, at least 1), so that one device cannot take
	// every slot. At its cap a device's new flow takes the place of its
	// least recently active UDP flow (a new UDP flow only of one idle for
	// UDPEvictIdle); only when that is not possible is it refused, counted in
	// RefusedPerDevice.
	MaxFlowsPerDevice int
	// MaxHandshakes caps proxy dials in progress, for TCP and for UDP each
	// (default 256); a device may hold a quarter of them. Beyond either a TCP
	// connection waits for a dial (at most DialTimeout) and a datagram is
	// dropped (dial.go).
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
	// BufferSize is the buffer a busy flow borrows from a pool while data
	// moves in one direction and cannot be spliced (default 64 KiB; an idle
	// flow holds none).
	BufferSize int
	// HeldBufferSize is the buffer a flow holds for its whole life when
	// nothing can tell it that data is waiting: a proxy conn that can only be
	// read blocking (default 16 KiB).
	HeldBufferSize int
	// MemoryLimit is the daemon's memory budget in bytes (its GOMEMLIMIT), 0 for
	// none: new flows are refused, and the least recently active ones closed,
	// while the flows hold too much of it (memory.go).
	MemoryLimit int64
}

// MinMTUv4 is the lowest MTU the engine takes with IPv4Only: what every IPv4 host must
// accept (RFC 791).
const MinMTUv4 = 576

// minMTUv6 is the lowest MTU an IPv6 link may have (RFC 8200).
const minMTUv6 = 1280

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

// UDPEvictIdle is how long a UDP flow must have been silent before a new UDP
// flow of the same device, at the device's cap, may take its place. A new TCP
// flow may take the place of any of the device's UDP flows.
const UDPEvictIdle = 10 * time.Second

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
	Evicted          uint64        `json:"evicted"`            // UDP flows closed to make room for a new flow of the same device
	RefusedMemory    uint64        `json:"refused_memory"`     // flows refused while the flows held too much of the memory budget
	Shed             uint64        `json:"shed"`               // flows closed, least recently active first, to stay within the memory budget
	TopDevices       []DeviceFlows `json:"top_devices"`        // the devices holding most flows, up to 5
}

// DeviceFlows is how many flows one client address holds.
type DeviceFlows struct {
	Address string `json:"address"`
	Flows   int    `json:"flows"`
}

// topDevicesShown is how many devices Stats lists.
const topDevicesShown = 5

// Engine relays the TCP connections of its listeners and the UDP flows of a
// TUN device through a Dialer.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	bufs     sync.Pool // *[]byte of cfg.BufferSize
	heldBufs sync.Pool // *[]byte of cfg.HeldBufferSize
	pipes    pipePool

	dialer  atomic.Pointer[dialerRef]
	started atomic.Bool

	slots                                    atomic.Int64 // flows holding a MaxFlows slot
	activeTCP, activeUDP                     atomic.Int64
	totalTCP, totalUDP, rejected, droppedUDP atomic.Uint64
	bytesUp, bytesDown                       atomic.Uint64
	refusedPerDevice, evicted                atomic.Uint64
	refusedMemory, shed                      atomic.Uint64
	mem                                      *memGuard

	devMu   sync.Mutex
	devices map[netip.Addr]*device // guarded by devMu: what each source address holds

	poller *readPoller // set by Run

	tcpDialing atomic.Int64 // TCP proxy dials in progress, at most MaxHandshakes
	udpDialing atomic.Int64 // UDP proxy dials in progress, at most MaxHandshakes
	waiting    int          // guarded by devMu: TCP flows in the devices' pending queues
	runCtx     context.Context
	udpBackoff *dialBackoff
	udp        *udpTable // set by Run
	ipID       atomic.Uint32

	// done is closed when Run has returned or the TUN reader died; err says why.
	done     chan struct{}
	doneOnce sync.Once
	errMu    sync.Mutex
	err      error // guarded by errMu
	// readerDied is closed when the TUN reader or a listener stops by itself.
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

// device is what one source address holds: its slots, its dials in flight,
// and its UDP flows (the candidates for eviction at its cap).
type device struct {
	flows   int
	dialing int                   // proxy dials in flight, TCP and UDP
	udp     map[*udpFlow]struct{} // the candidates for eviction
	pending []pendingDial         // TCP flows waiting for a dial (dial.go)
}

// dialerRef boxes the interface so it can be swapped atomically.
type dialerRef struct{ Dialer }

// New validates cfg, fills its defaults and returns an engine ready to Run. It
// opens nothing and starts nothing: config validation calls it too.
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
	e := &Engine{cfg: cfg, log: log, flows: make(map[flow]struct{}), devices: make(map[netip.Addr]*device),
		done: make(chan struct{}), readerDied: make(chan struct{})}
	e.bufs.New = newBuffer(cfg.BufferSize)
	e.heldBufs.New = newBuffer(cfg.HeldBufferSize)
	e.udpBackoff = newDialBackoff(cfg.UDPDialBackoff, 32*cfg.UDPDialBackoff, cfg.MaxFlows)
	e.mem = newMemGuard(cfg.MemoryLimit)
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
	minMTU := minMTUv6
	if c.IPv4Only {
		minMTU = MinMTUv4
	}
	switch {
	case c.MTU < minMTU || c.MTU > 65535:
		return fmt.Errorf("engine: MTU %d out of range %d..65535", c.MTU, minMTU)
	case c.MaxFlowsPerDevice < 0 || c.MaxFlowsPerDevice > c.MaxFlows:
		return fmt.Errorf("engine: MaxFlowsPerDevice %d out of range 1..%d (MaxFlows)", c.MaxFlowsPerDevice, c.MaxFlows)
	case c.MaxFlows < 0, c.MaxHandshakes < 0, c.MemoryLimit < 0, c.DialTimeout < 0, c.TCPIdleTimeout < 0, c.UDPIdleTimeout < 0, c.UDPDialBackoff < 0:
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
		Evicted:          e.evicted.Load(),
		RefusedMemory:    e.refusedMemory.Load(),
		Shed:             e.shed.Load(),
		TopDevices:       e.topDevices(topDevicesShown),
	}
}

// topDevices lists the n devices holding most flows, most first.
func (e *Engine) topDevices(n int) []DeviceFlows {
	e.devMu.Lock()
	out := make([]DeviceFlows, 0, len(e.devices))
	for a, d := range e.devices {
		if d.flows > 0 {
			out = append(out, DeviceFlows{Address: a.String(), Flows: d.flows})
		}
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

// readerExited records that the TUN reader (or a listener) stopped by itself.
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

// Run serves the TCP connections of ln and the UDP packets of tunFD (an
// IFF_TUN|IFF_NO_PI device without a virtio_net_hdr) until ctx is done. Then
// it resets every flow, waits for all of its goroutines and returns nil. Run
// closes ln; it sets tunFD non-blocking but does not close it: the caller owns
// it and may close it once Run has returned. An engine runs once.
func (e *Engine) Run(ctx context.Context, tunFD int, ln *Listener) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("engine: Run called twice")
	}
	if ln == nil {
		return errors.New("engine: no listener")
	}
	poller, err := newReadPoller(e.log)
	if err != nil {
		ln.Close()
		e.finish(err)
		return fmt.Errorf("engine: %w", err)
	}
	e.poller = poller
	tun, err := newTUNDevice(tunFD)
	if err != nil {
		ln.Close()
		poller.close()
		err = fmt.Errorf("engine: %w", err)
		e.finish(err)
		return err
	}
	e.udp = newUDPTable(e, tun)
	e.runCtx = ctx
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.readTUN(ctx, tun)
	}()
	for _, l := range ln.listeners() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.acceptLoop(ctx, l)
		}()
	}
	e.log.Info("engine serving", "tcp_port", ln.Port(), "mtu", e.cfg.MTU, "max_flows", e.cfg.MaxFlows, "max_flows_per_device", e.cfg.MaxFlowsPerDevice)
	err = nil
	select {
	case <-ctx.Done():
	case <-e.readerDied:
		err = e.Err()
		e.log.Error("engine cannot serve", "err", err)
		e.doneOnce.Do(func() { close(e.done) })
	}
	stopping := time.Now()
	flows := e.slots.Load()
	ln.Close()
	tun.close()
	e.shutdown()
	wg.Wait()
	e.poller.close()
	e.pipes.drain()
	e.log.Info("engine stopped", "flows", flows, "took", time.Since(stopping).Round(time.Millisecond))
	e.finish(err)
	return err
}

// shutdown resets every flow (clients see a RST at once rather than a
// silent hang) and waits for their goroutines.
func (e *Engine) shutdown() {
	e.mu.Lock()
	e.closing = true
	flows := make([]flow, 0, len(e.flows))
	for f := range e.flows {
		flows = append(flows, f)
	}
	e.mu.Unlock()
	// Each abort is a few system calls (the RST, two closes); a router with 5000 flows
	// must stop within procd's term_timeout, so every core takes a share.
	var wg sync.WaitGroup
	n := runtime.GOMAXPROCS(0)
	for i := range n {
		wg.Go(func() {
			for _, f := range flows[i*len(flows)/n : (i+1)*len(flows)/n] {
				f.abort()
			}
		})
	}
	wg.Wait()
	e.dropPending()
	e.flowsWG.Wait()
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

// reserveSlot takes one of the MaxFlows slots for a flow from src. At src's
// MaxFlowsPerDevice it takes the place of one of src's UDP flows instead
// (tcp: the least recently active one; UDP: the least recently active one
// silent for UDPEvictIdle), which it closes; otherwise it refuses.
func (e *Engine) reserveSlot(src netip.Addr, tcp bool) bool {
	src = src.Unmap()
	e.devMu.Lock()
	d := e.devices[src]
	if d == nil {
		d = &device{}
		e.devices[src] = d
	}
	if d.flows >= e.cfg.MaxFlowsPerDevice {
		victim := d.evictable(tcp, monoNow())
		if victim == nil {
			e.dropIfEmpty(src, d)
			e.devMu.Unlock()
			e.refusedPerDevice.Add(1)
			return false
		}
		// The victim's slot passes to the new flow: it must not give it back.
		delete(d.udp, victim)
		victim.slotTaken.Store(true)
		e.devMu.Unlock()
		e.evicted.Add(1)
		victim.abort()
		return true
	}
	if e.slots.Add(1) > int64(e.cfg.MaxFlows) {
		e.slots.Add(-1)
		e.dropIfEmpty(src, d)
		e.devMu.Unlock()
		return false
	}
	d.flows++
	e.devMu.Unlock()
	return true
}

// evictable picks the UDP flow a new flow may replace, or nil.
func (d *device) evictable(tcp bool, now int64) *udpFlow {
	var best *udpFlow
	var bestLast int64
	for f := range d.udp {
		last := f.idle.last.Load()
		if best == nil || last < bestLast {
			best, bestLast = f, last
		}
	}
	if best == nil || (!tcp && time.Duration(now-bestLast) < UDPEvictIdle) {
		return nil
	}
	return best
}

// dropIfEmpty forgets a device that holds nothing. Called with devMu held.
func (e *Engine) dropIfEmpty(src netip.Addr, d *device) {
	if d.flows == 0 && d.dialing == 0 && len(d.udp) == 0 && len(d.pending) == 0 {
		delete(e.devices, src)
	}
}

// freeSlot gives back a slot reserveSlot(src) took.
func (e *Engine) freeSlot(src netip.Addr) {
	src = src.Unmap()
	e.devMu.Lock()
	if d := e.devices[src]; d != nil {
		d.flows--
		e.dropIfEmpty(src, d)
	}
	e.devMu.Unlock()
	e.slots.Add(-1)
}

// trackUDP and untrackUDP keep a device's UDP flows, the candidates for eviction.
func (e *Engine) trackUDP(f *udpFlow) {
	src := f.src.Addr().Unmap()
	e.devMu.Lock()
	if d := e.devices[src]; d != nil {
		if d.udp == nil {
			d.udp = make(map[*udpFlow]struct{})
		}
		d.udp[f] = struct{}{}
	}
	e.devMu.Unlock()
}

func (e *Engine) untrackUDP(f *udpFlow) {
	src := f.src.Addr().Unmap()
	e.devMu.Lock()
	if d := e.devices[src]; d != nil {
		delete(d.udp, f)
	}
	e.devMu.Unlock()
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
