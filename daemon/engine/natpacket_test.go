//go:build engine_nat

package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// frameSpec describes a TCP frame as the TUN hands it over.
type frameSpec struct {
	src, dst netip.AddrPort
	partial  bool   // NEEDS_CSUM, checksum field = pseudo-header sum
	gso      bool   // a segment the kernel will split (gso_type TCPv4/TCPv6)
	ipOpts   int    // IPv4 options (bytes, multiple of 4); IPv6: one destination-options header of this many bytes
	tcpOpts  int    // TCP option bytes, multiple of 4
	payload  int    // bytes
	flags    byte   // TCP flags
	seq, ack uint32 // TCP numbers
}

// refSum is RFC 1071's sum, written plainly, to check the engine's arithmetic
// against: 16-bit big-endian words, an odd byte padded, carries folded at the end.
func refSum(parts ...[]byte) uint16 {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	var s uint64
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// pseudo is the TCP pseudo-header of a segment of n bytes.
func pseudo(src, dst netip.Addr, n int) []byte {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	if src.Is4() {
		return append(b, 0, protoTCP, byte(n>>8), byte(n))
	}
	return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, protoTCP)
}

// fullTCPChecksum is the checksum a TCP segment must carry between src and dst.
func fullTCPChecksum(src, dst netip.Addr, seg []byte) uint16 {
	c := bytes.Clone(seg)
	c[tcpCsumAt], c[tcpCsumAt+1] = 0, 0
	return ^refSum(pseudo(src, dst, len(c)), c)
}

func ipv4HeaderChecksum(h []byte) uint16 {
	c := bytes.Clone(h)
	c[10], c[11] = 0, 0
	return ^refSum(c)
}

// buildFrame makes the frame s describes, with valid checksums (full, or the
// pseudo-header sum when partial), random payload from rng.
func buildFrame(s frameSpec, rng *rand.Rand) []byte {
	v6 := s.src.Addr().Is6()
	tcpLen := tcpHeaderLen + s.tcpOpts
	seg := make([]byte, tcpLen+s.payload)
	binary.BigEndian.PutUint16(seg[0:2], s.src.Port())
	binary.BigEndian.PutUint16(seg[2:4], s.dst.Port())
	binary.BigEndian.PutUint32(seg[4:8], s.seq)
	binary.BigEndian.PutUint32(seg[8:12], s.ack)
	seg[12], seg[13] = byte(tcpLen/4)<<4, s.flags
	binary.BigEndian.PutUint16(seg[14:16], uint16(rng.Uint32()))
	for i := tcpHeaderLen; i < tcpLen; i++ {
		seg[i] = 1 // NOP options
	}
	for i := tcpLen; i < len(seg); i++ {
		seg[i] = byte(rng.Uint32())
	}
	var ip []byte
	if v6 {
		ip = make([]byte, ipv6HeaderLen+s.ipOpts)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:6], uint16(s.ipOpts+len(seg)))
		ip[6], ip[7] = protoTCP, 64
		if s.ipOpts > 0 {
			ip[6] = 60 // destination options, then TCP
			ip[ipv6HeaderLen] = protoTCP
			ip[ipv6HeaderLen+1] = byte(s.ipOpts/8 - 1)
			ip[ipv6HeaderLen+2], ip[ipv6HeaderLen+3] = 1, byte(s.ipOpts-4) // PadN
		}
		copy(ip[8:24], s.src.Addr().AsSlice())
		copy(ip[24:40], s.dst.Addr().AsSlice())
	} else {
		ihl := ipv4HeaderLen + s.ipOpts
		ip = make([]byte, ihl)
		ip[0] = 0x40 | byte(ihl/4)
		binary.BigEndian.PutUint16(ip[2:4], uint16(ihl+len(seg)))
		binary.BigEndian.PutUint16(ip[4:6], uint16(rng.Uint32()))
		ip[6], ip[8], ip[9] = 0x40, 64, protoTCP
		copy(ip[12:16], s.src.Addr().AsSlice())
		copy(ip[16:20], s.dst.Addr().AsSlice())
		for i := ipv4HeaderLen; i < ihl; i++ {
			ip[i] = 1 // NOP options
		}
		binary.BigEndian.PutUint16(ip[10:12], ipv4HeaderChecksum(ip))
	}
	hdr := make([]byte, vnetHdrLen)
	if s.partial {
		hdr[0] = vnetNeedsCsum
		binary.NativeEndian.PutUint16(hdr[6:8], uint16(len(ip)))
		binary.NativeEndian.PutUint16(hdr[8:10], tcpCsumAt)
		binary.BigEndian.PutUint16(seg[tcpCsumAt:], refSum(pseudo(s.src.Addr(), s.dst.Addr(), len(seg))))
	} else {
		binary.BigEndian.PutUint16(seg[tcpCsumAt:], fullTCPChecksum(s.src.Addr(), s.dst.Addr(), seg))
	}
	if s.gso {
		hdr[1] = vnetGSOTCPv4
		if v6 {
			hdr[1] = vnetGSOTCPv6
		}
		binary.NativeEndian.PutUint16(hdr[2:4], uint16(len(ip)+tcpLen))
		binary.NativeEndian.PutUint16(hdr[4:6], 1448)
	}
	return append(append(hdr, ip...), seg...)
}

// checkFrame verifies that frame (as parsed into f) carries src → dst with
// checksums equal to the ones computed from scratch.
func checkFrame(t *testing.T, frame []byte, f tcpFrame, src, dst netip.AddrPort) {
	t.Helper()
	g, err := parseTCPFrame(frame)
	if err != nil {
		t.Fatalf("parse after rewrite: %v", err)
	}
	if g.src != src || g.dst != dst {
		t.Fatalf("after rewrite %v → %v, want %v → %v", g.src, g.dst, src, dst)
	}
	if !g.v6 {
		if got, want := binary.BigEndian.Uint16(g.ip[10:12]), ipv4HeaderChecksum(g.ip[:g.tcp]); got != want {
			t.Errorf("IPv4 header checksum %#04x, recomputed %#04x", got, want)
		}
	}
	seg := g.ip[g.tcp:]
	full := fullTCPChecksum(src.Addr(), dst.Addr(), seg)
	got := binary.BigEndian.Uint16(seg[tcpCsumAt:])
	if !f.partial {
		if got != full {
			t.Errorf("TCP checksum %#04x, recomputed %#04x", got, full)
		}
		return
	}
	// Partial: the field is the new pseudo-header's sum, and finishing it as
	// the kernel will (the sum of the segment from csum_start, field included)
	// gives the full checksum.
	if want := refSum(pseudo(src.Addr(), dst.Addr(), len(seg))); got != want {
		t.Errorf("partial TCP checksum %#04x, want the pseudo-header sum %#04x", got, want)
	}
	if finished := ^refSum(seg); finished != full {
		t.Errorf("finished partial checksum %#04x, recomputed %#04x", finished, full)
	}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestNATRewrite(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name     string
		in       frameSpec
		src, dst netip.AddrPort
	}{
		{"v4 SYN to the listener", frameSpec{src: ap("192.0.2.10:40000"), dst: ap("203.0.113.10:443"), flags: tcpSYN, tcpOpts: 20},
			ap("169.254.74.71:1024"), ap("169.254.74.70:35555")},
		{"v4 answer back to the client", frameSpec{src: ap("169.254.74.70:35555"), dst: ap("169.254.74.71:1024"), flags: tcpSYN | tcpACK, tcpOpts: 20},
			ap("203.0.113.10:443"), ap("192.0.2.10:40000")},
		{"v4 data, odd length", frameSpec{src: ap("192.0.2.10:40000"), dst: ap("203.0.113.10:443"), flags: tcpACK, payload: 1001},
			ap("169.254.74.71:65535"), ap("169.254.74.70:1")},
		{"v4 partial", frameSpec{src: ap("192.0.2.10:40000"), dst: ap("203.0.113.10:443"), flags: tcpACK, payload: 1448, partial: true},
			ap("169.254.74.71:2000"), ap("169.254.74.70:35555")},
		{"v4 partial GSO 64 KiB", frameSpec{src: ap("169.254.74.70:35555"), dst: ap("169.254.74.71:2000"), flags: tcpACK, tcpOpts: 12, payload: 65535 - 20 - 32, partial: true, gso: true},
			ap("203.0.113.10:443"), ap("192.0.2.10:40000")},
		{"v4 with IP options", frameSpec{src: ap("192.0.2.10:40000"), dst: ap("203.0.113.10:443"), flags: tcpACK | tcpFIN, ipOpts: 8, payload: 3},
			ap("169.254.74.71:1024"), ap("169.254.74.70:35555")},
		{"v4 all-ones addresses and ports", frameSpec{src: ap("255.255.255.254:65535"), dst: ap("255.255.255.255:65535"), flags: tcpACK, payload: 2},
			ap("0.0.0.1:1"), ap("0.0.0.2:2")},
		{"v4 partial to all-ones", frameSpec{src: ap("0.0.0.1:1"), dst: ap("0.0.0.2:2"), flags: tcpACK, payload: 2, partial: true},
			ap("255.255.255.254:65535"), ap("255.255.255.255:65535")},
		{"v6 SYN to the listener", frameSpec{src: ap("[2001:db8:1::10]:40000"), dst: ap("[2001:db8:3::10]:443"), flags: tcpSYN, tcpOpts: 20},
			ap("[fdfe:7467:746e::2]:1024"), ap("[fdfe:7467:746e::1]:41000")},
		{"v6 data", frameSpec{src: ap("[2001:db8:1::10]:40000"), dst: ap("[2001:db8:3::10]:443"), flags: tcpACK, payload: 777},
			ap("[fdfe:7467:746e::2]:1024"), ap("[fdfe:7467:746e::1]:41000")},
		{"v6 partial GSO 64 KiB back", frameSpec{src: ap("[fdfe:7467:746e::1]:41000"), dst: ap("[fdfe:7467:746e::2]:1024"), flags: tcpACK, tcpOpts: 12, payload: 65535 - 32, partial: true, gso: true},
			ap("[2001:db8:3::10]:443"), ap("[2001:db8:1::10]:40000")},
		{"v6 with a destination-options header, partial", frameSpec{src: ap("[2001:db8:1::10]:40000"), dst: ap("[2001:db8:3::10]:443"), flags: tcpACK, ipOpts: 16, payload: 99, partial: true},
			ap("[fdfe:7467:746e::2]:1024"), ap("[fdfe:7467:746e::1]:41000")},
		{"v6 all-ones", frameSpec{src: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535"), dst: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), flags: tcpACK, payload: 1},
			ap("[::1]:1"), ap("[::2]:2")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frame := buildFrame(tc.in, rng)
			f, err := parseTCPFrame(frame)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if f.src != tc.in.src || f.dst != tc.in.dst || f.flags != tc.in.flags || f.payload != tc.in.payload || f.partial != tc.in.partial {
				t.Fatalf("parsed %+v, want %+v", f, tc.in)
			}
			before := bytes.Clone(frame)
			f.rewrite(tc.src, tc.dst)
			checkFrame(t, frame, f, tc.src, tc.dst)
			// Only addresses, ports and checksums changed: the virtio_net_hdr
			// (GSO sizes, csum_start) stays valid as it came.
			if !bytes.Equal(frame[:vnetHdrLen], before[:vnetHdrLen]) {
				t.Error("virtio_net_hdr changed")
			}
			payloadAt := vnetHdrLen + f.tcp + tcpHeaderLen + tc.in.tcpOpts
			if !bytes.Equal(frame[payloadAt:], before[payloadAt:]) {
				t.Error("TCP options or payload changed")
			}
		})
	}
}

// TestNATRewriteRandom rewrites random frames between random addresses: the
// incremental update must agree with a full recomputation every time.
func TestNATRewriteRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	addr := func(v6 bool) netip.AddrPort {
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return netip.AddrPortFrom(netip.AddrFrom16(b), uint16(rng.Uint32()))
		}
		var b [4]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return netip.AddrPortFrom(netip.AddrFrom4(b), uint16(rng.Uint32()))
	}
	for i := range 2000 {
		v6, partial := i%2 == 1, i%4 >= 2
		s := frameSpec{src: addr(v6), dst: addr(v6), partial: partial, flags: tcpACK, payload: rng.IntN(3000), tcpOpts: 4 * rng.IntN(11)}
		frame := buildFrame(s, rng)
		f, err := parseTCPFrame(frame)
		if err != nil {
			t.Fatalf("case %d: parse: %v", i, err)
		}
		src, dst := addr(v6), addr(v6)
		f.rewrite(src, dst)
		checkFrame(t, frame, f, src, dst)
		if t.Failed() {
			t.Fatalf("case %d: %+v → %v %v", i, s, src, dst)
		}
	}
}

func TestParseTCPFrameRefuses(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	good4 := buildFrame(frameSpec{src: ap("192.0.2.10:1"), dst: ap("203.0.113.10:2"), flags: tcpACK, payload: 10, partial: true}, rng)
	good6 := buildFrame(frameSpec{src: ap("[2001:db8:1::10]:1"), dst: ap("[2001:db8:3::10]:2"), flags: tcpACK, payload: 10}, rng)
	udp := bytes.Clone(good4)
	udp[vnetHdrLen+9] = protoUDP
	tests := []struct {
		name   string
		frame  []byte
		change func(b []byte)
		want   error
	}{
		{"UDP is not the NAT's", udp, nil, errNotTCP},
		{"too short", good4[:vnetHdrLen], nil, errMalformed},
		{"IPv4 fragment", good4, func(b []byte) { b[vnetHdrLen+6] = 0x20 }, errFragment},
		{"IPv4 length past the frame", good4, func(b []byte) { b[vnetHdrLen+2] = 0xff }, errMalformed},
		{"TCP data offset past the segment", good4, func(b []byte) { b[vnetHdrLen+20+12] = 0xf0 }, errMalformed},
		{"TCP data offset below 5", good4, func(b []byte) { b[vnetHdrLen+20+12] = 0x40 }, errMalformed},
		{"partial checksum elsewhere", good4, func(b []byte) { binary.NativeEndian.PutUint16(b[8:10], 6) }, errMalformed},
		{"GSO of the other family", good4, func(b []byte) { b[1] = vnetGSOTCPv6 }, errMalformed},
		{"IPv6 fragment header", good6, func(b []byte) { b[vnetHdrLen+6] = 44 }, errFragment},
		{"IPv6 payload past the frame", good6, func(b []byte) { b[vnetHdrLen+4] = 0xff }, errMalformed},
		{"IPv6 ICMP", good6, func(b []byte) { b[vnetHdrLen+6] = 58 }, errNotTCP},
		{"version 5", good6, func(b []byte) { b[vnetHdrLen] = 0x50 }, errMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(tc.frame)
			if tc.change != nil {
				tc.change(b)
			}
			if _, err := parseTCPFrame(b); !errors.Is(err, tc.want) {
				t.Fatalf("parse: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestBuildRST(t *testing.T) {
	tests := []struct {
		name      string
		in        frameSpec
		seq, ack  uint32
		wantFlags byte
	}{
		{"to a SYN: acknowledge it", frameSpec{src: ap("192.0.2.10:40000"), dst: ap("203.0.113.10:443"), flags: tcpSYN, seq: 1000}, 0, 1001, tcpRST | tcpACK},
		{"to data with ACK: its ack is the sequence", frameSpec{src: ap("192.0.2.10:40000"), dst: ap("203.0.113.10:443"), flags: tcpACK, seq: 5, ack: 77, payload: 10, partial: true}, 77, 0, tcpRST},
		{"to a FIN without ACK", frameSpec{src: ap("[2001:db8:1::10]:40000"), dst: ap("[2001:db8:3::10]:443"), flags: tcpFIN, seq: 0xffffffff, payload: 3}, 0, 3, tcpRST | tcpACK},
		{"v6 to data with ACK", frameSpec{src: ap("[fdfe:7467:746e::1]:41000"), dst: ap("[fdfe:7467:746e::2]:1024"), flags: tcpACK | tcpFIN, seq: 9, ack: 10}, 10, 0, tcpRST},
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseTCPFrame(buildFrame(tc.in, rng))
			if err != nil {
				t.Fatal(err)
			}
			var buf [rstLen]byte
			frame := buildRST(buf[:], &f)
			r, err := parseTCPFrame(frame)
			if err != nil {
				t.Fatalf("parse the RST: %v", err)
			}
			if r.src != tc.in.dst || r.dst != tc.in.src || r.flags != tc.wantFlags || r.seq != tc.seq || r.ack != tc.ack || r.payload != 0 || r.partial {
				t.Fatalf("RST %+v, want %v → %v flags %#x seq %d ack %d", r, tc.in.dst, tc.in.src, tc.wantFlags, tc.seq, tc.ack)
			}
			checkFrame(t, frame, r, r.src, r.dst)
		})
	}
}

// FuzzParseTCPFrame feeds the NAT's parser frames a TUN could hand it: it must
// never panic or read out of bounds, and what it accepts must rewrite to a
// frame that parses back with the new addresses, its checksums still right
// if they were.
func FuzzParseTCPFrame(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, s := range []frameSpec{
		{src: ap("192.0.2.10:40000"), dst: ap("203.0.113.10:443"), flags: tcpSYN, tcpOpts: 20},
		{src: ap("192.0.2.10:40000"), dst: ap("203.0.113.10:443"), flags: tcpACK, payload: 40, partial: true, gso: true, ipOpts: 4},
		{src: ap("[2001:db8:1::10]:40000"), dst: ap("[2001:db8:3::10]:443"), flags: tcpACK, payload: 30, ipOpts: 8},
		{src: ap("[2001:db8:1::10]:40000"), dst: ap("[2001:db8:3::10]:443"), flags: tcpFIN | tcpACK, partial: true},
	} {
		f.Add(buildFrame(s, rng))
	}
	f.Add([]byte{})
	f.Add(make([]byte, vnetHdrLen+1))
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, err := parseTCPFrame(frame)
		if err != nil {
			return
		}
		if p.tcp+tcpHeaderLen > len(p.ip) || len(p.ip) > len(frame)-vnetHdrLen || p.payload < 0 {
			t.Fatalf("parsed %+v out of a %d-byte frame", p, len(frame))
		}
		valid := func(g tcpFrame) bool {
			seg := g.ip[g.tcp:]
			ok := binary.BigEndian.Uint16(seg[tcpCsumAt:]) == fullTCPChecksum(g.src.Addr(), g.dst.Addr(), seg)
			if g.partial {
				ok = binary.BigEndian.Uint16(seg[tcpCsumAt:]) == refSum(pseudo(g.src.Addr(), g.dst.Addr(), len(seg)))
			}
			if !g.v6 {
				ok = ok && binary.BigEndian.Uint16(g.ip[10:12]) == ipv4HeaderChecksum(g.ip[:g.tcp])
			}
			return ok
		}
		wasValid := valid(p)
		src, dst := ap("169.254.74.71:1024"), ap("169.254.74.70:35555")
		if p.v6 {
			src, dst = ap("[fdfe:7467:746e::2]:1024"), ap("[fdfe:7467:746e::1]:41000")
		}
		p.rewrite(src, dst)
		g, err := parseTCPFrame(frame)
		if err != nil || g.src != src || g.dst != dst {
			t.Fatalf("after rewrite: %+v, %v", g, err)
		}
		if wasValid && !valid(g) {
			t.Fatal("checksums were right before the rewrite and are wrong after it")
		}
		var buf [rstLen]byte
		if _, err := parseTCPFrame(buildRST(buf[:], &g)); err != nil {
			t.Fatalf("RST to it does not parse: %v", err)
		}
	})
}
