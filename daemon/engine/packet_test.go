package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// naiveSum is RFC 1071's one's-complement sum, 16 bits at a time, as a
// reference for the engine's faster one.
func naiveSum(parts ...[]byte) uint16 {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// pseudoHeader is the UDP pseudo-header (RFC 768, RFC 8200 §8.1).
func pseudoHeader(src, dst netip.Addr, ulen int) []byte {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	if src.Is4() {
		return append(b, 0, protoUDP, byte(ulen>>8), byte(ulen))
	}
	return append(b, 0, 0, byte(ulen>>8), byte(ulen), 0, 0, 0, protoUDP)
}

func TestBuildUDPChecksumsAndRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		src, dst string
		size     int
	}{
		{"IPv4 empty", "203.0.113.5:53", "192.0.2.1:40000", 0},
		{"IPv4 odd length", "203.0.113.5:443", "192.0.2.1:40001", 1001},
		{"IPv4 over the MTU (the kernel fragments)", "203.0.113.5:443", "192.0.2.1:40001", 4000},
		{"IPv6", "[2001:db8:3::5]:3478", "[2001:db8:1::1]:50000", 1200},
		{"IPv6 odd", "[2001:db8:3::5]:3478", "[2001:db8:1::1]:50000", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := netip.MustParseAddrPort(tt.src), netip.MustParseAddrPort(tt.dst)
			buf := make([]byte, headroom+tt.size)
			payload := buf[headroom:]
			for i := range payload {
				payload[i] = byte(i*7 + 3)
			}
			want := bytes.Clone(payload)
			pkt := buildUDP(buf, tt.size, src, dst, 0x1234)

			gsrc, gdst, gpayload, err := parseUDP(pkt)
			if err != nil {
				t.Fatalf("parse what buildUDP built: %v", err)
			}
			if gsrc != src || gdst != dst || !bytes.Equal(gpayload, want) {
				t.Fatalf("round trip: %v -> %v, %d bytes; want %v -> %v, %d bytes", gsrc, gdst, len(gpayload), src, dst, len(want))
			}
			hlen := ipv6HeaderLen
			if src.Addr().Is4() {
				hlen = ipv4HeaderLen
				if got := naiveSum(pkt[:hlen]); got != 0xffff {
					t.Errorf("IPv4 header checksum does not verify: sum %#x", got)
				}
				if pkt[6]&0x40 != 0 {
					t.Error("DF set: the kernel could not fragment an answer larger than the LAN's MTU")
				}
			}
			udp := pkt[hlen:]
			if got := naiveSum(pseudoHeader(src.Addr(), dst.Addr(), len(udp)), udp); got != 0xffff {
				t.Errorf("UDP checksum does not verify: sum %#x", got)
			}
			if binary.BigEndian.Uint16(udp[6:8]) == 0 {
				t.Error("UDP checksum 0 (none): IPv6 requires one")
			}
		})
	}
}

// ipv4 builds an IPv4 packet around l4 with the given header options and protocol.
func ipv4(proto byte, options []byte, frag uint16, l4 []byte) []byte {
	ihl := ipv4HeaderLen + len(options)
	b := make([]byte, ihl+len(l4))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:8], frag)
	b[8], b[9] = 64, proto
	copy(b[12:16], []byte{192, 0, 2, 1})
	copy(b[16:20], []byte{203, 0, 113, 9})
	copy(b[20:], options)
	copy(b[ihl:], l4)
	return b
}

// ipv6 builds an IPv6 packet: next is the first next-header, ext the extension
// headers (already chained), l4 the rest.
func ipv6(next byte, ext, l4 []byte) []byte {
	b := make([]byte, ipv6HeaderLen+len(ext)+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(len(ext)+len(l4)))
	b[6], b[7] = next, 64
	b[8], b[23] = 0x20, 1
	b[24], b[39] = 0x20, 9
	copy(b[40:], ext)
	copy(b[40+len(ext):], l4)
	return b
}

func udpHeader(sport, dport uint16, payload string) []byte {
	b := make([]byte, udpHeaderLen+len(payload))
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	binary.BigEndian.PutUint16(b[4:6], uint16(len(b)))
	copy(b[8:], payload)
	return b
}

func TestParseUDP(t *testing.T) {
	good := udpHeader(40000, 443, "hello")
	shortLen := bytes.Clone(good)
	binary.BigEndian.PutUint16(shortLen[4:6], 7) // below the header's own size
	longLen := bytes.Clone(good)
	binary.BigEndian.PutUint16(longLen[4:6], 100)
	trailing := ipv4(protoUDP, nil, 0, append(bytes.Clone(good), "junk-after-the-datagram"...))
	binary.BigEndian.PutUint16(trailing[2:4], uint16(ipv4HeaderLen+len(good)))
	hopByHop := []byte{protoUDP, 0, 1, 4, 0, 0, 0, 0} // next UDP, 8 bytes, PadN
	fragHdr := []byte{protoUDP, 0, 0, 1, 0, 0, 0, 1}

	tests := []struct {
		name    string
		pkt     []byte
		payload string
		err     error
	}{
		{"IPv4", ipv4(protoUDP, nil, 0, good), "hello", nil},
		{"IPv4 with options", ipv4(protoUDP, []byte{1, 1, 1, 0}, 0, good), "hello", nil},
		{"IPv4 DF set is fine", ipv4(protoUDP, nil, 0x4000, good), "hello", nil},
		{"IPv4 padding after the total length is ignored", trailing, "hello", nil},
		{"IPv4 first fragment (MF)", ipv4(protoUDP, nil, 0x2000, good), "", errFragment},
		{"IPv4 later fragment", ipv4(protoUDP, nil, 0x0010, good), "", errFragment},
		{"IPv4 TCP", ipv4(6, nil, 0, good), "", errNotUDP},
		{"IPv4 UDP length below 8", ipv4(protoUDP, nil, 0, shortLen), "", errMalformed},
		{"IPv4 UDP length beyond the packet", ipv4(protoUDP, nil, 0, longLen), "", errMalformed},
		{"IPv4 truncated header", ipv4(protoUDP, nil, 0, good)[:12], "", errMalformed},
		{"IPv4 no room for UDP", ipv4(protoUDP, nil, 0, good[:4]), "", errMalformed},
		{"IPv6", ipv6(protoUDP, nil, good), "hello", nil},
		{"IPv6 hop-by-hop", ipv6(0, hopByHop, good), "hello", nil},
		{"IPv6 fragment", ipv6(44, fragHdr, good), "", errFragment},
		{"IPv6 ICMPv6", ipv6(58, nil, good), "", errNotUDP},
		{"IPv6 truncated extension", ipv6(0, hopByHop[:4], nil), "", errMalformed},
		{"IPv6 payload length beyond the packet", ipv6(protoUDP, nil, good)[:45], "", errMalformed},
		{"version 5", append([]byte{0x50}, make([]byte, 40)...), "", errMalformed},
		{"empty", nil, "", errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, payload, err := parseUDP(tt.pkt)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if string(payload) != tt.payload {
				t.Errorf("payload = %q, want %q", payload, tt.payload)
			}
		})
	}
}

func TestSumMatchesNaive(t *testing.T) {
	b := make([]byte, 1501)
	for i := range b {
		b[i] = byte(i*31 + 7)
	}
	for _, n := range []int{0, 1, 2, 3, 4, 5, 7, 8, 64, 1499, 1500, 1501} {
		if got, want := fold(sumBytes(b[:n], 0)), naiveSum(b[:n]); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Errorf("sum of %d bytes = %#x, want %#x", n, got, want)
		}
	}
}

// FuzzParseUDP: any packet from the TUN parses without panicking, and a payload
// it returns lies within the packet and agrees with the UDP length field.
func FuzzParseUDP(f *testing.F) {
	f.Add(ipv4(protoUDP, nil, 0, udpHeader(1, 2, "x")))
	f.Add(ipv6(0, []byte{protoUDP, 0, 1, 4, 0, 0, 0, 0}, udpHeader(1, 2, "yy")))
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		src, dst, payload, err := parseUDP(pkt)
		if err != nil {
			return
		}
		if !src.IsValid() || !dst.IsValid() || src.Addr().Is4() != dst.Addr().Is4() {
			t.Fatalf("addresses %v -> %v", src, dst)
		}
		if len(payload) > len(pkt)-udpHeaderLen {
			t.Fatalf("payload of %d bytes from a %d-byte packet", len(payload), len(pkt))
		}
	})
}
