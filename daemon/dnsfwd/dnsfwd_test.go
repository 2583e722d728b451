package dnsfwd

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// upstream is a DNS-over-TCP server on loopback answering from a table.
type upstream struct {
	addr    netip.AddrPort
	queries atomic.Int32
	conns   atomic.Int32
	keep    bool // answer several queries on one connection
	mu      sync.Mutex
	answer  func(q dnsmessage.Question, id uint16) []byte // nil: close without answer
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: netip.MustParseAddrPort(ln.Addr().String())}
	u.answer = func(q dnsmessage.Question, id uint16) []byte {
		return reply(t, id, q, 300, netip.MustParseAddr("203.0.113.7"))
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns.Add(1)
			go func() {
				defer c.Close()
				for {
					raw, err := readTCPMessage(c)
					if err != nil {
						return
					}
					u.queries.Add(1)
					var m dnsmessage.Message
					if err := m.Unpack(raw); err != nil || len(m.Questions) != 1 {
						return
					}
					u.mu.Lock()
					f, keep := u.answer, u.keep
					u.mu.Unlock()
					b := f(m.Questions[0], m.Header.ID)
					if b == nil {
						return
					}
					if _, err := c.Write(tcpFrame(b)); err != nil || !keep {
						return
					}
				}
			}()
		}
	}()
	return u
}

func (u *upstream) set(f func(q dnsmessage.Question, id uint16) []byte) {
	u.mu.Lock()
	u.answer = f
	u.mu.Unlock()
}

func reply(t testing.TB, id uint16, q dnsmessage.Question, ttl uint32, addrs ...netip.Addr) []byte {
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: id, Response: true, RecursionAvailable: true}, Questions: []dnsmessage.Question{q}}
	for _, a := range addrs {
		h := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: ttl}
		if a.Is4() && q.Type == dnsmessage.TypeA {
			h.Type = dnsmessage.TypeA
			m.Answers = append(m.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
		}
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type directDialer struct{ fail error }

func (d directDialer) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if d.fail != nil {
		return nil, d.fail
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", dst.String())
}

func query(t testing.TB, id uint16, name string, typ dnsmessage.Type, edns int) []byte {
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}
	if edns > 0 {
		var opt dnsmessage.Resource
		_ = opt.Header.SetEDNS0(edns, dnsmessage.RCodeSuccess, false)
		opt.Body = &dnsmessage.OPTResource{}
		m.Additionals = []dnsmessage.Resource{opt}
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unpack(t *testing.T, b []byte) dnsmessage.Message {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		t.Fatalf("answer does not parse: %v", err)
	}
	return m
}

func newServer(u *upstream, d Dialer, onAnswer func(string, []netip.Addr)) *Server {
	return New(Options{Upstream: u.addr.String(), Dialer: func() Dialer { return d }, OnAnswer: onAnswer, Timeout: 3 * time.Second})
}

func TestForwardAndCache(t *testing.T) {
	u := newUpstream(t)
	var seen []netip.Addr
	var seenName string
	s := newServer(u, directDialer{}, func(name string, a []netip.Addr) { seenName, seen = name, a })
	ctx := context.Background()

	m := unpack(t, s.Handle(ctx, query(t, 0x1234, "Web.Telegram.org.", dnsmessage.TypeA, 1232), true))
	if m.Header.ID != 0x1234 || !m.Header.Response || m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 1 {
		t.Fatalf("answer %+v", m)
	}
	if a := m.Answers[0].Body.(*dnsmessage.AResource).A; netip.AddrFrom4(a) != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("address %v", a)
	}
	if seenName != "web.telegram.org" || !slices.Equal(seen, []netip.Addr{netip.MustParseAddr("203.0.113.7")}) {
		t.Errorf("OnAnswer(%q, %v)", seenName, seen)
	}
	// The same question again, in another case and ID: from the cache.
	m = unpack(t, s.Handle(ctx, query(t, 0x4321, "web.telegram.ORG.", dnsmessage.TypeA, 0), true))
	if m.Header.ID != 0x4321 || len(m.Answers) != 1 || m.Answers[0].Header.TTL > 300 || m.Questions[0].Name.String() != "web.telegram.ORG." {
		t.Fatalf("cached answer %+v", m)
	}
	if n := u.queries.Load(); n != 1 {
		t.Errorf("upstream asked %d times, want 1 (second answer from the cache)", n)
	}
	if st := s.Status(); st.Queries != 2 || st.CacheHits != 1 || st.Failures != 0 {
		t.Errorf("status %+v", st)
	}
	// Another type is another question.
	unpack(t, s.Handle(ctx, query(t, 1, "web.telegram.org.", dnsmessage.TypeAAAA, 0), true))
	if n := u.queries.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want 2", n)
	}
}

// TestReuse: a second query goes over the connection of the first; a connection the
// upstream closed meanwhile is replaced without a failure.
func TestReuse(t *testing.T) {
	u := newUpstream(t)
	u.mu.Lock()
	u.keep = true
	u.mu.Unlock()
	s := newServer(u, directDialer{}, nil)
	for i, name := range []string{"a.example.", "b.example.", "c.example."} {
		if m := unpack(t, s.Handle(context.Background(), query(t, uint16(i), name, dnsmessage.TypeA, 0), true)); len(m.Answers) != 1 {
			t.Fatalf("%s: %+v", name, m)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Errorf("%d upstream connections for 3 queries, want 1", n)
	}
	u.mu.Lock()
	u.keep = false // the next answer closes the connection
	u.mu.Unlock()
	for i, name := range []string{"d.example.", "e.example."} {
		if m := unpack(t, s.Handle(context.Background(), query(t, uint16(i), name, dnsmessage.TypeA, 0), true)); len(m.Answers) != 1 || m.Header.RCode != dnsmessage.RCodeSuccess {
			t.Fatalf("%s after the upstream closed: %+v", name, m)
		}
	}
	if n := u.conns.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2 (one new after the close)", n)
	}
}

func TestMaxTTL(t *testing.T) {
	u := newUpstream(t)
	s := New(Options{Upstream: u.addr.String(), Dialer: func() Dialer { return directDialer{} }, MaxTTL: 20 * time.Second})
	m := unpack(t, s.Handle(context.Background(), query(t, 1, "t.me.", dnsmessage.TypeA, 0), true))
	if len(m.Answers) != 1 || m.Answers[0].Header.TTL != 20 {
		t.Fatalf("answers %+v, want TTL capped at 20", m.Answers)
	}
}

func TestZeroTTLNotCached(t *testing.T) {
	u := newUpstream(t)
	u.set(func(q dnsmessage.Question, id uint16) []byte {
		return reply(t, id, q, 0, netip.MustParseAddr("203.0.113.9"))
	})
	s := newServer(u, directDialer{}, nil)
	for i := range 2 {
		unpack(t, s.Handle(context.Background(), query(t, uint16(i), "t.me.", dnsmessage.TypeA, 0), true))
	}
	if n := u.queries.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want 2", n)
	}
}

// TestServfail: an upstream that cannot be reached, hangs up, lies about the ID or the
// question, or fails gets SERVFAIL, never an answer tgtun made up, and nothing is cached.
func TestServfail(t *testing.T) {
	u := newUpstream(t)
	cases := []struct {
		name   string
		dialer Dialer
		answer func(q dnsmessage.Question, id uint16) []byte
	}{
		{"proxy down", directDialer{fail: errors.New("no proxy is healthy")}, nil},
		{"hang up", directDialer{}, func(dnsmessage.Question, uint16) []byte { return nil }},
		{"wrong id", directDialer{}, func(q dnsmessage.Question, id uint16) []byte {
			return reply(t, id+1, q, 60, netip.MustParseAddr("192.0.2.66"))
		}},
		{"wrong question", directDialer{}, func(q dnsmessage.Question, id uint16) []byte {
			q.Name = dnsmessage.MustNewName("other.example.")
			return reply(t, id, q, 60, netip.MustParseAddr("192.0.2.66"))
		}},
		{"refused", directDialer{}, func(q dnsmessage.Question, id uint16) []byte {
			m := dnsmessage.Message{Header: dnsmessage.Header{ID: id, Response: true, RCode: dnsmessage.RCodeRefused}, Questions: []dnsmessage.Question{q}}
			b, _ := m.Pack()
			return b
		}},
		{"garbage", directDialer{}, func(dnsmessage.Question, uint16) []byte { return []byte{1, 2, 3} }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.answer != nil {
				u.set(c.answer)
			}
			s := newServer(u, c.dialer, func(string, []netip.Addr) { t.Error("OnAnswer called for a failure") })
			for range 2 {
				m := unpack(t, s.Handle(context.Background(), query(t, 7, "t.me.", dnsmessage.TypeA, 0), true))
				if m.Header.ID != 7 || m.Header.RCode != dnsmessage.RCodeServerFailure || len(m.Answers) != 0 || len(m.Questions) != 1 {
					t.Fatalf("answer %+v, want SERVFAIL without answers", m)
				}
			}
			if st := s.Status(); st.Failures != 2 || st.CacheHits != 0 || st.LastError == "" {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func TestMalformedQueries(t *testing.T) {
	u := newUpstream(t)
	s := newServer(u, directDialer{}, nil)
	ctx := context.Background()
	if b := s.Handle(ctx, []byte{1, 2, 3}, true); b != nil {
		t.Errorf("answer to 3 bytes: %x", b)
	}
	two := dnsmessage.Message{Header: dnsmessage.Header{ID: 9}, Questions: []dnsmessage.Question{
		{Name: dnsmessage.MustNewName("a.org."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
		{Name: dnsmessage.MustNewName("b.org."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
	}}
	raw, _ := two.Pack()
	if m := unpack(t, s.Handle(ctx, raw, true)); m.Header.RCode != dnsmessage.RCodeFormatError || m.Header.ID != 9 {
		t.Errorf("two questions: %+v", m.Header)
	}
	resp := reply(t, 5, dnsmessage.Question{Name: dnsmessage.MustNewName("a.org."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}, 1)
	if b := s.Handle(ctx, resp, true); b != nil {
		t.Errorf("answered a response")
	}
	if n := u.queries.Load(); n != 0 {
		t.Errorf("upstream asked %d times", n)
	}
}

func TestTruncation(t *testing.T) {
	u := newUpstream(t)
	var many []netip.Addr
	for i := range 60 {
		many = append(many, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}))
	}
	u.set(func(q dnsmessage.Question, id uint16) []byte { return reply(t, id, q, 60, many...) })
	s := newServer(u, directDialer{}, nil)
	ctx := context.Background()
	if m := unpack(t, s.Handle(ctx, query(t, 1, "big.example.org.", dnsmessage.TypeA, 0), true)); !m.Header.Truncated || len(m.Answers) != 0 {
		t.Errorf("UDP without EDNS: truncated %t, %d answers", m.Header.Truncated, len(m.Answers))
	}
	if m := unpack(t, s.Handle(ctx, query(t, 1, "big.example.org.", dnsmessage.TypeA, 4096), true)); m.Header.Truncated || len(m.Answers) != 60 {
		t.Errorf("UDP with EDNS 4096: truncated %t, %d answers", m.Header.Truncated, len(m.Answers))
	}
	if m := unpack(t, s.Handle(ctx, query(t, 1, "big.example.org.", dnsmessage.TypeA, 0), false)); m.Header.Truncated || len(m.Answers) != 60 {
		t.Errorf("TCP: truncated %t, %d answers", m.Header.Truncated, len(m.Answers))
	}
}

// TestServe answers over real UDP and TCP sockets.
func TestServe(t *testing.T) {
	u := newUpstream(t)
	s := newServer(u, directDialer{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.LocalAddr().String())
	ln.Close()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, addr) }()
	defer func() { cancel(); <-done }()

	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err = net.Dial("tcp", addr.String())
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(tcpFrame(query(t, 3, "t.me.", dnsmessage.TypeA, 0))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	raw, err := readTCPMessage(c)
	if err != nil {
		t.Fatal(err)
	}
	if m := unpack(t, raw); m.Header.ID != 3 || len(m.Answers) != 1 {
		t.Fatalf("tcp answer %+v", m)
	}
	uc, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	_ = uc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := uc.Write(query(t, 4, "t.me.", dnsmessage.TypeA, 0)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := uc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if m := unpack(t, buf[:n]); m.Header.ID != 4 || len(m.Answers) != 1 {
		t.Fatalf("udp answer %+v", m)
	}
}

// FuzzHandle: any bytes from a client give no panic and either nothing or a DNS message
// that parses, carries the client's ID and is never an answer the upstream did not give.
func FuzzHandle(f *testing.F) {
	f.Add(query(f, 1, "t.me.", dnsmessage.TypeA, 0), true)
	f.Add(query(f, 2, "a.b.c.example.org.", dnsmessage.TypeAAAA, 1232), false)
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0}, true)
	s := New(Options{Upstream: "192.0.2.1:53", Dialer: func() Dialer { return directDialer{fail: errors.New("offline")} }})
	f.Fuzz(func(t *testing.T, q []byte, udp bool) {
		b := s.Handle(context.Background(), q, udp)
		if b == nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(b); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if len(q) < 2 || m.Header.ID != uint16(q[0])<<8|uint16(q[1]) || !m.Header.Response {
			t.Fatalf("answer header %+v for query %x", m.Header, q)
		}
		if len(m.Answers) != 0 || m.Header.RCode == dnsmessage.RCodeSuccess {
			t.Fatalf("made-up answer %+v", m)
		}
		if udp && len(b) > 65535 {
			t.Fatal("oversized")
		}
	})
}

// TestDoH resolves over DNS over HTTPS (RFC 8484: POST application/dns-message, ID 0).
func TestDoH(t *testing.T) {
	var gotType, gotMethod string
	var gotID uint16 = 1
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotType, gotMethod = r.Header.Get("Content-Type"), r.Method
		body, _ := io.ReadAll(r.Body)
		var m dnsmessage.Message
		if err := m.Unpack(body); err != nil || len(m.Questions) != 1 {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		gotID = m.Header.ID
		w.Header().Set("Content-Type", "application/dns-message")
		_, _ = w.Write(reply(t, m.Header.ID, m.Questions[0], 120, netip.MustParseAddr("203.0.113.8")))
	}))
	defer srv.Close()
	s := New(Options{Upstream: srv.URL + "/dns-query", HTTPClient: srv.Client()})
	m := unpack(t, s.Handle(context.Background(), query(t, 77, "t.me.", dnsmessage.TypeA, 0), true))
	if m.Header.ID != 77 || len(m.Answers) != 1 || netip.AddrFrom4(m.Answers[0].Body.(*dnsmessage.AResource).A) != netip.MustParseAddr("203.0.113.8") {
		t.Fatalf("answer %+v", m)
	}
	if gotType != "application/dns-message" || gotMethod != http.MethodPost || gotID != 0 {
		t.Errorf("request: %s %s, ID %d", gotMethod, gotType, gotID)
	}
	bad := New(Options{Upstream: srv.URL + "/nothing", HTTPClient: &http.Client{Transport: srv.Client().Transport, Timeout: time.Second}})
	srv.Config.Handler = http.NotFoundHandler()
	if m := unpack(t, bad.Handle(context.Background(), query(t, 78, "t.me.", dnsmessage.TypeA, 0), true)); m.Header.RCode != dnsmessage.RCodeServerFailure {
		t.Errorf("HTTP 404 gave %s, want SERVFAIL", m.Header.RCode)
	}
}
