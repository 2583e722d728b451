//go:build engine_nat

package engine

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// The packets of the engine_nat build's TCP NAT (nat.go): frames read from a
// TUN opened with IFF_VNET_HDR and TCP offloads, so a frame is a struct
// virtio_net_hdr and one IPv4 or IPv6 packet that may be a TCP segment of up
// to 64 KiB (the kernel segments it, GSO) whose checksum may be partial.

// virtio_net_hdr (legacy layout, linux/virtio_net.h): flags, gso_type, then
// hdr_len, gso_size, csum_start, csum_offset as 16-bit words in the host's
// byte order.
const (
	vnetNeedsCsum = 1 // flags: the checksum field holds only the pseudo-header sum
	vnetGSONone   = 0
	vnetGSOTCPv4  = 1
	vnetGSOTCPv6  = 4
	vnetGSOECN    = 0x80

	protoTCP     = 6
	tcpHeaderLen = 20
	tcpCsumAt    = 16 // offset of the checksum in the TCP header

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

var errNotTCP = errors.New("not TCP")

// tcpFrame is what the NAT reads of a TCP frame, and where to rewrite it.
type tcpFrame struct {
	ip       []byte // the IP packet, behind the virtio_net_hdr, cut to its length
	v6       bool
	tcp      int  // offset of the TCP header in ip
	partial  bool // NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum
	src, dst netip.AddrPort
	flags    byte
	seq, ack uint32
	payload  int // bytes of TCP payload
}

// parseTCPFrame reads a frame from the TUN. errNotTCP means a well-formed
// frame of another protocol (the UDP path takes it); any other error a frame
// to drop. A frame whose virtio_net_hdr does not match its packet (a GSO type
// of the other family, a partial checksum anywhere but TCP's) is refused: the
// NAT could not rewrite it consistently.
func parseTCPFrame(frame []byte) (f tcpFrame, err error) {
	if len(frame) < vnetHdrLen+1 {
		return f, errMalformed
	}
	hdr, pkt := frame[:vnetHdrLen], frame[vnetHdrLen:]
	var srcIP, dstIP netip.Addr
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4HeaderLen {
			return f, errMalformed
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < ipv4HeaderLen || total < ihl || total > len(pkt) {
			return f, errMalformed
		}
		if pkt[9] != protoTCP {
			return f, errNotTCP
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or an offset
			return f, errFragment
		}
		f.ip, f.tcp = pkt[:total], ihl
		srcIP = netip.AddrFrom4([4]byte(pkt[12:16]))
		dstIP = netip.AddrFrom4([4]byte(pkt[16:20]))
		l4 = pkt[ihl:total]
	case 6:
		if len(pkt) < ipv6HeaderLen {
			return f, errMalformed
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:6]))
		if ipv6HeaderLen+plen > len(pkt) {
			return f, errMalformed
		}
		f.ip, f.v6 = pkt[:ipv6HeaderLen+plen], true
		srcIP = netip.AddrFrom16([16]byte(pkt[8:24]))
		dstIP = netip.AddrFrom16([16]byte(pkt[24:40]))
		next, off := pkt[6], ipv6HeaderLen
		for next != protoTCP {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(f.ip)-off < 8 {
					return f, errMalformed
				}
				n := (int(f.ip[off+1]) + 1) * 8
				if n > len(f.ip)-off {
					return f, errMalformed
				}
				next, off = f.ip[off], off+n
			case 44:
				return f, errFragment
			default:
				return f, errNotTCP
			}
		}
		f.tcp = off
		l4 = f.ip[off:]
	default:
		return f, errMalformed
	}
	if len(l4) < tcpHeaderLen {
		return f, errMalformed
	}
	doff := int(l4[12]>>4) * 4
	if doff < tcpHeaderLen || doff > len(l4) {
		return f, errMalformed
	}
	switch gso := hdr[1] &^ vnetGSOECN; {
	case gso == vnetGSONone:
	case gso == vnetGSOTCPv4 && !f.v6, gso == vnetGSOTCPv6 && f.v6:
	default:
		return f, errMalformed
	}
	if hdr[0]&vnetNeedsCsum != 0 {
		start := int(binary.NativeEndian.Uint16(hdr[6:8]))
		off := int(binary.NativeEndian.Uint16(hdr[8:10]))
		if start != f.tcp || off != tcpCsumAt {
			return f, errMalformed
		}
		f.partial = true
	}
	f.src = netip.AddrPortFrom(srcIP, binary.BigEndian.Uint16(l4[0:2]))
	f.dst = netip.AddrPortFrom(dstIP, binary.BigEndian.Uint16(l4[2:4]))
	f.seq = binary.BigEndian.Uint32(l4[4:8])
	f.ack = binary.BigEndian.Uint32(l4[8:12])
	f.flags = l4[13]
	f.payload = len(l4) - doff
	return f, nil
}

// rewrite gives the packet new addresses and ports (src and dst of its own
// family) and updates its checksums incrementally (RFC 1624, eqn. 3) rather
// than summing 64 KiB again: the IPv4 header's for the addresses, TCP's for
// the addresses (pseudo-header) and the ports. A partial TCP checksum (the
// pseudo-header sum alone, which whoever finishes it adds the segment to)
// changes only with the addresses, and the other way round: it holds the sum,
// not its complement.
func (f *tcpFrame) rewrite(src, dst netip.AddrPort) {
	var addrs []byte
	if f.v6 {
		addrs = f.ip[8:40]
		s, d := src.Addr().As16(), dst.Addr().As16()
		oldSum := sumBytes(addrs, 0)
		copy(addrs[0:16], s[:])
		copy(addrs[16:32], d[:])
		f.rewriteTCP(oldSum, sumBytes(addrs, 0), src.Port(), dst.Port())
	} else {
		addrs = f.ip[12:20]
		s, d := src.Addr().As4(), dst.Addr().As4()
		oldSum := sumBytes(addrs, 0)
		copy(addrs[0:4], s[:])
		copy(addrs[4:8], d[:])
		newSum := sumBytes(addrs, 0)
		binary.BigEndian.PutUint16(f.ip[10:12], csumAdjust(binary.BigEndian.Uint16(f.ip[10:12]), oldSum, newSum))
		f.rewriteTCP(oldSum, newSum, src.Port(), dst.Port())
	}
	f.src, f.dst = src, dst
}

func (f *tcpFrame) rewriteTCP(oldAddrs, newAddrs uint32, sport, dport uint16) {
	tcp := f.ip[f.tcp:]
	oldPorts := sumBytes(tcp[0:4], 0)
	binary.BigEndian.PutUint16(tcp[0:2], sport)
	binary.BigEndian.PutUint16(tcp[2:4], dport)
	csum := binary.BigEndian.Uint16(tcp[tcpCsumAt:])
	if f.partial {
		csum = ^csumAdjust(^csum, oldAddrs, newAddrs)
	} else {
		csum = csumAdjust(csum, oldAddrs+oldPorts, newAddrs+sumBytes(tcp[0:4], 0))
	}
	binary.BigEndian.PutUint16(tcp[tcpCsumAt:], csum)
}

// csumAdjust is the checksum field check (the complement of a one's-complement
// sum) after data summing to oldSum was replaced by data summing to newSum:
// ~(~check + ~old + new).
func csumAdjust(check uint16, oldSum, newSum uint32) uint16 {
	return ^fold(uint32(^check) + uint32(^fold(oldSum)) + newSum)
}

// rstLen is the largest frame buildRST writes.
const rstLen = vnetHdrLen + ipv6HeaderLen + tcpHeaderLen

// buildRST writes into buf (at least rstLen bytes) the frame of a TCP reset
// that answers f, from f's destination to its source (RFC 9293, 3.10.7.1:
// with f's ACK its sequence number is f's acknowledgment; without, it
// acknowledges f), with a full checksum and no offload, and returns it.
func buildRST(buf []byte, f *tcpFrame) []byte {
	hdr := buf[:vnetHdrLen]
	clear(hdr)
	ipLen := ipv4HeaderLen
	if f.v6 {
		ipLen = ipv6HeaderLen
	}
	frame := buf[:vnetHdrLen+ipLen+tcpHeaderLen]
	ip := frame[vnetHdrLen:]
	tcp := ip[ipLen:]
	src, dst := f.dst, f.src
	binary.BigEndian.PutUint16(tcp[0:2], src.Port())
	binary.BigEndian.PutUint16(tcp[2:4], dst.Port())
	var seq, ack uint32
	flags := byte(tcpRST)
	if f.flags&tcpACK != 0 {
		seq = f.ack
	} else {
		ack = f.seq + uint32(f.payload)
		if f.flags&tcpSYN != 0 {
			ack++
		}
		if f.flags&tcpFIN != 0 {
			ack++
		}
		flags |= tcpACK
	}
	binary.BigEndian.PutUint32(tcp[4:8], seq)
	binary.BigEndian.PutUint32(tcp[8:12], ack)
	tcp[12], tcp[13] = (tcpHeaderLen/4)<<4, flags
	clear(tcp[14:tcpHeaderLen]) // window, checksum, urgent pointer
	var sum uint32
	if f.v6 {
		ip[0], ip[1], ip[2], ip[3] = 0x60, 0, 0, 0
		binary.BigEndian.PutUint16(ip[4:6], tcpHeaderLen)
		ip[6], ip[7] = protoTCP, ttl
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		sum = sumBytes(ip[8:40], 0)
	} else {
		ip[0], ip[1] = 0x45, 0
		binary.BigEndian.PutUint16(ip[2:4], ipv4HeaderLen+tcpHeaderLen)
		ip[4], ip[5] = 0, 0
		ip[6], ip[7] = 0x40, 0 // don't fragment
		ip[8], ip[9] = ttl, protoTCP
		ip[10], ip[11] = 0, 0
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		binary.BigEndian.PutUint16(ip[10:12], ^fold(sumBytes(ip[:ipv4HeaderLen], 0)))
		sum = sumBytes(ip[12:20], 0)
	}
	sum += protoTCP + tcpHeaderLen
	binary.BigEndian.PutUint16(tcp[tcpCsumAt:], ^fold(sumBytes(tcp[:tcpHeaderLen], sum)))
	return frame
}
