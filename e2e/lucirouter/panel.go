package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// panel is a subscription provider's server on the test network's internet host: the
// daemon in the router fetches subscriptions from it (directly, or through the proxy
// on the proxy host) as it would from a provider's panel. One answer per path.
type panel struct {
	url     string
	mu      sync.Mutex
	answers map[string]panelAnswer
	seen    map[string]int
}

// panelAnswer is what the panel sends for a path. Reason, when set, is the status
// line's text instead of the standard one (a provider's own words).
type panelAnswer struct {
	Status  int               `json:"status"`
	Reason  string            `json:"reason"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers"`
}

// setPanel starts the panel the first time and sets the answers given.
func (r *router) setPanel(answers map[string]json.RawMessage) (any, error) {
	r.mu.Lock()
	p := r.panel
	r.mu.Unlock()
	if p == nil {
		var err error
		if p, err = startPanel(r.net); err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.panel = p
		r.mu.Unlock()
	}
	set := map[string]panelAnswer{}
	for path, raw := range answers {
		var a panelAnswer
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("panel answer of %s: %w", path, err)
		}
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("panel answer of %q: a path starts with /", path)
		}
		if a.Status == 0 {
			a.Status = http.StatusOK
		}
		set[path] = a
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for path, a := range set {
		p.answers[path] = a
	}
	seen := map[string]int{}
	for path, n := range p.seen {
		seen[path] = n
	}
	return map[string]any{"url": p.url, "requests": seen}, nil
}

func startPanel(n *testnet.Net) (*panel, error) {
	port, err := n.FreePort(n.Inet, testnet.DirectV4)
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(testnet.DirectV4, port)
	l, err := n.Listen(n.Inet, "tcp", addr.String()) // closed with the test network
	if err != nil {
		return nil, err
	}
	p := &panel{url: "http://" + addr.String(), answers: map[string]panelAnswer{}, seen: map[string]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return p, nil
}

func (p *panel) serve(w http.ResponseWriter, req *http.Request) {
	p.mu.Lock()
	a, ok := p.answers[req.URL.Path]
	p.seen[req.URL.Path]++
	p.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	if a.Reason == "" {
		for k, v := range a.Headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(a.Status)
		_, _ = w.Write([]byte(a.Body))
		return
	}
	// net/http writes only the standard text of a status: a status line of the
	// provider's own words is written on the connection itself.
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	c, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\n", a.Status, a.Reason)
	keys := make([]string, 0, len(a.Headers))
	for k := range a.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(buf, "%s: %s\r\n", k, a.Headers[k])
	}
	fmt.Fprintf(buf, "Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(a.Body), a.Body)
	_ = buf.Flush()
}
