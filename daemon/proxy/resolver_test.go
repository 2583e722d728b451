package proxy

import (
	"context"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMarkedResolverCarriesMark: the daemon's DNS sockets carry the bypass mark.
func TestMarkedResolverCarriesMark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (SO_MARK needs CAP_NET_ADMIN); run it as root")
	}
	const mark = 0x200000
	c, err := MarkedResolver(mark).Dial(context.Background(), "udp", "127.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil || got != mark {
		t.Errorf("SO_MARK of the resolver's socket = %#x, %v; want %#x", got, gerr, mark)
	}
}
