package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestVersionScheme runs openwrt/version.sh in a scratch git repository through its
// history: no tag, a tag, commits after it, the next tag. Every version must be valid for
// the .ipk name and for apk, and sort above the one before under both rules.
func TestVersionScheme(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("git: %v", err)
	}
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		c := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.org",
			"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	version := func() string {
		t.Helper()
		out, err := exec.Command("sh", "../version.sh", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("version.sh: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := version(); got != "0.0.0-r0" {
		t.Errorf("outside git: %q, want 0.0.0-r0", got)
	}
	git("init", "-q")
	commit := func() { git("commit", "-q", "--allow-empty", "-m", "x") }
	var seen []string
	step := func(want string) {
		t.Helper()
		got := version()
		if got != want {
			t.Errorf("version %q, want %q", got, want)
		}
		if !versionRE.MatchString(got) || !apkVersionRE.MatchString(got) {
			t.Errorf("version %q is not valid for opkg and apk", got)
		}
		if len(seen) > 0 && !versionLess(seen[len(seen)-1], got) {
			t.Errorf("%q does not sort above %q", got, seen[len(seen)-1])
		}
		seen = append(seen, got)
	}
	commit()
	step("0.0.0-r1")
	commit()
	step("0.0.0-r2")
	git("tag", "v0.1.0")
	step("0.1.0-r1")
	commit()
	commit()
	step("0.1.0-r3")
	git("tag", "v0.2.0")
	step("0.2.0-r1")
	commit()
	git("tag", "v1.0-beta")
	if out, err := exec.Command("sh", "../version.sh", dir).CombinedOutput(); err == nil {
		t.Errorf("a tag that is not vX.Y.Z was accepted: %s", out)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}

// versionLess compares X.Y.Z-rN versions (what version.sh prints) the way opkg and apk
// both order them: numerically by X, Y, Z, then N.
func versionLess(a, b string) bool {
	num := func(v string) []int {
		v = strings.Replace(v, "-r", ".", 1)
		var out []int
		for _, p := range strings.Split(v, ".") {
			n := 0
			for _, c := range p {
				n = n*10 + int(c-'0')
			}
			out = append(out, n)
		}
		return out
	}
	x, y := num(a), num(b)
	for i := range min(len(x), len(y)) {
		if x[i] != y[i] {
			return x[i] < y[i]
		}
	}
	return len(x) < len(y)
}
