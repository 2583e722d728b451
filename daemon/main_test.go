package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tgtun/tgtun/daemon/control"
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
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	portWord := write("port", "config proxy 'p'\n\toption server '198.51.100.6'\n\toption port 'abc'\n")
	typo := write("typo", "config main 'main'\n\toption enabled '0'\n\toption fail_mod 'direct'\n")
	syntax := write("syntax", "config main 'main'\n\toption enabled '1'\n\toption fail_mode 'block\n\toption tun_mtu '1'\n")
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
		{"config check ok but disabled says so", []string{"config", "check", "-c", good}, exitOK, []string{"enabled '0'", "uci set tgtun.main.enabled=1"}, nil},
		{"shipped default config", []string{"config", "check", "-c", "../openwrt/files/etc/config/tgtun"}, exitOK, []string{"ok"}, nil},
		{"config check reports every error with file:line", []string{"config", "check", "-c", bad}, exitFail, nil,
			[]string{bad + ":2:", "tun_mtu", bad + ":6:", "port '70000' is out of range 1-65535", "2 error(s)"}},
		{"missing file", []string{"config", "check", "-c", filepath.Join(dir, "nope")}, exitFail, nil, []string{"nope"}},
		{"bad flag", []string{"config", "check", "-x"}, exitUsage, nil, []string{"-x"}},
		{"stray argument", []string{"status", "extra"}, exitUsage, nil, []string{`unexpected argument "extra"`}},
		{"status without daemon", []string{"status", "--socket", filepath.Join(dir, "none.sock"), "-c", good}, exitFail, nil,
			[]string{"is it running?", "not enabled", "uci set tgtun.main.enabled=1", "/etc/init.d/tgtun start"}},
		{"check without daemon, bad config", []string{"check", "--socket", filepath.Join(dir, "none.sock"), "-c", bad}, exitFail, nil,
			[]string{"is it running?", "2 error(s)", "tgtun config check -c " + bad}},
		{"help names every command with a summary", []string{"help"}, exitOK,
			[]string{"run ", "run the daemon in the foreground", "config check   validate", "update-lists", "help COMMAND"}, nil},
		{"help run", []string{"help", "run"}, exitOK,
			[]string{"tgtun run: run the daemon", "Usage: tgtun run [flags]", "-socket path", "Examples:", "  tgtun run"}, nil},
		{"run --help", []string{"run", "--help"}, exitOK, []string{"tgtun run: run the daemon", "Examples:"}, nil},
		{"version --help", []string{"version", "--help"}, exitOK, []string{"tgtun version: print the version", "Examples:"}, nil},
		{"status -h documents -json", []string{"status", "-h"}, exitOK, []string{"-json", "raw JSON", "tgtun status -json"}, nil},
		{"help config check", []string{"help", "config", "check"}, exitOK, []string{"-strict", "tgtun config check -c"}, nil},
		{"help of an unknown command", []string{"help", "frob"}, exitUsage, nil, []string{`unknown command "frob"`}},
		{"bad flag points to help", []string{"run", "-x"}, exitUsage, nil, []string{"-x", "tgtun help run"}},
		{"--version", []string{"--version"}, exitOK, []string{"tgtun "}, nil},
		{"port that is not a number", []string{"config", "check", "-c", portWord}, exitFail, nil, []string{"port 'abc' is not a number"}},
		{"unknown option is a warning", []string{"config", "check", "-c", typo}, exitOK,
			[]string{"ok"}, []string{"warning: ", "unknown option 'fail_mod'; did you mean 'fail_mode'?"}},
		{"--strict fails on warnings", []string{"config", "check", "--strict", "-c", typo}, exitFail,
			nil, []string{"did you mean 'fail_mode'?", "1 warning(s), which --strict counts as errors"}},
		{"syntax error first and alone", []string{"config", "check", "-c", syntax}, exitFail, nil,
			[]string{syntax + ":3: unterminated", "1 error(s)"}},
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

// TestExplainDown: a daemon that does not answer is explained in steps a user can take.
func TestExplainDown(t *testing.T) {
	dir := t.TempDir()
	enabled := filepath.Join(dir, "enabled")
	conf := "config main 'main'\n\toption enabled '1'\n\nconfig proxy 'p'\n\toption server '198.51.100.6'\n\toption port '1080'\n"
	if err := os.WriteFile(enabled, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tail logTail
		want []string
	}{
		{"no logread", func() ([]string, bool) { return nil, false }, []string{"not started", "/etc/init.d/tgtun start", "tgtun run -c " + enabled}},
		{"logread, nothing logged", func() ([]string, bool) { return nil, true }, []string{"not started", "/etc/init.d/tgtun start"}},
		{"exited", func() ([]string, bool) {
			var l []string
			for i := range 20 {
				l = append(l, fmt.Sprintf("line %d", i))
			}
			return append(l, "tgtun: network setup: nft: no such file"), true
		}, []string{"started and exited", "logread -e tgtun", "  tgtun: network setup: nft: no such file", "line 13", "/etc/init.d/tgtun start"}},
		{"missing config", nil, []string{"does not exist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := enabled
			if tt.tail == nil {
				path = filepath.Join(dir, "missing")
			}
			got := explainDown(path, tt.tail)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
			if strings.Contains(got, "line 12\n") {
				t.Errorf("shows more than the last lines:\n%s", got)
			}
		})
	}
}

// TestExplainCallError: a socket the user may not open says so (root bypasses file modes,
// so the error is built here rather than provoked), an unreachable daemon is explained,
// and a daemon's own error needs nothing more.
func TestExplainCallError(t *testing.T) {
	none := func() ([]string, bool) { return nil, false }
	good := filepath.Join(t.TempDir(), "tgtun")
	if err := os.WriteFile(good, []byte("config main 'main'\n\toption enabled '0'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	denied := fmt.Errorf("%w: connect to /s: %w", control.ErrUnreachable, syscall.EACCES)
	if got := explainCallError(denied, "/s", good, none); !strings.Contains(got, "Only root may use the control socket /s") {
		t.Errorf("permission denied: %q", got)
	}
	down := fmt.Errorf("%w: connect to /s: %w", control.ErrUnreachable, syscall.ECONNREFUSED)
	if got := explainCallError(down, "/s", good, none); !strings.Contains(got, "uci set tgtun.main.enabled=1") {
		t.Errorf("daemon down: %q", got)
	}
	if got := explainCallError(errors.New("reload: configuration not reloaded"), "/s", good, none); got != "" {
		t.Errorf("daemon error: %q", got)
	}
}
