package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/testnet"
)

// TestValidationParity feeds the same files to `tgtun config check` and to `tgtun run`
// (the daemon's start path, in the router namespace): what check accepts the daemon runs
// and reads the same way (no subnet silently dropped), and what check refuses the daemon
// refuses with the same file:line messages. The SS-2022 row asserts only that the two
// agree, whichever way the proxy package decides.
func TestValidationParity(t *testing.T) {
	n := testnet.New(t)
	base := tgtunConf{proxies: []proxyConf{{name: "p", typ: "socks5", server: testnet.ProxyV4.String(), port: 1080}}}.render()
	const key16 = "AAECAwQFBgcICQoLDA0ODw=="
	tests := []struct {
		name   string
		add    string
		accept int // 1 = check must accept, -1 = must refuse, 0 = either, as long as both agree
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
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := filepath.Join(n.Dir, "parity"+string(rune('a'+i))+".conf")
			if err := os.WriteFile(conf, []byte(base+tt.add), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, tgtunBin, "config", "check", "-c", conf).CombinedOutput()
			checkOK := err == nil
			if !checkOK {
				if _, ok := err.(*exec.ExitError); !ok {
					t.Fatalf("config check: %v", err)
				}
			}
			if (tt.accept == 1 && !checkOK) || (tt.accept == -1 && checkOK) {
				t.Fatalf("config check ok=%v, want accept=%d:\n%s", checkOK, tt.accept, out)
			}
			socket := filepath.Join(n.Dir, "parity.sock")
			p, err := n.Start(n.Router, "env", "TGTUN_ALLOW_DOCUMENTATION_RANGES=1", tgtunBin, "run", "-c", conf,
				"--socket", socket, "--list-cache", filepath.Join(n.Dir, "parity-lists"))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Kill()
			if !checkOK {
				wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer wcancel()
				if err := p.Wait(wctx); err == nil || wctx.Err() != nil {
					t.Fatalf("config check refused the file, but tgtun run did not fail (%v):\n%s\ncheck said:\n%s", err, lastLines(p.Output(), 20), out)
				}
				for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					if strings.HasPrefix(line, "warning: ") || strings.HasSuffix(line, "error(s)") {
						continue
					}
					if !strings.Contains(p.Output(), line) {
						t.Errorf("tgtun run does not report %q; it said:\n%s", line, p.Output())
					}
				}
				return
			}
			var status string
			eventually(t, 60*time.Second, "tgtun run answers status", func() error {
				if exited, werr := p.Exited(); exited {
					t.Fatalf("config check accepted the file, but tgtun run exited (%v):\n%s\ncheck said:\n%s", werr, p.Output(), out)
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
}
