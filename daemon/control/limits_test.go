package control

import (
	"errors"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
)

func TestMemoryBudget(t *testing.T) {
	ram := func(n int64, err error) func() (int64, error) { return func() (int64, error) { return n, err } }
	tests := []struct {
		name  string
		limit int64
		ram   func() (int64, error)
		want  int64
	}{
		{"set", 48 << 20, ram(0, errors.New("not read")), 48 << 20},
		{"off", 0, ram(128<<20, nil), 0},
		{"auto on 128 MB: a quarter", config.MemoryLimitAuto, ram(128<<20, nil), 32 << 20},
		{"auto on 64 MB", config.MemoryLimitAuto, ram(64<<20, nil), 16 << 20},
		{"auto on 1 GB: at most 64 MiB", config.MemoryLimitAuto, ram(1<<30, nil), 64 << 20},
		{"auto, RAM unreadable", config.MemoryLimitAuto, ram(0, errors.New("no /proc")), 32 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := memoryBudget(tt.limit, tt.ram); got != tt.want {
				t.Errorf("memoryBudget = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestFlowLimit(t *testing.T) {
	cfg := func(maxFlows int, types ...string) *config.Config {
		c := config.Default()
		c.Main.MaxFlows = maxFlows
		for _, ty := range types {
			c.Proxies = append(c.Proxies, config.Proxy{Type: ty})
		}
		return c
	}
	tests := []struct {
		name   string
		cfg    *config.Config
		budget int64
		want   int
	}{
		{"set wins", cfg(300, "vless"), 32 << 20, 300},
		{"no budget", cfg(0, "vless"), 0, config.AutoMaxFlows},
		// 55 % of 32 MiB is 18454937 bytes.
		{"socks5 on 32 MiB", cfg(0, "socks5"), 32 << 20, (18454937 - 6<<20) / (6 << 10)},
		{"the costliest type counts", cfg(0, "socks5", "vless"), 32 << 20, (18454937 - 6<<20) / (24 << 10)},
		{"capped", cfg(0, "socks5"), 1 << 30, config.AutoMaxFlows},
		{"at least the minimum", cfg(0, "vless"), 8 << 20, minAutoFlows},
		{"interface proxies only", cfg(0, "interface"), 16 << 20, config.AutoMaxFlows},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := flowLimit(tt.cfg, tt.budget); got != tt.want {
				t.Errorf("flowLimit = %d, want %d", got, tt.want)
			}
		})
	}
	c := cfg(0)
	if got := perDeviceLimit(c, 1000); got != 250 {
		t.Errorf("per-device default of 1000 flows = %d, want 250", got)
	}
	c.Main.MaxFlowsPerDevice = 2000
	if got := perDeviceLimit(c, 1000); got != 1000 {
		t.Errorf("per-device 2000 of 1000 flows = %d, want 1000", got)
	}
}
