// Command tgtun tunnels messenger traffic of a whole home network through a proxy.
// See README.md and docs/ for how it works.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/control"
)

// version is stamped at build time with -ldflags '-X main.version=…'.
var version = "0.0.0-dev"

// Exit codes: 0 success, 1 the thing asked for failed (bad config, daemon error),
// 2 the command line was wrong.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `tgtun tunnels messenger traffic (Telegram and others) of a whole network through a proxy.

Usage:
  tgtun run [-c FILE] [--socket PATH] [--ubus-socket PATH]   run the daemon in the foreground
  tgtun status [--json] [--socket PATH]                      what the running daemon is doing
  tgtun reload [--socket PATH]                               re-read the configuration
  tgtun update-lists [--socket PATH]                         download the service lists now
  tgtun check [--socket PATH]                                diagnose "why doesn't Telegram work?"
  tgtun config check [-c FILE]                               validate a configuration file
  tgtun proxy import [--name N] [--write] [-c FILE] LINK     print (or add) the proxy section of a share link
                     e.g. tgtun proxy import 'vless://UUID@host:443?security=reality&pbk=KEY&sid=ID'
                          tgtun proxy import --write --name backup 'ss://...@host:8388#Backup'
  tgtun version                                              print the version

Defaults: -c ` + config.DefaultPath + `, --socket ` + control.DefaultSocket + `
`

func main() {
	os.Exit(runCLI(os.Args[1:], os.Stdout, os.Stderr))
}

func runCLI(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "version", "--version":
		fmt.Fprintf(stdout, "tgtun %s\n", version)
		return exitOK
	case "run":
		return cmdRun(args[1:], stderr)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprintf(stderr, "tgtun config: expected 'check'\n\n%s", usage)
			return exitUsage
		}
		return cmdConfigCheck(args[2:], stdout, stderr)
	case "proxy":
		return cmdProxy(args[1:], stdout, stderr)
	case "status", "reload", "update-lists", "check":
		return cmdCall(args[0], args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "tgtun: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

// newFlags makes a flag set that reports errors to stderr and never exits by itself.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tgtun "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage
	}
	return -1
}

func cmdConfigCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config check", stderr)
	path := fs.String("c", config.DefaultPath, "configuration `file`")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	_, warnings, err := config.Load(*path)
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(stderr, e)
			}
			fmt.Fprintf(stderr, "%s: %d error(s)\n", *path, len(errs))
		} else {
			fmt.Fprintln(stderr, err)
		}
		return exitFail
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return exitOK
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	path := fs.String("c", config.DefaultPath, "configuration `file`")
	socket := fs.String("socket", control.DefaultSocket, "control socket `path`")
	ubusSocket := fs.String("ubus-socket", "", "ubus socket `path` (default: /var/run/ubus/ubus.sock, then /var/run/ubus.sock)")
	listCache := fs.String("list-cache", "/var/run/tgtun/lists", "`directory` for downloaded lists (tmpfs: never flash)")
	dnsmasqDir := fs.String("dnsmasq-dir", "", "comma-separated dnsmasq conf-`dirs` for tgtun's domains (default: OpenWrt's /tmp/dnsmasq*.d)")
	dnsmasqRestart := fs.String("dnsmasq-restart", "", "`command` that makes dnsmasq re-read its conf-dir (default: /etc/init.d/dnsmasq restart)")
	dnsmasqAddr := fs.String("dnsmasq-addr", "127.0.0.1:53", "`address` where check asks dnsmasq for a listed domain")
	dnsmasqBin := fs.String("dnsmasq-binary", "dnsmasq", "dnsmasq `program` asked for its nftset support (dnsmasq --version)")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := control.Run(ctx, control.Options{
		ConfigPath:     *path,
		Socket:         *socket,
		UbusSocket:     *ubusSocket,
		ListCacheDir:   *listCache,
		DnsmasqDirs:    splitNonEmpty(*dnsmasqDir, ","),
		DnsmasqRestart: strings.Fields(*dnsmasqRestart),
		DnsmasqAddr:    *dnsmasqAddr,
		DnsmasqBinary:  *dnsmasqBin,
		Version:        version,
		LogOutput:      stderr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "tgtun: %v\n", err)
		return exitFail
	}
	return exitOK
}

func splitNonEmpty(s, sep string) []string {
	var out []string
	for part := range strings.SplitSeq(s, sep) {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func cmdCall(name string, args []string, stdout, stderr io.Writer) int {
	fs := newFlags(name, stderr)
	socket := fs.String("socket", control.DefaultSocket, "control socket `path`")
	asJSON := fs.Bool("json", false, "print the raw JSON result")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	method := map[string]string{"update-lists": "update_lists"}[name]
	if method == "" {
		method = name
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	raw, err := control.Call(ctx, *socket, method, nil)
	if err != nil {
		fmt.Fprintf(stderr, "tgtun %s: %v\n", name, err)
		return exitFail
	}
	if *asJSON {
		var buf any
		if json.Unmarshal(raw, &buf) == nil {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(buf)
			return exitOK
		}
		fmt.Fprintln(stdout, string(raw))
		return exitOK
	}
	if err := control.Print(stdout, method, raw); err != nil {
		fmt.Fprintf(stderr, "tgtun %s: %v\n", name, err)
		return exitFail
	}
	return exitOK
}
