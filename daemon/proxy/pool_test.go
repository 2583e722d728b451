package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeDialer answers dials from a switchable state.
type fakeDialer struct {
	mu     sync.Mutex
	fail   error // returned by every dial while set
	noUDP  bool
	dialed []netip.AddrPort
}

func (f *fakeDialer) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeDialer) dial(dst netip.AddrPort) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dialed = append(f.dialed, dst)
	if f.fail != nil {
		return nil, f.fail
	}
	a, b := net.Pipe()
	go func() { _, _ = b.Read(make([]byte, 1)); b.Close() }()
	return a, nil
}

func (f *fakeDialer) DialTCP(_ context.Context, dst netip.AddrPort) (net.Conn, error) {
	return f.dial(dst)
}

func (f *fakeDialer) DialUDP(_ context.Context, dst netip.AddrPort) (net.Conn, error) {
	if f.noUDP {
		return nil, fmt.Errorf("fake: %w", errors.ErrUnsupported)
	}
	return f.dial(dst)
}

var probeDst = netip.MustParseAddrPort("149.154.167.51:443")

func newTestPool(prios ...int) (*Pool, []*fakeDialer) {
	var members []Member
	var fakes []*fakeDialer
	for i, prio := range prios {
		f := &fakeDialer{}
		fakes = append(fakes, f)
		members = append(members, Member{Name: "p" + strconv.Itoa(i), Type: TypeSOCKS5, Server: "198.51.100.6:" + strconv.Itoa(1000+i), Priority: prio, Dialer: f})
	}
	p := NewPool(members, probeDst, time.Hour, nil)
	p.ProbeSettle = -1
	return p, fakes
}

func activeName(p *Pool) string {
	for _, st := range p.Status() {
		if st.Active {
			return st.Name
		}
	}
	return ""
}

func TestPoolChoosesByPriorityAndFailsOver(t *testing.T) {
	p, f := newTestPool(20, 10, 30) // p1 first, then p0, then p2
	var changes []bool
	p.OnChange = func(healthy bool) { changes = append(changes, healthy) }
	ctx := testCtx(t)

	// Before any probe every member counts as healthy.
	if got := activeName(p); got != "p1" {
		t.Fatalf("active before probes = %q, want p1", got)
	}
	if _, err := p.DialTCP(ctx, testDst); err != nil || len(f[1].dialed) != 1 {
		t.Fatalf("dial: %v, p1 dials %d", err, len(f[1].dialed))
	}

	f[1].set(errors.New("connection refused"))
	probeTimes(ctx, p, unhealthyAfter)
	st := p.Status()
	if st[0].Name != "p1" || st[0].Healthy || st[0].LastError != "connection refused" || st[0].LastCheck.IsZero() {
		t.Fatalf("p1 status %+v", st[0])
	}
	if got := activeName(p); got != "p0" {
		t.Fatalf("active = %q, want p0", got)
	}
	if _, err := p.DialTCP(ctx, testDst); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); st[1].Flows != 1 || st[0].Flows != 1 {
		t.Fatalf("flows p1=%d p0=%d, want 1 1", st[0].Flows, st[1].Flows)
	}

	for _, d := range f {
		d.set(errors.New("down"))
	}
	probeTimes(ctx, p, unhealthyAfter)
	tried := len(f[1].dialed)
	if _, err := p.DialTCP(ctx, testDst); !errors.Is(err, ErrNoHealthyProxy) {
		t.Fatalf("dial with none healthy = %v", err)
	}
	if len(f[1].dialed) != tried+1 {
		t.Fatal("with none healthy the best member was not tried before giving up")
	}
	if _, err := p.DialUDP(ctx, testDst); !errors.Is(err, ErrNoHealthyProxy) {
		t.Fatalf("udp dial with none healthy = %v", err)
	}
	if p.AnyHealthy() || activeName(p) != "" {
		t.Fatal("pool still claims health")
	}

	f[2].set(nil)
	p.ProbeAll(ctx)
	if got := activeName(p); got != "p2" {
		t.Fatalf("active = %q, want p2", got)
	}
	f[1].set(nil)
	p.ProbeAll(ctx)
	if got := activeName(p); got != "p1" {
		t.Fatalf("after fail-back active = %q, want p1", got)
	}
	if fmt.Sprint(changes) != "[false true]" {
		t.Fatalf("OnChange calls %v, want [false true]", changes)
	}
}

func probeTimes(ctx context.Context, p *Pool, n int) {
	for range n {
		p.ProbeAll(ctx)
	}
}

// Health is the proxy's: a proxy-level answer is alive, one failed probe is
// not a verdict, running out of descriptors is none at all; a refusal of the
// credentials or the key, or an answer that is not the target's, is certain.
func TestPoolHealthJudgesTheProxy(t *testing.T) {
	emfile := fmt.Errorf("socks5 198.51.100.6:1000: dial tcp: socket: %w", syscall.EMFILE)
	reply := fmt.Errorf("socks5 198.51.100.6:1000: %w", &ReplyError{Dst: probeDst, Reason: "host unreachable from proxy (reply 4)"})
	tests := []struct {
		name      string
		probes    []error
		wantState string
		wantErr   string
	}{
		{"unknown until judged", nil, StateUnknown, ""},
		{"one failure is not a verdict", []error{errors.New("i/o timeout")}, StateUnknown, "i/o timeout"},
		{"two failures are not a verdict", []error{errors.New("timeout"), errors.New("timeout")}, StateUnknown, "timeout"},
		{"three failures in a row are", []error{errors.New("a"), errors.New("b"), errors.New("c")}, StateUnhealthy, "c"},
		{"a success is", []error{nil}, StateHealthy, ""},
		{"a success resets the count", []error{errors.New("a"), errors.New("b"), nil, errors.New("c"), errors.New("d")}, StateHealthy, "d"},
		{"target unreachable through the proxy is alive", []error{reply, reply, reply, reply}, StateHealthy, "host unreachable"},
		{"out of descriptors is no verdict", []error{emfile, emfile, emfile, emfile}, StateUnknown, ""},
		{"a refused password is certain at once", []error{fmt.Errorf("socks5: %w", ErrAuthFailed)}, StateUnhealthy, "authentication failed"},
		{"a REALITY key not proven is certain at once", []error{nil, fmt.Errorf("vless: %w", ErrRealityAuth)}, StateUnhealthy, "REALITY"},
		{"an answer not from the target is certain at once", []error{nil, fmt.Errorf("probe: %w: answer starts \"HTTP\"", ErrNotTarget)}, StateUnhealthy, "HTTP"},
		{"a device gone is certain at once", []error{nil, fmt.Errorf("interface wg0: %w", ErrDeviceDown)}, StateUnhealthy, "device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, f := newTestPool(1)
			ctx := testCtx(t)
			for _, err := range tt.probes {
				f[0].set(err)
				p.ProbeAll(ctx)
			}
			st := p.Status()[0]
			usable := tt.wantState != StateUnhealthy
			if st.State != tt.wantState || st.Healthy != (tt.wantState == StateHealthy) || !strings.Contains(st.LastError, tt.wantErr) || p.AnyHealthy() != usable || st.Active != usable {
				t.Errorf("after %v: %+v, want state %s and error with %q", tt.probes, st, tt.wantState, tt.wantErr)
			}
		})
	}
}

// Real flows' dials are evidence too: FlowFailLimit failures in a row take a member
// out at once (the next flows go to the next member, and OnChange/OnProbed are
// called), but failures that are the destination's, the caller's or the daemon's own
// say nothing against the proxy, and a probe that passes brings it back.
func TestPoolFlowEvidence(t *testing.T) {
	refused := fmt.Errorf("socks5 198.51.100.6:1000: dial tcp 198.51.100.6:1000: connect: %w", syscall.ECONNREFUSED)
	timeout := fmt.Errorf("socks5 198.51.100.6:1000: %w", context.DeadlineExceeded)
	notOurs := []error{
		fmt.Errorf("socks5: %w", &ReplyError{Dst: testDst, Reason: "host unreachable"}),
		fmt.Errorf("socks5: read reply: %w: %w", ErrTargetTimeout, context.DeadlineExceeded),
		fmt.Errorf("socks5: dial: %w", syscall.EMFILE),
		fmt.Errorf("socks5: %w", errors.ErrUnsupported),
	}
	t.Run("refusals in a row", func(t *testing.T) {
		p, f := newTestPool(1, 2)
		probeTimes(testCtx(t), p, 1) // both healthy
		f[0].set(refused)
		for i := range FlowFailLimit {
			if activeName(p) != "p0" {
				t.Fatalf("p0 out after %d failed flows, want %d", i, FlowFailLimit)
			}
			c, err := p.DialTCP(testCtx(t), testDst) // carried by p1 meanwhile
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		if st := p.Status()[0]; st.State != StateUnhealthy || !strings.Contains(st.LastError, "3 new flows in a row failed") || activeName(p) != "p1" {
			t.Fatalf("after %d refused flows: %+v", FlowFailLimit, p.Status())
		}
		if n := len(f[0].dialed); n != 1+FlowFailLimit {
			t.Errorf("p0 dialled %d times, want the probe and %d flows", n, FlowFailLimit)
		}
		c, err := p.DialTCP(testCtx(t), testDst)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if n := len(f[0].dialed); n != 1+FlowFailLimit {
			t.Errorf("p0 dialled again after it was out (%d dials)", n)
		}
		f[0].set(nil)
		p.ProbeAll(testCtx(t))
		if activeName(p) != "p0" {
			t.Errorf("a passing probe did not bring p0 back: %+v", p.Status())
		}
	})
	t.Run("the only member out: OnChange", func(t *testing.T) {
		p, f := newTestPool(1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		changes := make(chan bool, 10)
		p.OnChange = func(h bool) { changes <- h }
		probeTimes(testCtx(t), p, 1)
		go p.Run(ctx)
		f[0].set(timeout)
		for range FlowFailLimit {
			_, _ = p.DialTCP(testCtx(t), testDst)
		}
		select {
		case h := <-changes:
			if h {
				t.Fatal("OnChange(true)")
			}
		case <-time.After(testTimeout):
			t.Fatal("no OnChange after the only member failed its flows")
		}
		if p.AnyHealthy() {
			t.Error("AnyHealthy with the only member out")
		}
	})
	t.Run("a success in between", func(t *testing.T) {
		p, f := newTestPool(1, 2)
		probeTimes(testCtx(t), p, 1)
		for range 3 {
			for range FlowFailLimit - 1 {
				f[0].set(refused)
				_, _ = p.DialTCP(testCtx(t), testDst)
			}
			f[0].set(nil)
			c, err := p.DialTCP(testCtx(t), testDst)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		if st := p.Status()[0]; st.State != StateHealthy {
			t.Errorf("failures not in a row took p0 out: %+v", st)
		}
	})
	t.Run("not the proxy's fault", func(t *testing.T) {
		for _, e := range notOurs {
			p, f := newTestPool(1, 2)
			probeTimes(testCtx(t), p, 1)
			f[0].set(e)
			for range 2 * FlowFailLimit {
				_, _ = p.DialTCP(testCtx(t), testDst)
			}
			if st := p.Status()[0]; st.State != StateHealthy {
				t.Errorf("after flows failing with %v: %+v", e, st)
			}
		}
	})
	t.Run("the caller gave up", func(t *testing.T) {
		p, f := newTestPool(1, 2)
		probeTimes(testCtx(t), p, 1)
		f[0].set(context.Canceled)
		for range 2 * FlowFailLimit {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, _ = p.DialTCP(ctx, testDst)
		}
		if st := p.Status()[0]; st.State != StateHealthy {
			t.Errorf("flows whose callers gave up took p0 out: %+v", st)
		}
	})
	t.Run("a refused password is certain", func(t *testing.T) {
		p, f := newTestPool(1, 2)
		probeTimes(testCtx(t), p, 1)
		f[0].set(fmt.Errorf("socks5: %w", ErrAuthFailed))
		_, _ = p.DialTCP(testCtx(t), testDst)
		if st := p.Status()[0]; st.State != StateUnhealthy {
			t.Errorf("one flow refused the password: %+v", st)
		}
	})
	t.Run("a REALITY key not proven counts, not certain", func(t *testing.T) {
		p, f := newTestPool(1, 2)
		probeTimes(testCtx(t), p, 1)
		f[0].set(fmt.Errorf("vless: %w", ErrRealityAuth))
		for i := range FlowFailLimit {
			if st := p.Status()[0]; st.State != StateHealthy {
				t.Fatalf("p0 out after %d flows without the REALITY proof, want %d: %+v", i, FlowFailLimit, st)
			}
			_, _ = p.DialTCP(testCtx(t), testDst)
		}
		if st := p.Status()[0]; st.State != StateUnhealthy || !strings.Contains(st.LastError, "REALITY") {
			t.Errorf("after %d flows without the REALITY proof: %+v", FlowFailLimit, st)
		}
	})
	t.Run("an interface's destination failing is not the device's", func(t *testing.T) {
		p, f := newTestPool(1, 2)
		p.members[0].Type = TypeInterface
		probeTimes(testCtx(t), p, 1)
		f[0].set(refused)
		for range 2 * FlowFailLimit {
			_, _ = p.DialTCP(testCtx(t), testDst)
		}
		if st := p.Status()[0]; st.State != StateHealthy {
			t.Errorf("refused destinations took the interface out: %+v", st)
		}
		f[0].set(fmt.Errorf("interface wg0: %w", ErrDeviceDown))
		_, _ = p.DialTCP(testCtx(t), testDst)
		if st := p.Status()[0]; st.State != StateUnhealthy {
			t.Errorf("a device gone did not take the interface out: %+v", st)
		}
	})
}

// With every member unhealthy, the best one still carries a flow it can.
func TestPoolTriesBestWhenNoneHealthy(t *testing.T) {
	p, f := newTestPool(2, 1) // p1 is the best
	ctx := testCtx(t)
	for _, d := range f {
		d.set(errors.New("probe target down"))
	}
	probeTimes(ctx, p, unhealthyAfter)
	if p.AnyHealthy() {
		t.Fatal("pool healthy after failed probes")
	}
	f[1].set(nil)
	c, err := p.DialTCP(ctx, testDst)
	if err != nil {
		t.Fatalf("dial with none healthy: %v, want it carried by the best member", err)
	}
	c.Close()
	if len(f[1].dialed) != unhealthyAfter+1 || len(f[0].dialed) != unhealthyAfter {
		t.Errorf("dials: best %d, other %d; want the best tried once more", len(f[1].dialed), len(f[0].dialed))
	}

	// Not when trying cannot tell: refused credentials, or a Shadowsocks server
	// (its dial succeeds whatever the key).
	f[1].set(fmt.Errorf("socks5: %w", ErrAuthFailed))
	p.ProbeAll(ctx)
	if _, err := p.DialTCP(ctx, testDst); !errors.Is(err, ErrNoHealthyProxy) || len(f[1].dialed) != unhealthyAfter+2 {
		t.Errorf("dial with the best refusing the credentials: %v after %d dials, want ErrNoHealthyProxy without a dial", err, len(f[1].dialed))
	}
	ss, fs := newTestPool(1)
	ss.members[0].Type = TypeShadowsocks
	fs[0].set(errors.New("no answer"))
	probeTimes(ctx, ss, unhealthyAfter)
	if _, err := ss.DialTCP(ctx, testDst); !errors.Is(err, ErrNoHealthyProxy) || len(fs[0].dialed) != unhealthyAfter {
		t.Errorf("dial with an unhealthy Shadowsocks proxy: %v, want ErrNoHealthyProxy without a dial", err)
	}
}

func TestPoolDialFallback(t *testing.T) {
	p, f := newTestPool(1, 2)
	ctx := testCtx(t)

	// A member that fails a dial between probes: the next one carries it.
	f[0].set(errors.New("i/o timeout"))
	if _, err := p.DialTCP(ctx, testDst); err != nil || len(f[1].dialed) != 1 {
		t.Fatalf("fallback dial: %v", err)
	}
	// The target refused at the proxy: another proxy would not help.
	f[0].set(&ReplyError{Dst: testDst, Reason: "connection refused by proxy (reply 5)"})
	_, err := p.DialTCP(ctx, testDst)
	var re *ReplyError
	if !errors.As(err, &re) || len(f[1].dialed) != 1 {
		t.Fatalf("reply error: %v, second member dials %d", err, len(f[1].dialed))
	}
	// Both fail: both errors are reported.
	f[0].set(errors.New("first down"))
	f[1].set(errors.New("second down"))
	_, err = p.DialTCP(ctx, testDst)
	if err == nil || !strings.Contains(err.Error(), "first down") || !strings.Contains(err.Error(), "second down") {
		t.Fatalf("error = %v", err)
	}
}

func TestPoolUDPSkipsMembersWithoutUDP(t *testing.T) {
	p, f := newTestPool(1, 2)
	f[0].noUDP = true
	c, err := p.DialUDP(testCtx(t), testDst)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if len(f[1].dialed) != 1 {
		t.Fatal("udp did not go through the second member")
	}
	f[1].noUDP = true
	if _, err := p.DialUDP(testCtx(t), testDst); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("error = %v, want ErrUnsupported", err)
	}
}

func TestPoolStatusHasNoPassword(t *testing.T) {
	spec := Spec{Name: "m", Type: TypeSOCKS5, Server: "127.0.0.1", Port: 1, Username: "u", Password: "very-secret-pw"}
	m, err := NewMember(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool([]Member{m}, probeDst, time.Hour, nil)
	p.ProbeTimeout = 2 * time.Second
	probeTimes(testCtx(t), p, unhealthyAfter) // refused: nobody listens on port 1
	st := p.Status()
	if len(st) != 1 || st[0].Healthy || st[0].Server != "127.0.0.1:1" || st[0].LastError == "" {
		t.Fatalf("status %+v", st)
	}
	if s := fmt.Sprintf("%+v", st); strings.Contains(s, spec.Password) {
		t.Fatalf("status shows the password: %s", s)
	}
}

// The probe fails when a proxy accepts and then drops the connection, as
// a Shadowsocks server does when it cannot reach the target.
func TestPoolProbeSettle(t *testing.T) {
	spec := fakeServer(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 512)) })
	spec.Type, spec.Password, spec.Cipher = TypeShadowsocks, "pw", "aes-128-gcm"
	m, err := NewMember(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool([]Member{m}, probeDst, time.Hour, nil)
	p.ProbeSettle = 5 * time.Second
	probeTimes(testCtx(t), p, unhealthyAfter)
	if st := p.Status()[0]; st.Healthy || !strings.Contains(st.LastError, "without replying") {
		t.Fatalf("status %+v", st)
	}
}

// waitFor polls cond until it holds or the test's time runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Failover and fail-back between two real microsocks servers.
func TestPoolInteropFailover(t *testing.T) {
	echo := tcpEcho(t, "127.0.0.1")
	primary, primarySrv := startMicrosocks(t, "127.0.0.1")
	secondary, secondarySrv := startMicrosocks(t, "127.0.0.1")
	primary.Name, primary.Priority = "primary", 10
	secondary.Name, secondary.Priority = "secondary", 20

	var members []Member
	for _, s := range []Spec{secondary, primary} {
		m, err := NewMember(s, Options{DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
	}
	pool := NewPool(members, echo, 200*time.Millisecond, nil)
	pool.ProbeTimeout = 2 * time.Second
	changes := make(chan bool, 10)
	pool.OnChange = func(healthy bool) { changes <- healthy }
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { pool.Run(ctx); close(runDone) }()
	t.Cleanup(func() { cancel(); <-runDone })

	status := func(name string) MemberStatus {
		for _, st := range pool.Status() {
			if st.Name == name {
				return st
			}
		}
		t.Fatalf("no member %s", name)
		return MemberStatus{}
	}
	waitFor(t, "first probes", func() bool {
		return !status("primary").LastCheck.IsZero() && !status("secondary").LastCheck.IsZero()
	})
	if activeName(pool) != "primary" {
		t.Fatalf("active %q, want primary; status %+v", activeName(pool), pool.Status())
	}

	primarySrv.stopProcess()
	waitFor(t, "failover to secondary", func() bool { return activeName(pool) == "secondary" })
	viaSecondary, err := pool.DialTCP(testCtx(t), echo)
	if err != nil {
		t.Fatalf("dial during outage: %v", err)
	}
	defer viaSecondary.Close()
	roundTripTCP(t, viaSecondary, 1000)
	if status("secondary").Flows != 1 {
		t.Fatalf("secondary flows %d", status("secondary").Flows)
	}

	primarySrv.start(primary.Address())
	waitFor(t, "fail-back to primary", func() bool { return activeName(pool) == "primary" })
	roundTripTCP(t, viaSecondary, 1000) // not cut by the switch
	c, err := pool.DialTCP(testCtx(t), echo)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if status("primary").Flows != 1 {
		t.Fatalf("primary flows %d", status("primary").Flows)
	}

	primarySrv.stopProcess()
	secondarySrv.stopProcess()
	waitChange := func(want bool) {
		t.Helper()
		select {
		case got := <-changes:
			if got != want {
				t.Fatalf("OnChange(%v), want %v", got, want)
			}
		case <-time.After(testTimeout):
			t.Fatalf("no OnChange(%v)", want)
		}
	}
	waitChange(false)
	if _, err := pool.DialTCP(testCtx(t), echo); !errors.Is(err, ErrNoHealthyProxy) {
		t.Fatalf("dial with both down = %v", err)
	}
	primarySrv.start(primary.Address())
	waitChange(true)
	if activeName(pool) != "primary" {
		t.Fatalf("active %q after recovery", activeName(pool))
	}
}

// blackHole is a dialer whose connect to the proxy server never completes: it
// starts connecting (as base.dialServer marks it) and waits for the dial's end.
type blackHole struct{ dials atomic.Int64 }

func (b *blackHole) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	b.dials.Add(1)
	if w, ok := ctx.Value(connectWatchKey{}).(*connectWatch); ok {
		w.started.Store(true)
	}
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	<-ctx.Done()
	return nil, fmt.Errorf("dial tcp: %w", os.ErrDeadlineExceeded)
}

func (b *blackHole) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return b.DialTCP(ctx, dst)
}

// A proxy that went dark is out once FlowFailLimit flows' connects stayed unanswered
// for ConnectFuse, before those dials time out; each flow's dial goes on to the next
// member when its connect times out, and the failures are counted once.
func TestPoolConnectFuse(t *testing.T) {
	dark := &blackHole{}
	spare := &fakeDialer{}
	p := NewPool([]Member{
		{Name: "dark", Type: TypeSOCKS5, Priority: 1, Dialer: dark},
		{Name: "spare", Type: TypeSOCKS5, Priority: 2, Dialer: spare},
	}, probeDst, time.Hour, nil)
	start := time.Now()
	var wg sync.WaitGroup
	for range FlowFailLimit {
		wg.Go(func() {
			c, err := p.DialTCP(testCtx(t), testDst)
			if err != nil {
				t.Errorf("dial: %v, want it carried by the spare member", err)
				return
			}
			c.Close()
		})
	}
	waitFor(t, "the dark member out", func() bool { return p.Status()[0].State == StateUnhealthy })
	if took := time.Since(start); took >= ConnectTimeout {
		t.Errorf("out after %v, not before the connect timeout %v", took, ConnectTimeout)
	}
	if st := p.Status()[0]; !strings.Contains(st.LastError, "no answer to the TCP connect") {
		t.Errorf("status %+v", st)
	}
	wg.Wait()
	p.mu.Lock()
	fails := p.members[0].flowFails
	p.mu.Unlock()
	if fails != FlowFailLimit {
		t.Errorf("%d failures counted for %d flows", fails, FlowFailLimit)
	}
}

// While nothing dials through the pool and its choice is healthy, probe rounds space
// out, doubling up to idleProbeMax intervals; a dial, or an unhealthy choice, brings
// them back to the interval.
func TestIdleProbesSpaceOut(t *testing.T) {
	d := &fakeDialer{}
	p := NewPool([]Member{{Name: "a", Type: TypeSOCKS5, Server: "198.51.100.6:1", Dialer: d}}, probeDst, 10*time.Second, nil)
	p.ProbeSettle = -1
	p.ProbeAll(testCtx(t))
	tests := []struct {
		last time.Duration
		used bool
		want time.Duration
	}{
		{10 * time.Second, false, 20 * time.Second},
		{20 * time.Second, false, 40 * time.Second},
		{40 * time.Second, false, 60 * time.Second},
		{60 * time.Second, false, 60 * time.Second},
		{60 * time.Second, true, 10 * time.Second},
	}
	for _, tt := range tests {
		if got := p.nextWait(tt.last, tt.used); got != tt.want {
			t.Errorf("nextWait(%v, used %t) = %v, want %v", tt.last, tt.used, got, tt.want)
		}
	}
	d.set(errors.New("down"))
	probeTimes(testCtx(t), p, unhealthyAfter)
	if got := p.nextWait(60*time.Second, false); got != 10*time.Second {
		t.Errorf("nextWait with the member unhealthy = %v, want the interval", got)
	}
}
