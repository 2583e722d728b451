package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/control"
	"github.com/tgtun/tgtun/daemon/links"
)

// cmdSubscriptionAdd runs `tgtun subscription add URL`: it adds a `config subscription`
// section to the configuration file, checked as `config check` checks the file, as
// `tgtun proxy import --write` adds a proxy.
func cmdSubscriptionAdd(args []string, stdout, stderr io.Writer) int {
	flags := newFlags("subscription add", stderr)
	name := flags.String("name", "", "section `name` (default: from the URL's host)")
	via := flags.String("via", "", "fetch `through` this proxy section, or 'direct' (default: the active proxy)")
	priority := flags.Int("priority", 10, "`priority` of its proxies (0-1000, lower wins)")
	dryRun := flags.Bool("dry-run", false, "print the section instead of adding it")
	path := flags.String("c", config.DefaultPath, "configuration `file`")
	raw, code, ok := oneArgument(flags, args, stderr, "subscription add", "URL")
	if !ok {
		return code
	}
	if raw == "" {
		fmt.Fprintln(stderr, "tgtun subscription add: the subscription URL is missing (https://…)")
		return exitUsage
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		// Not echoed: it carries the account's token.
		fmt.Fprintln(stderr, "tgtun subscription add: not an http:// or https:// URL with a host")
		return exitFail
	}
	existing, err := os.ReadFile(*path)
	if err != nil && (!*dryRun || !errors.Is(err, os.ErrNotExist)) {
		fmt.Fprintf(stderr, "tgtun subscription add: %v\n", err)
		return exitFail
	}
	taken := sectionNames(existing)
	if sameURL(existing, raw) {
		fmt.Fprintf(stderr, "tgtun subscription add: %s already has a subscription with this URL\n", *path)
		return exitFail
	}
	sec := *name
	switch {
	case sec != "":
		if links.SectionName(sec) != sec {
			fmt.Fprintf(stderr, "tgtun subscription add: --name %q: use lower-case letters, digits and '_'\n", sec)
			return exitUsage
		}
		if taken[sec] {
			fmt.Fprintf(stderr, "tgtun subscription add: %s already has a section '%s'; pick another --name\n", *path, sec)
			return exitFail
		}
	default:
		sec = links.SectionName(strings.TrimPrefix(u.Hostname(), "www."))
		if sec == "" {
			sec = "subscription"
		}
		for i, base := 2, sec; taken[sec]; i++ {
			sec = base + "_" + strconv.Itoa(i)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "config subscription '%s'\n\toption url '%s'\n", sec, strings.ReplaceAll(raw, "'", `'\''`))
	if *via != "" {
		fmt.Fprintf(&b, "\toption via '%s'\n", strings.ReplaceAll(*via, "'", `'\''`))
	}
	if *priority != 10 {
		fmt.Fprintf(&b, "\toption priority '%d'\n", *priority)
	}
	section := b.String()
	merged := append([]byte{}, existing...)
	if len(merged) > 0 && !bytes.HasSuffix(merged, []byte("\n")) {
		merged = append(merged, '\n')
	}
	merged = append(append(merged, '\n'), section...)
	// The file with the section must pass `config check` (via names one of its proxies).
	if code := checkConfig(*path, merged, stderr); code != exitOK {
		fmt.Fprintf(stderr, "tgtun subscription add: %s was not changed\n", *path)
		return code
	}
	if *dryRun {
		fmt.Fprint(stdout, section)
		return exitOK
	}
	if err := writeFileAtomic(*path, merged); err != nil {
		fmt.Fprintf(stderr, "tgtun subscription add: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "added subscription '%s' to %s; run `tgtun reload` (or /etc/init.d/tgtun reload) to fetch it\n", sec, *path)
	return exitOK
}

// sameURL tells whether the configuration already has a subscription with url.
func sameURL(data []byte, url string) bool {
	cfg, _, err := config.Parse("", bytes.NewReader(data))
	if err != nil {
		return false
	}
	for _, s := range cfg.Subscriptions {
		if s.URL == url {
			return true
		}
	}
	return false
}

// setupSubscriptionUpdate is `tgtun subscription update [NAME]`.
func setupSubscriptionUpdate(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	socket := fs.String("socket", control.DefaultSocket, "control socket `path`")
	asJSON := fs.Bool("json", false, "print the raw JSON result (the same as ubus call tgtun update_subscriptions)")
	path := fs.String("c", config.DefaultPath, "configuration `file`, read to explain why the daemon is not running")
	return func(args []string) int {
		if len(args) > 1 {
			fmt.Fprintf(stderr, "tgtun subscription update: one subscription name at most (unexpected %q)\n", args[1])
			return exitUsage
		}
		var callArgs map[string]any
		if len(args) == 1 {
			callArgs = map[string]any{"name": args[0]}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		raw, err := control.Call(ctx, *socket, "update_subscriptions", callArgs)
		if err != nil {
			fmt.Fprintf(stderr, "tgtun subscription update: %v\n", err)
			fmt.Fprint(stderr, explainCallError(err, *socket, *path, systemLogread))
			return exitFail
		}
		if *asJSON {
			fmt.Fprintln(stdout, string(raw))
			return exitOK
		}
		if err := control.Print(stdout, "update_subscriptions", raw); err != nil {
			fmt.Fprintf(stderr, "tgtun subscription update: %v\n", err)
			return exitFail
		}
		return exitOK
	}
}
