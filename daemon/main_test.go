package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte("config main 'main'\n\toption enabled '0'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("config main 'main'\n\toption tun_mtu 'big'\n\nconfig proxy 'p'\n\toption server '198.51.100.6'\n\toption port '70000'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		out, err []string // substrings expected on stdout / stderr
	}{
		{"no args", nil, exitUsage, nil, []string{"Usage:"}},
		{"help lists every subcommand", []string{"--help"}, exitOK,
			[]string{"run", "status", "reload", "update-lists", "check", "config check", "version"}, nil},
		{"version", []string{"version"}, exitOK, []string{"tgtun "}, nil},
		{"unknown command", []string{"frobnicate"}, exitUsage, nil, []string{`unknown command "frobnicate"`}},
		{"config without check", []string{"config"}, exitUsage, nil, []string{"expected 'check'"}},
		{"config check ok", []string{"config", "check", "-c", good}, exitOK, []string{"ok"}, nil},
		{"shipped default config", []string{"config", "check", "-c", "../openwrt/files/etc/config/tgtun"}, exitOK, []string{"ok"}, nil},
		{"config check reports every error with file:line", []string{"config", "check", "-c", bad}, exitFail, nil,
			[]string{bad + ":2:", "tun_mtu", bad + ":6:", "port '70000' is out of range 1-65535", "2 error(s)"}},
		{"missing file", []string{"config", "check", "-c", filepath.Join(dir, "nope")}, exitFail, nil, []string{"nope"}},
		{"bad flag", []string{"config", "check", "-x"}, exitUsage, nil, []string{"-x"}},
		{"stray argument", []string{"status", "extra"}, exitUsage, nil, []string{`unexpected argument "extra"`}},
		{"status without daemon", []string{"status", "--socket", filepath.Join(dir, "none.sock")}, exitFail, nil, []string{"is tgtun running?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runCLI(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, s := range tt.out {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tt.err {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
		})
	}
}
