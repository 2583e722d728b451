package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// inNamespace runs fn on an OS thread switched into namespace ns. Sockets belong to
// the namespace they were created in, so a listener or connection made by fn keeps
// working in ns after the thread switches back: the test servers run inside this
// process, with no helper binary. fn runs on its own goroutine so that, should the
// switch back fail, the runtime discards the thread with that goroutine instead of
// letting anything else run in the wrong namespace.
func inNamespace(ns string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			done <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			done <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(fnErr, fmt.Errorf("return from namespace %s: %w", ns, err))
			return // the thread stays locked and ends with this goroutine
		}
		runtime.UnlockOSThread()
		done <- fnErr
	}()
	return <-done
}

// Dial connects from namespace ns (network "tcp", "tcp4", "udp", …; address
// "IP:port" literal). The connection lives in ns.
func (n *Net) Dial(ctx context.Context, ns, network, address string) (net.Conn, error) {
	var c net.Conn
	err := inNamespace(ns, func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, address, ns, err)
	}
	return c, nil
}

// Listen opens a TCP listener in namespace ns; it is closed at cleanup.
func (n *Net) Listen(ns, network, address string) (net.Listener, error) {
	var l net.Listener
	err := inNamespace(ns, func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, address, ns, err)
	}
	n.addCloser(l)
	return l, nil
}

// ListenPacket opens a UDP socket in namespace ns; it is closed at cleanup.
func (n *Net) ListenPacket(ns, network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := inNamespace(ns, func() error {
		var err error
		pc, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, address, ns, err)
	}
	n.addCloser(pc)
	return pc, nil
}

// FreePort returns a TCP and UDP port that is free on addr in namespace ns now.
func (n *Net) FreePort(ns string, addr netip.Addr) (uint16, error) {
	for range 20 {
		var port uint16
		err := inNamespace(ns, func() error {
			l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
			if err != nil {
				return err
			}
			defer l.Close()
			port = uint16(l.Addr().(*net.TCPAddr).Port)
			u, err := net.ListenPacket("udp", netip.AddrPortFrom(addr, port).String())
			if err != nil {
				port = 0 // taken for UDP: try another
				return nil
			}
			return u.Close()
		})
		if err != nil {
			return 0, fmt.Errorf("free port on %s in %s: %w", addr, ns, err)
		}
		if port != 0 {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on %s in %s", addr, ns)
}

// StartMessengerServers starts, in the messenger namespace on 203.0.113.10 and
// 2001:db8:3::10: an HTTP server on HTTPPort that answers "you are ADDR\n" with the
// client's address as it saw it, TCP and UDP echo on EchoPort, and on MTProtoPort the
// first step of a Telegram data centre (see StartMTProto): tgtun's health target.
func (n *Net) StartMessengerServers() error {
	if err := n.startTestServers(n.Messenger, MsgrV4, MsgrV6); err != nil {
		return err
	}
	for _, a := range []netip.Addr{MsgrV4, MsgrV6} {
		if err := n.StartMTProto(n.Messenger, netip.AddrPortFrom(a, MTProtoPort)); err != nil {
			return err
		}
	}
	return nil
}

// StartDirectServer starts the same servers in the inet namespace on 198.51.100.80
// and 2001:db8:2::80: an ordinary, uncensored internet host. LAN IPv4 reaches it
// masqueraded to 198.51.100.1; LAN IPv6 with the client's own address.
func (n *Net) StartDirectServer() error {
	return n.startTestServers(n.Inet, DirectV4, DirectV6)
}

func (n *Net) startTestServers(ns string, addrs ...netip.Addr) error {
	for _, a := range addrs {
		http4, err := n.Listen(ns, "tcp", netip.AddrPortFrom(a, HTTPPort).String())
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(youAre), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(http4) }()
		n.addCloser(srv)

		echo, err := n.Listen(ns, "tcp", netip.AddrPortFrom(a, EchoPort).String())
		if err != nil {
			return err
		}
		go serveTCPEcho(echo)

		uecho, err := n.ListenPacket(ns, "udp", netip.AddrPortFrom(a, EchoPort).String())
		if err != nil {
			return err
		}
		go serveUDPEcho(uecho)
	}
	return nil
}

// youAre answers "you are ADDR\n"; with ?bytes=N it answers N more bytes after
// that line, for transfers of a known size.
func youAre(w http.ResponseWriter, r *http.Request) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		http.Error(w, "bad remote address", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "you are %s\n", ap.Addr().Unmap())
	if s := r.URL.Query().Get("bytes"); s != "" {
		size, err := strconv.ParseInt(s, 10, 64)
		if err != nil || size < 0 || size > 1<<30 {
			return
		}
		_, _ = io.CopyN(w, zeroReader{}, size)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// ParseYouAre extracts the address from the first line of a test server's answer
// ("you are 198.51.100.6").
func ParseYouAre(body string) (netip.Addr, error) {
	line, _, _ := strings.Cut(body, "\n")
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "you are ")
	if !ok {
		return netip.Addr{}, fmt.Errorf("not a test server answer: %q", line)
	}
	a, err := netip.ParseAddr(rest)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("test server answer %q: %w", line, err)
	}
	return a, nil
}

func serveTCPEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			// Not io.Copy: between TCP sockets it splices through a pipe pair held
			// for the connection's life, two more descriptors per idle flow, which
			// runs the bench out of descriptors before 5000 flows.
			buf := make([]byte, 8<<10)
			for {
				k, err := c.Read(buf)
				if k > 0 {
					if _, werr := c.Write(buf[:k]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func serveUDPEcho(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo(buf[:k], from)
	}
}
