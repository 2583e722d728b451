package dnsmasq

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// guardScript is what a Guard runs (POSIX sh: OpenWrt's busybox ash, Debian's dash).
// Its standard input is a pipe whose other end only the daemon holds: a line "stop"
// is a clean stop; the end of the input without it is the daemon's death (kill -9, a
// crash, the OOM killer), after which the script removes tgtun's file from every
// conf-dir and, if one was there, runs the restart command: dnsmasq then resolves
// the listed domains with its usual servers. Arguments: the conf-dirs, "--", the
// restart command.
const guardScript = `read -r word
[ "$word" = stop ] && exit 0
removed=
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
	if [ -e "$1/` + FileName + `" ]; then
		rm -f "$1/` + FileName + `" && removed=1
	fi
	shift
done
[ "$1" = -- ] && shift
[ -n "$removed" ] && [ "$#" -gt 0 ] && exec "$@"
exit 0
`

// Guard is a small shell process that outlives the daemon and hands the listed domains
// back to dnsmasq's usual servers when the daemon dies without a clean stop: what
// fail_mode 'direct' promises while there is no tgtun, even when procd gives up
// restarting it. It runs in its own session (a kill of the daemon's process group
// leaves it), holds none of the daemon's descriptors but the pipe, and costs one
// idle shell.
type Guard struct {
	cmd  *exec.Cmd
	pipe *os.File // the write end; only the daemon has it (close-on-exec)
	done chan struct{}
}

// StartGuard starts a Guard for the conf-dirs and restart command of w.
func (w *Writer) StartGuard() (*Guard, error) {
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("dnsmasq guard: %w", err)
	}
	defer r.Close()
	args := []string{"-c", guardScript, "tgtun-dnsmasq-guard"}
	args = append(args, w.dirs()...)
	args = append(args, "--")
	args = append(args, w.opts.Restart...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Stdin = r
	// No Stdout/Stderr: /dev/null. Inheriting the daemon's would keep its log pipe
	// (procd's, a test's) open after its death.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("dnsmasq guard: %w", err)
	}
	g := &Guard{cmd: cmd, pipe: pw, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(g.done)
	}()
	return g, nil
}

// Pid is the guard's process id.
func (g *Guard) Pid() int { return g.cmd.Process.Pid }

// Release ends the guard without it doing anything (a clean stop, or a new guard
// replacing it) and waits for it to exit.
func (g *Guard) Release() {
	_, _ = io.WriteString(g.pipe, "stop\n")
	g.pipe.Close()
	<-g.done
}
