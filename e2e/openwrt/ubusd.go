package openwrt

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Ubusd is OpenWrt's real ubusd on a socket path, optionally inside a network namespace
// (the router's, in the e2e tests). Unix sockets with a path are found through the file
// system, so clients in any namespace reach it by that path.
type Ubusd struct {
	Host  Host
	Sock  string
	NetNS string // "" = the caller's namespace

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

// StartUbusd starts ubusd on sock and waits until it accepts connections. It is stopped
// at cleanup.
func StartUbusd(t testing.TB, h Host, netns, sock string) *Ubusd {
	t.Helper()
	u := &Ubusd{Host: h, Sock: sock, NetNS: netns}
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		u.Stop()
		if t.Failed() {
			t.Logf("ubusd output:\n%s", u.Output())
		}
	})
	return u
}

// Start runs ubusd (again, after Stop: a ubusd restart as procd would do it).
func (u *Ubusd) Start() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cmd != nil {
		return fmt.Errorf("ubusd on %s already running", u.Sock)
	}
	if err := os.MkdirAll(filepath.Dir(u.Sock), 0o755); err != nil {
		return err
	}
	_ = os.Remove(u.Sock) // ubusd unlinks a stale socket too
	argv := []string{u.Host.Path("sbin/ubusd"), "-s", u.Sock}
	if u.NetNS != "" {
		argv = append([]string{"ip", "netns", "exec", u.NetNS}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ubusd: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	u.cmd, u.out, u.done = cmd, out, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("unix", u.Sock, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			u.cmd = nil
			return fmt.Errorf("ubusd exited at start: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ubusd does not accept on %s within 10s: %v", u.Sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends ubusd (SIGTERM, then SIGKILL after 5 s); its clients see the socket close.
func (u *Ubusd) Stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cmd == nil {
		return
	}
	_ = syscall.Kill(-u.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-u.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL)
		<-u.done
	}
	u.cmd = nil
}

// Output is what ubusd printed.
func (u *Ubusd) Output() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.out == nil {
		return ""
	}
	return u.out.String()
}

// Call runs the real `ubus` CLI against this ubusd: `ubus -s SOCK args...`, in ubusd's
// namespace, with a timeout. It returns the CLI's output.
func (u *Ubusd) Call(ctx context.Context, args ...string) (string, error) {
	env, argv := u.Host.UbusCLI(u.Sock, append([]string{"-t", "10"}, args...)...)
	if u.NetNS != "" {
		argv = append([]string{"ip", "netns", "exec", u.NetNS}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ubus %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}
