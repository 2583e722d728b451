package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/control"
	"github.com/tgtun/tgtun/daemon/links"
)

// cmdProxy runs `tgtun proxy import`.
func cmdProxy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "import" {
		fmt.Fprintln(stderr, "tgtun proxy: expected 'import' (see tgtun help proxy import)")
		return exitUsage
	}
	flags := newFlags("proxy import", stderr)
	name := flags.String("name", "", "section `name` (default: from the link's #name, else its type)")
	write := flags.Bool("write", false, "add the section to the configuration file instead of printing it")
	path := flags.String("c", config.DefaultPath, "configuration `file`")
	link, code, ok := oneArgument(flags, args[1:], stderr, "proxy import", "link")
	if !ok {
		return code
	}
	if link == "" {
		fmt.Fprintf(stderr, "tgtun proxy import: the link is missing (%s)\n", links.Schemes)
		return exitUsage
	}
	p, err := links.Parse(link)
	if err != nil {
		fmt.Fprintf(stderr, "tgtun proxy import: %v\n", err)
		return exitFail
	}
	for _, ig := range p.Ignored {
		fmt.Fprintf(stderr, "tgtun proxy import: note: the link's %s is not used: %s\n", ig.Param, ig.Reason)
	}

	existing, err := os.ReadFile(*path)
	if err != nil && (*write || !errors.Is(err, fs.ErrNotExist)) {
		fmt.Fprintf(stderr, "tgtun proxy import: %v\n", err)
		return exitFail
	}
	taken := sectionNames(existing)
	sec := *name
	switch {
	case sec != "":
		if links.SectionName(sec) != sec {
			fmt.Fprintf(stderr, "tgtun proxy import: --name %q: use lower-case letters, digits and '_'\n", sec)
			return exitUsage
		}
		if taken[sec] {
			fmt.Fprintf(stderr, "tgtun proxy import: %s already has a section '%s'; pick another --name\n", *path, sec)
			return exitFail
		}
	default:
		sec = p.Name
		if sec == "" {
			sec = p.Get("type")
		}
		for i, base := 2, sec; taken[sec]; i++ {
			sec = base + "_" + strconv.Itoa(i)
		}
	}
	section := p.UCI(sec)

	// The section alone must pass the same validation as `config check`.
	if code := checkConfig("link", []byte(section), stderr); code != exitOK {
		return code
	}
	if !*write {
		fmt.Fprint(stdout, section)
		return exitOK
	}
	merged := append([]byte{}, existing...)
	if len(merged) > 0 && !bytes.HasSuffix(merged, []byte("\n")) {
		merged = append(merged, '\n')
	}
	merged = append(append(merged, '\n'), section...)
	if code := checkConfig(*path, merged, stderr); code != exitOK {
		fmt.Fprintf(stderr, "tgtun proxy import: %s was not changed\n", *path)
		return code
	}
	if err := writeFileAtomic(*path, merged); err != nil {
		fmt.Fprintf(stderr, "tgtun proxy import: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "added proxy '%s' to %s; run `tgtun reload` (or /etc/init.d/tgtun reload) to use it\n", sec, *path)
	return exitOK
}

// checkConfig validates data as config check does (the daemon's rules included:
// the proxy must be one the proxy package builds) and prints what is wrong.
func checkConfig(name string, data []byte, stderr io.Writer) int {
	_, _, err := config.ParseWith(name, bytes.NewReader(data), control.ConfigRules{})
	if err == nil {
		return exitOK
	}
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
	} else {
		fmt.Fprintln(stderr, err)
	}
	return exitFail
}

// sectionNames lists the named sections of a UCI file ("config TYPE 'NAME'" lines).
func sectionNames(data []byte) map[string]bool {
	names := map[string]bool{}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "config" {
			names[strings.Trim(f[2], `'"`)] = true
		}
	}
	return names
}

// writeFileAtomic replaces path with data, keeping its mode.
func writeFileAtomic(path string, data []byte) error {
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tgtun-import-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func truncate(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return strings.TrimSpace(s)
}
