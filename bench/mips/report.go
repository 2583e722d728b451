package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tgtun/tgtun/bench/mips/wire"
)

const gib = float64(1 << 30)

// derived adds the figures computed from a run's raw values: CPU per GiB (the relay
// process's own, the whole machine's, and the machine's minus the baseline's: the relay
// cost), and the flows' memory net of the baseline's.
func derived(r, base *wire.Result) map[string]float64 {
	v := map[string]float64{}
	for k, x := range r.Values {
		v[k] = x
	}
	perGiB := func(cpu, bytes float64) float64 {
		if bytes <= 0 {
			return math.NaN()
		}
		return cpu / (bytes / gib)
	}
	bytes := r.Values["up_bytes"] + r.Values["down_bytes"]
	if _, ok := r.Values["up_bytes"]; ok {
		v["vm_cpu_per_gib"] = perGiB(r.Values["up_vm_cpu_s"]+r.Values["down_vm_cpu_s"], bytes)
		for _, d := range []string{"up", "down"} {
			v[d+"_vm_cpu_per_gib"] = perGiB(r.Values[d+"_vm_cpu_s"], r.Values[d+"_bytes"])
		}
		if _, ok := r.Values["up_proc_cpu_s"]; ok {
			v["proc_cpu_per_gib"] = perGiB(r.Values["up_proc_cpu_s"]+r.Values["down_proc_cpu_s"], bytes)
			for _, d := range []string{"up", "down"} {
				v[d+"_proc_cpu_per_gib"] = perGiB(r.Values[d+"_proc_cpu_s"], r.Values[d+"_bytes"])
			}
		}
	}
	if base != nil && base.Error == "" {
		b := derived(base, nil)
		for _, k := range []string{"", "up_", "down_"} {
			if x, ok := v[k+"vm_cpu_per_gib"]; ok {
				v[k+"relay_cpu_per_gib"] = x - b[k+"vm_cpu_per_gib"]
			}
		}
		for _, k := range []string{"kernel", "slab"} {
			if x, ok := v["flows_"+k+"_delta_kib"]; ok {
				if y, ok := b["flows_"+k+"_delta_kib"]; ok {
					v["flows_"+k+"_relay_kib"] = x - y
				}
			}
		}
	}
	if x, ok := v["flows_rss_mib"]; ok {
		if y, ok := v["idle_rss_mib"]; ok {
			v["flows_rss_growth_mib"] = x - y
		}
	}
	return v
}

// figureSpec is one row of the table: a value of the measured client against the same
// value of the reference client of the same round.
type figureSpec struct {
	key, label, unit string
	// target: "ratio>=X", "ratio<=X", "value<=X", "value<=base+X", or "" (none).
	target string
	// minRound: every round's ratio must also be at least this (0: no such check).
	minRound float64
}

var socksFigures = []figureSpec{
	{key: "up_mbps", label: "upload", unit: "Mbit/s", target: "ratio>=1.5", minRound: 1.0},
	{key: "down_mbps", label: "download", unit: "Mbit/s", target: "ratio>=1.5", minRound: 1.0},
	{key: "relay_cpu_per_gib", label: "relay cost: machine CPU per GiB minus the baseline's", unit: "CPU-s/GiB", target: "ratio<=0.5"},
	{key: "up_relay_cpu_per_gib", label: "relay cost, upload", unit: "CPU-s/GiB"},
	{key: "down_relay_cpu_per_gib", label: "relay cost, download", unit: "CPU-s/GiB"},
	{key: "proc_cpu_per_gib", label: "relay process utime+stime per GiB", unit: "CPU-s/GiB"},
	{key: "vm_cpu_per_gib", label: "machine CPU per GiB (everything)", unit: "CPU-s/GiB"},
	{key: "idle_rss_mib", label: "idle RSS", unit: "MiB", target: "value<=8"},
	{key: "idle_rss_anon_mib", label: "… of it anonymous (heap, stacks)", unit: "MiB"},
	{key: "idle_rss_file_mib", label: "… of it the executable's pages (clean page cache)", unit: "MiB"},
	{key: "idle_cpu_pct", label: "idle CPU (% of the core)", unit: "%", target: "value<=base+0.5"},
	{key: "flows_rss_mib", label: "RSS holding the idle flows", unit: "MiB"},
	{key: "flows_rss_anon_mib", label: "… of it anonymous", unit: "MiB"},
	{key: "flows_kernel_relay_kib", label: "kernel TCP buffers (sockstat mem) of the idle flows, net of the baseline's", unit: "KiB"},
	{key: "flows_slab_relay_kib", label: "kernel slab (socket objects) of the idle flows, net of the baseline's", unit: "KiB"},
	{key: "connect_ms_median", label: "connect + first byte, median", unit: "ms", target: "ratio<=1.0"},
	{key: "start_cpu_s", label: "start-up CPU", unit: "CPU-s"},
	{key: "ctx_switches", label: "context switches during the up+down transfers", unit: "count"},
	{key: "threads", label: "threads after the transfers", unit: "count"},
}

func encFigures(proto, against string) []figureSpec {
	thr := "ratio>=1.0" // issue 21: the encrypted rows at least as fast as their own clients
	cpu := ""
	main := proto == "vless-reality" || strings.HasPrefix(proto, "ss2022")
	if main && against == "sing-box" {
		thr, cpu = "ratio>=2.0", "ratio<=0.5" // issue 25
	}
	if main && against == "xray" {
		thr = "ratio>=1.3"
	}
	return []figureSpec{
		{key: "up_mbps", label: "upload", unit: "Mbit/s", target: thr},
		{key: "down_mbps", label: "download", unit: "Mbit/s", target: thr},
		{key: "relay_cpu_per_gib", label: "relay cost: machine CPU per GiB minus the dante baseline's", unit: "CPU-s/GiB", target: cpu},
		{key: "proc_cpu_per_gib", label: "client process utime+stime per GiB", unit: "CPU-s/GiB"},
		{key: "idle_rss_mib", label: "idle RSS", unit: "MiB"},
		{key: "idle_rss_anon_mib", label: "… of it anonymous (heap, stacks)", unit: "MiB"},
		{key: "hwm_mib", label: "peak RSS (VmHWM)", unit: "MiB"},
		{key: "idle_cpu_pct", label: "idle CPU (% of the core)", unit: "%"},
		{key: "start_cpu_s", label: "start-up CPU", unit: "CPU-s"},
		{key: "tls_handshakes", label: "TLS handshakes seen by the REALITY site per run", unit: "count"},
	}
}

// row is one line of the table and of the JSON.
type row struct {
	Group    string    `json:"group"`
	Figure   string    `json:"figure"`
	Key      string    `json:"key"`
	Unit     string    `json:"unit"`
	Client   string    `json:"client"`
	Against  string    `json:"against"`
	Value    float64   `json:"value"`    // median over rounds
	Baseline float64   `json:"baseline"` // median over rounds
	Ratio    float64   `json:"ratio"`    // median of the per-round ratios
	Ratios   []float64 `json:"ratios"`   // per round
	Values   []float64 `json:"values"`
	Bases    []float64 `json:"baselines"`
	Target   string    `json:"target,omitempty"`
	Met      *bool     `json:"met,omitempty"`
}

type report struct {
	Date     string        `json:"date"`
	Minutes  float64       `json:"minutes"`
	RunDir   string        `json:"run_dir"`
	Machine  string        `json:"machine"`
	Variants []variant     `json:"variants"`
	Rounds   int           `json:"socks_rounds"`
	Enc      int           `json:"enc_rounds"`
	Rows     []row         `json:"rows"`
	Notes    []string      `json:"notes,omitempty"`
	Results  []wire.Result `json:"results"`
}

func median(xs []float64) float64 {
	var s []float64
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(o options, results []wire.Result) *report {
	rep := &report{Date: time.Now().UTC().Format(time.RFC3339), Variants: o.variants, Rounds: o.rounds, Enc: o.encRounds, Results: results,
		Machine: "qemu-system-mipsel -M malta -cpu 24Kc -m 256 -smp 1 (TCG), Debian bookworm mipsel, kernel 4kc-malta"}
	find := func(round int, group, name string) *wire.Result {
		for i := range results {
			r := &results[i]
			if r.Round == round && r.Group == group && r.Name == name {
				return r
			}
		}
		return nil
	}
	rounds := func(group string) []int {
		var rs []int
		for _, r := range results {
			if r.Group == group && !slices.Contains(rs, r.Round) {
				rs = append(rs, r.Round)
			}
		}
		slices.Sort(rs)
		return rs
	}
	compare := func(group, baseGroup, client, against string, specs []figureSpec) {
		for _, f := range specs {
			rw := row{Group: group, Figure: f.label, Key: f.key, Unit: f.unit, Client: client, Against: against, Target: f.target}
			for _, rd := range rounds(group) {
				c, a, base := find(rd, group, client), find(rd, group, against), find(rd, baseGroup, "base")
				if c == nil || a == nil || c.Error != "" || a.Error != "" {
					continue
				}
				cv, ok1 := derived(c, base)[f.key]
				av, ok2 := derived(a, base)[f.key]
				if !ok1 || !ok2 {
					continue
				}
				rw.Values, rw.Bases = append(rw.Values, cv), append(rw.Bases, av)
				ratio := math.NaN()
				if av != 0 {
					ratio = cv / av
				}
				rw.Ratios = append(rw.Ratios, ratio)
			}
			if len(rw.Values) == 0 {
				continue
			}
			rw.Value, rw.Baseline, rw.Ratio = median(rw.Values), median(rw.Bases), median(rw.Ratios)
			if f.target != "" {
				ok := meets(f.target, rw)
				if f.minRound > 0 && slices.ContainsFunc(rw.Ratios, func(x float64) bool { return x < f.minRound }) {
					ok = false
				}
				rw.Met = &ok
				if f.minRound > 0 {
					rw.Target += fmt.Sprintf(", no round < %.1f", f.minRound)
				}
			}
			rep.Rows = append(rep.Rows, rw)
		}
	}
	for _, v := range o.variants {
		compare("socks", "socks", v.Name, "hev", socksFigures)
		for _, other := range o.variants {
			if other.Name != v.Name {
				compare("socks", "socks", v.Name, other.Name, socksFigures[:9])
			}
		}
	}
	// The baseline's own figures, for scale.
	compareBase := []figureSpec{{key: "up_mbps", label: "upload", unit: "Mbit/s"}, {key: "down_mbps", label: "download", unit: "Mbit/s"},
		{key: "connect_ms_median", label: "connect + first byte, median", unit: "ms"}}
	compare("socks", "socks", "hev", "base", compareBase)
	for _, p := range o.protocols {
		for _, v := range o.variants {
			compare(p, "enc", v.Name, "sing-box", encFigures(p, "sing-box"))
			compare(p, "enc", v.Name, "xray", encFigures(p, "xray"))
		}
	}
	for _, r := range results {
		if s := r.Notes["tls_suites"]; s != "" {
			rep.Notes = append(rep.Notes, fmt.Sprintf("round %d %s %s: suites chosen by the REALITY site: %s", r.Round, r.Group, r.Name, s))
		}
		if r.Error != "" {
			rep.Notes = append(rep.Notes, fmt.Sprintf("round %d %s %s FAILED: %s", r.Round, r.Group, r.Name, firstLine(r.Error)))
		}
	}
	return rep
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func meets(target string, r row) bool {
	var x float64
	switch {
	case strings.HasPrefix(target, "ratio>="):
		fmt.Sscan(strings.TrimPrefix(target, "ratio>="), &x)
		return r.Ratio >= x
	case strings.HasPrefix(target, "ratio<="):
		fmt.Sscan(strings.TrimPrefix(target, "ratio<="), &x)
		return r.Ratio <= x
	case strings.HasPrefix(target, "value<=base+"):
		fmt.Sscan(strings.TrimPrefix(target, "value<=base+"), &x)
		return r.Value <= r.Baseline+x
	case strings.HasPrefix(target, "value<="):
		fmt.Sscan(strings.TrimPrefix(target, "value<="), &x)
		return r.Value <= x
	}
	return false
}

func (rep *report) write(path string) error {
	// NaN has no JSON form: such figures are left out of the rows' numbers.
	clean := func(x float64) float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0
		}
		return x
	}
	for i := range rep.Rows {
		r := &rep.Rows[i]
		r.Value, r.Baseline, r.Ratio = clean(r.Value), clean(r.Baseline), clean(r.Ratio)
		for j := range r.Ratios {
			r.Ratios[j] = clean(r.Ratios[j])
		}
	}
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}

func (rep *report) print(w io.Writer) {
	group := ""
	for _, r := range rep.Rows {
		if r.Group != group {
			group = r.Group
			fmt.Fprintf(w, "\n== %s (medians over rounds; ratio = median of the per-round ratios)\n", group)
			fmt.Fprintf(w, "%-62s %10s %10s %7s  %-10s %s\n", "figure (client / reference)", "value", "reference", "ratio", "unit", "target")
		}
		target := ""
		if r.Target != "" {
			verdict := "missed"
			if r.Met != nil && *r.Met {
				verdict = "met"
			}
			target = r.Target + ": " + verdict
		}
		name := fmt.Sprintf("%s (%s / %s)", r.Figure, r.Client, r.Against)
		fmt.Fprintf(w, "%-62s %10.2f %10.2f %7.2f  %-10s %s\n", name, r.Value, r.Baseline, r.Ratio, r.Unit, target)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}
