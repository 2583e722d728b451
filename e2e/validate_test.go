package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// TestValidationParity feeds the same files to `tgtun config check`, to `tgtun run` (the
// daemon's start path, in the router namespace) and to `tgtun reload` of a running
// daemon: what check accepts the daemon starts with and reloads, reading it the same way
// (no subnet silently dropped), and what check refuses the daemon refuses, at start and at
// reload, with the same messages at the same lines. The SS-2022 row asserts only that they
// agree, whichever way the proxy package decides.
func TestValidationParity(t *testing.T) {
	n := testnet.New(t)
	baseConf := tgtunConf{proxies: []proxyConf{{name: "p", typ: "socks5", server: testnet.ProxyV4.String(), port: 1080}}}
	base := baseConf.render()
	const key16 = "AAECAwQFBgcICQoLDA0ODw=="
	tests := []struct {
		name   string
		add    string
		accept int // 1 = check must accept, -1 = must refuse, 0 = either, as long as all agree
	}{
		{"base", "", 1},
		{"whatsapp from the catalogue", "\nconfig service 'whatsapp'\n\toption enabled '1'\n", 1},
		{"misspelt option is a warning", "\nconfig custom 'extra'\n\tlist subnet '192.0.2.0/24'\n\toption subnett '1'\n", 1},
		{"unknown service", "\nconfig service 'wechat'\n", -1},
		{"private custom subnet", "\nconfig custom 'lan'\n\tlist subnet '192.168.1.0/24'\n", -1},
		{"loopback custom subnet", "\nconfig custom 'lo'\n\tlist subnet '127.0.0.0/8'\n", -1},
		{"default route", "\nconfig custom 'all'\n\tlist subnet '0.0.0.0/0'\n", -1},
		{"port not a number", "\nconfig proxy 'q'\n\toption server '198.51.100.7'\n\toption port 'abc'\n", -1},
		{"unterminated quote", "\nconfig custom 'x'\n\tlist subnet '192.0.2.0/24\n", -1},
		{"shadowsocks 2022", "\nconfig proxy 'ss'\n\toption type 'shadowsocks'\n\toption server '198.51.100.7'\n\toption port '8388'\n" +
			"\toption cipher '2022-blake3-aes-128-gcm'\n\toption password '" + key16 + "'\n", 0},
	}

	// config check's verdict and error lines (from the line number on) per row.
	type verdict struct {
		ok     bool
		out    string
		errors []string // ":LINE: section: message"
	}
	verdicts := make([]verdict, len(tests))
	for i, tt := range tests {
		conf := filepath.Join(n.Dir, "parity.conf")
		if err := os.WriteFile(conf, []byte(base+tt.add), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, tgtunBin, "config", "check", "-c", conf).CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("%s: config check: %v", tt.name, err)
		}
		v := verdict{ok: err == nil, out: string(out)}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if rest, found := strings.CutPrefix(line, conf); found && !strings.HasSuffix(line, "error(s)") {
				v.errors = append(v.errors, rest)
			}
		}
		if !v.ok && len(v.errors) == 0 {
			t.Fatalf("%s: config check failed without a file:line error:\n%s", tt.name, out)
		}
		if (tt.accept == 1 && !v.ok) || (tt.accept == -1 && v.ok) {
			t.Errorf("%s: config check ok=%v, want accept=%d:\n%s", tt.name, v.ok, tt.accept, out)
		}
		verdicts[i] = v
	}
	reports := func(t *testing.T, v verdict, what, got string) {
		t.Helper()
		for _, e := range v.errors {
			if !strings.Contains(got, e) {
				t.Errorf("%s does not report %q; it said:\n%s", what, e, got)
			}
		}
	}

	// Start: one daemon at a time in the router, each with the row's file.
	for i, tt := range tests {
		v := verdicts[i]
		t.Run("start/"+tt.name, func(t *testing.T) {
			conf := filepath.Join(n.Dir, "parity.conf")
			if err := os.WriteFile(conf, []byte(base+tt.add), 0o600); err != nil {
				t.Fatal(err)
			}
			socket := filepath.Join(n.Dir, "parity.sock")
			p, err := n.Start(n.Router, "env", "TGTUN_ALLOW_DOCUMENTATION_RANGES=1", tgtunBin, "run", "-c", conf,
				"--socket", socket, "--list-cache", filepath.Join(n.Dir, "parity-lists"))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Kill()
			if !v.ok {
				wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer wcancel()
				if err := p.Wait(wctx); err == nil || wctx.Err() != nil {
					t.Fatalf("config check refused the file, but tgtun run did not fail (%v):\n%s\ncheck said:\n%s", err, lastLines(p.Output(), 20), v.out)
				}
				reports(t, v, "tgtun run", p.Output())
				return
			}
			var status string
			eventually(t, 60*time.Second, "tgtun run answers status", func() error {
				if exited, werr := p.Exited(); exited {
					t.Fatalf("config check accepted the file, but tgtun run exited (%v):\n%s\ncheck said:\n%s", werr, p.Output(), v.out)
				}
				s, err := exec.Command(tgtunBin, "status", "--json", "--socket", socket).CombinedOutput()
				status = string(s)
				return err
			})
			if strings.Contains(status, "subnets ignored") {
				t.Errorf("config check accepted subnets the daemon dropped:\n%s", status)
			}
			if err := p.Stop(); err != nil {
				t.Fatalf("tgtun run did not stop cleanly: %v\n%s", err, lastLines(p.Output(), 20))
			}
		})
	}

	// Reload: one running daemon, its file rewritten per row, then back to the base.
	live := startTgtun(t, n, baseConf)
	reload := func(t *testing.T, body string) (string, error) {
		t.Helper()
		if err := os.WriteFile(live.conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, tgtunBin, "reload", "--socket", live.socket).CombinedOutput()
		return string(out), err
	}
	for i, tt := range tests {
		v := verdicts[i]
		t.Run("reload/"+tt.name, func(t *testing.T) {
			out, err := reload(t, base+tt.add)
			if (err == nil) != v.ok {
				t.Fatalf("config check ok=%v, but reload: %v\n%s\ncheck said:\n%s", v.ok, err, out, v.out)
			}
			if !v.ok {
				reports(t, v, "tgtun reload", out)
			}
			if v.ok {
				if st, err := live.call("status"); err != nil || strings.Contains(string(st), "subnets ignored") {
					t.Errorf("after reload: %v\n%s", err, st)
				}
			}
			if out, err := reload(t, base); err != nil {
				t.Fatalf("reload back to the base file: %v\n%s", err, out)
			}
		})
	}
	live.stop()
}
