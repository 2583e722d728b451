package main

import (
	"math"
	"testing"

	"github.com/tgtun/tgtun/bench/mips/wire"
)

func TestParseVariant(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    variant
		wantErr bool
	}{
		{in: "tproxy=bin/tgtun-mipsel", want: variant{Name: "tproxy", Path: "bin/tgtun-mipsel"}},
		{in: "gogc200=/tmp/t,GOGC=200", want: variant{Name: "gogc200", Path: "/tmp/t", Env: []string{"GOGC=200"}}},
		{in: "bin/tgtun", wantErr: true},
		{in: "=bin/tgtun", wantErr: true},
		{in: "hev=bin/tgtun", wantErr: true}, // a peer's name
		{in: "a/b=bin/tgtun", wantErr: true},
		{in: "x=bin/tgtun,NOTENV", wantErr: true},
	} {
		got, err := parseVariant(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseVariant(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && (got.Name != tc.want.Name || got.Path != tc.want.Path || len(got.Env) != len(tc.want.Env)) {
			t.Errorf("parseVariant(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{math.NaN(), 5, math.Inf(1)}, 5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
}

// TestSummarize checks the per-round ratios, their median, the relay cost net of the
// baseline, and the targets, on figures made up for two rounds.
func TestSummarize(t *testing.T) {
	res := func(round int, name string, up, vmUp float64, rss float64) wire.Result {
		return wire.Result{Round: round, Name: name, Group: "socks", Values: map[string]float64{
			"up_mbps": up, "down_mbps": up, "up_bytes": gib, "down_bytes": gib,
			"up_vm_cpu_s": vmUp, "down_vm_cpu_s": vmUp, "idle_rss_mib": rss, "idle_cpu_pct": 0.1,
		}}
	}
	results := []wire.Result{
		res(1, "base", 100, 10, 0), res(1, "tgtun", 40, 30, 6), res(1, "hev", 20, 50, 2),
		res(2, "base", 50, 10, 0), res(2, "tgtun", 30, 20, 7), res(2, "hev", 30, 30, 2),
		{Round: 3, Name: "tgtun", Group: "socks", Error: "boom", Values: map[string]float64{}},
	}
	o := options{variants: []variant{{Name: "tgtun"}}, rounds: 3}
	rep := summarize(o, results)
	get := func(key, against string) row {
		for _, r := range rep.Rows {
			if r.Key == key && r.Client == "tgtun" && r.Against == against {
				return r
			}
		}
		t.Fatalf("no row %s vs %s in %+v", key, against, rep.Rows)
		return row{}
	}
	up := get("up_mbps", "hev")
	// ratios 2.0 and 1.0: median 1.5, target >= 1.5 met but round 2 is not above 1.0... it is 1.0: met
	if len(up.Ratios) != 2 || up.Ratio != 1.5 || up.Met == nil || !*up.Met {
		t.Errorf("upload row %+v", up)
	}
	cost := get("relay_cpu_per_gib", "hev")
	// round 1: (30-10)/(50-10) = 0.5; round 2: (20-10)/(30-10) = 0.5
	if math.Abs(cost.Ratio-0.5) > 1e-9 || cost.Met == nil || !*cost.Met {
		t.Errorf("relay cost row %+v", cost)
	}
	if r := get("idle_rss_mib", "hev"); r.Value != 6.5 || r.Met == nil || !*r.Met {
		t.Errorf("idle RSS row %+v", r)
	}
	failed := false
	for _, n := range rep.Notes {
		failed = failed || (len(n) > 0 && contains(n, "FAILED: boom"))
	}
	if !failed {
		t.Errorf("the failed run is not noted: %v", rep.Notes)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
