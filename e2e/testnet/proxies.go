package testnet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// listenTimeout bounds the wait for a proxy server to accept connections; generous
// for a loaded machine.
const listenTimeout = 20 * time.Second

// DanteOptions configures StartDante.
type DanteOptions struct {
	// Auth requires SOCKS5 username/password (RFC 1929) with User and Pass.
	Auth       bool
	User, Pass string
	// Port to listen on; 0 picks a free one.
	Port uint16
}

// StartDante runs danted (SOCKS5 with CONNECT and UDP ASSOCIATE) on the proxy host,
// listening on 198.51.100.6 and 2001:db8:2::6 at the same port; it returns the IPv4
// address.
//
// Dante's "username" method checks the system's passwd/shadow. So that the host's
// files are never touched, danted runs in a private mount namespace in which a copy
// of /etc/passwd and /etc/shadow that also holds the test user is bind-mounted over
// the originals.
func (n *Net) StartDante(opts DanteOptions) (netip.AddrPort, error) {
	addr, _, err := n.StartDanteProc(opts)
	return addr, err
}

// StartDanteProc is StartDante that also returns the process, for a caller that kills
// the proxy (and may start it again on the same port).
func (n *Net) StartDanteProc(opts DanteOptions) (netip.AddrPort, *Proc, error) {
	addr, p, err := n.startDante(opts)
	if err != nil {
		if p != nil {
			p.Kill()
		}
		return netip.AddrPort{}, nil, err
	}
	return addr, p, nil
}

func (n *Net) startDante(opts DanteOptions) (netip.AddrPort, *Proc, error) {
	port, err := n.pickPort(opts.Port)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	dir, err := os.MkdirTemp(n.Dir, "dante-")
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("dante dir: %w", err)
	}
	method := "none"
	if opts.Auth {
		method = "username"
		if err := validCredential(opts.User, opts.Pass); err != nil {
			return netip.AddrPort{}, nil, fmt.Errorf("dante: %w", err)
		}
	}
	conf := fmt.Sprintf(`logoutput: stderr
internal: %[1]s port = %[3]d
internal: %[2]s port = %[3]d
external: %[1]s
external: %[2]s
clientmethod: none
socksmethod: %[4]s
user.privileged: root
user.unprivileged: root
client pass {
	from: 0/0 to: 0/0
}
socks pass {
	from: 0/0 to: 0/0
	command: bind connect udpassociate bindreply udpreply
	udp.portrange: 1024-65535
}
`, ProxyV4, ProxyV6, port, method)
	confPath := filepath.Join(dir, "danted.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("dante config: %w", err)
	}
	args := []string{"danted", "-f", confPath}
	if opts.Auth {
		script, err := n.passwdOverlay(dir, opts.User, opts.Pass)
		if err != nil {
			return netip.AddrPort{}, nil, fmt.Errorf("dante: %w", err)
		}
		args = []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			script + ` exec danted -f "$0"`, confPath}
	}
	p, err := n.Start(n.Proxy, args...)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	addr := netip.AddrPortFrom(ProxyV4, port)
	if err := n.waitListening(n.Proxy, addr, p, listenTimeout); err != nil {
		return netip.AddrPort{}, p, fmt.Errorf("danted: %w", err)
	}
	if err := n.waitListening(n.Proxy, netip.AddrPortFrom(ProxyV6, port), p, listenTimeout); err != nil {
		return netip.AddrPort{}, p, fmt.Errorf("danted: %w", err)
	}
	return addr, p, nil
}

// passwdOverlay writes passwd and shadow files with the test user added and returns
// shell commands that bind-mount them over /etc/passwd and /etc/shadow (to be run
// inside a private mount namespace).
func (n *Net) passwdOverlay(dir, user, pass string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", "passwd", "-6", "-stdin")
	cmd.Stdin = strings.NewReader(pass + "\n")
	hash, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hash password with openssl: %w", err)
	}
	var files [2]string
	for i, name := range []string{"passwd", "shadow"} {
		orig, err := os.ReadFile("/etc/" + name)
		if err != nil {
			return "", fmt.Errorf("read /etc/%s: %w", name, err)
		}
		line := fmt.Sprintf("%s:x:65533:65534:tgtun test:/nonexistent:/usr/sbin/nologin\n", user)
		if name == "shadow" {
			line = fmt.Sprintf("%s:%s:20000:0:99999:7:::\n", user, strings.TrimSpace(string(hash)))
		}
		files[i] = filepath.Join(dir, name)
		if err := os.WriteFile(files[i], append(orig, line...), 0o600); err != nil {
			return "", fmt.Errorf("write %s: %w", files[i], err)
		}
	}
	return fmt.Sprintf("mount --bind %s /etc/passwd && mount --bind %s /etc/shadow &&", files[0], files[1]), nil
}

// validCredential keeps test credentials to characters that are safe in config
// files and passwd lines.
func validCredential(user, pass string) error {
	if user == "" || pass == "" {
		return fmt.Errorf("user and password required")
	}
	for _, s := range []string{user, pass} {
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return fmt.Errorf("credential %q: only letters, digits, '-', '_', '.'", s)
			}
		}
	}
	return nil
}

func (n *Net) pickPort(port uint16) (uint16, error) {
	if port != 0 {
		return port, nil
	}
	return n.FreePort(n.Proxy, ProxyV4)
}

// StartMicrosocks runs microsocks (SOCKS5, CONNECT only) on the proxy host, on both
// of its addresses (it listens on "::", dual stack); user "" means no auth. It
// returns the IPv4 address.
func (n *Net) StartMicrosocks(user, pass string) (netip.AddrPort, error) {
	port, err := n.pickPort(0)
	if err != nil {
		return netip.AddrPort{}, err
	}
	args := []string{"microsocks", "-i", "::", "-p", strconv.Itoa(int(port))}
	if user != "" {
		if err := validCredential(user, pass); err != nil {
			return netip.AddrPort{}, fmt.Errorf("microsocks: %w", err)
		}
		args = append(args, "-u", user, "-P", pass)
	}
	return n.startProxy("microsocks", args, port)
}

// StartSSServer runs ss-server (Shadowsocks, TCP and UDP) on the proxy host on both
// of its addresses. It returns the IPv4 address.
func (n *Net) StartSSServer(cipher, password string) (netip.AddrPort, error) {
	if err := validCredential("ss", password); err != nil {
		return netip.AddrPort{}, fmt.Errorf("ss-server: %w", err)
	}
	port, err := n.pickPort(0)
	if err != nil {
		return netip.AddrPort{}, err
	}
	args := []string{"ss-server", "-s", ProxyV4.String(), "-s", ProxyV6.String(),
		"-p", strconv.Itoa(int(port)), "-k", password, "-m", cipher, "-u", "-v"}
	return n.startProxy("ss-server", args, port)
}

// StartTinyproxy runs tinyproxy (HTTP proxy with CONNECT) on the proxy host on both
// of its addresses; user "" means no auth (else Basic auth). It returns the IPv4
// address.
func (n *Net) StartTinyproxy(user, pass string) (netip.AddrPort, error) {
	port, err := n.pickPort(0)
	if err != nil {
		return netip.AddrPort{}, err
	}
	dir, err := os.MkdirTemp(n.Dir, "tinyproxy-")
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("tinyproxy dir: %w", err)
	}
	conf := fmt.Sprintf(`User nobody
Group nogroup
Port %d
Timeout 600
LogLevel Info
MaxClients 100
Allow 198.51.100.0/24
Allow 2001:db8:2::/48
DisableViaHeader Yes
`, port)
	if user != "" {
		if err := validCredential(user, pass); err != nil {
			return netip.AddrPort{}, fmt.Errorf("tinyproxy: %w", err)
		}
		conf += fmt.Sprintf("BasicAuth %s %s\n", user, pass)
	}
	confPath := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return netip.AddrPort{}, fmt.Errorf("tinyproxy config: %w", err)
	}
	return n.startProxy("tinyproxy", []string{"tinyproxy", "-d", "-c", confPath}, port)
}

func (n *Net) startProxy(name string, args []string, port uint16) (netip.AddrPort, error) {
	p, err := n.Start(n.Proxy, args...)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, a := range []netip.Addr{ProxyV6, ProxyV4} {
		if err := n.waitListening(n.Proxy, netip.AddrPortFrom(a, port), p, listenTimeout); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	return netip.AddrPortFrom(ProxyV4, port), nil
}
