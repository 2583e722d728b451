package netcfg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Root tests run their body in a child process started with "ip netns exec"
// in a namespace made for the test: this package acts on the namespace of the
// whole process (netlink, nftables, /proc/sys, the TUN), which a locked
// thread cannot confine.
const (
	childEnv       = "TGTUN_NETNS_CHILD"  // the test name the child runs
	netnsNamesEnv  = "TGTUN_NETNS_NAMES"  // comma-separated namespaces made for it
	parentNetnsEnv = "TGTUN_NETNS_PARENT" // the namespace of the starting process
	childTimeout   = 4 * time.Minute
)

var netnsCounter atomic.Int64

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (it creates network namespaces); run it as root")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("this test needs %s (Debian packages iproute2 and nftables): %v", bin, err)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Fatalf("this test needs /dev/net/tun: %v", err)
	}
}

// newNetns makes a uniquely named network namespace, removed at cleanup.
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("tgtun-nc-%d-%d", os.Getpid(), netnsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	// A router's loopback is up: tgtun's TCP route (local default dev lo) needs it.
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v\n%s", name, err, out)
	}
	return name
}

// inNetns runs body in a child process inside a fresh namespace; extra more
// namespaces are made and their names given to body after the first one's.
func inNetns(t *testing.T, extra int, body func(t *testing.T, names []string)) {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		assertNotInitialNetns(t)
		body(t, strings.Split(os.Getenv(netnsNamesEnv), ","))
		return
	}
	requireRoot(t)
	var names []string
	for range 1 + extra {
		names = append(names, newNetns(t))
	}
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", names[0], os.Args[0],
		"-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout="+childTimeout.String())
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name(), netnsNamesEnv+"="+strings.Join(names, ","),
		parentNetnsEnv+"="+currentNetnsID(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("test body in netns %s failed: %v\n%s", names[0], err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()+" ") {
		t.Fatalf("test body in netns %s did not run or pass:\n%s", names[0], out)
	}
	t.Logf("body in netns %s:\n%s", names[0], out)
}

// currentNetnsID names the namespace of this process.
func currentNetnsID(t *testing.T) string {
	t.Helper()
	id, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("read own netns: %v", err)
	}
	return id
}

// assertNotInitialNetns guards the host: a child must never act on the
// namespace of the test process that started it.
func assertNotInitialNetns(t *testing.T) {
	t.Helper()
	parent := os.Getenv(parentNetnsEnv)
	if parent == "" || parent == currentNetnsID(t) {
		t.Fatalf("refusing to run: not in a namespace made for this test (parent %q, own %q)", parent, currentNetnsID(t))
	}
}

// withNetns runs fn on a thread switched into the named namespace; sockets
// made there stay in it.
func withNetns(name string, fn func() error) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: Go ends it when this goroutine exits.
		return errors.Join(ferr, fmt.Errorf("return from netns %s: %w", name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

const helperRoleEnv = "TGTUN_HELPER_ROLE"

// TestMain turns this binary into a helper process when helperRoleEnv is set.
func TestMain(m *testing.M) {
	if role := os.Getenv(helperRoleEnv); role != "" {
		os.Exit(runHelper(role))
	}
	os.Exit(m.Run())
}

// helperProcess starts this test binary again in the current namespace in
// role, and waits (bounded) until it prints "READY".
func helperProcess(t *testing.T, role string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperRoleEnv+"="+role)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", role, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "READY" {
				ready <- nil
				for sc.Scan() { // drain so the helper never blocks on stdout
				}
				return
			}
			fmt.Fprintf(os.Stderr, "helper %s: %s\n", role, sc.Text())
		}
		ready <- fmt.Errorf("helper %s exited before READY: %v", role, sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("helper %s not ready after 60s", role)
	}
	return cmd
}
