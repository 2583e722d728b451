package engine

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// The TUN carries only the UDP of tunnelled flows (TCP goes to the listener),
// as bare IPv4 and IPv6 packets. The engine reads the addresses, ports and
// payload of each datagram and builds the answers itself.

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	// headroom is what a datagram's payload is read behind, so its IP and UDP
	// headers can be written in front of it without a copy.
	headroom = ipv6HeaderLen + udpHeaderLen

	protoUDP = 17
	ttl      = 64
)

var (
	errNotUDP    = errors.New("not UDP")
	errFragment  = errors.New("IP fragment")
	errMalformed = errors.New("malformed packet")
)

// parseUDP returns the addresses, ports and payload of a UDP datagram in an
// IPv4 or IPv6 packet. The payload aliases pkt. Fragments are refused: the
// kernel reassembled whatever it could before routing the packet here
// (conntrack defragments), and tgtun's datagrams (calls, QUIC) are small.
func parseUDP(pkt []byte) (src, dst netip.AddrPort, payload []byte, err error) {
	if len(pkt) < 1 {
		return src, dst, nil, errMalformed
	}
	var l4 []byte
	var srcIP, dstIP netip.Addr
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4HeaderLen {
			return src, dst, nil, errMalformed
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < ipv4HeaderLen || total < ihl || total > len(pkt) {
			return src, dst, nil, errMalformed
		}
		if frag := binary.BigEndian.Uint16(pkt[6:8]); frag&0x3fff != 0 { // MF or an offset
			return src, dst, nil, errFragment
		}
		if pkt[9] != protoUDP {
			return src, dst, nil, errNotUDP
		}
		srcIP = netip.AddrFrom4([4]byte(pkt[12:16]))
		dstIP = netip.AddrFrom4([4]byte(pkt[16:20]))
		l4 = pkt[ihl:total]
	case 6:
		if len(pkt) < ipv6HeaderLen {
			return src, dst, nil, errMalformed
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:6]))
		if ipv6HeaderLen+plen > len(pkt) {
			return src, dst, nil, errMalformed
		}
		srcIP = netip.AddrFrom16([16]byte(pkt[8:24]))
		dstIP = netip.AddrFrom16([16]byte(pkt[24:40]))
		next, rest := pkt[6], pkt[ipv6HeaderLen:ipv6HeaderLen+plen]
		for next != protoUDP {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 {
					return src, dst, nil, errMalformed
				}
				n := (int(rest[1]) + 1) * 8
				if n > len(rest) {
					return src, dst, nil, errMalformed
				}
				next, rest = rest[0], rest[n:]
			case 44:
				return src, dst, nil, errFragment
			default:
				return src, dst, nil, errNotUDP
			}
		}
		l4 = rest
	default:
		return src, dst, nil, errMalformed
	}
	if len(l4) < udpHeaderLen {
		return src, dst, nil, errMalformed
	}
	ulen := int(binary.BigEndian.Uint16(l4[4:6]))
	if ulen < udpHeaderLen || ulen > len(l4) {
		return src, dst, nil, errMalformed
	}
	src = netip.AddrPortFrom(srcIP, binary.BigEndian.Uint16(l4[0:2]))
	dst = netip.AddrPortFrom(dstIP, binary.BigEndian.Uint16(l4[2:4]))
	return src, dst, l4[udpHeaderLen:ulen], nil
}

// buildUDP writes the IP and UDP headers of a datagram from src to dst in
// front of its payload, which is buf[headroom:headroom+n], and returns the
// packet (a slice of buf). IPv4 packets may be fragmented by the kernel on
// their way out; src and dst are of one family.
func buildUDP(buf []byte, n int, src, dst netip.AddrPort, id uint16) []byte {
	ulen := udpHeaderLen + n
	udp := buf[headroom-udpHeaderLen : headroom+n]
	binary.BigEndian.PutUint16(udp[0:2], src.Port())
	binary.BigEndian.PutUint16(udp[2:4], dst.Port())
	binary.BigEndian.PutUint16(udp[4:6], uint16(ulen))
	udp[6], udp[7] = 0, 0
	s, d := src.Addr(), dst.Addr()
	sum := pseudoHeaderSum(s, d, ulen)
	csum := ^fold(sumBytes(udp, sum))
	if csum == 0 {
		csum = 0xffff // 0 means "no checksum" (RFC 768)
	}
	binary.BigEndian.PutUint16(udp[6:8], csum)
	if s.Is4() {
		ip := buf[headroom-udpHeaderLen-ipv4HeaderLen : headroom+n]
		ip[0], ip[1] = 0x45, 0
		binary.BigEndian.PutUint16(ip[2:4], uint16(ipv4HeaderLen+ulen))
		binary.BigEndian.PutUint16(ip[4:6], id)
		ip[6], ip[7] = 0, 0 // may fragment
		ip[8], ip[9] = ttl, protoUDP
		ip[10], ip[11] = 0, 0
		s4, d4 := s.As4(), d.As4()
		copy(ip[12:16], s4[:])
		copy(ip[16:20], d4[:])
		binary.BigEndian.PutUint16(ip[10:12], ^fold(sumBytes(ip[:ipv4HeaderLen], 0)))
		return ip
	}
	ip := buf[:headroom+n]
	ip[0], ip[1], ip[2], ip[3] = 0x60, 0, 0, 0
	binary.BigEndian.PutUint16(ip[4:6], uint16(ulen))
	ip[6], ip[7] = protoUDP, ttl
	s16, d16 := s.As16(), d.As16()
	copy(ip[8:24], s16[:])
	copy(ip[24:40], d16[:])
	return ip
}

// maxPayload is the largest datagram the engine writes back to a client of
// src's family: an IPv6 packet must fit the MTU (routers never fragment IPv6),
// an IPv4 one may be fragmented, up to IPv4's limit.
func maxPayload(mtu int, v6 bool) int {
	if v6 {
		return mtu - ipv6HeaderLen - udpHeaderLen
	}
	return 0xffff - ipv4HeaderLen - udpHeaderLen
}

func pseudoHeaderSum(src, dst netip.Addr, ulen int) uint32 {
	var sum uint32
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		sum = sumBytes(s[:], sum)
		sum = sumBytes(d[:], sum)
	} else {
		s, d := src.As16(), dst.As16()
		sum = sumBytes(s[:], sum)
		sum = sumBytes(d[:], sum)
	}
	return sum + protoUDP + uint32(ulen)
}

// sumBytes adds b to the one's-complement sum as big-endian 16-bit words
// (RFC 1071), 32 bits at a time (2^16 ≡ 1 modulo 2^16-1, so a 32-bit word adds
// as its two halves), in a 64-bit accumulator that cannot overflow for any IP
// packet; the result is partly folded, the caller folds the rest. Only the last
// piece of a sum may have an odd length.
func sumBytes(b []byte, sum uint32) uint32 {
	acc := uint64(sum)
	for len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	return uint32(acc>>16) + uint32(acc&0xffff)
}

// fold reduces a sum to 16 bits.
func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = (sum >> 16) + (sum & 0xffff)
	}
	return uint16(sum)
}
