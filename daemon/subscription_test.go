package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
)

func TestSubscriptionAdd(t *testing.T) {
	const (
		url   = "https://www.panel.example.org/sub/s3cr3t?x=1"
		start = "config main 'main'\n\toption enabled '0'\n\nconfig proxy 'backup'\n\toption server '198.51.100.6'\n\toption port '1080'\n"
	)
	path := filepath.Join(t.TempDir(), "tgtun")
	if err := os.WriteFile(path, []byte(start), 0o640); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runCLI(append([]string{"subscription", "add", "-c", path}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	if code, out, errs := run(url, "--via", "backup"); code != exitOK || !strings.Contains(out, "added subscription 'panel_example_org'") {
		t.Fatalf("add: %d %s %s", code, out, errs)
	}
	cfg, _, err := config.Load(path)
	if err != nil || len(cfg.Subscriptions) != 1 || cfg.Subscriptions[0].URL != url || cfg.Subscriptions[0].Via != "backup" {
		t.Fatalf("written file: %v %+v", err, cfg)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the file's 0640", st.Mode().Perm())
	}
	if !strings.HasPrefix(read(), start) {
		t.Fatalf("the rest of the file changed:\n%s", read())
	}
	before := read()
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{url}, exitFail, "already has a subscription with this URL"},
		{[]string{"https://other.example.org/s", "--via", "nope"}, exitFail, "via 'nope' is not a proxy section of this file (proxies: backup; or 'direct')"},
		{[]string{"https://other.example.org/s", "--name", "backup"}, exitFail, "already has a section 'backup'"},
		{[]string{"https://other.example.org/s", "--name", "Bad Name"}, exitUsage, "use lower-case letters"},
		{[]string{"ftp://other.example.org/s3cr3t"}, exitFail, "not an http:// or https:// URL"},
		{[]string{"https://other.example.org/s", "--priority", "2000"}, exitFail, "priority '2000' is out of range"},
		{nil, exitUsage, "the subscription URL is missing"},
		{[]string{"https://a.example.org/1", "https://b.example.org/2"}, exitUsage, "one URL at a time"},
	} {
		code, _, errs := run(tt.args...)
		if code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, code, errs, tt.code, tt.want)
		}
		if strings.Contains(errs, "s3cr3t") {
			t.Errorf("%v: stderr shows the URL's token: %s", tt.args, errs)
		}
		if read() != before {
			t.Fatalf("%v changed the file", tt.args)
		}
	}
	code, out, _ := run("--dry-run", "https://other.example.org/s", "--via", "direct")
	if code != exitOK || out != "config subscription 'other_example_org'\n\toption url 'https://other.example.org/s'\n\toption via 'direct'\n" || read() != before {
		t.Fatalf("dry run: %d %q", code, out)
	}
	if code, out, _ := run("https://www.panel.example.org/other"); code != exitOK || !strings.Contains(out, "'panel_example_org_2'") {
		t.Fatalf("a second subscription of the same host: %d %s", code, out)
	}
}
