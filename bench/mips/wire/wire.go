// Package wire holds what the host side of `make bench-mips` and the program inside the
// emulated router exchange: the plan of one boot (host → guest, a JSON file on the bench
// disk) and the result lines the guest prints on the serial console (guest → host).
package wire

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Console line prefixes. Everything else on the console (the kernel's messages, the
// programs' own output) is ignored by the host, but kept for the error report.
const (
	ResultPrefix   = "@@result "   // followed by one Result as JSON
	ProgressPrefix = "@@progress " // followed by free text for the operator
	FatalPrefix    = "@@fatal "    // the guest gave up: followed by the reason
	DonePrefix     = "@@done"      // the guest finished the plan
)

// Plan is what one boot of the emulated router runs.
type Plan struct {
	Round       int    `json:"round"`
	Kind        string `json:"kind"`         // "socks" or "enc"
	Seconds     int    `json:"seconds"`      // iperf3 seconds per direction
	Conns       int    `json:"conns"`        // connect+first byte samples
	Flows       int    `json:"flows"`        // idle TCP flows held
	IdleSeconds int    `json:"idle_seconds"` // idle CPU window
	// Servers: argv run in the proxy namespace before the runs (dante, the Xray or
	// sing-box server), each waited for on its TCP address.
	Servers []Server `json:"servers"`
	// TLSSite runs the site a REALITY server imitates, in the proxy namespace.
	TLSSite *TLSSite `json:"tls_site,omitempty"`
	Runs    []Run    `json:"runs"`
	// Files the guest writes into the result disk's tar (logs, profiles): globs.
	Collect []string `json:"collect,omitempty"`
}

// Server is a program of the proxy host.
type Server struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	Wait string   `json:"wait"` // TCP address (IP:port) that must accept before the runs
}

// TLSSite is the imitated site: a TLS 1.3 server with the given certificate.
type TLSSite struct {
	Addr string `json:"addr"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
	// AES makes the site choose as a server with AES instructions does (AES-GCM unless
	// the client puts ChaCha20 first); otherwise it chooses as Go does on a core without
	// them (ChaCha20-Poly1305 first).
	AES bool `json:"aes"`
}

// Run is one variant measured: a relay in the router namespace (or none: the baseline,
// whose client speaks SOCKS5 to dante itself).
type Run struct {
	Name  string `json:"name"`  // "tgtun", "hev", "base", "sing-box", "xray", with a suffix per protocol
	Group string `json:"group"` // what it is compared within: "socks" or the protocol's name
	// Argv starts the relay in the router namespace; empty for the baseline.
	Argv []string `json:"argv,omitempty"`
	// Tun is the TUN device the relay creates, which the guest then brings up and
	// routes the messenger's subnet into ("" when the relay routes by itself, as tgtun).
	Tun     string `json:"tun,omitempty"`
	TunAddr string `json:"tun_addr,omitempty"` // address to put on Tun, if any
	// Socks, for the baseline: the SOCKS5 server the client uses directly.
	Socks string `json:"socks,omitempty"`
	// What to measure.
	Idle, Flows, Latency, Throughput bool
	// Profile: send SIGUSR2 around these phases ("idle", "up", "down") so that a tgtun
	// built with -tags tgtun_pprof and TGTUN_PPROF set writes a CPU profile of each.
	Profile []string `json:"profile,omitempty"`
}

// Result is one Run's figures, printed as one console line.
type Result struct {
	Round  int                `json:"round"`
	Name   string             `json:"name"`
	Group  string             `json:"group"`
	Error  string             `json:"error,omitempty"`
	Values map[string]float64 `json:"values"`
	Notes  map[string]string  `json:"notes,omitempty"`
}

// Line renders r as its console line.
func (r Result) Line() string {
	raw, err := json.Marshal(r)
	if err != nil {
		panic(err) // a map of floats and strings always encodes
	}
	return ResultPrefix + string(raw)
}

// ParseResult reads a console line; ok is false for any other line.
func ParseResult(line string) (r Result, ok bool, err error) {
	i := strings.Index(line, ResultPrefix)
	if i < 0 {
		return Result{}, false, nil
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(line[i+len(ResultPrefix):])), &r); err != nil {
		return Result{}, true, fmt.Errorf("result line %q: %w", line, err)
	}
	return r, true, nil
}

// Summary is a one-line account of r for the operator.
func (r Result) Summary() string {
	if r.Error != "" {
		return fmt.Sprintf("%s/%s: FAILED: %s", r.Group, r.Name, firstLine(r.Error))
	}
	var parts []string
	for _, k := range []string{"up_mbps", "down_mbps", "idle_rss_mib", "idle_cpu_pct", "flows_rss_mib", "connect_ms_median", "start_cpu_s", "tls_handshakes"} {
		if v, ok := r.Values[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%.3g", k, v))
		}
	}
	return fmt.Sprintf("%s/%s: %s", r.Group, r.Name, strings.Join(parts, " "))
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
