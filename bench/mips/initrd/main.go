// Command initrd is /init of the emulated router's initramfs, which bench/mips builds
// on the host from the root file system's own kernel modules (no initramfs-tools: under
// qemu-user it took most of the root file system's build time). It loads the modules
// listed in /modules (the IDE controller and ext4, dependencies first), finds the disks
// by their ext labels (the kernel names them in the order it happens to probe them):
// "tgtun-mips" is the root file system, "tgtun-bench" the bench disk, the one without a
// file system the raw result disk. It mounts the root with /proc, /sys, /dev, /tmp, /run
// and the bench disk on /bench, and hands over to /bench/run.sh with RESULT_DEV set.
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := boot(); err != nil {
		fmt.Printf("@@fatal initrd: %v\n", err)
		time.Sleep(time.Second)
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
}

// extLabel reads the volume label of an ext2/3/4 file system on dev; ok is false when
// dev holds none.
func extLabel(dev string) (label string, ok bool, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return "", false, err
	}
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		return "", false, nil
	}
	return strings.TrimRight(string(sb[120:136]), "\x00"), true, nil
}

func boot() error {
	for _, d := range []string{"/dev", "/proc", "/root"} {
		_ = os.MkdirAll(d, 0o755)
	}
	if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	raw, err := os.ReadFile("/modules")
	if err != nil {
		return err
	}
	for _, m := range strings.Fields(string(raw)) {
		f, err := os.Open("/lib/modules/" + m)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load %s: %w", m, err)
		}
	}
	var root, bench, result string
	deadline := time.Now().Add(60 * time.Second)
	for root == "" || bench == "" || result == "" {
		if time.Now().After(deadline) {
			return fmt.Errorf("disks after 60 s: root %q, bench %q, result %q", root, bench, result)
		}
		time.Sleep(200 * time.Millisecond)
		root, bench, result = "", "", ""
		devs, _ := filepath.Glob("/dev/sd[a-z]")
		for _, d := range devs {
			label, ok, err := extLabel(d)
			switch {
			case err != nil:
			case !ok:
				result = d
			case label == "tgtun-mips":
				root = d
			case label == "tgtun-bench":
				bench = d
			}
		}
	}
	if err := unix.Mount(root, "/root", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount the root %s: %w", root, err)
	}
	for _, m := range []struct{ src, dst, fs, opts string }{
		{"proc", "/root/proc", "proc", ""},
		{"sys", "/root/sys", "sysfs", ""},
		{"tmp", "/root/tmp", "tmpfs", ""},
		{"run", "/root/run", "tmpfs", ""},
		{bench, "/root/bench", "ext4", ""},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		flags := uintptr(0)
		if m.dst == "/root/bench" {
			flags = unix.MS_RDONLY
		}
		if err := unix.Mount(m.src, m.dst, m.fs, flags, m.opts); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	if err := unix.Mount("/dev", "/root/dev", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move /dev: %w", err)
	}
	_ = os.MkdirAll("/root/dev/pts", 0o755)
	_ = unix.Mount("devpts", "/root/dev/pts", "devpts", 0, "")
	// switch_root: the initramfs's files are freed, the disk becomes /.
	_ = os.RemoveAll("/lib")
	_ = os.Remove("/modules")
	_ = os.Remove("/init")
	if err := os.Chdir("/root"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "RESULT_DEV=" + result}
	if err := syscall.Exec("/bin/sh", []string{"/bin/sh", "/bench/run.sh"}, env); err != nil {
		return fmt.Errorf("exec /bench/run.sh: %w", err)
	}
	return nil
}
