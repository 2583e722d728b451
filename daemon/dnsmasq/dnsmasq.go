// Package dnsmasq hands tgtun's domain targets to dnsmasq, the router's resolver: a file
// in dnsmasq's conf-dir tells it to forward the listed domains to tgtun's DNS forwarder
// and to put the addresses they resolve to into tgtun's nft domain sets.
package dnsmasq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// FileName is the file tgtun owns in each conf-dir.
const FileName = "tgtun.conf"

// Directives are what dnsmasq is told.
type Directives struct {
	Domains []string // canonical (lower case, no trailing dot), subdomains match
	// ForwardPort is the port of tgtun's forwarder on 127.0.0.1; 0 leaves the domains
	// with dnsmasq's usual servers (only the nftset lines are written).
	ForwardPort int
	Table       string // nft table (family inet), e.g. "tgtun"
	// Set4, Set6 are the nft sets; Set6 "" with IPv6 off. Set4 "" writes no nftset lines:
	// a dnsmasq built without nftset refuses to start on them, which would take the
	// network's DNS down.
	Set4, Set6 string
}

// Render returns the configuration file for d: for every domain an nftset line and a
// server line. No domains: an empty file with its header.
func Render(d Directives) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by tgtun; removed when tgtun stops. Do not edit.\n")
	domains := slices.Clone(d.Domains)
	slices.Sort(domains)
	domains = slices.Compact(domains)
	sets := "4#inet#" + d.Table + "#" + d.Set4
	if d.Set6 != "" {
		sets += ",6#inet#" + d.Table + "#" + d.Set6
	}
	for _, dom := range domains {
		if dom == "" || strings.ContainsAny(dom, "/#\n\r \t") {
			continue // never reached with validated domains; never break the file
		}
		if d.Set4 != "" {
			fmt.Fprintf(&b, "nftset=/%s/%s\n", dom, sets)
		}
		if d.ForwardPort > 0 {
			fmt.Fprintf(&b, "server=/%s/127.0.0.1#%d\n", dom, d.ForwardPort)
		}
	}
	return b.Bytes()
}

// Options say where the file goes and how dnsmasq is made to read it.
type Options struct {
	// Dirs are the conf-dirs to write to. Empty: the ones OpenWrt's dnsmasq instances
	// read (/tmp/dnsmasq.d and /tmp/dnsmasq.*.d that exist; /tmp/dnsmasq.d if none).
	Dirs []string
	// Restart makes dnsmasq read its configuration again (dnsmasq reads conf-dir files
	// only when it starts). Empty: /etc/init.d/dnsmasq restart.
	Restart []string
}

// DefaultDirs are the conf-dirs of OpenWrt's dnsmasq instances.
func DefaultDirs() []string {
	dirs, _ := filepath.Glob("/tmp/dnsmasq.*.d")
	if fi, err := os.Stat("/tmp/dnsmasq.d"); err == nil && fi.IsDir() {
		dirs = append(dirs, "/tmp/dnsmasq.d")
	}
	if len(dirs) == 0 {
		dirs = []string{"/tmp/dnsmasq.d"}
	}
	slices.Sort(dirs)
	return dirs
}

// Writer keeps tgtun's file in dnsmasq's conf-dirs.
type Writer struct {
	opts Options
}

// NewWriter returns a Writer.
func NewWriter(opts Options) *Writer {
	if len(opts.Restart) == 0 {
		opts.Restart = []string{"/etc/init.d/dnsmasq", "restart"}
	}
	return &Writer{opts: opts}
}

func (w *Writer) dirs() []string {
	if len(w.opts.Dirs) > 0 {
		return w.opts.Dirs
	}
	return DefaultDirs()
}

// Apply writes content into every conf-dir and restarts dnsmasq if any file changed.
// It reports whether dnsmasq was restarted.
func (w *Writer) Apply(ctx context.Context, content []byte) (bool, error) {
	changed := false
	for _, dir := range w.dirs() {
		path := filepath.Join(dir, FileName)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, fmt.Errorf("dnsmasq conf-dir: %w", err)
		}
		if err := writeAtomic(path, content); err != nil {
			return false, err
		}
		changed = true
	}
	if !changed {
		return false, nil
	}
	return true, w.restart(ctx)
}

// Remove deletes tgtun's file from every conf-dir and restarts dnsmasq if one was there,
// so dnsmasq goes on without tgtun's directives.
func (w *Writer) Remove(ctx context.Context) error {
	removed := false
	var errs []error
	for _, dir := range w.dirs() {
		err := os.Remove(filepath.Join(dir, FileName))
		switch {
		case err == nil:
			removed = true
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("remove dnsmasq file: %w", err))
		}
	}
	if removed {
		errs = append(errs, w.restart(ctx))
	}
	return errors.Join(errs...)
}

func (w *Writer) restart(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, w.opts.Restart[0], w.opts.Restart[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("restart dnsmasq (%s): %w: %s", strings.Join(w.opts.Restart, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func writeAtomic(path string, content []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tgtun-*")
	if err != nil {
		return fmt.Errorf("dnsmasq file %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(content); err != nil {
		return fmt.Errorf("dnsmasq file %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("dnsmasq file %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("dnsmasq file %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("dnsmasq file %s: %w", path, err)
	}
	return nil
}

// CheckNftset runs `dnsmasq --version` and tells whether this dnsmasq can fill nft sets.
// It returns "ok" or a hint for the user.
func CheckNftset(ctx context.Context, binary string) string {
	if binary == "" {
		binary = "dnsmasq"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").Output()
	if err != nil {
		return "dnsmasq not found or not runnable (" + err.Error() + "): domains cannot be selected; install dnsmasq-full"
	}
	return nftsetHint(string(out))
}

// nftsetHint reads the output of dnsmasq --version.
func nftsetHint(version string) string {
	for line := range strings.SplitSeq(version, "\n") {
		if !strings.HasPrefix(line, "Compile time options:") {
			continue
		}
		for _, f := range strings.Fields(strings.TrimPrefix(line, "Compile time options:")) {
			if f == "nftset" {
				return "ok"
			}
		}
		return "this dnsmasq has no nftset support: domains are not selected (on OpenWrt: opkg remove dnsmasq && opkg install dnsmasq-full, or apk add dnsmasq-full)"
	}
	return "cannot tell whether dnsmasq has nftset support (no \"Compile time options\" in dnsmasq --version)"
}
