package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
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

// MemberStatus is a snapshot of one member's health, for status and check.
type MemberStatus struct {
	Name      string        `json:"name"`
	Type      string        `json:"type"`
	Server    string        `json:"server"`
	Healthy   bool          `json:"healthy"`
	Latency   time.Duration `json:"latency"`
	LastError string        `json:"last_error,omitempty"`
	LastCheck time.Time     `json:"last_check"`
	Flows     uint64        `json:"flows"`  // dials carried
	Active    bool          `json:"active"` // the member new flows use now
	// Hint says what to do about LastError; the caller that knows the
	// configuration fills it in (empty while healthy).
	Hint string `json:"hint,omitempty"`
}

// Pool dials through the healthy member with the lowest priority, falling
// back to the next ones in order. Run probes every member periodically.
// Connections already dialled are never touched by a change of member.
type Pool struct {
	// OnChange, when set before Run, is called from the prober whenever
	// "some member is healthy" flips, e.g. to switch to fail_mode direct.
	OnChange func(anyHealthy bool)
	// OnProbed, when set before Run, is called after every round of probes
	// (after OnChange), e.g. to route into the active member's interface.
	OnProbed func()
	// ProbeTimeout bounds one probe; 0 means 5s or the interval if shorter.
	ProbeTimeout time.Duration
	// ProbeSettle is how long a probe waits after connecting for the
	// server to drop the connection (how Shadowsocks reports a wrong key
	// or unreachable target); 0 means 300ms, negative disables the wait.
	ProbeSettle time.Duration
	// Select is how dials pick among healthy members of the lowest priority:
	// SelectPriority (the first in order, the default) or SelectLatency (the lowest
	// probe latency, with hysteresis; pool_select.go). Set before Run.
	Select string

	probe    netip.AddrPort
	interval time.Duration
	log      *slog.Logger

	mu         sync.Mutex
	members    []*poolMember // ordered by priority
	anyHealthy bool
	active     *poolMember // SelectLatency's choice; nil: the first healthy
	cursor     int         // where the next round's standby probes start
}

type poolMember struct {
	Member
	healthy   bool
	failures  int  // consecutive failed probes
	refused   bool // the last probe failed on the credentials
	latency   time.Duration
	smoothed  time.Duration // moving average of successful probes' latency (SelectLatency)
	lastErr   string
	lastCheck time.Time
	flows     uint64
}

// NewPool orders members by priority (ties keep their order). Until the
// first probe every member counts as healthy, so start-up is instant.
func NewPool(members []Member, probe netip.AddrPort, interval time.Duration, log *slog.Logger) *Pool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{probe: probe, interval: interval, log: log, anyHealthy: len(members) > 0}
	for _, m := range members {
		p.members = append(p.members, &poolMember{Member: m, healthy: true})
	}
	slices.SortStableFunc(p.members, func(a, b *poolMember) int { return cmp.Compare(a.Priority, b.Priority) })
	return p
}

// Run probes all members now and then every interval until ctx ends.
func (p *Pool) Run(ctx context.Context) {
	if p.interval <= 0 {
		p.log.Warn("proxy health checks disabled: interval is not positive")
		<-ctx.Done()
		return
	}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.probeRound(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ProbeAll probes every member once, in parallel, and waits for them.
func (p *Pool) ProbeAll(ctx context.Context) {
	if !p.probe.IsValid() {
		return
	}
	p.mu.Lock()
	members := slices.Clone(p.members)
	p.mu.Unlock()
	p.probeMembers(ctx, members)
}

func (p *Pool) probeTimeout() time.Duration {
	if p.ProbeTimeout > 0 {
		return p.ProbeTimeout
	}
	return min(5*time.Second, max(p.interval, time.Second))
}

// probeRequest is what a probe through Shadowsocks sends to the probe target to get
// an answer. Shadowsocks has no reply of its own, and ss-server meets a wrong key with
// silence, so only an answer from the target proves the key. Over 64 bytes, so a
// Telegram data centre (whose obfuscated transport reads a 64-byte header first) has
// enough to reject and close; an HTTP or TLS server answers or closes as well.
const probeRequest = "HEAD / HTTP/1.0\r\nUser-Agent: tgtun-health-check\r\nX-Padding: 0123456789abcdef\r\n\r\n"

// requestFlusher is a conn that holds its request header back until the client's
// first bytes come (VLESS, Trojan: one record for both); FlushRequest sends it now.
type requestFlusher interface{ FlushRequest() error }

// probeOne connects to the probe target through d. A server that drops
// the connection right after accepting it failed the probe. With needAnswer
// (Shadowsocks) the target must then answer a request, or close, in time.
func (p *Pool) probeOne(ctx context.Context, d Dialer, needAnswer bool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, p.probeTimeout())
	defer cancel()
	start := time.Now()
	c, err := d.DialTCP(ctx, p.probe)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	// VLESS and Trojan hold their request for the client's first bytes: send it
	// now, so that a server that refuses it closes within the settle time.
	if f, ok := c.(requestFlusher); ok {
		if err := f.FlushRequest(); err != nil {
			return 0, fmt.Errorf("probe %s: send request: %w", p.probe, err)
		}
	}
	latency := time.Since(start)
	settle := p.ProbeSettle
	if settle == 0 {
		settle = 300 * time.Millisecond
	}
	if settle > 0 {
		_ = c.SetReadDeadline(time.Now().Add(settle))
		var one [1]byte
		_, err := c.Read(one[:])
		switch {
		case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, io.EOF):
			return 0, fmt.Errorf("connection to %s closed right after it opened", p.probe)
		default:
			return 0, err
		}
	}
	if needAnswer {
		deadline, _ := ctx.Deadline()
		_ = c.SetDeadline(deadline)
		if _, err := io.WriteString(c, probeRequest); err != nil {
			return 0, fmt.Errorf("probe %s: %w", p.probe, err)
		}
		var one [1]byte
		_, err := c.Read(one[:])
		switch {
		case err == nil, errors.Is(err, io.EOF):
			// The target answered or closed: the server decrypted the request.
		case errors.Is(err, errSSSilent), errors.Is(err, os.ErrDeadlineExceeded):
			return 0, fmt.Errorf("no answer from %s through the proxy: wrong password or cipher?", p.probe)
		default:
			return 0, fmt.Errorf("probe %s: %w", p.probe, err)
		}
	}
	return latency, nil
}

// unhealthyAfter is how many probes in a row must fail before a member counts
// as unhealthy: one probe that times out on a busy router, or a target that
// is down for a moment, must not take the only proxy (and every flow) away.
const unhealthyAfter = 3

// record judges a member by one probe. Health is the proxy's, not the probe
// target's: a proxy that answered the handshake and reported that it could not
// reach the target (a SOCKS5 error reply, HTTP 502/504) is alive. Running out
// of file descriptors is the daemon's own state and no verdict at all; a
// refused password is certain at once; any other failure counts after
// unhealthyAfter in a row.
func (p *Pool) record(m *poolMember, latency time.Duration, err error) {
	var reply *ReplyError
	switch {
	case err == nil:
	case errors.As(err, &reply):
		p.log.Debug("probe target unreachable through a working proxy", "proxy", m.Name, "err", err)
		err = nil
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		p.log.Warn("proxy not probed: the daemon is out of file descriptors", "proxy", m.Name, "err", err)
		return
	}
	p.mu.Lock()
	was := m.healthy
	m.lastCheck = time.Now()
	m.latency = latency
	m.lastErr = ""
	m.refused = errors.Is(err, ErrAuthFailed)
	if err != nil {
		m.lastErr = err.Error()
		m.failures++
		if m.failures >= unhealthyAfter || errors.Is(err, ErrAuthFailed) {
			m.healthy = false
		}
	} else {
		m.failures = 0
		m.healthy = true
		m.smoothed = smooth(m.smoothed, latency)
		if reply != nil {
			m.lastErr = "proxy works, probe target unreachable through it: " + reply.Error()
		}
	}
	p.mu.Unlock()
	switch {
	case was && !m.healthy:
		p.log.Warn("proxy unhealthy", "proxy", m.Name, "server", m.Server, "err", err)
	case !was && m.healthy:
		p.log.Info("proxy healthy again", "proxy", m.Name, "server", m.Server, "latency", latency)
	}
}

// notify calls OnChange when the pool's overall health flipped.
func (p *Pool) notify() {
	p.mu.Lock()
	healthy := slices.ContainsFunc(p.members, func(m *poolMember) bool { return m.healthy })
	changed := healthy != p.anyHealthy
	p.anyHealthy = healthy
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

// AnyHealthy reports whether some member is healthy now.
func (p *Pool) AnyHealthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.anyHealthy
}

// Status returns every member in priority order.
func (p *Pool) Status() []MemberStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]MemberStatus, 0, len(p.members))
	active := p.activeLocked()
	for _, m := range p.members {
		st := MemberStatus{
			Name: m.Name, Type: m.Type, Server: m.Server,
			Healthy: m.healthy, Latency: m.latency, LastError: m.lastErr,
			LastCheck: m.lastCheck, Flows: m.flows, Active: m == active,
		}
		out = append(out, st)
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

// healthyMembers lists the members to try, in order.
func (p *Pool) healthyMembers() []*poolMember {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*poolMember
	for _, m := range p.members {
		if m.healthy {
			out = append(out, m)
		}
	}
	return p.dialOrderLocked(out)
}

// bestMember is the member of lowest priority, healthy or not, when trying it
// can tell: not when it refused the credentials, and not a Shadowsocks server,
// whose dial succeeds whatever the key (a flow through a broken one would hang
// until its first-reply timeout instead of being refused at once).
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
// proxy they gave up on may well carry this flow.
func (p *Pool) dial(ctx context.Context, dst netip.AddrPort, dial func(Dialer, context.Context, netip.AddrPort) (net.Conn, error)) (net.Conn, error) {
	members := p.healthyMembers()
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
		c, err := dial(m.Dialer, ctx, dst)
		if err == nil {
			p.mu.Lock()
			m.flows++
			p.mu.Unlock()
			return c, nil
		}
		errs = append(errs, err)
		var reply *ReplyError
		if ctx.Err() != nil || errors.As(err, &reply) {
			// The proxy reached its server but the target refused, or
			// the caller gave up: another proxy would not help.
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}
