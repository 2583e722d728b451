package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// Flood sizes (issue 15): one LAN device sprays this many new UDP flows and TCP SYNs at
// the target ranges over floodFor, while a second device keeps its messenger flows.
const (
	floodUDPFlows = 20000
	floodSYNs     = 10000
	floodFor      = 20 * time.Second
	// memoryLimit is the flood test's memory_limit: a 128 MB router's share.
	memoryLimit = 32 << 20
)

// TestFlood: one LAN client floods the target ranges with new UDP flows and TCP SYNs
// while a second LAN client keeps a long TCP flow, opens new ones and runs a UDP echo.
// The daemon stays up and under memory_limit, the second client's flows keep working,
// and status shows the per-device cap refusing the flooder's flows.
func TestFlood(t *testing.T) {
	n, dante := newNetWithDante(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client2, err := n.AddSecondClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conf := danteConf(dante).render()
	conf = strings.Replace(conf, fmt.Sprintf("list lan_iface '%s'\n", testnet.LANIface),
		fmt.Sprintf("list lan_iface '%s'\n\tlist lan_iface '%s'\n", testnet.LANIface, testnet.LAN2Iface), 1)
	conf = strings.Replace(conf, "option log_level 'debug'", "option log_level 'info'\n\toption memory_limit '32M'", 1)
	d := &daemon{t: t, n: n, conf: filepath.Join(n.Dir, "tgtun.conf"), socket: filepath.Join(n.Dir, "tgtun.sock")}
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	waitProxiesProbedHealthy(t, d)

	echo := netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort)
	longFlow, err := n.Dial(ctx, client2, "tcp", echo.String())
	if err != nil {
		t.Fatalf("second client's long TCP flow: %v", err)
	}
	defer longFlow.Close()
	long := &echoConn{Conn: longFlow}
	if err := long.roundTrip(); err != nil {
		t.Fatalf("second client's long TCP flow before the flood: %v", err)
	}
	udpFlow, err := n.Dial(ctx, client2, "udp", echo.String())
	if err != nil {
		t.Fatalf("second client's UDP flow: %v", err)
	}
	defer udpFlow.Close()
	if !udpEcho(udpFlow, "before") {
		t.Fatal("second client's UDP echo before the flood got no answer")
	}

	var peakRSS atomic.Int64
	done := make(chan struct{})
	var watcher, flooder sync.WaitGroup
	watcher.Go(func() { watchRSS(d.proc.Pid(), done, &peakRSS) })
	var floodErr error
	flooder.Go(func() { floodErr = flood(n, floodFor) })

	// The second client while the flood runs: a round trip on its long flow, a UDP echo and
	// a new TCP flow every 500 ms. Each must work; a UDP datagram may be lost under the
	// flood, so the echo counts its answers.
	var rounds, newFlows, udpAsked, udpAnswered int
	var problems []string
	end := time.Now().Add(floodFor)
	for i := 0; time.Now().Before(end); i++ {
		rounds++
		if err := patientRoundTrip(long); err != nil {
			problems = append(problems, "long TCP flow: "+err.Error())
		}
		udpAsked++
		if udpEcho(udpFlow, "during "+strconv.Itoa(i)) {
			udpAnswered++
		}
		newFlows++
		if err := newTCPFlow(ctx, n, client2, echo, i); err != nil {
			problems = append(problems, fmt.Sprintf("new TCP flow %d: %v", i, err))
		}
		time.Sleep(500 * time.Millisecond)
	}
	flooder.Wait()
	close(done)
	watcher.Wait()
	if floodErr != nil {
		t.Fatalf("flood: %v", floodErr)
	}

	if exited, err := d.proc.Exited(); exited {
		t.Fatalf("tgtun exited during the flood: %v\n%s", err, lastLines(d.proc.Output(), 40))
	}
	st := d.status()
	t.Logf("after the flood: flows %+v; peak VmRSS %.1f MiB; second client: %d rounds, %d new flows, %d/%d UDP echoes",
		st.Flows, float64(peakRSS.Load())/(1<<20), rounds, newFlows, udpAnswered, udpAsked)
	if len(problems) > 0 {
		t.Errorf("the second client's flows failed during the flood (%d of %d rounds):\n%s", len(problems), rounds, strings.Join(problems, "\n"))
	}
	if udpAnswered < udpAsked/2 {
		t.Errorf("second client's UDP echo: %d of %d answered during the flood", udpAnswered, udpAsked)
	}
	if peak := peakRSS.Load(); peak >= memoryLimit {
		t.Errorf("tgtun's VmRSS reached %.1f MiB, over memory_limit %d MiB", float64(peak)/(1<<20), memoryLimit>>20)
	}
	f := st.Flows
	if f.RefusedPerDevice == 0 || f.PerDeviceLimit != st.MaxFlows/4 || len(f.TopDevices) == 0 || f.TopDevices[0].Address != testnet.ClientV4.String() {
		t.Errorf("status flows %+v: want the per-device cap (max_flows %d / 4) refusing the flooder %s, shown on top", f, st.MaxFlows, testnet.ClientV4)
	}
	// After the flood, the second client still works, and the daemon still answers.
	if err := patientRoundTrip(long); err != nil {
		t.Errorf("long TCP flow after the flood: %v", err)
	}
	if err := newTCPFlow(ctx, n, client2, echo, -1); err != nil {
		t.Errorf("new TCP flow after the flood: %v", err)
	}
	d.stop()
}

// udpEcho sends msg and reports whether it came back within 2 s.
func udpEcho(c net.Conn, msg string) bool {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return false
	}
	buf := make([]byte, 256)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == msg {
			return true
		}
	}
}

// newTCPFlow opens a TCP flow from ns to dst and makes one round trip.
func newTCPFlow(ctx context.Context, n *testnet.Net, ns string, dst netip.AddrPort, i int) error {
	dctx, cancel := context.WithTimeout(ctx, floodPatience)
	defer cancel()
	c, err := n.Dial(dctx, ns, "tcp", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	return patientRoundTrip(&echoConn{Conn: c, round: i})
}

// floodPatience bounds each step of the second client during the flood: the proxy
// and this shared 2-core machine are loaded by the flood too, so a step may be slow;
// it must not fail.
const floodPatience = 20 * time.Second

// patientRoundTrip is echoConn.roundTrip with floodPatience for the answer.
func patientRoundTrip(e *echoConn) error {
	e.round++
	msg := []byte(fmt.Sprintf("round %d\n", e.round))
	_ = e.SetDeadline(time.Now().Add(floodPatience))
	if _, err := e.Write(msg); err != nil {
		return fmt.Errorf("round %d: write: %w", e.round, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(e, got); err != nil {
		return fmt.Errorf("round %d: read: %w", e.round, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("round %d: echo %q", e.round, got)
	}
	return nil
}

// watchRSS records the highest VmRSS of pid until done.
func watchRSS(pid int, done <-chan struct{}, peak *atomic.Int64) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if rss := vmRSS(pid); rss > peak.Load() {
			peak.Store(rss)
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

func vmRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// flood sprays, from the first client, floodUDPFlows datagrams each from a new source
// port to the messenger's UDP echo (each a new flow that stays up, as a client opening a
// flow per datagram does), and floodSYNs TCP SYNs each from a new source port to
// addresses of the target range where nothing listens, evenly over dur. Both are crafted
// on raw sockets: no descriptor per flow, and the client's kernel keeps no state for them.
func flood(n *testnet.Net, dur time.Duration) error {
	return sprayFlows(n, 1024, floodUDPFlows, floodSYNs, dur)
}

// sprayFlows sends udpFlows datagrams, from source ports firstPort on, and syns SYNs
// as flood describes, over dur.
func sprayFlows(n *testnet.Net, firstPort, udpFlows, syns int, dur time.Duration) error {
	rawUDP, err := n.ListenPacket(n.Client, "ip4:udp", testnet.ClientV4.String())
	if err != nil {
		return err
	}
	rawTCP, err := n.ListenPacket(n.Client, "ip4:tcp", testnet.ClientV4.String())
	if err != nil {
		return err
	}
	echo := &net.IPAddr{IP: testnet.MsgrV4.AsSlice()}
	const ticks = 200
	tick := dur / ticks
	udpSent, synSent := 0, 0
	start := time.Now()
	for k := range ticks {
		for ; udpSent < udpFlows*(k+1)/ticks; udpSent++ {
			if _, err := rawUDP.WriteTo(udpDatagram(uint16(firstPort+udpSent), testnet.EchoPort, "flood"), echo); err != nil {
				return fmt.Errorf("UDP datagram %d: %w", udpSent, err)
			}
		}
		for ; synSent < syns*(k+1)/ticks; synSent++ {
			dst := floodTarget(synSent)
			seg := synSegment(testnet.ClientV4, dst, uint16(20000+synSent%40000))
			if _, err := rawTCP.WriteTo(seg, &net.IPAddr{IP: dst.Addr().AsSlice()}); err != nil {
				return fmt.Errorf("SYN %d: %w", synSent, err)
			}
		}
		time.Sleep(time.Until(start.Add(time.Duration(k+1) * tick)))
	}
	return nil
}

// TestOwnUDPDoesNotLockOutTCP (issue 24): a device that filled its share of the flows
// with UDP (20 000 datagrams from fresh source ports in 10 s: a QUIC-heavy app, a scan)
// gets its next TCP connection to a messenger at once: it takes the place of the
// device's least recently active UDP flow, as conntrack's early drop does. It used to be
// reset until the UDP flows expired a minute later.
func TestOwnUDPDoesNotLockOutTCP(t *testing.T) {
	n, dante := newNetWithDante(t)
	d := startTgtun(t, n, danteConf(dante))
	waitProxiesProbedHealthy(t, d)
	if err := sprayFlows(n, 1024, 20000, 0, 10*time.Second); err != nil {
		t.Fatalf("UDP spray: %v", err)
	}
	// Dials the device had in flight when a datagram came were refused too: top the
	// flows up from fresh ports until they fill its share, as on the router that
	// reported it (total_udp 1024).
	port := 1024 + 20000
	eventually(t, 60*time.Second, "the device's share full of UDP flows", func() error {
		f := d.status().Flows
		if len(f.TopDevices) > 0 && f.TopDevices[0].Flows >= f.PerDeviceLimit && f.ActiveTCP == 0 {
			return nil
		}
		if err := sprayFlows(n, port, 200, 0, 200*time.Millisecond); err != nil {
			t.Fatalf("UDP spray: %v", err)
		}
		port += 200
		return fmt.Errorf("flows %+v: want the device's share (%d) full of UDP flows", f, f.PerDeviceLimit)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	echo := netip.AddrPortFrom(testnet.MsgrV4, testnet.EchoPort)
	for i := range 3 {
		if err := newTCPFlow(ctx, n, n.Client, echo, i); err != nil {
			t.Fatalf("the device's TCP flow %d after its UDP filled its share: %v\nflows %+v", i, err, d.status().Flows)
		}
	}
	// The first came with the share full; later ones may find a slot an expired or
	// evicted UDP flow left.
	if f := d.status().Flows; f.Evicted < 1 {
		t.Errorf("flows %+v: want the TCP flow to have taken the place of a UDP flow", f)
	}
	d.stop()
}

// udpDatagram builds a UDP datagram; IPv4 allows the checksum to be left out (0).
func udpDatagram(srcPort, dstPort uint16, payload string) []byte {
	d := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(d[0:], srcPort)
	binary.BigEndian.PutUint16(d[2:], dstPort)
	binary.BigEndian.PutUint16(d[4:], uint16(8+len(payload)))
	return append(d, payload...)
}

// floodTarget is the i-th SYN's destination: 203.0.113.20-249 (the messenger server is
// .10, nothing is at these), ports from 10000.
func floodTarget(i int) netip.AddrPort {
	ip := netip.AddrFrom4([4]byte{203, 0, 113, byte(20 + i%230)})
	return netip.AddrPortFrom(ip, uint16(10000+i/230))
}

// synSegment builds a TCP SYN (20-byte header, no options) with its checksum.
func synSegment(src netip.Addr, dst netip.AddrPort, srcPort uint16) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], srcPort)
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint32(seg[4:], uint32(srcPort)*7919)
	seg[12] = 5 << 4 // data offset
	seg[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(seg[14:], 64240)
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	s4, d4 := src.As4(), dst.Addr().As4()
	add(s4[:])
	add(d4[:])
	add([]byte{0, 6, 0, byte(len(seg))})
	add(seg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(seg[16:], ^uint16(sum))
	return seg
}
