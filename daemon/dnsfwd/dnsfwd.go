// Package dnsfwd is tgtun's DNS forwarder: dnsmasq sends it the queries for listed
// domains (server=/domain/127.0.0.1#PORT), and it resolves them through the proxy, so a
// poisoned answer from the ISP's resolver never reaches the nft sets. Answers are cached
// by their TTL; a failing upstream gets SERVFAIL, never a made-up answer.
package dnsfwd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Dialer opens TCP connections through the active proxy.
type Dialer interface {
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
}

// Limits.
const (
	maxMessage      = 65535
	maxCacheEntries = 2048
	maxTTL          = time.Hour // cap of a cached answer's life
	negativeTTL     = 5 * time.Minute
	maxInFlight     = 64 // concurrent upstream queries
	// DefaultTimeout bounds one upstream query, proxy handshake included.
	DefaultTimeout = 5 * time.Second
)

// Options configure a Server.
type Options struct {
	// Upstream is "IP:port" (DNS over TCP) or an https:// URL (DNS over HTTPS, RFC 8484).
	Upstream string
	// Dialer returns the dialer to reach the upstream with: the proxy pool in force.
	Dialer func() Dialer
	// HTTPClient serves DNS over HTTPS; its transport must dial through the proxy.
	HTTPClient *http.Client
	Timeout    time.Duration // DefaultTimeout when 0
	// MaxTTL caps the TTL of answers handed out and cached (1 hour when 0 or more). The
	// daemon sets it to no more than the domain sets' timeout, so no client or dnsmasq
	// holds an address longer than the set does.
	MaxTTL time.Duration
	Log    *slog.Logger
	// OnAnswer, if set, is called with the A and AAAA addresses of every answer from
	// the upstream (not from the cache), under the name asked for.
	OnAnswer func(name string, addrs []netip.Addr)
}

// Status is what the forwarder has done since it started.
type Status struct {
	Listen    string `json:"listen"`
	Upstream  string `json:"upstream"`
	Queries   uint64 `json:"queries"`
	CacheHits uint64 `json:"cache_hits"`
	Failures  uint64 `json:"failures"` // answered SERVFAIL
	LastError string `json:"last_error,omitempty"`
}

// Server is a running forwarder.
type Server struct {
	opts   Options
	log    *slog.Logger
	listen string
	sem    chan struct{}

	queries, hits, failures atomic.Uint64

	mu      sync.Mutex
	cache   map[cacheKey]cacheEntry
	lastErr string

	idleMu sync.Mutex
	idle   []idleConn // upstream connections to reuse, newest last
	closed bool
}

type cacheKey struct {
	name  string // lower case
	typ   dnsmessage.Type
	class dnsmessage.Class
}

type cacheEntry struct {
	msg     dnsmessage.Message
	stored  time.Time
	expires time.Time
}

// New returns a Server; Serve starts it.
func New(opts Options) *Server {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxTTL <= 0 || opts.MaxTTL > maxTTL {
		opts.MaxTTL = maxTTL
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: log.With("component", "dns"), sem: make(chan struct{}, maxInFlight), cache: map[cacheKey]cacheEntry{}}
}

// Status reports the forwarder.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{Listen: s.listen, Upstream: s.opts.Upstream, Queries: s.queries.Load(), CacheHits: s.hits.Load(),
		Failures: s.failures.Load(), LastError: s.lastErr}
}

// Serve answers on UDP and TCP at addr until ctx is done.
func (s *Server) Serve(ctx context.Context, addr netip.AddrPort) error {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr.String())
	if err != nil {
		return fmt.Errorf("dns forwarder: listen udp %s: %w", addr, err)
	}
	ln, err := lc.Listen(ctx, "tcp", addr.String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns forwarder: listen tcp %s: %w", addr, err)
	}
	s.mu.Lock()
	s.listen = addr.String()
	s.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.serveUDP(ctx, pc) }()
	go func() { defer wg.Done(); s.serveTCP(ctx, ln) }()
	<-ctx.Done()
	pc.Close()
	ln.Close()
	wg.Wait()
	s.closeIdle()
	return nil
}

func (s *Server) serveUDP(ctx context.Context, pc net.PacketConn) {
	buf := make([]byte, maxMessage)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("dns forwarder: udp read", "err", err)
			}
			return
		}
		q := bytes.Clone(buf[:n])
		go func() {
			if resp := s.Handle(ctx, q, true); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}()
	}
}

func (s *Server) serveTCP(ctx context.Context, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("dns forwarder: tcp accept", "err", err)
			}
			return
		}
		go func() {
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			for {
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				q, err := readTCPMessage(c)
				if err != nil {
					return
				}
				resp := s.Handle(ctx, q, false)
				if resp == nil {
					return
				}
				if _, err := c.Write(tcpFrame(resp)); err != nil {
					return
				}
			}
		}()
	}
}

func readTCPMessage(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func tcpFrame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg))), msg...)
}

// Handle answers one query (the DNS message without TCP framing). udp limits the answer
// to the size the client announced (512 bytes without EDNS), truncating with TC set. It
// returns nil for input that is not a query worth an answer (too short to carry an ID).
func (s *Server) Handle(ctx context.Context, query []byte, udp bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil // not even a header: nothing to answer to
	}
	if h.Response {
		return nil
	}
	q, qerr := p.Question()
	if qerr == nil {
		if _, err := p.Question(); !errors.Is(err, dnsmessage.ErrSectionDone) {
			qerr = errors.New("more than one question")
		}
	}
	if h.OpCode != 0 || qerr != nil {
		return s.packOrNil(errorReply(h, nil, dnsmessage.RCodeFormatError), udp, 512)
	}
	udpSize := 512
	if err := p.SkipAllAnswers(); err == nil {
		if err := p.SkipAllAuthorities(); err == nil {
			for {
				rh, err := p.AdditionalHeader()
				if err != nil {
					break
				}
				if rh.Type == dnsmessage.TypeOPT {
					udpSize = max(512, int(rh.Class))
				}
				if err := p.SkipAdditional(); err != nil {
					break
				}
			}
		}
	}
	s.queries.Add(1)
	key := cacheKey{strings.ToLower(q.Name.String()), q.Type, q.Class}
	if m, ok := s.cached(key); ok {
		s.hits.Add(1)
		m.Header.ID, m.Header.RecursionDesired = h.ID, h.RecursionDesired
		m.Questions = []dnsmessage.Question{q}
		return s.packOrNil(m, udp, udpSize)
	}
	m, err := s.resolve(ctx, q)
	if err != nil {
		s.failures.Add(1)
		s.mu.Lock()
		s.lastErr = fmt.Sprintf("%s %s: %v", q.Name, q.Type, err)
		s.mu.Unlock()
		s.log.Warn("dns forwarder: upstream failed, answering SERVFAIL", "name", q.Name.String(), "type", q.Type, "err", err)
		return s.packOrNil(errorReply(h, &q, dnsmessage.RCodeServerFailure), udp, udpSize)
	}
	s.store(key, m)
	if s.opts.OnAnswer != nil {
		if addrs := answerAddrs(m); len(addrs) > 0 {
			s.opts.OnAnswer(strings.TrimSuffix(key.name, "."), addrs)
		}
	}
	m.Header.ID, m.Header.RecursionDesired = h.ID, h.RecursionDesired
	m.Questions = []dnsmessage.Question{q}
	return s.packOrNil(m, udp, udpSize)
}

// packOrNil packs m, truncating it for UDP when it is bigger than the client takes.
func (s *Server) packOrNil(m dnsmessage.Message, udp bool, size int) []byte {
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	if udp && len(b) > size {
		m.Header.Truncated = true
		m.Answers, m.Authorities, m.Additionals = nil, nil, nil
		if b, err = m.Pack(); err != nil {
			return nil
		}
	}
	return b
}

func errorReply(h dnsmessage.Header, q *dnsmessage.Question, rc dnsmessage.RCode) dnsmessage.Message {
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true, RCode: rc}}
	if q != nil {
		m.Questions = []dnsmessage.Question{*q}
	}
	return m
}

func answerAddrs(m dnsmessage.Message) []netip.Addr {
	var out []netip.Addr
	for _, r := range m.Answers {
		switch b := r.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(b.A))
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(b.AAAA))
		}
	}
	return out
}

// cached returns a cached answer with its TTLs lowered by the time it spent in the cache.
func (s *Server) cached(k cacheKey) (dnsmessage.Message, bool) {
	s.mu.Lock()
	e, ok := s.cache[k]
	s.mu.Unlock()
	now := time.Now()
	if !ok || !now.Before(e.expires) {
		return dnsmessage.Message{}, false
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	m := e.msg
	m.Answers = ageRecords(m.Answers, age)
	m.Authorities = ageRecords(m.Authorities, age)
	m.Additionals = ageRecords(m.Additionals, age)
	return m, true
}

func ageRecords(rs []dnsmessage.Resource, age uint32) []dnsmessage.Resource {
	out := make([]dnsmessage.Resource, len(rs))
	for i, r := range rs {
		if r.Header.Type != dnsmessage.TypeOPT {
			r.Header.TTL -= min(r.Header.TTL, age)
		}
		out[i] = r
	}
	return out
}

// store caches m for the smallest TTL of its records (negative answers: the SOA's, at most
// negativeTTL), capped at maxTTL. Answers other than NOERROR and NXDOMAIN are not cached.
func (s *Server) store(k cacheKey, m dnsmessage.Message) {
	if m.Header.RCode != dnsmessage.RCodeSuccess && m.Header.RCode != dnsmessage.RCodeNameError || m.Header.Truncated {
		return
	}
	ttl := s.opts.MaxTTL
	for _, r := range m.Answers {
		ttl = min(ttl, time.Duration(r.Header.TTL)*time.Second)
	}
	if len(m.Answers) == 0 {
		ttl = min(ttl, negativeTTL)
		for _, r := range m.Authorities {
			if soa, ok := r.Body.(*dnsmessage.SOAResource); ok {
				ttl = min(ttl, time.Duration(min(r.Header.TTL, soa.MinTTL))*time.Second)
			}
		}
	}
	if ttl <= 0 {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) >= maxCacheEntries {
		for key, e := range s.cache {
			if !now.Before(e.expires) {
				delete(s.cache, key)
			}
		}
		for key := range s.cache {
			if len(s.cache) < maxCacheEntries {
				break
			}
			delete(s.cache, key) // map order: an arbitrary victim
		}
	}
	// The cache keeps its own record slices: packing a message writes into its records'
	// headers, and the caller goes on to pack m.
	m.Answers, m.Authorities, m.Additionals = slices.Clone(m.Answers), slices.Clone(m.Authorities), slices.Clone(m.Additionals)
	s.cache[k] = cacheEntry{msg: m, stored: now, expires: now.Add(ttl)}
}

// resolve asks the upstream, through the proxy.
func (s *Server) resolve(ctx context.Context, q dnsmessage.Question) (dnsmessage.Message, error) {
	// The timeout covers the wait for a slot too: a burst of queries cannot pile up.
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-ctx.Done():
		return dnsmessage.Message{}, fmt.Errorf("too many queries in flight: %w", ctx.Err())
	}
	id := uint16(time.Now().UnixNano())
	req := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{q},
	}
	// Ask for big answers: the transport is a stream either way.
	var opt dnsmessage.Resource
	if err := opt.Header.SetEDNS0(4096, dnsmessage.RCodeSuccess, false); err == nil {
		opt.Body = &dnsmessage.OPTResource{}
		req.Additionals = []dnsmessage.Resource{opt}
	}
	raw, err := req.Pack()
	if err != nil {
		return dnsmessage.Message{}, fmt.Errorf("pack query: %w", err)
	}
	var resp []byte
	if strings.HasPrefix(s.opts.Upstream, "https://") {
		// RFC 8484 asks for ID 0 over HTTPS, which caches better.
		raw[0], raw[1], id = 0, 0, 0
		resp, err = s.doh(ctx, raw)
	} else {
		resp, err = s.tcp(ctx, raw)
	}
	if err != nil {
		return dnsmessage.Message{}, err
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		return dnsmessage.Message{}, fmt.Errorf("upstream answer: %w", err)
	}
	if !m.Header.Response || m.Header.ID != id || len(m.Questions) != 1 ||
		!strings.EqualFold(m.Questions[0].Name.String(), q.Name.String()) || m.Questions[0].Type != q.Type {
		return dnsmessage.Message{}, errors.New("upstream answer does not match the question")
	}
	switch m.Header.RCode {
	case dnsmessage.RCodeSuccess, dnsmessage.RCodeNameError:
	default:
		return dnsmessage.Message{}, fmt.Errorf("upstream answered %s", m.Header.RCode)
	}
	// The client gets the answer without the upstream's EDNS record (dnsmasq adds its own).
	m.Additionals = dropOPT(m.Additionals)
	capTTL(m.Answers, s.opts.MaxTTL)
	capTTL(m.Authorities, s.opts.MaxTTL)
	capTTL(m.Additionals, s.opts.MaxTTL)
	return m, nil
}

func capTTL(rs []dnsmessage.Resource, limit time.Duration) {
	secs := uint32(limit / time.Second)
	for i := range rs {
		rs[i].Header.TTL = min(rs[i].Header.TTL, secs)
	}
}

func dropOPT(rs []dnsmessage.Resource) []dnsmessage.Resource {
	out := rs[:0]
	for _, r := range rs {
		if r.Header.Type != dnsmessage.TypeOPT {
			out = append(out, r)
		}
	}
	return out
}

func (s *Server) tcp(ctx context.Context, query []byte) ([]byte, error) {
	up, err := netip.ParseAddrPort(s.opts.Upstream)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", s.opts.Upstream, err)
	}
	if s.opts.Dialer == nil {
		return nil, errors.New("no dialer")
	}
	// A connection kept from an earlier query saves the proxy handshake and the TCP
	// set-up; the upstream may have closed it meanwhile, so a failure on a reused one is
	// retried once on a fresh one.
	if c := s.idleConn(); c != nil {
		// Half the time left at most: a connection a middlebox dropped silently must
		// leave time for the fresh one.
		rctx, cancel := context.WithTimeout(ctx, s.opts.Timeout/2)
		resp, err := s.exchange(rctx, c, query)
		cancel()
		if err == nil {
			return resp, nil
		}
	}
	c, err := s.opts.Dialer().DialTCP(ctx, up)
	if err != nil {
		return nil, fmt.Errorf("dial %s through the proxy: %w", up, err)
	}
	resp, err := s.exchange(ctx, c, query)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", up, err)
	}
	return resp, nil
}

// exchange sends query on c and reads one answer. On success c goes back to the idle
// connections; on failure it is closed (the stream may be out of step).
func (s *Server) exchange(ctx context.Context, c net.Conn, query []byte) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	if _, err := c.Write(tcpFrame(query)); err != nil {
		stop()
		c.Close()
		return nil, fmt.Errorf("send: %w", err)
	}
	resp, err := readTCPMessage(c)
	if !stop() || err != nil {
		c.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("read: %w", err)
	}
	s.putIdle(c)
	return resp, nil
}

// Idle upstream connections: a few, for a short while (public resolvers close idle TCP
// connections after about 10 s).
const (
	maxIdleConns   = 4
	idleConnMaxAge = 8 * time.Second
)

type idleConn struct {
	c     net.Conn
	since time.Time
}

func (s *Server) idleConn() net.Conn {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	for len(s.idle) > 0 {
		last := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if time.Since(last.since) < idleConnMaxAge {
			return last.c
		}
		last.c.Close()
	}
	return nil
}

func (s *Server) putIdle(c net.Conn) {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if len(s.idle) >= maxIdleConns || s.closed {
		c.Close()
		return
	}
	s.idle = append(s.idle, idleConn{c: c, since: time.Now()})
}

// closeIdle closes the idle connections; Serve calls it when it stops.
func (s *Server) closeIdle() {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	for _, ic := range s.idle {
		ic.c.Close()
	}
	s.idle, s.closed = nil, true
}

func (s *Server) doh(ctx context.Context, query []byte) ([]byte, error) {
	if s.opts.HTTPClient == nil {
		return nil, errors.New("no HTTP client for DNS over HTTPS")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.Upstream, bytes.NewReader(query))
	if err != nil {
		return nil, fmt.Errorf("DoH request: %w", err)
	}
	req.Header.Set("Content-Type", "application/dns-message")
	req.Header.Set("Accept", "application/dns-message")
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("DoH %s: %w", s.opts.Upstream, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("DoH %s: HTTP %s", s.opts.Upstream, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("DoH %s: %w", s.opts.Upstream, err)
	}
	if len(body) > maxMessage {
		return nil, fmt.Errorf("DoH %s: answer larger than a DNS message", s.opts.Upstream)
	}
	return body, nil
}
