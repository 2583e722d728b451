//go:build tgtun_pprof

package main

// A CPU profile on demand, for profiling on a router (make bench-mips -pprof): only in
// a binary built with -tags tgtun_pprof, and only with TGTUN_PPROF=PATH set. Then each
// SIGUSR2 starts a CPU profile and the next one writes it to PATH.1, PATH.2, ... The
// default build carries none of this (runtime/pprof costs binary size).

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func init() {
	path := os.Getenv("TGTUN_PPROF")
	if path == "" {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	go func() {
		var f *os.File
		n := 0
		for range sig {
			if f == nil {
				n++
				var err error
				if f, err = os.Create(fmt.Sprintf("%s.%d.tmp", path, n)); err != nil {
					slog.Error("pprof", "err", err)
					continue
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					slog.Error("pprof", "err", err)
					f.Close()
					f = nil
				}
				continue
			}
			pprof.StopCPUProfile()
			err := f.Close()
			f = nil
			if err == nil {
				err = os.Rename(fmt.Sprintf("%s.%d.tmp", path, n), fmt.Sprintf("%s.%d", path, n))
			}
			if err != nil {
				slog.Error("pprof", "err", err)
			}
		}
	}()
}
