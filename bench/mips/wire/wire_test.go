package wire

import (
	"strings"
	"testing"
)

func TestParseResult(t *testing.T) {
	good := Result{Round: 2, Name: "tgtun", Group: "socks", Values: map[string]float64{"up_mbps": 12.5}}
	for _, tc := range []struct {
		name    string
		line    string
		ok, bad bool
		want    float64
	}{
		{"plain", good.Line(), true, false, 12.5},
		{"after a kernel message on the same line", "[  12.3] random: crng init done" + good.Line(), true, false, 12.5},
		{"carriage return and spaces", good.Line() + " \r", true, false, 12.5},
		{"other line", "@@progress round 1: run 1/3 base", false, false, 0},
		{"kernel noise", "sd 0:0:0:0: [sda] Attached SCSI disk", false, false, 0},
		{"cut in the middle", good.Line()[:30], true, true, 0},
		{"not json", ResultPrefix + "{round: 1}", true, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok, err := ParseResult(tc.line)
			if ok != tc.ok || (err != nil) != tc.bad {
				t.Fatalf("ParseResult(%q) = ok %v, err %v; want ok %v, error %v", tc.line, ok, err, tc.ok, tc.bad)
			}
			if tc.ok && !tc.bad && (r.Values["up_mbps"] != tc.want || r.Round != 2 || r.Name != "tgtun") {
				t.Fatalf("ParseResult(%q) = %+v", tc.line, r)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	r := Result{Name: "hev", Group: "socks", Error: "iperf3 up: exit status 1\nlog...", Values: map[string]float64{}}
	if s := r.Summary(); !strings.Contains(s, "FAILED: iperf3 up") || strings.Contains(s, "log...") {
		t.Fatalf("Summary of a failed run = %q", s)
	}
}
