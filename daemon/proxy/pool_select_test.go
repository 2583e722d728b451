package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func memberNamed(t *testing.T, p *Pool, name string) *poolMember {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no member %s", name)
	return nil
}

// TestSelectLatency feeds probe results (ms per member, -1 a failed probe) round by
// round and checks the member new flows go to.
func TestSelectLatency(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name   string
		prios  []int
		rounds [][]int // per round, per member
		want   []string
	}{
		{name: "the fastest wins", prios: []int{10, 10, 10},
			rounds: [][]int{{50, 20, 30}}, want: []string{"p1"}},
		{name: "hysteresis: a little faster is not enough", prios: []int{10, 10, 10},
			rounds: [][]int{{50, 20, 30}, {50, 26, 19}, {50, 27, 19}},
			want:   []string{"p1", "p1", "p1"}},
		{name: "clearly faster takes over", prios: []int{10, 10, 10},
			rounds: [][]int{{50, 20, 30}, {50, 80, 30}, {50, 80, 30}},
			want:   []string{"p1", "p1", "p2"}},
		{name: "the active one fails", prios: []int{10, 10, 10},
			rounds: [][]int{{50, 20, 30}, {50, -1, 30}, {50, -1, 30}, {50, -1, 30}},
			want:   []string{"p1", "p1", "p1", "p2"}},
		{name: "a lower priority wins whatever its latency", prios: []int{5, 10, 10},
			rounds: [][]int{{300, 20, 30}}, want: []string{"p0"}},
		{name: "latency among the best priority once it fails", prios: []int{5, 10, 10},
			rounds: [][]int{{300, 20, 30}, {-1, 20, 30}, {-1, 20, 30}, {-1, 40, 30}},
			want:   []string{"p0", "p0", "p0", "p1"}},
		{name: "a jittery member does not flap", prios: []int{10, 10},
			rounds: [][]int{{30, 32}, {34, 28}, {29, 33}, {35, 27}, {30, 31}},
			want:   []string{"p0", "p0", "p0", "p0", "p0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newTestPool(tt.prios...)
			p.Select = SelectLatency
			for i, round := range tt.rounds {
				for j, lat := range round {
					m := memberNamed(t, p, "p"+strconv.Itoa(j))
					if lat < 0 {
						p.record(m, 0, errors.New("probe failed"))
					} else {
						p.record(m, ms(lat), nil)
					}
				}
				p.mu.Lock()
				p.reselectLocked()
				p.mu.Unlock()
				if got := activeName(p); got != tt.want[i] {
					t.Fatalf("round %d: active %s, want %s (status %+v)", i, got, tt.want[i], p.Status())
				}
			}
		})
	}
}

func TestSelectLatencyDialsActiveFirst(t *testing.T) {
	p, f := newTestPool(10, 10, 10)
	p.Select = SelectLatency
	for i, lat := range []int{40, 30, 10} {
		p.record(memberNamed(t, p, "p"+strconv.Itoa(i)), time.Duration(lat)*time.Millisecond, nil)
	}
	p.mu.Lock()
	p.reselectLocked()
	p.mu.Unlock()
	if _, err := p.DialTCP(testCtx(t), testDst); err != nil || len(f[2].dialed) != 1 || len(f[0].dialed) != 0 {
		t.Fatalf("dial: %v; dials %d %d %d", err, len(f[0].dialed), len(f[1].dialed), len(f[2].dialed))
	}
	// The active one refuses this flow: the next in order carries it.
	f[2].set(errors.New("refused"))
	if _, err := p.DialTCP(testCtx(t), testDst); err != nil || len(f[0].dialed) != 1 {
		t.Fatalf("fallback dial: %v", err)
	}
}

func TestSetMembersKeepsState(t *testing.T) {
	mk := func(name, id string, prio int, d Dialer) Member {
		return Member{Name: name, ID: id, Type: TypeSOCKS5, Server: "198.51.100.6:1", Priority: prio, Dialer: d}
	}
	a, b, c := &fakeDialer{}, &fakeDialer{}, &fakeDialer{}
	p := NewPool([]Member{mk("a", "1", 10, a), mk("b", "2", 10, b)}, probeDst, time.Hour, nil)
	p.ProbeSettle = -1
	b.set(errors.New("down"))
	probeTimes(testCtx(t), p, unhealthyAfter)
	if _, err := p.DialTCP(testCtx(t), testDst); err != nil {
		t.Fatal(err)
	}
	// a keeps its state (same name and id) and moves behind c by priority; b changed
	// its settings: a fresh member, unknown until probed; a removed one is gone.
	nb := &fakeDialer{}
	p.SetMembers([]Member{mk("b", "2-changed", 10, nb), mk("a", "1", 20, &fakeDialer{}), mk("c", "3", 15, c)})
	st := p.Status()
	if len(st) != 3 || st[0].Name != "b" || st[1].Name != "c" || st[2].Name != "a" {
		t.Fatalf("order %+v", st)
	}
	if st[0].State != StateUnknown || st[0].LastError != "" || st[2].Flows != 1 || st[2].LastCheck.IsZero() || memberNamed(t, p, "a").Dialer != a {
		t.Fatalf("state not kept or not reset: %+v", st)
	}
	if !p.AnyHealthy() {
		t.Fatal("AnyHealthy after SetMembers")
	}
	p.SetMembers(nil)
	if p.AnyHealthy() || len(p.Status()) != 0 {
		t.Fatal("an empty pool")
	}
	if _, err := p.DialTCP(testCtx(t), testDst); !errors.Is(err, ErrNoHealthyProxy) {
		t.Fatalf("dial through an empty pool: %v", err)
	}
}

// TestProbeSchedule: a large pool is probed in turns, the active member every round.
func TestProbeSchedule(t *testing.T) {
	prios := make([]int, 30)
	for i := range prios {
		prios[i] = 10
	}
	prios[0] = 5 // a configured proxy preferred over the subscription's
	p, f := newTestPool(prios...)
	f[0].set(errors.New("down"))
	probeTimes(testCtx(t), p, unhealthyAfter) // all probed: p0 unhealthy, p1 active
	for _, d := range f {
		d.mu.Lock()
		d.dialed = nil
		d.mu.Unlock()
	}
	rounds := 0
	for covered := false; !covered; rounds++ {
		p.probeRound(testCtx(t))
		covered = true
		for _, d := range f {
			d.mu.Lock()
			covered = covered && len(d.dialed) > 0
			d.mu.Unlock()
		}
		if rounds > 10 {
			t.Fatal("the schedule never probes every member")
		}
	}
	if want := (30 - 2 + standbyPerRound - 1) / standbyPerRound; rounds != want {
		t.Errorf("every member probed after %d rounds, want %d", rounds, want)
	}
	if n := len(f[1].dialed); n != rounds {
		t.Errorf("the active member was probed %d times in %d rounds", n, rounds)
	}
	if n := len(f[0].dialed); n != rounds {
		t.Errorf("the preferred (unhealthy) member was probed %d times in %d rounds", n, rounds)
	}
	standby := 0
	for _, d := range f[2:] {
		standby += len(d.dialed)
		if len(d.dialed) > 2 {
			t.Errorf("a standby member was probed %d times in %d rounds", len(d.dialed), rounds)
		}
	}
	if standby != rounds*standbyPerRound {
		t.Errorf("%d standby probes in %d rounds, want %d a round", standby, rounds, standbyPerRound)
	}
}

// blockingDialer holds every dial until released, counting those in flight.
type blockingDialer struct {
	inFlight, peak *atomic.Int64
	release        chan struct{}
}

func (b blockingDialer) DialTCP(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	for {
		old := b.peak.Load()
		if n <= old || b.peak.CompareAndSwap(old, n) {
			break
		}
	}
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil, errors.New("released")
}

func (b blockingDialer) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return b.DialTCP(ctx, dst)
}

func TestProbeAllBoundsParallelProbes(t *testing.T) {
	var inFlight, peak atomic.Int64
	release := make(chan struct{})
	var members []Member
	for i := range 100 {
		members = append(members, Member{Name: "m" + strconv.Itoa(i), Type: TypeSOCKS5, Priority: 10,
			Dialer: blockingDialer{&inFlight, &peak, release}})
	}
	p := NewPool(members, probeDst, time.Hour, nil)
	p.ProbeTimeout = time.Minute
	var wg sync.WaitGroup
	wg.Go(func() { p.ProbeAll(testCtx(t)) })
	deadline := time.Now().Add(testTimeout)
	for inFlight.Load() < probeParallel && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// Let them go one by one: never more than probeParallel at once.
	for range 100 {
		release <- struct{}{}
	}
	wg.Wait()
	if got := peak.Load(); got != probeParallel {
		t.Fatalf("%d probes in flight at once, want %d", got, probeParallel)
	}
}
