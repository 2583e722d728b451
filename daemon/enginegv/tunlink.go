package enginegv

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// vnetTUN is a link endpoint for a TUN device opened with IFF_VNET_HDR:
// every packet read or written is prefixed by a struct virtio_net_hdr. With
// it one read or write moves a TCP segment of up to 64 KiB (the kernel
// segments or coalesces it) and checksums are left to whoever needs them,
// instead of one MTU-sized packet per syscall.
//
// gVisor's fdbased endpoint cannot be used for this: it handles the header
// only for socket descriptors (a TUN fd is not one), puts csum_start 14
// bytes too far (it assumes an Ethernet header), writes it little-endian
// where the kernel expects native order for a legacy header (mips routers
// are big-endian), and ignores the header of inbound packets (so a packet
// with a partial checksum would be dropped as corrupt).
// The measured gain is noted at newTUNLink.
//
// Reads wait in the Go runtime's poller rather than in a blocking ppoll (as
// fdbased does): a goroutine the netstack wakes for a packet (a TCP processor,
// a new flow's handler) otherwise sat on the reading thread's processor until the
// runtime took it back from the blocked system call.
type vnetTUN struct {
	fd     int
	mtu    uint32
	reader *os.File // a duplicate of fd on the runtime poller; closing it stops the read loop
	// onExit is told why the read loop ended by itself (the device was deleted).
	onExit func(error)

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher // guarded by mu
	wg         sync.WaitGroup          // the read loop
}

// virtio_net_hdr (linux/virtio_net.h), legacy layout: 10 bytes in the
// host's byte order.
const (
	vnetHdrSize = 10

	vnetFlagNeedsCsum = 1 // checksum field holds only the pseudo-header sum

	vnetGSONone  = 0
	vnetGSOTCPv4 = 1
	vnetGSOTCPv6 = 4
)

// vnetGSOMaxSize is the largest TCP segment handed to the kernel: the IPv4
// total length (16 bits) must still hold the largest IP and TCP headers.
const vnetGSOMaxSize = 0xffff - header.IPv4MaximumHeaderSize

// vnetReadSize holds the largest packet the kernel may write: a 64 KiB GSO
// segment plus the header.
const vnetReadSize = vnetHdrSize + 0xffff

var (
	_ stack.LinkEndpoint = (*vnetTUN)(nil)
	_ stack.GSOEndpoint  = (*vnetTUN)(nil)
)

func newVnetTUN(fd int, mtu uint32, onExit func(error)) (*vnetTUN, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("set TUN fd non-blocking: %w", err)
	}
	// A duplicate, so that stopping the reader does not close the caller's fd.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate TUN fd: %w", err)
	}
	return &vnetTUN{fd: fd, mtu: mtu, reader: os.NewFile(uintptr(dup), "tun"), onExit: onExit}, nil
}

// hasVnetHdr reports whether the TUN device behind fd prefixes its packets
// with a virtio_net_hdr. A descriptor that is not a TUN device has none.
func hasVnetHdr(fd int) bool {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return false
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return false
	}
	return ifr.Uint16()&unix.IFF_VNET_HDR != 0
}

func (e *vnetTUN) MTU() uint32                                  { return e.mtu }
func (e *vnetTUN) SetMTU(mtu uint32)                            { e.mtu = mtu }
func (e *vnetTUN) MaxHeaderLength() uint16                      { return 0 }
func (e *vnetTUN) LinkAddress() tcpip.LinkAddress               { return "" }
func (e *vnetTUN) SetLinkAddress(tcpip.LinkAddress)             {}
func (e *vnetTUN) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (e *vnetTUN) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (e *vnetTUN) AddHeader(*stack.PacketBuffer)                {}
func (e *vnetTUN) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (e *vnetTUN) Close()                                       { e.reader.Close() }
func (e *vnetTUN) SetOnCloseAction(func())                      {}
func (e *vnetTUN) Wait()                                        { e.wg.Wait() }

// GSOMaxSize implements stack.GSOEndpoint.
func (e *vnetTUN) GSOMaxSize() uint32 { return vnetGSOMaxSize }

// SupportedGSO implements stack.GSOEndpoint: the kernel segments.
func (e *vnetTUN) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

func (e *vnetTUN) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Attach starts the read loop; Attach(nil) (NIC removal) stops it and waits.
func (e *vnetTUN) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	if d == nil {
		if e.dispatcher != nil {
			e.dispatcher = nil
			e.mu.Unlock()
			e.reader.Close()
			e.wg.Wait()
			return
		}
		e.mu.Unlock()
		return
	}
	defer e.mu.Unlock()
	if e.dispatcher == nil {
		e.dispatcher = d
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.readLoop(d)
		}()
	}
}

func (e *vnetTUN) readLoop(d stack.NetworkDispatcher) {
	raw, err := e.reader.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, vnetReadSize)
	for {
		var n int
		var errno error
		if err := raw.Read(func(fd uintptr) bool {
			n, errno = unix.Read(int(fd), buf)
			return errno != unix.EAGAIN
		}); err != nil {
			return // stopped
		}
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EINVAL:
			// The kernel dropped one packet it could not describe in
			// a virtio_net_hdr; the next one may be fine.
			continue
		case errno != nil:
			// The device is gone (a detached TUN reads EFAULT, a deleted
			// one EBADFD): stop, as fdbased does, rather than spin, and
			// say so: the engine cannot serve any more.
			e.onExit(fmt.Errorf("read TUN: %w", errno))
			return
		}
		if n <= vnetHdrSize {
			continue
		}
		e.deliver(d, buf[:n])
	}
}

// deliver hands one packet (virtio_net_hdr first) to the netstack. A GSO
// packet goes up whole: the netstack takes a TCP segment of any size that
// fits its window, so it need not be split.
func (e *vnetTUN) deliver(d stack.NetworkDispatcher, b []byte) {
	flags := b[0]
	pkt := b[vnetHdrSize:]
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		return
	}
	if flags&vnetFlagNeedsCsum != 0 {
		// The NIC overrides a packet's RXChecksumValidated with its
		// capability, so the netstack verifies every checksum; finish
		// this partial one first, as the kernel would for a real NIC.
		start := int(binary.NativeEndian.Uint16(b[6:]))
		at := start + int(binary.NativeEndian.Uint16(b[8:]))
		if at+2 > len(pkt) {
			return
		}
		sum := ^checksum.Checksum(pkt[start:], 0)
		if sum == 0 {
			sum = 0xffff // 0 would mean "no checksum" to UDP
		}
		binary.BigEndian.PutUint16(pkt[at:], sum)
	}
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	d.DeliverNetworkPacket(proto, p)
	p.DecRef()
}

// WritePackets writes each packet with its virtio_net_hdr. A TCP segment
// larger than its MSS is marked for the kernel to segment; its checksum is
// left partial (the netstack wrote only the pseudo-header sum) for the
// kernel or the NIC to finish.
func (e *vnetTUN) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if err := e.writePacket(pkt); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (e *vnetTUN) writePacket(pkt *stack.PacketBuffer) tcpip.Error {
	var hdr [vnetHdrSize]byte
	if gso := pkt.GSOOptions; gso.Type == stack.GSOTCPv4 || gso.Type == stack.GSOTCPv6 {
		hdrLen := uint16(pkt.HeaderSize())
		binary.NativeEndian.PutUint16(hdr[2:], hdrLen)
		if gso.NeedsCsum {
			hdr[0] = vnetFlagNeedsCsum
			binary.NativeEndian.PutUint16(hdr[6:], gso.L3HdrLen)
			binary.NativeEndian.PutUint16(hdr[8:], gso.CsumOffset)
		}
		if pkt.Data().Size() > int(gso.MSS) {
			hdr[1] = vnetGSOTCPv4
			if gso.Type == stack.GSOTCPv6 {
				hdr[1] = vnetGSOTCPv6
			}
			binary.NativeEndian.PutUint16(hdr[4:], gso.MSS)
		}
	}
	views := pkt.AsSlices()
	var arr [8]unix.Iovec
	iovs := arr[:0]
	iovs = rawfile.AppendIovecFromBytes(iovs, hdr[:], rawfile.MaxIovs)
	for _, v := range views {
		iovs = rawfile.AppendIovecFromBytes(iovs, v, rawfile.MaxIovs)
	}
	if errno := rawfile.NonBlockingWriteIovec(e.fd, iovs); errno != 0 {
		return tcpip.TranslateErrno(errno)
	}
	return nil
}

// gatedLink keeps a link endpoint from reading the TUN until open: the stack
// attaches it when the NIC is created, but the NIC is enabled and accepts every
// destination only later, and whatever is read in between is dropped. A client
// that sent before the engine was ready (a datagram queued in the TUN) would
// lose it; queued, it is read once the NIC takes it.
type gatedLink struct {
	stack.LinkEndpoint

	mu         sync.Mutex
	opened     bool                    // guarded by mu
	dispatcher stack.NetworkDispatcher // guarded by mu; attached at open
}

var _ stack.GSOEndpoint = (*gatedLink)(nil)

func (g *gatedLink) Attach(d stack.NetworkDispatcher) {
	g.mu.Lock()
	if !g.opened {
		g.dispatcher = d
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	g.LinkEndpoint.Attach(d)
}

func (g *gatedLink) IsAttached() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.opened {
		return g.dispatcher != nil
	}
	return g.LinkEndpoint.IsAttached()
}

// open starts reading with the dispatcher the stack attached.
func (g *gatedLink) open() {
	g.mu.Lock()
	g.opened = true
	d := g.dispatcher
	g.dispatcher = nil
	g.mu.Unlock()
	if d != nil {
		g.LinkEndpoint.Attach(d)
	}
}

// GSOMaxSize and SupportedGSO pass on the inner endpoint's segmentation offload:
// the stack looks for it on the endpoint it was given.
func (g *gatedLink) GSOMaxSize() uint32 {
	if gso, ok := g.LinkEndpoint.(stack.GSOEndpoint); ok {
		return gso.GSOMaxSize()
	}
	return 0
}

func (g *gatedLink) SupportedGSO() stack.SupportedGSO {
	if gso, ok := g.LinkEndpoint.(stack.GSOEndpoint); ok {
		return gso.SupportedGSO()
	}
	return stack.GSONotSupported
}
