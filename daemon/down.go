package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strings"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/control"
)

// logTail returns the daemon's last log lines; found is false when there is no system
// log to ask (no logread: not OpenWrt).
type logTail func() (lines []string, found bool)

// systemLogread asks OpenWrt's logread for the last lines tgtun logged.
func systemLogread() ([]string, bool) {
	bin, err := exec.LookPath("logread")
	if err != nil {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-e", "tgtun").Output()
	if err != nil {
		return nil, true
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil, true
	}
	return lines, true
}

// explainCallError says what to do about a failed call to the daemon: "" when the
// error says it all, otherwise why the daemon does not answer.
func explainCallError(err error, socket, path string, tail logTail) string {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("Only root may use the control socket %s: run this as root.\n", socket)
	case errors.Is(err, control.ErrUnreachable):
		return explainDown(path, tail)
	}
	return ""
}

// explainDown says, in steps a user can take, why the daemon does not answer: not
// enabled, a configuration it refuses, never started, or started and exited (with its
// last log lines where logread exists).
func explainDown(path string, tail logTail) string {
	var b strings.Builder
	cfg, _, err := control.LoadConfig(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(&b, "The configuration %s does not exist: is the tgtun package installed? (pass -c FILE for another file)\n", path)
		return b.String()
	case err != nil:
		var errs config.Errors
		n := 1
		if errors.As(err, &errs) {
			n = len(errs)
		}
		fmt.Fprintf(&b, "The configuration has %d error(s), so tgtun refuses to start. See them with:\n  tgtun config check -c %s\nthen fix the file and run:\n  /etc/init.d/tgtun restart\n", n, path)
		return b.String()
	case !cfg.Main.Enabled:
		fmt.Fprintf(&b, "tgtun is not enabled (option enabled '0' in %s). Enable and start it:\n  uci set tgtun.main.enabled=1\n  uci commit tgtun\n  /etc/init.d/tgtun start\n", path)
		return b.String()
	}
	lines, found := tail()
	if !found || len(lines) == 0 {
		b.WriteString("tgtun is enabled but not started. Start it:\n  /etc/init.d/tgtun start\n")
		if !found {
			fmt.Fprintf(&b, "(or in the foreground, to see its log: tgtun run -c %s)\n", path)
		}
		return b.String()
	}
	const keep = 8
	if len(lines) > keep {
		lines = lines[len(lines)-keep:]
	}
	b.WriteString("tgtun is enabled but not running: it was started and exited. Its last log lines (logread -e tgtun):\n")
	for _, l := range lines {
		b.WriteString("  " + l + "\n")
	}
	b.WriteString("Fix what they say, then start it again:\n  /etc/init.d/tgtun start\n")
	return b.String()
}
