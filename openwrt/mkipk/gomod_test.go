package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGoLineIsOldestAccepted: go.mod's go line is the newest go line among the modules
// it builds with, not higher: that is the oldest Go toolchain the OpenWrt feed may use
// (it builds with GOTOOLCHAIN=local). A new dependency that needs a newer Go raises it
// (go get does); raising it without one fails here. The rule is in openwrt/README.md.
func TestGoLineIsOldestAccepted(t *testing.T) {
	goBin := goCommand(t)
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{if .Main}}main {{end}}{{.GoVersion}}", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -m all: %v\n%s", err, out)
	}
	var mainLine, newest string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if v, ok := strings.CutPrefix(l, "main "); ok {
			mainLine = v
			continue
		}
		if l != "" && goVersionLess(newest, l) {
			newest = l
		}
	}
	if mainLine == "" || newest == "" {
		t.Fatalf("no go lines in:\n%s", out)
	}
	if mainLine != newest {
		t.Errorf("go.mod says go %s; the dependencies need go %s: set `go %s` (go mod edit -go=%s)", mainLine, newest, newest, newest)
	}
}

// goVersionLess compares go lines such as 1.25.0 and 1.26.3 numerically ("" is lowest).
func goVersionLess(a, b string) bool {
	if a == "" {
		return b != ""
	}
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		x, y := 0, 0
		if i < len(pa) {
			x = atoiPrefix(pa[i])
		}
		if i < len(pb) {
			y = atoiPrefix(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func atoiPrefix(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}
