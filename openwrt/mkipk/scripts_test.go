package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/e2e/openwrt"
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

// initRoot is a router root (e2e/openwrt) holding the package's init script, with
// OpenWrt's real ubusd on /var/run/ubus/ubus.sock and, where procd sits on the bus, a
// `service` object that records what procd.sh sends. /etc/init.d/tgtun then runs under
// OpenWrt's own rc.common, functions.sh, procd.sh, jshn, uci and ubus, in busybox's ash.
type initRoot struct {
	root  *openwrt.Root
	procd *openwrt.Procd
	log   *openwrt.Syslog
}

func newInitRoot(t *testing.T) *initRoot {
	t.Helper()
	h := openwrt.NeedHost(t)
	r := openwrt.NewRoot(t, h)
	if err := r.WriteFile("etc/init.d/tgtun", readFile(t, initScript), 0o755); err != nil {
		t.Fatal(err)
	}
	u := openwrt.StartUbusd(t, h, "", r.Path("var/run/ubus/ubus.sock"))
	return &initRoot{root: r, procd: openwrt.ServeProcd(t, u.Sock), log: r.Syslog(t)}
}

// run writes /etc/config/tgtun (unless cfg is "-") and runs `/etc/init.d/tgtun ACTION`;
// it returns the script's output.
func (ir *initRoot) run(t *testing.T, cfg, action string) string {
	t.Helper()
	if cfg != "-" {
		if err := ir.root.WriteFile("etc/config/tgtun", []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ir.root.Run(ctx, "/etc/init.d/tgtun", action)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// only returns the one call procd received, failing unless there was exactly one.
func only(t *testing.T, calls []openwrt.ProcdCall, method string) map[string]any {
	t.Helper()
	if len(calls) != 1 || calls[0].Method != method {
		t.Fatalf("procd received %v, want one %q call", calls, method)
	}
	return calls[0].Args
}

// asJSON renders a value for comparison and messages.
func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func mainConf(opts ...string) string {
	s := "config main 'main'\n"
	for _, o := range opts {
		s += "\t" + o + "\n"
	}
	return s
}

// TestInitStartService runs `/etc/init.d/tgtun start` for several configurations and
// checks the service description procd receives: the instance's command, env (GOGC,
// GOMEMLIMIT from an explicit memory_limit), respawn, limits (nofile from max_flows), term_timeout,
// stdout/stderr, no `file` parameter; or no instance and a log line when disabled.
func TestInitStartService(t *testing.T) {
	ir := newInitRoot(t)
	wantCommand := `["/usr/sbin/tgtun","run","-c","/etc/config/tgtun","--socket","/var/run/tgtun.sock"]`
	for _, tc := range []struct {
		name     string
		cfg      string
		instance map[string]string // parameter -> its JSON; "-" = must be absent
		noInst   bool
		log      string
	}{
		{name: "disabled", cfg: mainConf("option enabled '0'"), noInst: true,
			log: "tgtun: not started: option enabled in section main of /etc/config/tgtun is not '1'"},
		{name: "enabled missing", cfg: mainConf(), noInst: true, log: "not started"},
		// memory_limit unset: no GOMEMLIMIT, the daemon takes a share of the RAM itself.
		{name: "enabled with the defaults", cfg: mainConf("option enabled '1'"), instance: map[string]string{
			"command":      wantCommand,
			"env":          `{"GOGC":"50"}`,
			"respawn":      `["3600","5","5"]`,
			"limits":       `{"nofile":"8448 8448"}`,
			"term_timeout": `10`,
			"stdout":       `true`,
			"stderr":       `true`,
			"file":         "-",
		}},
		{name: "descriptors for max_flows 100", cfg: mainConf("option enabled '1'", "option max_flows '100'"),
			instance: map[string]string{"limits": `{"nofile":"456 456"}`}},
		{name: "descriptors for the largest max_flows", cfg: mainConf("option enabled '1'", "option max_flows '65536'"),
			instance: map[string]string{"limits": `{"nofile":"131328 131328"}`}},
		{name: "descriptors for a max_flows that is no number", cfg: mainConf("option enabled '1'", "option max_flows 'lots'"),
			instance: map[string]string{"limits": `{"nofile":"8448 8448"}`}},
		{name: "descriptors for an absurd max_flows", cfg: mainConf("option enabled '1'", "option max_flows '99999999999999999999'"),
			instance: map[string]string{"limits": `{"nofile":"8448 8448"}`}},
		{name: "enabled as 'on' with 64M", cfg: mainConf("option enabled 'on'", "option memory_limit '64M'"),
			instance: map[string]string{"env": `{"GOGC":"50","GOMEMLIMIT":"64MiB"}`}},
		{name: "no memory limit", cfg: mainConf("option enabled '1'", "option memory_limit 'off'"),
			instance: map[string]string{"env": `{"GOGC":"50"}`}},
		{name: "bad memory limit", cfg: mainConf("option enabled '1'", "option memory_limit 'lots'"),
			instance: map[string]string{"env": `{"GOGC":"50"}`, "command": wantCommand},
			log:      "option memory_limit 'lots' is not a size such as 32M; running without a memory limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ir.run(t, tc.cfg, "start")
			set := only(t, ir.procd.Calls(), "set")
			if set["name"] != "tgtun" || set["script"] != "/etc/init.d/tgtun" {
				t.Errorf("service name/script: %s", asJSON(set))
			}
			insts, _ := set["instances"].(map[string]any)
			if tc.noInst {
				if len(insts) != 0 {
					t.Errorf("instances for a service that must not run: %s", asJSON(insts))
				}
			} else {
				inst, ok := insts["main"].(map[string]any)
				if !ok || len(insts) != 1 {
					t.Fatalf("instances = %s, want one called main", asJSON(set["instances"]))
				}
				for param, want := range tc.instance {
					got, present := inst[param]
					switch {
					case want == "-" && present:
						t.Errorf("instance has %s = %s; it must not", param, asJSON(got))
					case want != "-" && asJSON(got) != want:
						t.Errorf("instance %s = %s, want %s", param, asJSON(got), want)
					}
				}
			}
			logs := strings.Join(ir.log.Lines(), "\n")
			if tc.log != "" && !strings.Contains(logs, tc.log) {
				t.Errorf("syslog lacks %q:\n%s", tc.log, logs)
			}
			if tc.log == "" && logs != "" {
				t.Errorf("unexpected syslog:\n%s", logs)
			}
		})
	}
}

// TestInitTriggers: the service description carries the reload triggers procd acts on, a
// config.change of tgtun and an interface.*.up of wan and wan6, each running the init
// script's reload; and the script's START/STOP order.
func TestInitTriggers(t *testing.T) {
	ir := newInitRoot(t)
	ir.run(t, mainConf("option enabled '1'"), "start")
	set := only(t, ir.procd.Calls(), "set")
	reload := `["run_script","/etc/init.d/tgtun","reload"]`
	want := `[["config.change",["if",["eq","package","tgtun"],` + reload + `],1000],` +
		`["interface.*.up",["if",["eq","interface","wan"],` + reload + `],1000],` +
		`["interface.*.up",["if",["eq","interface","wan6"],` + reload + `],1000]]`
	if got := asJSON(set["triggers"]); got != want {
		t.Errorf("triggers = %s\nwant       %s", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	head, err := ir.root.Sh(ctx, `. /etc/init.d/tgtun; echo "USE_PROCD=$USE_PROCD START=$START STOP=$STOP"`)
	if err != nil || !strings.Contains(head, "USE_PROCD=1 START=95 STOP=10") {
		t.Errorf("init script header: %s %v", head, err)
	}
}

// TestInitStopKills: stop asks procd to delete the service (procd_kill), which stops the
// instance with SIGTERM and term_timeout.
func TestInitStopKills(t *testing.T) {
	ir := newInitRoot(t)
	ir.run(t, mainConf("option enabled '1'"), "stop")
	del := only(t, ir.procd.Calls(), "delete")
	if asJSON(del) != `{"name":"tgtun"}` {
		t.Errorf("stop sent delete %s, want {\"name\":\"tgtun\"}", asJSON(del))
	}
}

// TestInitEnable: enable links the script into /etc/rc.d at START and STOP, as rc.common
// does on a router; disable removes the links.
func TestInitEnable(t *testing.T) {
	ir := newInitRoot(t)
	ir.run(t, mainConf("option enabled '1'"), "enable")
	for _, l := range []string{"etc/rc.d/S95tgtun", "etc/rc.d/K10tgtun"} {
		if target, err := os.Readlink(ir.root.Path(l)); err != nil || target != "../init.d/tgtun" {
			t.Errorf("/%s -> %q (%v), want ../init.d/tgtun", l, target, err)
		}
	}
	ir.run(t, "-", "disable")
	if ls, _ := os.ReadDir(ir.root.Path("etc/rc.d")); len(ls) != 0 {
		t.Errorf("/etc/rc.d after disable: %v", ls)
	}
	if calls := ir.procd.Calls(); len(calls) != 0 {
		t.Errorf("enable/disable called procd: %v", calls)
	}
}

// TestInitGoMemoryLimit: the init script's size conversion, in busybox's ash.
func TestInitGoMemoryLimit(t *testing.T) {
	ir := newInitRoot(t)
	cases := []struct{ in, out string }{
		{"32M", "32MiB"}, {"32m", "32MiB"}, {"32MB", "32MiB"}, {"32MiB", "32MiB"},
		{"512k", "512KiB"}, {"512K", "512KiB"}, {"1G", "1GiB"}, {"33554432", "33554432"},
		{"100b", "100"}, {"0", ""}, {"off", ""}, {"", ""},
		{"M", "fail"}, {"12X", "fail"}, {"-5M", "fail"}, {"1.5G", "fail"}, {"32 M", "fail"},
	}
	script := ". /lib/functions.sh; . /etc/init.d/tgtun\n"
	for _, tc := range cases {
		script += "echo \"[$(go_memory_limit '" + tc.in + "' || echo fail)]\"\n"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ir.root.Sh(ctx, script)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("%d lines for %d cases:\n%s", len(lines), len(cases), out)
	}
	for i, tc := range cases {
		if lines[i] != "["+tc.out+"]" {
			t.Errorf("go_memory_limit %q = %s, want [%s]", tc.in, lines[i], tc.out)
		}
	}
}

// TestInitReloadService: reload hands the instance to procd first (start: procd restarts
// it only if its parameters changed), then, if the daemon's socket is there, asks the
// running daemon to re-read the file (`tgtun reload`). The daemon here is a script that
// records its arguments: the test is about the init script, not the daemon.
func TestInitReloadService(t *testing.T) {
	ir := newInitRoot(t)
	fake := "#!/bin/sh\necho \"tgtun $*\" >>/tmp/tgtun.calls\n"
	if err := ir.root.WriteFile("usr/sbin/tgtun", []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	calls := func() string {
		b, _ := ir.root.ReadFile("tmp/tgtun.calls")
		_ = os.Remove(ir.root.Path("tmp/tgtun.calls"))
		return string(b)
	}
	for _, tc := range []struct {
		name, enabled string
		socket        bool
		want          string
	}{
		{"running daemon re-reads the file", "1", true, "tgtun reload --socket /var/run/tgtun.sock\n"},
		{"disabled: procd stops it, nothing to tell", "0", true, ""},
		{"not listening yet", "1", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.socket {
				ln, err := net.Listen("unix", ir.root.Path("var/run/tgtun.sock"))
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
			}
			ir.run(t, mainConf("option enabled '"+tc.enabled+"'"), "reload")
			set := only(t, ir.procd.Calls(), "set")
			_, hasMain := set["instances"].(map[string]any)["main"]
			if hasMain != (tc.enabled == "1") {
				t.Errorf("reload's service description: %s", asJSON(set))
			}
			if got := calls(); got != tc.want {
				t.Errorf("the daemon was called %q, want %q", got, tc.want)
			}
		})
	}
}

// TestFirewallIncludes renders OpenWrt's default firewall (its /etc/config/firewall: lan and
// wan zones, masquerade) with the real fw4, in a router root holding the package's
// /usr/share/nftables.d files, with netifd's and procd's ubus answers served on the real
// ubusd: the forward rule must open fw4's forward chain and the input rule its input
// chain, each before fw4's own handling of flows, and nft must accept the whole ruleset
// (`fw4 check`, in a network namespace of its own). The e2e test TestBesideFw4 loads it.
func TestFirewallIncludes(t *testing.T) {
	h := openwrt.NeedHost(t)
	r := openwrt.NewRoot(t, h)
	if err := r.AddFirewall4(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"chain-pre/forward/30-tgtun.nft", "chain-pre/input/30-tgtun.nft"} {
		if err := r.WriteFile("usr/share/nftables.d/"+f, readFile(t, filesDir+"/usr/share/nftables.d/"+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u := openwrt.StartUbusd(t, h, "", r.Path("var/run/ubus/ubus.sock"))
	openwrt.ServeProcd(t, u.Sock)
	openwrt.ServeNetifd(t, u.Sock,
		openwrt.Iface{Name: "lan", Device: "br-lan", Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24")}},
		openwrt.Iface{Name: "wan", Device: "eth1", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// fw4 start loads the ruleset with nft, which resolves the include lines fw4 writes;
	// the namespace is a fresh one of this command alone.
	ruleset, err := r.Sh(ctx, "fw4 start && nft list chain inet fw4 forward && nft list chain inet fw4 input")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ chain, rule, before string }{
		{"forward", `oifname "tgtun*" ct state new accept`, "established : accept"},
		{"input", `socket transparent 1 accept`, "established : accept"},
	} {
		body := chainOf(ruleset, c.chain)
		i, j := strings.Index(body, c.rule), strings.Index(body, c.before)
		if i < 0 || j < 0 || i > j {
			t.Errorf("fw4's chain %s does not hold %q before %q:\n%s", c.chain, c.rule, c.before, body)
		}
	}
	if out, err := r.Run(ctx, "fw4", "check"); err != nil || !strings.Contains(out, "passes nftables check") {
		t.Errorf("fw4 check: %v\n%s", err, out)
	}
}

// chainOf returns the text of `chain NAME { ... }` in an nft ruleset.
func chainOf(ruleset, name string) string {
	i := strings.Index(ruleset, "chain "+name+" {")
	if i < 0 {
		return ""
	}
	j := strings.Index(ruleset[i:], "\n\t}\n")
	if j < 0 {
		return ruleset[i:]
	}
	return ruleset[i : i+j]
}

// TestUCIDefaultsRecreatesPrivateConfig runs uci-defaults in a router root with OpenWrt's
// uci, with a umask of 022, where the config is missing: the recreated /etc/config/tgtun,
// which will hold proxy passwords, must end up 0600 and hold what the daemon needs; an
// existing file is left alone.
func TestUCIDefaultsRecreatesPrivateConfig(t *testing.T) {
	h := openwrt.NeedHost(t)
	r := openwrt.NewRoot(t, h)
	if err := r.WriteFile("etc/uci-defaults/99-tgtun", readFile(t, filesDir+"/etc/uci-defaults/99-tgtun"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := r.Path("etc/config/tgtun")
	for _, existing := range []string{"", "config main 'main'\n\toption enabled '1'\n"} {
		os.Remove(cfg)
		if existing != "" {
			if err := os.WriteFile(cfg, []byte(existing), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := r.Sh(ctx, "umask 022; cd /etc/uci-defaults && . ./99-tgtun")
		cancel()
		if err != nil {
			t.Fatalf("uci-defaults: %v\n%s", err, out)
		}
		st, err := os.Stat(cfg)
		if err != nil {
			t.Fatal(err)
		}
		body := string(readFile(t, cfg))
		switch {
		case existing == "" && st.Mode().Perm() != 0o600:
			t.Errorf("recreated config has mode %o, want 600", st.Mode().Perm())
		case existing == "" && (!strings.Contains(body, "config main 'main'") || !strings.Contains(body, "config service 'telegram'")):
			t.Errorf("recreated config:\n%s", body)
		case existing != "" && (st.Mode().Perm() != 0o644 || body != existing):
			t.Errorf("an existing config was changed (mode %o)", st.Mode().Perm())
		}
	}
}
