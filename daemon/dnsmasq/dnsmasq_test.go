package dnsmasq

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	got := string(Render(Directives{Domains: []string{"t.me", "example.org", "t.me"}, ForwardPort: 5354, Table: "tgtun", Set4: "dst4_dns", Set6: "dst6_dns"}))
	want := "# Written by tgtun; removed when tgtun stops. Do not edit.\n" +
		"nftset=/example.org/4#inet#tgtun#dst4_dns,6#inet#tgtun#dst6_dns\n" +
		"server=/example.org/127.0.0.1#5354\n" +
		"nftset=/t.me/4#inet#tgtun#dst4_dns,6#inet#tgtun#dst6_dns\n" +
		"server=/t.me/127.0.0.1#5354\n"
	if got != want {
		t.Errorf("Render =\n%s\nwant\n%s", got, want)
	}
	got = string(Render(Directives{Domains: []string{"t.me"}, ForwardPort: 5354, Table: "tgtun"}))
	if got != "# Written by tgtun; removed when tgtun stops. Do not edit.\nserver=/t.me/127.0.0.1#5354\n" {
		t.Errorf("without nftset support: %q", got)
	}
	got = string(Render(Directives{Domains: []string{"t.me", "bad/x.org", ""}, Table: "tgtun", Set4: "dst4_dns"}))
	if got != "# Written by tgtun; removed when tgtun stops. Do not edit.\nnftset=/t.me/4#inet#tgtun#dst4_dns\n" {
		t.Errorf("IPv4 only, no forwarder, unsafe domains dropped: %q", got)
	}
}

// TestRenderAcceptedByDnsmasq: the real dnsmasq accepts the file (dnsmasq --test).
func TestRenderAcceptedByDnsmasq(t *testing.T) {
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Fatal("dnsmasq is not installed (make deps installs dnsmasq-base)")
	}
	f := filepath.Join(t.TempDir(), "tgtun.conf")
	content := Render(Directives{Domains: []string{"t.me", "telegram.org", "xn--d1acufc.xn--p1ai"}, ForwardPort: 5354, Table: "tgtun", Set4: "dst4_dns", Set6: "dst6_dns"})
	if err := os.WriteFile(f, content, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--test", "--conf-file="+f).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "syntax check OK") {
		t.Fatalf("dnsmasq --test: %v\n%s", err, out)
	}
	if hint := CheckNftset(context.Background(), bin); hint != "ok" {
		t.Errorf("Debian's dnsmasq has nftset, CheckNftset says %q", hint)
	}
}

func TestNftsetHint(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"Dnsmasq version 2.90\nCompile time options: IPv6 GNU-getopt no-DBus UBus no-i18n no-IDN DHCP DHCPv6 no-Lua TFTP no-conntrack no-ipset no-nftset auth no-cryptohash no-DNSSEC\n", "no nftset support"},
		{"Dnsmasq version 2.90\nCompile time options: IPv6 GNU-getopt DBus nftset auth\n", "ok"},
		{"something else\n", "cannot tell"},
	} {
		if got := nftsetHint(tt.in); !strings.Contains(got, tt.want) {
			t.Errorf("nftsetHint(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := CheckNftset(context.Background(), "/nonexistent/dnsmasq"); !strings.Contains(got, "dnsmasq-full") {
		t.Errorf("missing binary: %q", got)
	}
}

func TestWriter(t *testing.T) {
	dir1, dir2 := t.TempDir(), filepath.Join(t.TempDir(), "sub")
	log := filepath.Join(t.TempDir(), "restarts")
	w := NewWriter(Options{Dirs: []string{dir1, dir2}, Restart: []string{"sh", "-c", "echo restart >> " + log}})
	restarts := func() int {
		b, _ := os.ReadFile(log)
		return strings.Count(string(b), "restart")
	}
	ctx := context.Background()
	a := Render(Directives{Domains: []string{"t.me"}, Table: "tgtun", Set4: "dst4_dns"})
	if did, err := w.Apply(ctx, a); err != nil || !did || restarts() != 1 {
		t.Fatalf("first Apply: %v, %v, %d restarts", did, err, restarts())
	}
	for _, d := range []string{dir1, dir2} {
		if b, err := os.ReadFile(filepath.Join(d, FileName)); err != nil || string(b) != string(a) {
			t.Errorf("%s: %q, %v", d, b, err)
		}
	}
	if did, err := w.Apply(ctx, a); err != nil || did || restarts() != 1 {
		t.Errorf("unchanged Apply restarted dnsmasq: %v, %v, %d", did, err, restarts())
	}
	b := Render(Directives{Domains: []string{"t.me", "example.org"}, Table: "tgtun", Set4: "dst4_dns"})
	if did, err := w.Apply(ctx, b); err != nil || !did || restarts() != 2 {
		t.Errorf("changed Apply: %v, %v, %d", did, err, restarts())
	}
	if err := w.Remove(ctx); err != nil || restarts() != 3 {
		t.Errorf("Remove: %v, %d restarts", err, restarts())
	}
	for _, d := range []string{dir1, dir2} {
		if _, err := os.Stat(filepath.Join(d, FileName)); !os.IsNotExist(err) {
			t.Errorf("%s: file still there (%v)", d, err)
		}
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("%s: left %v", d, ents)
		}
	}
	if err := w.Remove(ctx); err != nil || restarts() != 3 {
		t.Errorf("second Remove: %v, %d restarts (nothing to remove: no restart)", err, restarts())
	}
	failing := NewWriter(Options{Dirs: []string{dir1}, Restart: []string{"sh", "-c", "echo no init script >&2; exit 3"}})
	if _, err := failing.Apply(ctx, a); err == nil || !strings.Contains(err.Error(), "no init script") {
		t.Errorf("failing restart: %v", err)
	}
}

// The guard does nothing on a clean stop; when the daemon's end of its pipe closes
// without one (the daemon died), it removes tgtun's file from every conf-dir and runs
// the restart command, once, and exits.
func TestGuard(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	marker := filepath.Join(t.TempDir(), "restarted")
	w := NewWriter(Options{Dirs: dirs, Restart: []string{"/bin/sh", "-c", "echo restarted >> " + marker}})
	for _, d := range dirs[:2] {
		if err := os.WriteFile(filepath.Join(d, FileName), []byte("server=/x.example/127.0.0.1#5354\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(dirs[0], "other.conf")
	if err := os.WriteFile(other, []byte("# not ours\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	g, err := w.StartGuard()
	if err != nil {
		t.Fatal(err)
	}
	g.Release()
	for _, d := range dirs[:2] {
		if _, err := os.Stat(filepath.Join(d, FileName)); err != nil {
			t.Errorf("a released guard removed %s: %v", d, err)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a released guard restarted dnsmasq")
	}

	g, err = w.StartGuard()
	if err != nil {
		t.Fatal(err)
	}
	g.pipe.Close() // what the daemon's death does
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the guard did not exit after the daemon's end")
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, FileName)); !os.IsNotExist(err) {
			t.Errorf("%s still in %s (%v)", FileName, d, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("the guard touched another file: %v", err)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "restarted\n" {
		t.Errorf("restart command ran: %q, %v; want once", b, err)
	}

	// Nothing of ours left: no restart.
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	g, err = w.StartGuard()
	if err != nil {
		t.Fatal(err)
	}
	g.pipe.Close()
	<-g.done
	if _, err := os.Stat(marker); err == nil {
		t.Error("the guard restarted dnsmasq with no file of tgtun's to remove")
	}
}
