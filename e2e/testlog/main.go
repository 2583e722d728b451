// Command testlog turns `go test -json` into one line per test as it starts and ends, so
// a long or hanging e2e run shows where it is, while keeping go test's own closing lines
// (ok/FAIL per package) and the whole output of every test that failed.
//
//	go test -json ./e2e/... | go run ./e2e/testlog
//
// It exits non-zero when the input holds a failure, so it also works without pipefail.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output events
	Test       string
	Elapsed    float64
	Output     string
}

func main() {
	failed, err := run(os.Stdin, os.Stdout, time.Now)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testlog:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, now func() time.Time) (failed bool, err error) {
	start := now()
	output := map[string][]string{} // package/test -> its lines, printed if it fails
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(out, "%s\n", line) // not JSON: pass it on
			continue
		}
		key := e.Package + " " + e.Test
		stamp := now().Sub(start).Round(time.Second)
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "build-fail":
			failed = true
		case "run":
			fmt.Fprintf(out, "[%s] === RUN   %s\n", stamp, e.Test)
		case "output":
			if e.Test == "" {
				// Package lines: go test's own closing "ok"/"FAIL"/"PASS" and panics.
				fmt.Fprint(out, e.Output)
				continue
			}
			if !strings.HasPrefix(e.Output, "=== ") {
				output[key] = append(output[key], e.Output)
			}
		case "pass", "skip":
			if e.Test != "" {
				fmt.Fprintf(out, "[%s] --- %s  %s (%.1fs)\n", stamp, strings.ToUpper(e.Action), e.Test, e.Elapsed)
			}
			delete(output, key)
		case "fail":
			failed = true
			if e.Test != "" {
				for _, l := range output[key] {
					if !strings.HasPrefix(strings.TrimSpace(l), "--- ") {
						fmt.Fprint(out, l)
					}
				}
				fmt.Fprintf(out, "[%s] --- FAIL  %s (%.1fs)\n", stamp, e.Test, e.Elapsed)
			}
			delete(output, key)
		}
	}
	// A test that never ended (a timeout panic, a killed run): show what it said.
	for key, lines := range output {
		if strings.HasSuffix(key, " ") || len(lines) == 0 {
			continue
		}
		failed = true
		fmt.Fprintf(out, "--- no result for %s; its output:\n%s", key, strings.Join(lines, ""))
	}
	return failed, sc.Err()
}
