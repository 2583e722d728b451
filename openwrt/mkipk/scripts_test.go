package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const initScript = "../files/etc/init.d/tgtun"

// shellScripts is every shell script the package ships or runs, by a name for messages.
func shellScripts(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	generated := map[string]string{"postinst (generated)": defaultPostinst, "prerm (generated)": defaultPrerm}
	b := &Build{Control: Control{Package: "tgtun"}}
	s, err := readScripts(scriptsDir)
	if err != nil {
		t.Fatal(err)
	}
	b.Scripts = s
	for i, body := range b.apkScripts() {
		generated[fmt.Sprintf("apk-script-%d (generated)", i)] = string(body)
	}
	scripts := map[string]string{
		"luci-app/scripts/postinst": "../../luci-app/scripts/postinst",
		"init.d/tgtun":              initScript,
		"uci-defaults/99-tgtun":     "../files/etc/uci-defaults/99-tgtun",
		"scripts/postinst":          filepath.Join(scriptsDir, "postinst"),
		"scripts/postrm":            filepath.Join(scriptsDir, "postrm"),
	}
	for name, body := range generated {
		p := filepath.Join(dir, strings.Fields(name)[0])
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		scripts[name] = p
	}
	return scripts
}

// TestShellScriptsLint runs `sh -n` and ShellCheck on every script. The files carry their
// own ShellCheck directives (shell=dash: OpenWrt's busybox ash, like dash, has `local`),
// so nothing is disabled here.
func TestShellScriptsLint(t *testing.T) {
	shellcheck, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatalf("shellcheck is needed (apt-get install shellcheck; `make deps` installs it): %v", err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	for name, path := range shellScripts(t) {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			if out, err := exec.Command(sh, "-n", path).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v\n%s", name, err, out)
			}
			if out, err := exec.Command(shellcheck, path).CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", name, err, out)
			}
		})
	}
}

// procdStubs stands in for /etc/rc.common, /lib/functions.sh and procd.sh: the UCI
// values come from CFG_<section>_<option> variables and every procd call is logged to
// $CALLS, one line each, so the test sees what the init script asks procd to do.
const procdStubs = `
config_load() { :; }
config_get() { eval "$1=\"\${CFG_$2_$3:-\$4}\""; }
config_get_bool() {
	config_get "$@"
	eval "case \"\$$1\" in 1|on|true|yes|enabled) $1=1 ;; *) $1=0 ;; esac"
}
logger() { echo "logger $*" >>"$CALLS"; }
for f in procd_open_instance procd_close_instance procd_set_param procd_append_param \
	procd_add_reload_trigger procd_add_interface_trigger procd_open_trigger procd_close_trigger; do
	eval "$f() { echo \"$f \$*\" >>\"\$CALLS\"; }"
done
start() { echo "start" >>"$CALLS"; }
`

// runInit sources the init script with the stubs, applies overrides, runs cmd and returns
// the logged calls.
func runInit(t *testing.T, cfg map[string]string, overrides, cmd string) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	calls := filepath.Join(t.TempDir(), "calls")
	if err := os.WriteFile(calls, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(initScript)
	if err != nil {
		t.Fatal(err)
	}
	script := procdStubs + ". " + abs + "\n" + overrides + "\n" + cmd + "\n"
	c := exec.Command(sh, "-c", script)
	c.Env = []string{"PATH=" + os.Getenv("PATH"), "CALLS=" + calls}
	for k, v := range cfg {
		c.Env = append(c.Env, "CFG_"+k+"="+v)
	}
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return string(readFile(t, calls)) + string(out)
}

func TestInitStartService(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     map[string]string
		want    []string
		notWant []string
	}{
		{
			name:    "disabled",
			cfg:     map[string]string{"main_enabled": "0"},
			want:    []string{"logger -t tgtun -p daemon.notice not started: option enabled in section main of /etc/config/tgtun is not '1'"},
			notWant: []string{"procd_open_instance"},
		},
		{
			name:    "enabled missing",
			cfg:     map[string]string{},
			want:    []string{"not started"},
			notWant: []string{"procd_open_instance"},
		},
		{
			// memory_limit unset: the daemon takes a share of the RAM itself.
			name: "enabled with the default limit",
			cfg:  map[string]string{"main_enabled": "1"},
			want: []string{
				"procd_open_instance main",
				"procd_set_param command /usr/sbin/tgtun run -c /etc/config/tgtun --socket /var/run/tgtun.sock",
				"procd_set_param env GOGC=50",
				"procd_set_param respawn\n",
				"procd_set_param term_timeout 10",
				"procd_set_param stdout 1",
				"procd_set_param stderr 1",
				"procd_close_instance",
			},
			notWant: []string{"logger", "procd_set_param file", "GOMEMLIMIT"},
		},
		{
			name:    "descriptors for the default max_flows",
			cfg:     map[string]string{"main_enabled": "1"},
			want:    []string{"procd_set_param limits nofile=8448 8448"},
			notWant: []string{"logger"},
		},
		{
			name: "descriptors for max_flows 100",
			cfg:  map[string]string{"main_enabled": "1", "main_max_flows": "100"},
			want: []string{"procd_set_param limits nofile=456 456"},
		},
		{
			name: "descriptors for the largest max_flows",
			cfg:  map[string]string{"main_enabled": "1", "main_max_flows": "65536"},
			want: []string{"procd_set_param limits nofile=131328 131328"},
		},
		{
			name: "descriptors for a max_flows that is no number",
			cfg:  map[string]string{"main_enabled": "1", "main_max_flows": "lots"},
			want: []string{"procd_set_param limits nofile=8448 8448"},
		},
		{
			name: "descriptors for an absurd max_flows",
			cfg:  map[string]string{"main_enabled": "1", "main_max_flows": "99999999999999999999"},
			want: []string{"procd_set_param limits nofile=8448 8448"},
		},
		{
			name:    "enabled as 'on' with 64M",
			cfg:     map[string]string{"main_enabled": "on", "main_memory_limit": "64M"},
			want:    []string{"procd_append_param env GOMEMLIMIT=64MiB"},
			notWant: []string{"logger"},
		},
		{
			name:    "no memory limit",
			cfg:     map[string]string{"main_enabled": "1", "main_memory_limit": "off"},
			want:    []string{"procd_set_param env GOGC=50"},
			notWant: []string{"GOMEMLIMIT", "logger"},
		},
		{
			name:    "bad memory limit",
			cfg:     map[string]string{"main_enabled": "1", "main_memory_limit": "lots"},
			want:    []string{"daemon.warning option memory_limit 'lots' is not a size", "procd_open_instance main"},
			notWant: []string{"GOMEMLIMIT"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runInit(t, tc.cfg, "", "start_service")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("start_service calls lack %q:\n%s", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("start_service calls contain %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestInitGoMemoryLimit(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"32M", "32MiB"}, {"32m", "32MiB"}, {"32MB", "32MiB"}, {"32MiB", "32MiB"},
		{"512k", "512KiB"}, {"512K", "512KiB"}, {"1G", "1GiB"}, {"33554432", "33554432"},
		{"100b", "100"}, {"0", ""}, {"off", ""}, {"", ""},
		{"M", "fail"}, {"12X", "fail"}, {"-5M", "fail"}, {"1.5G", "fail"}, {"32 M", "fail"},
	} {
		got := runInit(t, nil, "", `go_memory_limit '`+tc.in+`' || echo fail`)
		if strings.TrimSpace(got) != tc.out {
			t.Errorf("go_memory_limit %q = %q, want %q", tc.in, strings.TrimSpace(got), tc.out)
		}
	}
}

func TestInitReloadService(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "tgtun.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen %s: %v", sock, err)
	}
	t.Cleanup(func() { ln.Close() })
	fake := filepath.Join(dir, "tgtun")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"tgtun $*\" >>\"$CALLS\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		enabled string
		socket  string
		want    string
		notWant string
	}{
		{"running daemon re-reads the file", "1", sock, "tgtun reload --socket " + sock, ""},
		{"disabled: procd stops it, nothing to tell", "0", sock, "start", "tgtun reload"},
		{"not listening yet", "1", filepath.Join(dir, "none.sock"), "start", "tgtun reload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runInit(t, map[string]string{"main_enabled": tc.enabled},
				"PROG="+fake+"; SOCKET="+tc.socket, "reload_service")
			if !strings.HasPrefix(got, "start\n") {
				t.Errorf("reload_service does not hand the instance to procd first:\n%s", got)
			}
			if !strings.Contains(got, tc.want) || (tc.notWant != "" && strings.Contains(got, tc.notWant)) {
				t.Errorf("reload_service calls:\n%s\nwant %q, not %q", got, tc.want, tc.notWant)
			}
		})
	}
}

func TestInitTriggers(t *testing.T) {
	got := runInit(t, nil, "", "service_triggers")
	for _, w := range []string{
		"procd_add_reload_trigger tgtun",
		"procd_add_interface_trigger interface.*.up wan /etc/init.d/tgtun reload",
		"procd_add_interface_trigger interface.*.up wan6 /etc/init.d/tgtun reload",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("service_triggers lacks %q:\n%s", w, got)
		}
	}
	head := runInit(t, nil, "", `echo "USE_PROCD=$USE_PROCD START=$START STOP=$STOP"`)
	if !strings.Contains(head, "USE_PROCD=1 START=95 STOP=10") {
		t.Errorf("init script header: %s", head)
	}
}

// TestFirewallFragment loads the fw4 fragment where fw4 includes it, at the top of chain
// forward of table inet fw4, with the real nft in a network namespace of its own.
func TestFirewallFragment(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("loading the fw4 fragment into nftables needs root (a private network namespace)")
	}
	for _, tool := range []string{"unshare", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	frag, err := filepath.Abs("../files/usr/share/nftables.d/chain-pre/forward/30-tgtun.nft")
	if err != nil {
		t.Fatal(err)
	}
	ruleset := filepath.Join(t.TempDir(), "fw4.nft")
	// The skeleton of what fw4 generates around chain-pre/forward fragments.
	body := `table inet fw4 {
	chain forward {
		type filter hook forward priority filter; policy drop;
		include "` + frag + `"
		ct state established,related accept comment "!fw4: Allow forwarded established and related flows"
		ct state invalid drop
		jump handle_reject
	}
	chain handle_reject {
		reject
	}
}
`
	if err := os.WriteFile(ruleset, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// A fresh network namespace: the host's own ruleset is never touched.
	out, err := exec.Command("unshare", "--net", "sh", "-c",
		`nft -f "$1" && nft list chain inet fw4 forward`, "sh", ruleset).CombinedOutput()
	if err != nil {
		t.Fatalf("nft rejects the fragment inside fw4's forward chain: %v\n%s", err, out)
	}
	list := string(out)
	rule := `oifname "tgtun*" ct state new accept`
	i, j := strings.Index(list, rule), strings.Index(list, "ct state established,related accept")
	if i < 0 || j < 0 || i > j {
		t.Errorf("forward chain does not start with %q before fw4's established rule:\n%s", rule, list)
	}
}

// TestUCIDefaultsRecreatesPrivateConfig runs uci-defaults where the config is missing, with
// a umask of 022 and a uci that writes a new file (as uci commit does, by rename): the
// recreated /etc/config/tgtun, which will hold proxy passwords, must end up 0600.
func TestUCIDefaultsRecreatesPrivateConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tgtun")
	script := strings.ReplaceAll(string(readFile(t, filesDir+"/etc/uci-defaults/99-tgtun")), "/etc/config/tgtun", cfg)
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	uci := "#!/bin/sh\ncat >/dev/null\nrm -f '" + cfg + "'\nprintf \"config main 'main'\\n\toption enabled '0'\\n\" >'" + cfg + "'\n"
	if err := os.WriteFile(filepath.Join(bin, "uci"), []byte(uci), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, existing := range []string{"", "config main 'main'\n\toption enabled '1'\n"} {
		os.Remove(cfg)
		if existing != "" {
			if err := os.WriteFile(cfg, []byte(existing), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		c := exec.Command("sh", "-c", "umask 022; "+script)
		c.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("uci-defaults: %v\n%s", err, out)
		}
		st, err := os.Stat(cfg)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case existing == "" && st.Mode().Perm() != 0o600:
			t.Errorf("recreated config has mode %o, want 600", st.Mode().Perm())
		case existing != "" && (st.Mode().Perm() != 0o644 || string(readFile(t, cfg)) != existing):
			t.Errorf("an existing config was changed (mode %o)", st.Mode().Perm())
		}
	}
}
