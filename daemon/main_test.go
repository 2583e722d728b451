package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
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
			[]string{"run", "status", "reload", "update-lists", "check", "config check", "proxy import", "version"}, nil},
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

// TestProxyImport: every kind of share link becomes a section that passes the same
// validation as `config check`; --write appends it and keeps the rest of the file.
func TestProxyImport(t *testing.T) {
	const (
		key16 = "AAECAwQFBgcICQoLDA0ODw=="
		uuid  = "b831381d-6324-4d53-ad4f-8cda48b30811"
		pbk   = "SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc"
	)
	for _, link := range []string{
		"socks5://u:p@198.51.100.6:1080#Home",
		"socks://198.51.100.6:1080",
		"http://u:p@[2001:db8::6]:3128",
		"ss://YWVzLTI1Ni1nY206cHc@198.51.100.6:8388#ss",
		"ss://2022-blake3-aes-128-gcm:" + strings.ReplaceAll(key16, "=", "%3D") + "@198.51.100.6:8388",
		"vless://" + uuid + "@203.0.113.9:443?security=reality&flow=xtls-rprx-vision&sni=www.example.com&fp=chrome&pbk=" + pbk + "&sid=6ba85179e30d4fc2&type=tcp#R",
		"vless://" + uuid + "@vpn.example.org:443?security=tls&alpn=h2,http/1.1&allowInsecure=1",
		"trojan://secret@198.51.100.7:443?sni=t.example.org&fp=firefox#T",
	} {
		var out, errb bytes.Buffer
		if code := runCLI([]string{"proxy", "import", "-c", filepath.Join(t.TempDir(), "none"), link}, &out, &errb); code != exitOK {
			t.Errorf("import %s: exit %d: %s", link, code, errb.String())
			continue
		}
		conf := "config main 'main'\n\toption enabled '1'\n\n" + out.String()
		if _, _, err := config.Parse("imported", strings.NewReader(conf)); err != nil {
			t.Errorf("import %s: the section fails validation: %v\n%s", link, err, out.String())
		}
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "tgtun")
	orig := "# my settings\nconfig main 'main'\n\toption enabled '1'\n\nconfig proxy 'home'\n\toption server '198.51.100.6'\n\toption port '1080'"
	if err := os.WriteFile(path, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runCLI([]string{"proxy", "import", "--write", "-c", path, "socks5://198.51.100.8:1080#Home"}, &out, &errb); code != exitOK {
		t.Fatalf("--write: exit %d: %s", code, errb.String())
	}
	got, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(got), orig+"\n") || !strings.Contains(string(got), "config proxy 'home_2'\n\toption type 'socks5'\n\toption server '198.51.100.8'") {
		t.Errorf("file after --write:\n%s", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", st.Mode().Perm())
	}
	if _, _, err := config.Load(path); err != nil {
		t.Errorf("file after --write fails config check: %v", err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "home", "socks5://198.51.100.9:1080"}, "already has a section 'home'"},
		{[]string{"vless://" + uuid + "@203.0.113.9:443?type=kcp&security=tls"}, "vless link: type=kcp is not supported; tcp, ws, httpupgrade, grpc and xhttp are"},
		{[]string{"vless://" + uuid + "@203.0.113.9:443?type=xhttp&security=tls&extra=%7B%22xPaddingBytes%22%3A0%7D"}, "link:8: proxy 'vless': the daemon cannot use this proxy: extra: xPaddingBytes: must start at 1 or more"},
		{[]string{"ss://2022-blake3-aes-128-gcm:c2hvcnQ@198.51.100.6:8388"}, "password is not a base64 key of 16 bytes"},
	} {
		before, _ := os.ReadFile(path)
		errb.Reset()
		args := append([]string{"proxy", "import", "--write", "-c", path}, tt.args...)
		if code := runCLI(args, &out, &errb); code == exitOK || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want failure with %q", tt.args, code, errb.String(), tt.want)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
			t.Errorf("%v: a refused import changed the file", tt.args)
		}
	}
}

// TestExplainDown: a daemon that does not answer is explained in steps a user can take.
// TestImportFixture: every link of the fixture the LuCI form shares (links.json)
// that both parsers accept also passes the daemon's own rules (the proxy package
// builds it, transports included), and what the link carries unused is noted.
func TestImportFixture(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "luci-app", "tests", "fixtures", "links.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Links []struct {
			Link    string         `json:"link"`
			Options map[string]any `json:"options"`
			Ignored []string       `json:"ignored"`
		} `json:"links"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range f.Links {
		if l.Options == nil {
			continue
		}
		n++
		var out, errb bytes.Buffer
		if code := runCLI([]string{"proxy", "import", "-c", filepath.Join(t.TempDir(), "none"), l.Link}, &out, &errb); code != exitOK {
			t.Errorf("import %s: exit %d: %s", l.Link, code, errb.String())
			continue
		}
		for _, ig := range l.Ignored {
			if !strings.Contains(errb.String(), "note: the link's "+ig+" is not used: ") {
				t.Errorf("import %s: no note about %s in %q", l.Link, ig, errb.String())
			}
		}
		if len(l.Ignored) == 0 && errb.Len() > 0 {
			t.Errorf("import %s: unexpected output %q", l.Link, errb.String())
		}
	}
	if n < 30 {
		t.Fatalf("only %d links with options in the fixture", n)
	}
}

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
