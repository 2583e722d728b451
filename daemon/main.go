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

// command is one subcommand: its name (one or two words, e.g. "config check"), what it
// does in one line, its arguments after the flags, examples, and setup, which declares
// its flags on fs and returns what runs once they are parsed. A new subcommand is one
// more entry in commands().
type command struct {
	name     string
	summary  string
	args     string // positional arguments after the flags, "" for none
	examples []string
	setup    func(fs *flag.FlagSet, stdout, stderr io.Writer) func(args []string) int
	// raw, instead of setup, is a command that parses its own arguments (flags after a
	// positional argument, say); runCLI still answers -h/--help with the help above.
	raw func(args []string, stdout, stderr io.Writer) int
}

func commands() []*command {
	return []*command{
		{
			name:    "run",
			summary: "run the daemon in the foreground (procd does this on OpenWrt)",
			examples: []string{
				"tgtun run",
				"tgtun run -c /tmp/tgtun.test --socket /tmp/tgtun.sock",
			},
			setup: setupRun,
		},
		{
			name:    "status",
			summary: "what the running daemon is doing: proxies, flows, lists",
			examples: []string{
				"tgtun status",
				"tgtun status -json | jsonfilter -e '@.proxies[*].healthy'",
			},
			setup: setupCall("status"),
		},
		{
			name:     "reload",
			summary:  "re-read the configuration; a file with errors changes nothing",
			examples: []string{"tgtun reload"},
			setup:    setupCall("reload"),
		},
		{
			name:     "update-lists",
			summary:  "download the service lists now (through the proxy)",
			examples: []string{"tgtun update-lists"},
			setup:    setupCall("update_lists"),
		},
		{
			name:    "check",
			summary: `diagnose "why doesn't Telegram work?" step by step, with what to do`,
			examples: []string{
				"tgtun check",
				"tgtun check -json",
			},
			setup: setupCall("check"),
		},
		{
			name:    "config check",
			summary: "validate a configuration file exactly as start and reload do",
			examples: []string{
				"tgtun config check",
				"tgtun config check -c /tmp/tgtun.new && cp /tmp/tgtun.new /etc/config/tgtun",
				"tgtun config check --strict   # warnings (unknown options) fail too",
			},
			setup: setupConfigCheck,
		},
		{
			name:    "proxy import",
			summary: "print (or add with --write) the proxy section of a share link",
			args:    "LINK",
			examples: []string{
				"tgtun proxy import 'vless://UUID@host:443?security=reality&pbk=KEY&sid=ID'",
				"tgtun proxy import --write --name backup 'ss://...@host:8388#Backup'",
			},
			raw: func(args []string, stdout, stderr io.Writer) int {
				return cmdProxy(append([]string{"import"}, args...), stdout, stderr)
			},
		},
		{
			name:    "subscription add",
			summary: "add a provider's subscription URL to the configuration (its links become proxies)",
			args:    "URL",
			examples: []string{
				"tgtun subscription add 'https://panel.example.org/sub/TOKEN'",
				"tgtun subscription add --name myvpn --via direct 'https://panel.example.org/sub/TOKEN' && tgtun reload",
			},
			raw: cmdSubscriptionAdd,
		},
		{
			name:    "subscription update",
			summary: "fetch the subscriptions now (all, or the one named)",
			args:    "[NAME]",
			examples: []string{
				"tgtun subscription update",
				"tgtun subscription update myvpn",
			},
			setup: setupSubscriptionUpdate,
		},
		{
			name:     "version",
			summary:  "print the version",
			examples: []string{"tgtun version"},
			setup: func(_ *flag.FlagSet, stdout, _ io.Writer) func([]string) int {
				return func([]string) int {
					fmt.Fprintf(stdout, "tgtun %s\n", version)
					return exitOK
				}
			},
		},
	}
}

func main() {
	os.Exit(runCLI(os.Args[1:], os.Stdout, os.Stderr))
}

// usage is the overview, for commands that print it themselves.
var usage = func() string {
	var b strings.Builder
	printUsage(&b)
	return b.String()
}()

// newFlags makes a flag set that reports errors to stderr and never exits by itself,
// for commands that parse their own flags (command.raw).
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tgtun "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// oneArgument parses args with flags, which may come before or after the command's one
// positional argument (what, e.g. "link"), and returns that argument, "" if there is
// none. ok is false when parsing ends the command, with code its exit code: help, a
// bad flag, or a second argument.
func oneArgument(flags *flag.FlagSet, args []string, stderr io.Writer, cmd, what string) (arg string, code int, ok bool) {
	rest := args
	for {
		if err := flags.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", exitOK, false
			}
			return "", exitUsage, false
		}
		if flags.NArg() == 0 {
			return arg, exitOK, true
		}
		if arg != "" {
			fmt.Fprintf(stderr, "tgtun %s: one %s at a time (unexpected %q)\n", cmd, what, truncate(flags.Arg(0)))
			return "", exitUsage, false
		}
		arg, rest = flags.Arg(0), flags.Args()[1:]
	}
}

// printUsage prints the overview `tgtun help` shows.
func printUsage(w io.Writer) {
	fmt.Fprint(w, "tgtun tunnels messenger traffic (Telegram and others) of a whole network through a proxy.\n\nUsage: tgtun COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-14s %s\n", "help COMMAND", "flags and examples of a command")
	fmt.Fprintf(w, "\nDefaults: -c %s, --socket %s\nRun 'tgtun help COMMAND' or 'tgtun COMMAND --help' for a command's flags and examples.\n",
		config.DefaultPath, control.DefaultSocket)
}

// lookup finds the command args start with, trying two words ("config check") before one.
func lookup(args []string) (*command, []string) {
	for _, c := range commands() {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			return c, args[len(words):]
		}
	}
	return nil, args
}

func runCLI(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printUsage(stdout)
		return exitOK
	case "help":
		if len(args) == 1 {
			printUsage(stdout)
			return exitOK
		}
		c, rest := lookup(args[1:])
		if c == nil || len(rest) > 0 {
			fmt.Fprintf(stderr, "tgtun help: unknown command %q\n\n", strings.Join(args[1:], " "))
			printUsage(stderr)
			return exitUsage
		}
		fs, _ := c.flags(stdout, stderr)
		c.help(stdout, fs)
		return exitOK
	case "--version":
		args = []string{"version"}
	}
	c, rest := lookup(args)
	if c == nil {
		// A known first word with an unknown second one (tgtun config frob).
		for _, k := range commands() {
			if first, second, ok := strings.Cut(k.name, " "); ok && first == args[0] {
				fmt.Fprintf(stderr, "tgtun %s: expected '%s'\n\n", first, second)
				printUsage(stderr)
				return exitUsage
			}
		}
		fmt.Fprintf(stderr, "tgtun: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	if c.raw != nil {
		if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help") {
			fs, _ := c.flags(stdout, stderr)
			c.help(stdout, fs)
			return exitOK
		}
		return c.raw(rest, stdout, stderr)
	}
	fs, run := c.flags(stdout, stderr)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.help(stdout, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "Run 'tgtun help %s' for its flags and examples.\n", c.name)
		return exitUsage
	}
	if c.args == "" && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tgtun %s: unexpected argument %q\n", c.name, fs.Arg(0))
		return exitUsage
	}
	return run(fs.Args())
}

// flags makes the command's flag set, which reports errors to stderr and never exits.
func (c *command) flags(stdout, stderr io.Writer) (*flag.FlagSet, func([]string) int) {
	fs := newFlags(c.name, stderr)
	fs.Usage = func() {} // runCLI prints help for -h, and a pointer to it for mistakes
	if c.setup == nil {
		return fs, nil
	}
	return fs, c.setup(fs, stdout, stderr)
}

// help prints the command's summary, synopsis, flags and examples.
func (c *command) help(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "tgtun %s: %s\n\nUsage: tgtun %s", c.name, c.summary, c.name)
	first := ""
	fs.VisitAll(func(f *flag.Flag) {
		if first == "" {
			first = f.Name
		}
	})
	hasFlags := first != ""
	if hasFlags {
		fmt.Fprint(w, " [flags]")
	}
	if c.args != "" {
		fmt.Fprint(w, " "+c.args)
	}
	fmt.Fprintln(w)
	if hasFlags {
		fmt.Fprintf(w, "\nFlags (one dash or two: -%s and --%s are the same):\n", first, first)
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if len(c.examples) > 0 {
		fmt.Fprintln(w, "\nExamples:")
		for _, e := range c.examples {
			fmt.Fprintln(w, "  "+e)
		}
	}
}

func setupConfigCheck(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	path := fs.String("c", config.DefaultPath, "configuration `file`")
	strict := fs.Bool("strict", false, "treat warnings (unknown options, unused values) as errors")
	return func([]string) int {
		cfg, warnings, err := control.LoadConfig(*path)
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
		if *strict && len(warnings) > 0 {
			fmt.Fprintf(stderr, "%s: %d warning(s), which --strict counts as errors\n", *path, len(warnings))
			return exitFail
		}
		if !cfg.Main.Enabled {
			fmt.Fprintf(stdout, "%s: ok (but enabled '0': tgtun does not start until uci set tgtun.main.enabled=1)\n", *path)
			return exitOK
		}
		fmt.Fprintf(stdout, "%s: ok\n", *path)
		return exitOK
	}
}

func setupRun(fs *flag.FlagSet, _, stderr io.Writer) func([]string) int {
	path := fs.String("c", config.DefaultPath, "configuration `file`")
	socket := fs.String("socket", control.DefaultSocket, "control socket `path`")
	ubusSocket := fs.String("ubus-socket", "", "ubus socket `path` (default: /var/run/ubus/ubus.sock, then /var/run/ubus.sock)")
	listCache := fs.String("list-cache", "/var/run/tgtun/lists", "`directory` for downloaded lists (tmpfs: never flash)")
	dnsmasqDir := fs.String("dnsmasq-dir", "", "comma-separated dnsmasq conf-`dirs` for tgtun's domains (default: OpenWrt's /tmp/dnsmasq*.d)")
	dnsmasqRestart := fs.String("dnsmasq-restart", "", "`command` that makes dnsmasq re-read its conf-dir (default: /etc/init.d/dnsmasq restart)")
	dnsmasqAddr := fs.String("dnsmasq-addr", "127.0.0.1:53", "`address` where check asks dnsmasq for a listed domain")
	dnsmasqBin := fs.String("dnsmasq-binary", "dnsmasq", "dnsmasq `program` asked for its nftset support (dnsmasq --version)")
	subCache := fs.String("subscription-cache", "/var/run/tgtun/subscriptions", "`directory` for the subscriptions' last good links (tmpfs: never flash)")
	subTimeout := fs.Duration("subscription-timeout", time.Minute, "how long one subscription fetch may take")
	return func([]string) int {
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

			SubscriptionCacheDir: *subCache,
			SubscriptionTimeout:  *subTimeout,
			Version:              version,
			LogOutput:            stderr,
		})
		if err != nil {
			fmt.Fprintf(stderr, "tgtun: %v\n", err)
			return exitFail
		}
		return exitOK
	}
}

// setupCall is a command that calls one method of the running daemon.
func setupCall(method string) func(*flag.FlagSet, io.Writer, io.Writer) func([]string) int {
	return func(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
		socket := fs.String("socket", control.DefaultSocket, "control socket `path`")
		asJSON := fs.Bool("json", false, "print the raw JSON result (the same as ubus call tgtun "+method+")")
		path := fs.String("c", config.DefaultPath, "configuration `file`, read to explain why the daemon is not running")
		name := strings.TrimPrefix(fs.Name(), "tgtun ")
		return func([]string) int {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			raw, err := control.Call(ctx, *socket, method, nil)
			if err != nil {
				fmt.Fprintf(stderr, "tgtun %s: %v\n", name, err)
				fmt.Fprint(stderr, explainCallError(err, *socket, *path, systemLogread))
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
	}
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
