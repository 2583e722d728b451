package main

import (
	"fmt"
	"io"
	"strings"
)

// Target maps an OpenWrt package architecture to the Go toolchain settings that build a
// binary for it. Variant is the value of the one extra variable the architecture needs
// (GOMIPS, GOARM or GO386), empty when it needs none.
type Target struct {
	Arch    string // OpenWrt package architecture, as in the .ipk name
	GOARCH  string
	Variant string
}

// variantVar names the Go environment variable that carries Variant for GOARCH.
func (t Target) variantVar() string {
	switch t.GOARCH {
	case "mips", "mipsle":
		return "GOMIPS"
	case "mips64", "mips64le":
		return "GOMIPS64"
	case "arm":
		return "GOARM"
	case "386":
		return "GO386"
	}
	return ""
}

// Env is the environment that makes `go build` produce a static binary for t.
func (t Target) Env() []string {
	env := []string{"GOOS=linux", "GOARCH=" + t.GOARCH, "CGO_ENABLED=0"}
	if v := t.variantVar(); v != "" && t.Variant != "" {
		env = append(env, v+"="+t.Variant)
	}
	return env
}

// targets follows lang/golang/golang-values.mk of the OpenWrt packages feed: every
// OpenWrt MIPS target is soft-float; ARM without an FPU suffix is GOARM=5, "vfp"/"vfpv2"
// is GOARM=6 and any later FPU is GOARM=7. The first five are the ones `make ipk`
// releases; the rest are common enough to build on request.
var targets = []Target{
	{"mipsel_24kc", "mipsle", "softfloat"},
	{"mips_24kc", "mips", "softfloat"},
	{"arm_cortex-a7_neon-vfpv4", "arm", "7"},
	{"aarch64_cortex-a53", "arm64", ""},
	{"x86_64", "amd64", ""},
	{"mipsel_74kc", "mipsle", "softfloat"},
	{"mips_4kec", "mips", "softfloat"},
	{"arm_cortex-a9", "arm", "5"},
	{"arm_cortex-a9_vfpv3-d16", "arm", "7"},
	{"arm_cortex-a15_neon-vfpv4", "arm", "7"},
	{"arm_arm1176jzf-s_vfp", "arm", "6"},
	{"aarch64_cortex-a72", "arm64", ""},
	{"aarch64_generic", "arm64", ""},
	{"i386_pentium4", "386", "sse2"},
}

// releaseTargets is how many entries at the head of targets a release builds.
const releaseTargets = 5

func lookupTarget(arch string) (Target, error) {
	for _, t := range targets {
		if t.Arch == arch {
			return t, nil
		}
	}
	known := make([]string, len(targets))
	for i, t := range targets {
		known[i] = t.Arch
	}
	return Target{}, fmt.Errorf("unknown OpenWrt architecture %q (known: %s)", arch, strings.Join(known, ", "))
}

// printTargets writes one "ARCH GOARCH VARIANT" line per target ("-" for no variant), in a
// form a shell `while read arch goarch variant` loop consumes.
func printTargets(w io.Writer, ts []Target) error {
	for _, t := range ts {
		v := t.Variant
		if v == "" {
			v = "-"
		}
		if _, err := fmt.Fprintf(w, "%s %s %s\n", t.Arch, t.GOARCH, v); err != nil {
			return err
		}
	}
	return nil
}
