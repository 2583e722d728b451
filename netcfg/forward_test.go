package netcfg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// capturedPacket is an IPv4/UDP packet read from the TUN.
type capturedPacket struct {
	src, dst netip.AddrPort
	payload  string
}

func parseIPv4UDP(b []byte) (capturedPacket, bool) {
	if len(b) < 28 || b[0]>>4 != 4 || b[9] != 17 {
		return capturedPacket{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if len(b) < ihl+8 {
		return capturedPacket{}, false
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	udp := b[ihl:]
	return capturedPacket{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:2])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:4])),
		payload: string(udp[8:]),
	}, true
}

// buildIPv4UDP makes an IPv4/UDP packet (UDP checksum 0: none, valid for IPv4).
func buildIPv4UDP(src, dst netip.AddrPort, payload string) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	b[8] = 64
	b[9] = 17
	copy(b[12:16], src.Addr().AsSlice())
	copy(b[16:20], dst.Addr().AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i : i+2]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[10:12], ^uint16(sum))
	binary.BigEndian.PutUint16(b[20:22], src.Port())
	binary.BigEndian.PutUint16(b[22:24], dst.Port())
	binary.BigEndian.PutUint16(b[24:26], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

func listenUDPIn(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := withNetns(ns, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// waitFor calls send every 250ms until a packet with payload comes out of
// the TUN (bounded).
func waitFor(t *testing.T, captured <-chan capturedPacket, payload string, send func()) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case p := <-captured:
			if p.payload == payload {
				return
			}
		case <-tick.C:
			send()
		case <-deadline:
			t.Fatalf("packet %q never came out of the TUN", payload)
		}
	}
}

// TestForwarding: client 192.0.2.10 ─ router (this namespace, runs Apply) ─
// wan 198.51.100.80, with 203.0.113.0/24 routed towards wan. A client packet
// to a target must come out of the TUN, one to anything else must go to wan,
// and a reply written into the TUN must reach the client with rp_filter=1.
func TestForwarding(t *testing.T) {
	inNetns(t, 2, func(t *testing.T, names []string) {
		client, wan := names[1], names[2]
		for _, cmd := range [][]string{
			{"sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1"},
			{"ip", "link", "set", "lo", "up"},
			{"ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", client},
			{"ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", wan},
			{"ip", "addr", "add", "192.0.2.1/24", "dev", "lan0"},
			{"ip", "addr", "add", "198.51.100.1/24", "dev", "wan0"},
			{"ip", "link", "set", "lan0", "up"},
			{"ip", "link", "set", "wan0", "up"},
			{"ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.80"},
			{"ip", "-n", client, "link", "set", "lo", "up"},
			{"ip", "-n", client, "addr", "add", "192.0.2.10/24", "dev", "eth0"},
			{"ip", "-n", client, "link", "set", "eth0", "up"},
			{"ip", "-n", client, "route", "add", "default", "via", "192.0.2.1"},
			{"ip", "-n", wan, "link", "set", "lo", "up"},
			{"ip", "-n", wan, "addr", "add", "198.51.100.80/24", "dev", "eth0"},
			{"ip", "-n", wan, "addr", "add", "203.0.113.10/32", "dev", "lo"},
			{"ip", "-n", wan, "link", "set", "eth0", "up"},
			{"ip", "-n", wan, "route", "add", "default", "via", "198.51.100.1"},
		} {
			run(t, cmd[0], cmd[1:]...)
		}
		if v, err := readSysctl("/proc/sys/net/ipv4/conf/lan0/rp_filter"); err != nil || v != 1 {
			t.Fatalf("rp_filter on lan0 = %d, %v; want 1", v, err)
		}

		s := testSpec()
		s.LANIfaces = []string{"lan0"}
		s.IPv6 = false
		s.Targets6 = nil
		s.RouterTraffic = true
		n := apply(t, s)

		captured := make(chan capturedPacket, 64)
		var mustNotTunnel atomic.Value
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			buf := make([]byte, 65536)
			for {
				k, err := n.TUN().Read(buf)
				if err != nil {
					if !errors.Is(err, os.ErrClosed) {
						t.Errorf("read tun: %v", err)
					}
					return
				}
				if p, ok := parseIPv4UDP(buf[:k]); ok {
					if p.payload == "direct" || p.payload == "bypass" {
						mustNotTunnel.Store(p.payload) // checked at the end
					}
					select {
					case captured <- p:
					default:
					}
				}
			}
		}()
		t.Cleanup(func() { _ = n.Close(); <-readerDone })

		clientConn := listenUDPIn(t, client, "192.0.2.10:0")
		wanConn := listenUDPIn(t, wan, "198.51.100.80:0")
		clientAddr := netip.MustParseAddrPort(clientConn.LocalAddr().String())
		target := netip.MustParseAddrPort("203.0.113.10:5353")
		direct := netip.MustParseAddrPort(wanConn.LocalAddr().String())

		// waitTUN resends until the wanted packet comes out of the TUN.
		waitTUN := func(payload string) capturedPacket {
			t.Helper()
			deadline := time.After(20 * time.Second)
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case p := <-captured:
					if p.payload == payload {
						return p
					}
				case <-tick.C:
					if _, err := clientConn.WriteToUDPAddrPort([]byte(payload), target); err != nil {
						t.Fatalf("client send: %v", err)
					}
				case <-deadline:
					t.Fatalf("packet %q to %s never came out of the TUN", payload, target)
				}
			}
		}
		p := waitTUN("to-target")
		if p.src != clientAddr || p.dst != target {
			t.Fatalf("TUN got %v -> %v, want %v -> %v", p.src, p.dst, clientAddr, target)
		}

		// Non-target traffic goes straight to wan.
		buf := make([]byte, 2048)
		must(t, wanConn.SetReadDeadline(time.Now().Add(20*time.Second)))
		if _, err := clientConn.WriteToUDPAddrPort([]byte("direct"), direct); err != nil {
			t.Fatal(err)
		}
		for got := ""; got != "direct"; {
			k, err := wanConn.Read(buf)
			if err != nil {
				t.Fatalf("direct packet never reached wan: %v", err)
			}
			got = string(buf[:k])
		}

		// Replies written into the TUN reach the client despite rp_filter=1.
		reply := func(payload string) {
			if _, err := n.TUN().Write(buildIPv4UDP(target, clientAddr, payload)); err != nil {
				t.Fatalf("write reply into tun: %v", err)
			}
		}
		// readReply waits for payload, resending it; a packet "blocked" is a failure.
		readReply := func(payload string) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				reply(payload)
				must(t, clientConn.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
				k, from, err := clientConn.ReadFromUDPAddrPort(buf)
				if err != nil {
					continue
				}
				got := string(buf[:k])
				if strings.HasPrefix(got, "blocked") {
					t.Fatalf("reply %q passed reverse-path filtering without src_valid_mark", got)
				}
				if got == payload {
					if from != target {
						t.Fatalf("reply from %v, want %v", from, target)
					}
					return
				}
			}
			t.Fatalf("reply %q written into the TUN never reached the client", payload)
		}
		readReply("reply")

		// Control: without src_valid_mark on the TUN, rp_filter drops the
		// same replies (the reverse path of 203.0.113.10 is then wan0).
		svm := "/proc/sys/net/ipv4/conf/" + s.TunName + "/src_valid_mark"
		must(t, writeSysctl(svm, "0"))
		for range 5 {
			reply("blocked")
		}
		must(t, clientConn.SetReadDeadline(time.Now().Add(2*time.Second)))
		if k, _, err := clientConn.ReadFromUDPAddrPort(buf); err == nil {
			t.Fatalf("client got %q with src_valid_mark=0: rp_filter is not in play", buf[:k])
		}
		must(t, writeSysctl(svm, "1"))
		readReply("reply-again")

		// Without the "iif <tun> lookup main" rule the marked reply would be
		// routed by table T straight back into the TUN.
		prio := fmt.Sprint(s.RulePriority - 2)
		run(t, "ip", "rule", "del", "priority", prio)
		waitFor(t, captured, "looped", func() { reply("looped") })
		run(t, "ip", "rule", "add", "priority", prio, "iif", s.TunName, "lookup", "main")
		readReply("reply-after-rule")

		// The router's own traffic: marked into the TUN, except sockets with
		// the bypass mark, which go the main table's way (to wan).
		wanTarget := listenUDPIn(t, wan, "203.0.113.10:0")
		wanTargetAddr := netip.MustParseAddrPort(wanTarget.LocalAddr().String())
		local, err := net.ListenUDP("udp4", nil)
		must(t, err)
		defer local.Close()
		waitFor(t, captured, "from-router", func() {
			_, _ = local.WriteToUDPAddrPort([]byte("from-router"), wanTargetAddr)
		})
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(s.BypassMark))
			})
			return errors.Join(err, serr)
		}}
		bypassConn, err := lc.ListenPacket(context.Background(), "udp4", "")
		must(t, err)
		defer bypassConn.Close()
		must(t, wanTarget.SetReadDeadline(time.Now().Add(20*time.Second)))
		if _, err := bypassConn.WriteTo([]byte("bypass"), net.UDPAddrFromAddrPort(wanTargetAddr)); err != nil {
			t.Fatal(err)
		}
		for got := ""; got != "bypass"; {
			k, err := wanTarget.Read(buf)
			if err != nil {
				t.Fatalf("bypass-marked packet never reached wan: %v", err)
			}
			got = string(buf[:k])
		}

		// Let late TUN packets in, then check that neither the direct nor
		// the bypass-marked packet ever came out of the TUN.
		time.Sleep(500 * time.Millisecond)
		if v := mustNotTunnel.Load(); v != nil {
			t.Errorf("packet %q came out of the TUN", v)
		}
	})
}
