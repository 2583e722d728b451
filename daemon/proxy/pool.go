package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Member is one proxy of a Pool.
type Member struct {
	Name     string
	Type     string
	Server   string // host:port, never credentials
	Priority int    // lower wins
	Dialer   Dialer
	// ID identifies the proxy's settings (a hash, never the secrets themselves):
	// SetMembers keeps the state of a member with the same Name and ID.
	ID string
}

// NewMember builds the dialer for spec and describes it for a Pool.
func NewMember(spec Spec, opts Options) (Member, error) {
	d, err := New(spec, opts)
	if err != nil {
		return Member{}, err
	}
	m := Member{Name: spec.Name, Type: spec.Type, Server: spec.Address(), Priority: spec.Priority, Dialer: d}
	switch spec.Type {
	case TypeDirect:
		m.Server = ""
	case TypeInterface:
		m.Server = spec.Interface
	}
	return m, nil
}

// Health states of a member (MemberStatus.State).
const (
	// StateUnknown: not judged yet. The pool starts (and a reload restarts) with
	// every member unknown and probes them all at once; an unknown member is used
	// after the healthy ones, so start-up stays instant.
	StateUnknown   = "unknown"
	StateHealthy   = "healthy"
	StateUnhealthy = "unhealthy"
)

// MemberStatus is a snapshot of one member's health, for status and check.
type MemberStatus struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Server string `json:"server"`
	// Healthy is State == StateHealthy.
	Healthy   bool          `json:"healthy"`
	State     string        `json:"state"`
	Latency   time.Duration `json:"latency"`
	LastError string        `json:"last_error,omitempty"`
	LastCheck time.Time     `json:"last_check"`
	Flows     uint64        `json:"flows"`  // dials carried
	Active    bool          `json:"active"` // the member new flows use now
	// Hint says what to do about LastError; the caller that knows the
	// configuration fills it in (empty while healthy).
	Hint string `json:"hint,omitempty"`
}

// Pool dials through the healthy member with the lowest priority, falling back to
// the next ones in order. Two kinds of evidence judge a member: Run's probes (every
// interval, and at once when it starts) and the outcome of the dials real flows make
// through it (FlowFailLimit new flows in a row refused or timed out take it out at
// once; the probes bring it back). Connections already dialled are never touched by
// a change of member.
type Pool struct {
	// OnChange, when set before Run, is called whenever "some member is
	// healthy or not yet judged" flips, e.g. to switch to fail_mode direct.
	// It may be called from any goroutine, never with a lock of the pool held.
	OnChange func(anyHealthy bool)
	// OnProbed, when set before Run, is called after every change of a
	// member's state and every round of probes (after OnChange), e.g. to route
	// into the active member's interface.
	OnProbed func()
	// ProbeTimeout bounds one probe; 0 means 5s or the interval if shorter.
	ProbeTimeout time.Duration
	// ProbeSettle is how long a connect probe waits after connecting for the
	// server to drop the connection (how Shadowsocks reports a wrong key
	// or unreachable target); 0 means 300ms, negative disables the wait.
	ProbeSettle time.Duration
	// Check is how probes judge a member; set before Run. The zero value
	// connects only (CheckConnect).
	Check Check
	// Select is how dials pick among healthy members of the lowest priority:
	// SelectPriority (the first in order, the default) or SelectLatency (the lowest
	// probe latency, with hysteresis; pool_select.go). Set before Run.
	Select string

	probe    netip.AddrPort
	interval time.Duration
	log      *slog.Logger
	// changed carries the flows' verdicts to Run, which calls OnChange and
	// OnProbed outside the dialling goroutine.
	changed chan struct{}

	// dials counts the dials flows made through the pool (Run spaces its probes out
	// while it stands still).
	dials atomic.Uint64

	mu       sync.Mutex
	members  []*poolMember // ordered by priority
	notified bool          // anyUsable as OnChange last reported it
	active   *poolMember   // SelectLatency's choice; nil: the first candidate
	cursor   int           // where the next round's standby probes start
}

type poolMember struct {
	Member
	state     string
	failures  int  // consecutive failed probes
	flowFails int  // consecutive failed dials of real flows
	refused   bool // judged by a certain error: trying it anyway cannot help
	latency   time.Duration
	smoothed  time.Duration // moving average of successful probes' latency (SelectLatency)
	lastErr   string
	lastCheck time.Time
	flows     uint64
}

// NewPool orders members by priority (ties keep their order). Every member is
// unknown until judged.
func NewPool(members []Member, probe netip.AddrPort, interval time.Duration, log *slog.Logger) *Pool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{probe: probe, interval: interval, log: log, notified: len(members) > 0, changed: make(chan struct{}, 1)}
	for _, m := range members {
		p.members = append(p.members, &poolMember{Member: m, state: StateUnknown})
	}
	slices.SortStableFunc(p.members, func(a, b *poolMember) int { return cmp.Compare(a.Priority, b.Priority) })
	return p
}

// Run probes all members now and then every interval until ctx ends, and passes
// on the verdicts of real flows as they come.
func (p *Pool) Run(ctx context.Context) {
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.changed:
				p.notify()
			}
		}
	}()
	if p.interval <= 0 {
		p.log.Warn("proxy health checks disabled: interval is not positive")
		<-ctx.Done()
		return
	}
	t := time.NewTimer(p.interval)
	defer t.Stop()
	wait := p.interval
	for {
		dials := p.dials.Load()
		p.probeRound(ctx)
		wait = p.nextWait(wait, p.dials.Load() != dials)
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// idleProbeMax bounds how far rounds space out while nothing uses the pool: at most
// this many intervals apart (60 s at the default 10 s).
const idleProbeMax = 6

// nextWait is the time to the next round. While no flow was dialled through the pool
// since the last round began and the member flows would use is healthy, the rounds
// space out, doubling up to idleProbeMax intervals: an idle router is not woken for a
// TLS handshake through every proxy every 10 s, and once traffic comes, the dials of
// real flows are evidence at once (FlowFailLimit failures take a member out). With
// traffic, or with the pool's choice not healthy or its last probe failed, it is the
// interval.
func (p *Pool) nextWait(last time.Duration, used bool) time.Duration {
	p.mu.Lock()
	a := p.activeLocked()
	healthy := a != nil && a.state == StateHealthy && a.failures == 0
	p.mu.Unlock()
	if used || !healthy {
		return p.interval
	}
	return min(2*last, idleProbeMax*p.interval)
}

// ProbeAll probes every member once (probeParallel at a time) and waits for them. A
// member's new state is passed on as soon as its probe ends.
func (p *Pool) ProbeAll(ctx context.Context) {
	if !p.probe.IsValid() {
		return
	}
	p.mu.Lock()
	members := slices.Clone(p.members)
	p.mu.Unlock()
	p.probeMembers(ctx, members)
}

// ProbeMember probes the member called name now (e.g. when its device changed)
// and passes on its new state. It reports whether there is such a member.
func (p *Pool) ProbeMember(ctx context.Context, name string) bool {
	p.mu.Lock()
	i := slices.IndexFunc(p.members, func(m *poolMember) bool { return m.Name == name })
	var m *poolMember
	if i >= 0 {
		m = p.members[i]
	}
	p.mu.Unlock()
	if m == nil || !p.probe.IsValid() {
		return m != nil
	}
	p.probeMember(ctx, m)
	p.notify()
	return true
}

func (p *Pool) probeMember(ctx context.Context, m *poolMember) {
	latency, err := p.probeOne(ctx, m.Dialer, m.Type == TypeShadowsocks)
	if ctx.Err() != nil {
		return // shutting down: not the proxy's fault
	}
	if p.record(m, latency, err) {
		p.notify()
	}
}

func (p *Pool) probeTimeout() time.Duration {
	if p.ProbeTimeout > 0 {
		return p.ProbeTimeout
	}
	return min(5*time.Second, max(p.interval, time.Second))
}

// probeOne connects to the probe target through d and asks it what Check says.
// needAnswer (Shadowsocks) makes a connect check wait for the target's answer.
func (p *Pool) probeOne(ctx context.Context, d Dialer, needAnswer bool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, p.probeTimeout())
	defer cancel()
	start := time.Now()
	c, err := d.DialTCP(ctx, p.probe)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	// VLESS and Trojan hold their request for the client's first bytes: send it now,
	// so that a server that refuses it closes within a connect probe's settle time.
	if f, ok := c.(requestFlusher); ok {
		if err := f.FlushRequest(); err != nil {
			return 0, fmt.Errorf("probe %s: send request: %w", p.probe, err)
		}
	}
	switch p.Check.Kind {
	case CheckMTProto:
		err = mtprotoProbe(c)
	case CheckTLS:
		err = tlsProbe(ctx, c, p.Check.Name, p.Check.Roots)
	default:
		settle := p.ProbeSettle
		if settle == 0 {
			settle = 300 * time.Millisecond
		}
		latency := time.Since(start)
		if err := connectProbe(ctx, c, p.probe.String(), settle, needAnswer); err != nil {
			return 0, err
		}
		return latency, nil
	}
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, fmt.Errorf("no answer from %s through the proxy within %v: %w", p.probe, p.probeTimeout(), err)
		}
		return 0, fmt.Errorf("probe %s: %w", p.probe, err)
	}
	return time.Since(start), nil
}

// requestFlusher is a conn that holds its request header back until the client's
// first bytes come (VLESS, Trojan: one record for both); FlushRequest sends it now.
type requestFlusher interface{ FlushRequest() error }

// unhealthyAfter is how many probes in a row must fail before a member counts
// as unhealthy: one probe that times out on a busy router, or a target that
// is down for a moment, must not take the only proxy (and every flow) away.
const unhealthyAfter = 3

// FlowFailLimit is how many new flows in a row a member may fail (the proxy
// refused the connection, timed out, broke the handshake) before it is out, at
// once, without waiting for a probe.
const FlowFailLimit = 3

// certain tells errors that judge a member at once: the proxy refused the
// credentials, a REALITY server did not prove the key, something other than the
// target answered through it, or an interface proxy's device is gone or down.
func certain(err error) bool {
	return errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrRealityAuth) ||
		errors.Is(err, ErrNotTarget) || errors.Is(err, ErrDeviceDown)
}

// outOfDescriptors is the daemon's own state: no verdict on anyone.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// record judges a member by one probe and reports whether its state changed.
// Health is the proxy's, not the probe target's: a proxy that answered the
// handshake and reported that it could not reach the target (a SOCKS5 error reply,
// HTTP 502/504) is alive. Running out of file descriptors is the daemon's own
// state and no verdict at all; a certain error (see certain) judges at once; any
// other failure counts after unhealthyAfter in a row.
func (p *Pool) record(m *poolMember, latency time.Duration, err error) bool {
	var reply *ReplyError
	switch {
	case err == nil:
	case errors.As(err, &reply):
		p.log.Debug("probe target unreachable through a working proxy", "proxy", m.Name, "err", err)
		err = nil
	case outOfDescriptors(err):
		p.log.Warn("proxy not probed: the daemon is out of file descriptors", "proxy", m.Name, "err", err)
		return false
	}
	p.mu.Lock()
	was := m.state
	m.lastCheck = time.Now()
	m.latency = latency
	m.lastErr = ""
	m.refused = certain(err)
	if err != nil {
		m.lastErr = err.Error()
		m.failures++
		if m.failures >= unhealthyAfter || certain(err) {
			m.state = StateUnhealthy
		}
	} else {
		m.failures = 0
		m.flowFails = 0
		m.state = StateHealthy
		m.smoothed = smooth(m.smoothed, latency)
		if reply != nil {
			m.lastErr = "proxy works, probe target unreachable through it: " + reply.Error()
		}
	}
	now := m.state
	p.mu.Unlock()
	p.logChange(m, was, now, latency, err)
	return was != now
}

func (p *Pool) logChange(m *poolMember, was, now string, latency time.Duration, err error) {
	switch {
	case was == now:
	case now == StateUnhealthy:
		p.log.Warn("proxy unhealthy", "proxy", m.Name, "server", m.Server, "err", err)
	case now == StateHealthy && was == StateUnhealthy:
		p.log.Info("proxy healthy again", "proxy", m.Name, "server", m.Server, "latency", latency)
	case now == StateHealthy:
		p.log.Info("proxy healthy", "proxy", m.Name, "server", m.Server, "latency", latency)
	}
}

// flowFault sorts a real flow's dial error: whether it says the proxy works
// (alive), says nothing about it (none), judges it at once (certain) or counts
// towards FlowFailLimit. callerGone is the flow's context ended by its caller.
type flowVerdict int

const (
	flowAlive flowVerdict = iota
	flowNone
	flowFailed
	flowCertain
)

func flowFault(m *poolMember, err error, callerGone bool) flowVerdict {
	var reply *ReplyError
	switch {
	case err == nil, errors.As(err, &reply), errors.Is(err, ErrTargetTimeout):
		// Connected, or the proxy reached its side and the destination failed
		// (refused, unreachable, silent): the proxy works.
		return flowAlive
	case callerGone, outOfDescriptors(err), errors.Is(err, errors.ErrUnsupported):
		return flowNone
	case errors.Is(err, ErrRealityAuth):
		// A wrong key fails every flow, and FlowFailLimit of them come within
		// moments; one alone can be Xray's REALITY server under load falling back
		// to its target for an authentic hello (seen in CI: three flows opened at
		// once through XHTTP, one got the target's certificate), which must not
		// take the only proxy away. A probe's is still certain.
		return flowFailed
	case certain(err):
		return flowCertain
	case m.Type == TypeInterface:
		// The device's socket connects to the destination itself: a refusal
		// or a timeout is the destination's.
		return flowNone
	}
	return flowFailed
}

// recordFlow judges m by the outcome of one real flow's dial.
func (p *Pool) recordFlow(m *poolMember, err error, callerGone bool) {
	v := flowFault(m, err, callerGone)
	p.mu.Lock()
	switch v {
	case flowAlive:
		m.flowFails = 0
		p.mu.Unlock()
		return
	case flowNone:
		p.mu.Unlock()
		return
	}
	m.flowFails++
	if m.state == StateUnhealthy || (v == flowFailed && m.flowFails < FlowFailLimit) {
		p.mu.Unlock()
		return
	}
	was := m.state
	m.state = StateUnhealthy
	m.refused = v == flowCertain
	m.lastErr = fmt.Sprintf("%d new flows in a row failed through it, the last: %v", m.flowFails, err)
	if v == flowCertain {
		m.lastErr = "a new flow failed through it: " + err.Error()
	}
	// The next probe judges afresh: one success brings it back.
	m.failures = unhealthyAfter
	msg := m.lastErr // a probe may write it once the lock is released
	p.mu.Unlock()
	p.logChange(m, was, StateUnhealthy, 0, errors.New(msg))
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// ConnectFuse is how long a flow's TCP connect to a proxy server may stay unanswered
// before it counts as a failed flow (towards FlowFailLimit), while the dial itself
// goes on until ConnectTimeout: the kernel sent the SYN again after 1 s, and its
// answer did not come within half a second either. A proxy that went dark under
// traffic is out within this time of its third flow, not at the connect timeout.
const ConnectFuse = 1500 * time.Millisecond

// errConnectFuse is the failure ConnectFuse records.
var errConnectFuse = fmt.Errorf("no answer to the TCP connect within %v", ConnectFuse)

// dialMember dials dst through m and records the outcome as evidence about m. A
// connect to the proxy server still unanswered at ConnectFuse is recorded then (and
// not again if the dial fails later; a success still clears it).
func (p *Pool) dialMember(ctx context.Context, m *poolMember, dst netip.AddrPort, dial func(Dialer, context.Context, netip.AddrPort) (net.Conn, error)) (net.Conn, error) {
	var w connectWatch
	var mu sync.Mutex
	done, fused := false, false
	fuse := time.AfterFunc(ConnectFuse, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done && w.started.Load() && !w.connected.Load() && ctx.Err() == nil && m.Type != TypeInterface {
			fused = true
			p.recordFlow(m, errConnectFuse, false)
		}
	})
	c, err := dial(m.Dialer, withConnectWatch(ctx, &w), dst)
	fuse.Stop()
	mu.Lock()
	done = true
	counted := fused
	mu.Unlock()
	if err == nil || !counted || certain(err) {
		p.recordFlow(m, err, errors.Is(ctx.Err(), context.Canceled))
	}
	return c, err
}

// usable is a member flows may use: healthy, or not judged yet.
func usable(m *poolMember) bool { return m.state != StateUnhealthy }

// notify calls OnChange when "some member is usable" flipped, then OnProbed.
func (p *Pool) notify() {
	p.mu.Lock()
	healthy := slices.ContainsFunc(p.members, usable)
	changed := healthy != p.notified
	p.notified = healthy
	p.mu.Unlock()
	if changed {
		if !healthy {
			p.log.Warn("no proxy is healthy")
		}
		if p.OnChange != nil {
			p.OnChange(healthy)
		}
	}
	if p.OnProbed != nil {
		p.OnProbed()
	}
}

// AnyHealthy reports whether some member is healthy or not judged yet: whether a
// new flow has a member to go through.
func (p *Pool) AnyHealthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.members, usable)
}

// Status returns every member in priority order.
func (p *Pool) Status() []MemberStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]MemberStatus, 0, len(p.members))
	active := p.activeLocked()
	for _, m := range p.members {
		out = append(out, MemberStatus{
			Name: m.Name, Type: m.Type, Server: m.Server,
			Healthy: m.state == StateHealthy, State: m.state,
			Latency: m.latency, LastError: m.lastErr,
			LastCheck: m.lastCheck, Flows: m.flows, Active: m == active,
		})
	}
	return out
}

// Dialer returns the dialer of the member called name, or nil.
func (p *Pool) Dialer(name string) Dialer {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		if m.Name == name {
			return m.Dialer
		}
	}
	return nil
}

// candidatesLocked lists the members to try, in order: the healthy ones by
// priority, then those not judged yet. Called with p.mu held.
func (p *Pool) candidatesLocked() []*poolMember {
	var out []*poolMember
	for _, state := range []string{StateHealthy, StateUnknown} {
		for _, m := range p.members {
			if m.state == state {
				out = append(out, m)
			}
		}
	}
	return out
}

// candidates is candidatesLocked with the active member (SelectLatency's choice) first.
func (p *Pool) candidates() []*poolMember {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dialOrderLocked(p.candidatesLocked())
}

// bestMember is the member of lowest priority, healthy or not, when trying it
// can tell: not when a certain verdict judged it (it refused the credentials, or
// something other than the target answered through it: a flow would reach a
// fallback web site), and not a Shadowsocks server, whose dial succeeds whatever
// the key (a flow through a broken one would hang until its first-reply timeout
// instead of being refused at once).
func (p *Pool) bestMember() *poolMember {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.members) == 0 || p.members[0].refused || p.members[0].Type == TypeShadowsocks {
		return nil
	}
	return p.members[0]
}

// DialTCP dials dst through the first healthy member that succeeds.
func (p *Pool) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return p.dial(ctx, dst, Dialer.DialTCP)
}

// DialUDP dials dst through the first healthy member that carries UDP and
// succeeds; members that cannot carry UDP are skipped.
func (p *Pool) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return p.dial(ctx, dst, Dialer.DialUDP)
}

// When every member looks unhealthy the best one (lowest priority) is still
// tried before the flow is given up: probes judge through one target, and a
// proxy they gave up on may well carry this flow. Every dial's outcome is
// evidence about its member (recordFlow).
func (p *Pool) dial(ctx context.Context, dst netip.AddrPort, dial func(Dialer, context.Context, netip.AddrPort) (net.Conn, error)) (net.Conn, error) {
	p.dials.Add(1)
	members := p.candidates()
	if len(members) == 0 {
		best := p.bestMember()
		if best == nil {
			return nil, fmt.Errorf("dial %s: %w", dst, ErrNoHealthyProxy)
		}
		c, err := dial(best.Dialer, ctx, dst)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w (tried %s anyway: %w)", dst, ErrNoHealthyProxy, best.Name, err)
		}
		p.mu.Lock()
		best.flows++
		p.mu.Unlock()
		return c, nil
	}
	var errs []error
	for _, m := range members {
		c, err := p.dialMember(ctx, m, dst, dial)
		if err == nil {
			p.mu.Lock()
			m.flows++
			p.mu.Unlock()
			return c, nil
		}
		errs = append(errs, err)
		var reply *ReplyError
		if ctx.Err() != nil || errors.As(err, &reply) || errors.Is(err, ErrTargetTimeout) {
			// The proxy reached its server but the target refused or was
			// silent, or the caller gave up: another proxy would not help.
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}
