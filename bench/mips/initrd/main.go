// Command initrd is /init of the emulated router's initramfs, which bench/mips builds
// on the host from the root file system's own kernel modules (no initramfs-tools: under
// qemu-user it took most of the root file system's build time). It loads the modules
// listed in /modules (the IDE controller and ext4, dependencies first), mounts /dev/sda
// and hands over to /sbin/tgtun-bench-init on it.
package main

import (
	"fmt"
	"os"
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

func boot() error {
	_ = os.MkdirAll("/dev", 0o755)
	_ = os.MkdirAll("/proc", 0o755)
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
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("load %s: %w", m, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat("/dev/sda"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no /dev/sda after 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = os.MkdirAll("/root", 0o755)
	if err := unix.Mount("/dev/sda", "/root", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount /dev/sda: %w", err)
	}
	_ = unix.Unmount("/dev", unix.MNT_DETACH)
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
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return syscall.Exec("/sbin/tgtun-bench-init", []string{"/sbin/tgtun-bench-init"}, os.Environ())
}
