package config

import (
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const shippedConfig = "../../openwrt/files/etc/config/tgtun"

const proxyOK = "config proxy 'p'\n\toption server '198.51.100.6'\n\toption port '1080'\n"

func parse(t *testing.T, in string) (*Config, []Warning, Errors) {
	t.Helper()
	cfg, warns, err := Parse("tgtun.conf", strings.NewReader(in))
	if err == nil {
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		return cfg, warns, nil
	}
	var errs Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		t.Fatalf("error is not a non-empty Errors: %#v", err)
	}
	if cfg != nil {
		t.Fatal("Parse returned a config with an error")
	}
	return nil, warns, errs
}

// expect checks the outcome of one case: wantErr is a substring of the only error
// ("" for none), wantWarn a substring of some warning ("" for no warning at all).
func expect(t *testing.T, errs Errors, warns []Warning, wantErr, wantWarn string) {
	t.Helper()
	switch {
	case wantErr == "" && len(errs) > 0:
		t.Fatalf("unexpected errors:\n%v", errs)
	case wantErr != "" && len(errs) != 1:
		t.Fatalf("want one error containing %q, got %d: %v", wantErr, len(errs), errs)
	case wantErr != "" && !strings.Contains(errs[0].Error(), wantErr):
		t.Fatalf("error %q does not contain %q", errs[0].Error(), wantErr)
	}
	if wantWarn == "" {
		if len(warns) > 0 {
			t.Fatalf("unexpected warnings: %v", warns)
		}
		return
	}
	for _, w := range warns {
		if strings.Contains(w.String(), wantWarn) {
			return
		}
	}
	t.Fatalf("no warning contains %q: %v", wantWarn, warns)
}

func TestDefault(t *testing.T) {
	d := Default()
	want := Main{
		Enabled: false, TunName: "tgtun0", TunMTU: 1500, IPv6: true, LANIfaces: []string{"br-lan"},
		RouterTraffic: false, FwMark: 0x100000, FwMask: 0x100000, BypassMark: 0x200000,
		RouteTable: 7470, RulePriority: 7470, FailMode: "block", UpdateInterval: 24 * time.Hour,
		HealthTarget: netip.MustParseAddrPort("149.154.167.51:443"), HealthInterval: 10 * time.Second,
		MemoryLimit: MemoryLimitAuto, MaxFlows: 0, LogLevel: slog.LevelInfo,
		DNSPort: 5354, DNSUpstream: "1.1.1.1:53", DomainTimeout: 6 * time.Hour, MaxFlowsPerDevice: 0,
	}
	if !reflect.DeepEqual(d.Main, want) || d.Proxies != nil || d.Services != nil || d.Customs != nil {
		t.Fatalf("Default() = %+v", d)
	}
	// An empty file is the defaults.
	cfg, warns, errs := parse(t, "")
	expect(t, errs, warns, "", "")
	if !reflect.DeepEqual(cfg, d) {
		t.Fatalf("empty file = %+v, want %+v", cfg, d)
	}
	// Default returns a fresh value each time.
	d.Main.LANIfaces[0] = "changed"
	if Default().Main.LANIfaces[0] != "br-lan" {
		t.Fatal("Default shares state between calls")
	}
}

func TestMainOptions(t *testing.T) {
	tests := []struct {
		opt, val string
		extra    string // more lines of the main section
		wantErr  string
		wantWarn string
		check    func(m Main) bool
	}{
		{opt: "enabled", val: "1", check: func(m Main) bool { return m.Enabled }},
		{opt: "enabled", val: "yes", check: func(m Main) bool { return m.Enabled }},
		{opt: "enabled", val: "on", check: func(m Main) bool { return m.Enabled }},
		{opt: "enabled", val: "true", check: func(m Main) bool { return m.Enabled }},
		{opt: "enabled", val: "0", check: func(m Main) bool { return !m.Enabled }},
		{opt: "enabled", val: "off", check: func(m Main) bool { return !m.Enabled }},
		{opt: "enabled", val: "maybe", wantErr: "tgtun.conf:2: main 'main': enabled 'maybe' is not a boolean (allowed: '1' or '0')"},

		{opt: "tun_name", val: "tg0", check: func(m Main) bool { return m.TunName == "tg0" }},
		{opt: "tun_name", val: "abcdefghijklmno", check: func(m Main) bool { return m.TunName == "abcdefghijklmno" }},
		{opt: "tun_name", val: "abcdefghijklmnop", wantErr: "tun_name 'abcdefghijklmnop' is not a valid interface name (1-15 characters)"},
		{opt: "tun_name", val: "a/b", wantErr: "tun_name 'a/b' is not a valid interface name"},
		{opt: "tun_name", val: "a b", wantErr: "tun_name 'a b' is not a valid"},
		{opt: "tun_name", val: "a:1", wantErr: "tun_name 'a:1' is not a valid"},
		{opt: "tun_name", val: "..", wantErr: "tun_name '..' is not a valid"},
		{opt: "tun_name", val: "tün", wantErr: "is not a valid"},

		{opt: "tun_mtu", val: "1280", check: func(m Main) bool { return m.TunMTU == 1280 }},
		{opt: "tun_mtu", val: "9000", check: func(m Main) bool { return m.TunMTU == 9000 }},
		{opt: "tun_mtu", val: "1279", wantErr: "tun_mtu '1279' is out of range 1280-9000 (IPv6 needs at least 1280"},
		{opt: "tun_mtu", val: "9001", wantErr: "tun_mtu '9001' is out of range 1280-9000"},
		{opt: "tun_mtu", val: "576", wantErr: "out of range 1280-9000"},
		{opt: "tun_mtu", val: "1.5k", wantErr: "tun_mtu '1.5k' is not a number (1280-9000)"},
		{opt: "tun_mtu", val: "576", extra: "option ipv6 '0'", check: func(m Main) bool { return m.TunMTU == 576 && !m.IPv6 }},
		{opt: "tun_mtu", val: "575", extra: "option ipv6 '0'", wantErr: "tun_mtu '575' is out of range 576-9000"},

		{opt: "ipv6", val: "0", check: func(m Main) bool { return !m.IPv6 }},
		{opt: "ipv6", val: "1", check: func(m Main) bool { return m.IPv6 }},
		{opt: "ipv6", val: "v6", wantErr: "ipv6 'v6' is not a boolean"},

		{opt: "lan_iface", val: "br-guest", check: func(m Main) bool { return slices.Equal(m.LANIfaces, []string{"br-guest"}) }},
		{opt: "lan_iface", val: "br-lan br-guest", check: func(m Main) bool { return slices.Equal(m.LANIfaces, []string{"br-lan", "br-guest"}) }},
		{opt: "lan_iface", val: "br-lan", extra: "list lan_iface 'wg0'", check: func(m Main) bool { return slices.Equal(m.LANIfaces, []string{"br-lan", "wg0"}) }},
		{opt: "lan_iface", val: "br-lan", extra: "list lan_iface 'br-lan'", wantWarn: "lan_iface 'br-lan' is listed twice",
			check: func(m Main) bool { return slices.Equal(m.LANIfaces, []string{"br-lan"}) }},
		{opt: "lan_iface", val: "way-too-long-interface", wantErr: "lan_iface 'way-too-long-interface' is not a valid interface name"},
		{opt: "lan_iface", val: " ", wantErr: "lan_iface is empty"},

		{opt: "router_traffic", val: "1", check: func(m Main) bool { return m.RouterTraffic }},
		{opt: "router_traffic", val: "0", check: func(m Main) bool { return !m.RouterTraffic }},
		{opt: "router_traffic", val: "2", wantErr: "router_traffic '2' is not a boolean"},

		{opt: "fwmark", val: "0x100000", check: func(m Main) bool { return m.FwMark == 0x100000 && m.FwMask == 0x100000 }},
		{opt: "fwmark", val: "0X40", check: func(m Main) bool { return m.FwMark == 0x40 && m.FwMask == 0x40 }},
		{opt: "fwmark", val: "256", check: func(m Main) bool { return m.FwMark == 256 && m.FwMask == 256 }},
		{opt: "fwmark", val: "0x10/0xff", check: func(m Main) bool { return m.FwMark == 0x10 && m.FwMask == 0xff }},
		{opt: "fwmark", val: "0x1/0x1", check: func(m Main) bool { return m.FwMark == 1 && m.FwMask == 1 }},
		{opt: "fwmark", val: "0", wantErr: "fwmark '0' is zero"},
		{opt: "fwmark", val: "0x3/0x1", wantErr: "fwmark '0x3/0x1' is not inside its mask"},
		{opt: "fwmark", val: "mark", wantErr: "fwmark 'mark' is not a 32-bit number"},
		{opt: "fwmark", val: "0x100000000", wantErr: "is not a 32-bit number"},
		{opt: "fwmark", val: "0x", wantErr: "is not a 32-bit number"},
		{opt: "fwmark", val: "0x1/zz", wantErr: "fwmark '0x1/zz' is mask not a 32-bit number"},
		{opt: "fwmark", val: "0x200000", wantErr: "fwmark mask 0x200000 overlaps the default bypass_mark 0x200000"},
		{opt: "fwmark", val: "0x200000", extra: "option bypass_mark '0x1'", check: func(m Main) bool { return m.FwMark == 0x200000 && m.BypassMark == 1 }},

		{opt: "bypass_mark", val: "0x400000", check: func(m Main) bool { return m.BypassMark == 0x400000 }},
		{opt: "bypass_mark", val: "0", wantErr: "bypass_mark '0' is zero"},
		{opt: "bypass_mark", val: "0x100000", wantErr: "bypass_mark '0x100000' is overlapping the fwmark mask 0x100000"},
		{opt: "bypass_mark", val: "0x1", extra: "option fwmark '0x10/0xff'", wantErr: "bypass_mark '0x1' is overlapping the fwmark mask 0xff"},
		{opt: "bypass_mark", val: "bypass", wantErr: "bypass_mark 'bypass' is not a 32-bit number"},

		{opt: "route_table", val: "1", check: func(m Main) bool { return m.RouteTable == 1 }},
		{opt: "route_table", val: "251", check: func(m Main) bool { return m.RouteTable == 251 }},
		{opt: "route_table", val: "252", wantErr: "route_table '252' is reserved (253 default, 254 main, 255 local; tgtun also uses the next number, for TCP)"},
		{opt: "route_table", val: "256", check: func(m Main) bool { return m.RouteTable == 256 }},
		{opt: "route_table", val: "2147483646", check: func(m Main) bool { return m.RouteTable == 2147483646 }},
		{opt: "route_table", val: "2147483647", wantErr: "route_table '2147483647' is out of range 1-2147483646"},
		{opt: "route_table", val: "253", wantErr: "route_table '253' is reserved (253 default, 254 main, 255 local;"},
		{opt: "route_table", val: "254", wantErr: "route_table '254' is reserved"},
		{opt: "route_table", val: "255", wantErr: "route_table '255' is reserved"},
		{opt: "route_table", val: "0", wantErr: "route_table '0' is out of range 1-2147483646 (except 252-255)"},
		{opt: "route_table", val: "4294967296", wantErr: "route_table '4294967296' is out of range"},
		{opt: "route_table", val: "main", wantErr: "route_table 'main' is not a number"},

		{opt: "rule_priority", val: "3", check: func(m Main) bool { return m.RulePriority == 3 }},
		{opt: "rule_priority", val: "2", wantErr: "rule_priority '2' is out of range 3-32765"},
		{opt: "rule_priority", val: "32765", check: func(m Main) bool { return m.RulePriority == 32765 }},
		{opt: "rule_priority", val: "1", wantErr: "rule_priority '1' is out of range 3-32765"},
		{opt: "rule_priority", val: "32766", wantErr: "rule_priority '32766' is out of range 3-32765"},
		{opt: "rule_priority", val: "-5", wantErr: "out of range 3-32765"},

		{opt: "fail_mode", val: "block", check: func(m Main) bool { return m.FailMode == FailBlock }},
		{opt: "fail_mode", val: "direct", check: func(m Main) bool { return m.FailMode == FailDirect }},
		{opt: "fail_mode", val: "drop", wantErr: "fail_mode 'drop' is not allowed (allowed: block, direct)"},

		{opt: "update_interval", val: "24h", check: func(m Main) bool { return m.UpdateInterval == 24*time.Hour }},
		{opt: "update_interval", val: "0", check: func(m Main) bool { return m.UpdateInterval == 0 }},
		{opt: "update_interval", val: "0s", check: func(m Main) bool { return m.UpdateInterval == 0 }},
		{opt: "update_interval", val: "10m", check: func(m Main) bool { return m.UpdateInterval == 10*time.Minute }},
		{opt: "update_interval", val: "3600", check: func(m Main) bool { return m.UpdateInterval == time.Hour }},
		{opt: "update_interval", val: "7d", check: func(m Main) bool { return m.UpdateInterval == 7*24*time.Hour }},
		{opt: "update_interval", val: "1h30m", check: func(m Main) bool { return m.UpdateInterval == 90*time.Minute }},
		{opt: "update_interval", val: "9m", wantErr: "update_interval '9m' is out of range 10m-8760h, or 0 to disable"},
		{opt: "update_interval", val: "1", wantErr: "update_interval '1' is out of range"},
		{opt: "update_interval", val: "366d", wantErr: "is out of range"},
		{opt: "update_interval", val: "-1h", wantErr: "update_interval '-1h' is not a duration"},
		{opt: "update_interval", val: "daily", wantErr: "update_interval 'daily' is not a duration"},
		{opt: "update_interval", val: "99999999999999999999", wantErr: "is not a duration"},

		{opt: "health_target", val: "203.0.113.5:443", check: func(m Main) bool { return m.HealthTarget == netip.MustParseAddrPort("203.0.113.5:443") }},
		{opt: "health_target", val: "[2001:db8:3::5]:80", check: func(m Main) bool { return m.HealthTarget == netip.MustParseAddrPort("[2001:db8:3::5]:80") }},
		{opt: "health_target", val: "[::ffff:203.0.113.5]:443", check: func(m Main) bool { return m.HealthTarget == netip.MustParseAddrPort("203.0.113.5:443") }},
		{opt: "health_target", val: "203.0.113.5", wantErr: "health_target '203.0.113.5' is not an address with a port"},
		{opt: "health_target", val: "telegram.org:443", wantErr: "is not an address with a port"},
		{opt: "health_target", val: "203.0.113.5:0", wantErr: "is not a usable address and port"},
		{opt: "health_target", val: "0.0.0.0:443", wantErr: "is not a usable address and port"},

		{opt: "health_interval", val: "1s", check: func(m Main) bool { return m.HealthInterval == time.Second }},
		{opt: "health_interval", val: "1h", check: func(m Main) bool { return m.HealthInterval == time.Hour }},
		{opt: "health_interval", val: "30", check: func(m Main) bool { return m.HealthInterval == 30*time.Second }},
		{opt: "health_interval", val: "500ms", wantErr: "health_interval '500ms' is out of range 1s-1h"},
		{opt: "health_interval", val: "0", wantErr: "health_interval '0' is out of range 1s-1h"},
		{opt: "health_interval", val: "2h", wantErr: "out of range 1s-1h"},

		{opt: "memory_limit", val: "32M", check: func(m Main) bool { return m.MemoryLimit == 32<<20 }},
		{opt: "memory_limit", val: "512k", check: func(m Main) bool { return m.MemoryLimit == 512<<10 }},
		{opt: "memory_limit", val: "64MiB", check: func(m Main) bool { return m.MemoryLimit == 64<<20 }},
		{opt: "memory_limit", val: "1G", check: func(m Main) bool { return m.MemoryLimit == 1<<30 }},
		{opt: "memory_limit", val: "1048576", check: func(m Main) bool { return m.MemoryLimit == 1<<20 }},
		{opt: "memory_limit", val: "0", check: func(m Main) bool { return m.MemoryLimit == 0 }},
		{opt: "memory_limit", val: "off", check: func(m Main) bool { return m.MemoryLimit == 0 }},
		{opt: "memory_limit", val: "32X", wantErr: "memory_limit '32X' is not a size"},
		{opt: "memory_limit", val: "-1", wantErr: "memory_limit '-1' is not a size"},
		{opt: "memory_limit", val: "M", wantErr: "is not a size"},
		{opt: "memory_limit", val: "9999999999999G", wantErr: "is not a size"},

		{opt: "max_flows", val: "8192", check: func(m Main) bool { return m.MaxFlows == 8192 }},
		{opt: "max_flows", val: "10", wantErr: "max_flows '10' is out of range 64-65536"},
		{opt: "max_flows", val: "8192", check: func(m Main) bool { return m.MaxFlowsPerDevice == 2048 }},
		{opt: "max_flows_per_device", val: "100", check: func(m Main) bool { return m.MaxFlowsPerDevice == 100 }},
		{opt: "max_flows_per_device", val: "4096", check: func(m Main) bool { return m.MaxFlowsPerDevice == 4096 }},
		{opt: "max_flows_per_device", val: "0", wantErr: "max_flows_per_device '0' is out of range 1-4096 (at most max_flows)"},
		{opt: "max_flows_per_device", val: "200", extra: "option max_flows '100'", wantErr: "max_flows_per_device '200' is out of range 1-100"},
		{opt: "log_level", val: "debug", check: func(m Main) bool { return m.LogLevel == slog.LevelDebug }},
		{opt: "log_level", val: "info", check: func(m Main) bool { return m.LogLevel == slog.LevelInfo }},
		{opt: "log_level", val: "warn", check: func(m Main) bool { return m.LogLevel == slog.LevelWarn }},
		{opt: "log_level", val: "error", check: func(m Main) bool { return m.LogLevel == slog.LevelError }},
		{opt: "log_level", val: "trace", wantErr: "log_level 'trace' is not allowed (allowed: debug, info, warn, error)"},

		{opt: "colour", val: "blue", wantWarn: "tgtun.conf:2: main 'main': unknown option 'colour' is ignored",
			check: func(m Main) bool { return reflect.DeepEqual(m, Default().Main) }},
	}
	for _, tt := range tests {
		t.Run(tt.opt+"="+tt.val, func(t *testing.T) {
			in := "config main 'main'\n\toption " + tt.opt + " '" + tt.val + "'\n\t" + tt.extra + "\n" + proxyOK
			cfg, warns, errs := parse(t, in)
			expect(t, errs, warns, tt.wantErr, tt.wantWarn)
			if tt.wantErr != "" {
				if errs[0].Option == "" || errs[0].Section != "main 'main'" || errs[0].File != "tgtun.conf" || errs[0].Line == 0 {
					t.Fatalf("error fields incomplete: %#v", errs[0])
				}
				return
			}
			if tt.check == nil || !tt.check(cfg.Main) {
				t.Fatalf("unexpected Main: %+v", cfg.Main)
			}
		})
	}
}

func TestListForSingleOptionIsAnError(t *testing.T) {
	_, warns, errs := parse(t, "config main 'main'\n\tlist tun_name 'a'\n\tlist tun_name 'b'\n")
	expect(t, errs, warns, "tgtun.conf:2: main 'main': tun_name takes one value: write `option tun_name '...'`, not `list`", "")
	if errs[0].Option != "tun_name" {
		t.Fatalf("Option = %q", errs[0].Option)
	}
}

func TestProxy(t *testing.T) {
	key16 := "AAECAwQFBgcICQoLDA0ODw==" // base64 of 16 bytes
	key32 := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	tests := []struct {
		name     string
		body     string // options of `config proxy 'main'`
		wantErr  string
		wantWarn string
		want     *Proxy // nil: not checked
	}{
		{name: "minimal socks5 with defaults", body: "server '198.51.100.6'\nport '1080'",
			want: &Proxy{Name: "main", Type: "socks5", Server: "198.51.100.6", Port: 1080, UDP: true, Priority: 10, Line: 1}},
		{name: "every option", body: "type 'socks5'\nserver 'proxy.example.org'\nport '1'\nusername 'u'\npassword 'p'\nudp '0'\npriority '0'",
			want: &Proxy{Name: "main", Type: "socks5", Server: "proxy.example.org", Port: 1, Username: "u", Password: "p", Priority: 0, Line: 1}},
		{name: "IPv6 server", body: "server '2001:db8:2::6'\nport '65535'",
			want: &Proxy{Name: "main", Type: "socks5", Server: "2001:db8:2::6", Port: 65535, UDP: true, Priority: 10, Line: 1}},
		{name: "bracketed IPv6 server", body: "server '[2001:db8:2::6]'\nport '1080'",
			want: &Proxy{Name: "main", Type: "socks5", Server: "2001:db8:2::6", Port: 1080, UDP: true, Priority: 10, Line: 1}},
		{name: "IPv4-mapped server is unmapped", body: "server '::ffff:198.51.100.6'\nport '1080'",
			want: &Proxy{Name: "main", Type: "socks5", Server: "198.51.100.6", Port: 1080, UDP: true, Priority: 10, Line: 1}},
		{name: "bad type", body: "type 'socks4'\nserver 'h'\nport '1'", wantErr: "type 'socks4' is not allowed (allowed: socks5, http, shadowsocks"},
		{name: "server with port", body: "server 'h.example:1080'\nport '1'", wantErr: "server 'h.example:1080' is not a host: the port goes in option port"},
		{name: "server IPv6 with port", body: "server '[2001:db8:2::6]:1080'\nport '1'", wantErr: "is not an IP address or host name"},
		{name: "server not a host", body: "server 'bad host!'\nport '1'", wantErr: "server 'bad host!' is not an IP address or host name"},
		{name: "server label starts with hyphen", body: "server '-x.example'\nport '1'", wantErr: "is not an IP address or host name"},
		{name: "server unspecified", body: "server '0.0.0.0'\nport '1'", wantErr: "server '0.0.0.0' is an unspecified address"},
		{name: "port out of range", body: "server 'h'\nport '70000'", wantErr: "tgtun.conf:3: proxy 'main': port '70000' is out of range 1-65535"},
		{name: "port zero", body: "server 'h'\nport '0'", wantErr: "port '0' is out of range 1-65535"},
		{name: "port not a number", body: "server 'h'\nport 'socks'", wantErr: "port 'socks' is not a number (1-65535)"},
		{name: "port missing", body: "server 'h'", wantErr: "tgtun.conf:1: proxy 'main': port is missing (1-65535)"},
		{name: "priority bounds", body: "server 'h'\nport '1'\npriority '1000'",
			want: &Proxy{Name: "main", Type: "socks5", Server: "h", Port: 1, UDP: true, Priority: 1000, Line: 1}},
		{name: "priority too high", body: "server 'h'\nport '1'\npriority '1001'", wantErr: "priority '1001' is out of range 0-1000"},
		{name: "priority negative", body: "server 'h'\nport '1'\npriority '-1'", wantErr: "priority '-1' is out of range 0-1000"},
		{name: "udp not a boolean", body: "server 'h'\nport '1'\nudp 'sometimes'", wantErr: "udp 'sometimes' is not a boolean"},

		{name: "socks5 username without password", body: "server 'h'\nport '1'\nusername 'u'", wantErr: "username is set but password is empty"},
		{name: "socks5 password without username", body: "server 'h'\nport '1'\npassword 'p'", wantErr: "password is set but username is empty"},
		{name: "socks5 255-byte credentials", body: "server 'h'\nport '1'\nusername '" + strings.Repeat("u", 255) + "'\npassword '" + strings.Repeat("p", 255) + "'"},
		{name: "socks5 username too long", body: "server 'h'\nport '1'\nusername '" + strings.Repeat("u", 256) + "'\npassword 'p'", wantErr: "username is too long (256 bytes, at most 255)"},
		{name: "socks5 password too long", body: "server 'h'\nport '1'\nusername 'u'\npassword '" + strings.Repeat("p", 256) + "'", wantErr: "password is too long (256 bytes, at most 255)"},
		{name: "password with control character", body: "server 'h'\nport '1'\nusername 'u'\npassword \"a\tb\"", wantErr: "password contains a control character"},

		{name: "http with basic auth, UDP off by default", body: "type 'http'\nserver 'h'\nport '3128'\nusername 'u'\npassword 'p'",
			want: &Proxy{Name: "main", Type: "http", Server: "h", Port: 3128, Username: "u", Password: "p", Priority: 10, Line: 1}},
		{name: "http udp 1 warns and is dropped", body: "type 'http'\nserver 'h'\nport '3128'\nudp '1'", wantWarn: "udp '1' has no effect on an http proxy",
			want: &Proxy{Name: "main", Type: "http", Server: "h", Port: 3128, Priority: 10, Line: 1}},
		{name: "http username with colon", body: "type 'http'\nserver 'h'\nport '1'\nusername 'a:b'\npassword 'p'", wantErr: "username contains ':'"},
		{name: "http long credentials allowed", body: "type 'http'\nserver 'h'\nport '1'\nusername 'u'\npassword '" + strings.Repeat("p", 1000) + "'"},

		{name: "shadowsocks", body: "type 'shadowsocks'\nserver 'h'\nport '8388'\ncipher 'chacha20-ietf-poly1305'\npassword 'pw'",
			want: &Proxy{Name: "main", Type: "shadowsocks", Server: "h", Port: 8388, Password: "pw", Cipher: "chacha20-ietf-poly1305", UDP: true, Priority: 10, Line: 1}},
		{name: "shadowsocks aes-128-gcm", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher 'aes-128-gcm'\npassword 'pw'"},
		{name: "shadowsocks aes-256-gcm", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher 'aes-256-gcm'\npassword 'pw'"},
		{name: "shadowsocks 2022 128", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher '2022-blake3-aes-128-gcm'\npassword '" + key16 + "'"},
		{name: "shadowsocks 2022 256", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher '2022-blake3-aes-256-gcm'\npassword '" + key32 + "'"},
		{name: "shadowsocks 2022 multi-user key", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher '2022-blake3-aes-256-gcm'\npassword '" + key32 + ":" + key32 + "'"},
		{name: "interface", body: "type 'interface'\ninterface 'wg0'\npriority '5'",
			want: &Proxy{Name: "main", Type: "interface", Interface: "wg0", UDP: true, Priority: 5, Line: 1}},
		{name: "interface with server warns", body: "type 'interface'\ninterface 'awg0'\nserver 'h'", wantWarn: "server is not used by an interface proxy"},
		{name: "interface name too long", body: "type 'interface'\ninterface 'averyverylongname0'", wantErr: "interface 'averyverylongname0' is longer than 15 bytes"},
		{name: "interface name with slash", body: "type 'interface'\ninterface 'a/b'", wantErr: "is not a device or netifd interface name"},
		{name: "interface on socks5 warns", body: "server 'h'\nport '1'\ninterface 'wg0'", wantWarn: "interface is only used by interface proxies"},
		{name: "shadowsocks 2022 chacha", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher '2022-blake3-chacha20-poly1305'\npassword '" + key32 + "'"},
		{name: "shadowsocks 2022 chacha several keys", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher '2022-blake3-chacha20-poly1305'\npassword '" + key32 + ":" + key32 + "'",
			wantErr: "password holds several keys (identity headers), which only the AES 2022 ciphers support"},
		{name: "shadowsocks 2022 wrong key length", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher '2022-blake3-aes-256-gcm'\npassword '" + key16 + "'",
			wantErr: "password is not a base64 key of 32 bytes, as 2022-blake3-aes-256-gcm needs"},
		{name: "shadowsocks 2022 key not base64", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher '2022-blake3-aes-128-gcm'\npassword 'not base64!'",
			wantErr: "password is not a base64 key of 16 bytes"},
		{name: "shadowsocks without cipher", body: "type 'shadowsocks'\nserver 'h'\nport '1'\npassword 'pw'", wantErr: "cipher is missing (shadowsocks needs one of: aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, 2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305)"},
		{name: "shadowsocks without password", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher 'aes-256-gcm'", wantErr: "password is missing"},
		{name: "shadowsocks bad cipher", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher 'rc4-md5'\npassword 'pw'", wantErr: "cipher 'rc4-md5' is not allowed (allowed: aes-128-gcm"},
		{name: "shadowsocks username warns", body: "type 'shadowsocks'\nserver 'h'\nport '1'\ncipher 'aes-256-gcm'\npassword 'pw'\nusername 'u'", wantWarn: "username is not used by shadowsocks"},
		{name: "cipher on socks5 warns", body: "server 'h'\nport '1'\ncipher 'aes-256-gcm'", wantWarn: "cipher is only used by shadowsocks"},
		{name: "unknown option warns", body: "server 'h'\nport '1'\ntimeout '5'", wantWarn: "proxy 'main': unknown option 'timeout' is ignored"},
		{name: "misspelt option names the closest", body: "server 'h'\nport '1'\nprot '5'", wantWarn: "proxy 'main': unknown option 'prot'; did you mean 'port'?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "config proxy 'main'\n\toption " + strings.ReplaceAll(tt.body, "\n", "\n\toption ") + "\n"
			cfg, warns, errs := parse(t, in)
			expect(t, errs, warns, tt.wantErr, tt.wantWarn)
			if tt.wantErr != "" {
				return
			}
			if len(cfg.Proxies) != 1 {
				t.Fatalf("proxies = %v", cfg.Proxies)
			}
			if tt.want != nil && !reflect.DeepEqual(cfg.Proxies[0], *tt.want) {
				t.Fatalf("got %#v\nwant %#v", cfg.Proxies[0], *tt.want)
			}
		})
	}
}

func TestProxyWithoutServerIsSkipped(t *testing.T) {
	in := "config proxy 'spare'\n\toption server ''\n\toption port '1080'\n" + proxyOK
	cfg, warns, errs := parse(t, in)
	expect(t, errs, warns, "", "tgtun.conf:1: proxy 'spare': proxy has no server; it is not used until option server is set")
	if len(cfg.Proxies) != 1 || cfg.Proxies[0].Name != "p" {
		t.Fatalf("proxies = %v", cfg.Proxies)
	}
	// Unconfigured and enabled: an error naming the cause.
	_, warns, errs = parse(t, "config main 'main'\n\toption enabled '1'\nconfig proxy 'primary'\n\toption type 'shadowsocks'\n\toption port '1080'\n")
	expect(t, errs, warns, "tgtun.conf:2: main 'main': enabled but no proxy has a server", "proxy has no server")
	if errs[0].Option != "enabled" {
		t.Fatalf("Option = %q", errs[0].Option)
	}
}

func TestProxiesSortedByPriorityThenFileOrder(t *testing.T) {
	in := ""
	for _, p := range []struct{ name, prio string }{{"a", "20"}, {"b", "5"}, {"c", "20"}, {"d", ""}, {"e", "5"}} {
		in += "config proxy '" + p.name + "'\n\toption server 'h'\n\toption port '1'\n"
		if p.prio != "" {
			in += "\toption priority '" + p.prio + "'\n"
		}
	}
	cfg, warns, errs := parse(t, in)
	expect(t, errs, warns, "", "")
	var names []string
	for _, p := range cfg.Proxies {
		names = append(names, p.Name)
	}
	if want := []string{"b", "e", "d", "a", "c"}; !slices.Equal(names, want) {
		t.Fatalf("order = %v, want %v", names, want)
	}
}

func TestServicesAndCustoms(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantErr  string
		wantWarn string
		check    func(c *Config) bool
	}{
		{name: "service defaults to enabled", in: "config service 'telegram'\n",
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Services, []Service{{Name: "telegram", Enabled: true}})
			}},
		{name: "service disabled with url", in: "config service 'whatsapp'\n\toption enabled '0'\n\toption url 'https://example.org/wa.txt'\n",
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Services, []Service{{Name: "whatsapp", URL: "https://example.org/wa.txt"}})
			}},
		{name: "service domain_url", in: "config service 'discord'\n\toption domain_url 'https://example.org/discord.lst'\n",
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Services, []Service{{Name: "discord", Enabled: true, DomainURL: "https://example.org/discord.lst"}})
			}},
		{name: "service domain_url bad", in: "config service 'discord'\n\toption domain_url 'discord.lst'\n", wantErr: "domain_url is not an http:// or https:// URL"},
		{name: "services in file order", in: "config service 'b'\nconfig service 'a'\n",
			check: func(c *Config) bool { return c.Services[0].Name == "b" && c.Services[1].Name == "a" }},
		{name: "service url http", in: "config service 's'\n\toption url 'http://example.org:8080/x'\n",
			check: func(c *Config) bool { return c.Services[0].URL == "http://example.org:8080/x" }},
		{name: "service url ftp", in: "config service 's'\n\toption url 'ftp://example.org/x'\n", wantErr: "tgtun.conf:2: service 's': url is not an http:// or https:// URL with a host"},
		{name: "service url without host", in: "config service 's'\n\toption url 'https:///x'\n", wantErr: "url is not an http:// or https:// URL"},
		{name: "service url relative", in: "config service 's'\n\toption url 'example.org/x'\n", wantErr: "url is not an http:// or https:// URL"},
		{name: "service url with space", in: "config service 's'\n\toption url 'https://example.org/a b'\n", wantErr: "url is not a URL (it contains spaces"},
		{name: "service enabled bad", in: "config service 's'\n\toption enabled 'x'\n", wantErr: "enabled 'x' is not a boolean"},
		{name: "anonymous service", in: "config service\n", wantErr: "@service[0]: a service section needs a name"},
		{name: "service unknown option", in: "config service 's'\n\toption foo 'bar'\n", wantWarn: "service 's': unknown option 'foo' is ignored"},
		{name: "duplicate service", in: "config service 's'\nconfig service 's'\n", wantErr: "tgtun.conf:2: service 's' is defined twice (first at line 1)"},

		{name: "custom subnets and urls", in: "config custom 'mine'\n\tlist subnet '203.0.113.0/24'\n\tlist subnet '2001:db8:3::/64'\n\tlist url 'https://example.org/l.txt'\n",
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Customs, []Custom{{Name: "mine",
					Subnets: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:3::/64")},
					URLs:    []string{"https://example.org/l.txt"}}})
			}},
		{name: "custom option forms are one-element lists", in: "config custom 'c'\n\toption subnet '203.0.113.0/24'\n\toption url 'https://example.org/l.txt'\n",
			check: func(c *Config) bool { return len(c.Customs[0].Subnets) == 1 && len(c.Customs[0].URLs) == 1 }},
		{name: "custom option with several words", in: "config custom 'c'\n\toption subnet '203.0.113.0/25 203.0.113.128/25'\n",
			check: func(c *Config) bool { return len(c.Customs[0].Subnets) == 2 }},
		{name: "custom non-canonical subnet is masked", in: "config custom 'c'\n\tlist subnet '203.0.113.5/24'\n",
			wantWarn: "tgtun.conf:2: custom 'c': subnet '203.0.113.5/24' has host bits set; using 203.0.113.0/24",
			check:    func(c *Config) bool { return c.Customs[0].Subnets[0] == netip.MustParsePrefix("203.0.113.0/24") }},
		{name: "custom duplicate subnets collapse", in: "config custom 'c'\n\tlist subnet '203.0.113.0/24'\n\tlist subnet '203.0.113.0/24'\n",
			check: func(c *Config) bool { return len(c.Customs[0].Subnets) == 1 }},
		{name: "custom bare address", in: "config custom 'c'\n\tlist subnet '203.0.113.5'\n", wantErr: "subnet '203.0.113.5' is not a CIDR prefix"},
		{name: "custom garbage subnet", in: "config custom 'c'\n\tlist subnet 'telegram'\n", wantErr: "subnet 'telegram' is not a CIDR prefix"},
		{name: "custom prefix too long", in: "config custom 'c'\n\tlist subnet '203.0.113.0/33'\n", wantErr: "is not a CIDR prefix"},
		{name: "custom mapped prefix", in: "config custom 'c'\n\tlist subnet '::ffff:203.0.113.0/120'\n", wantErr: "IPv4-mapped"},
		{name: "custom broad subnet warns", in: "config custom 'c'\n\tlist subnet '0.0.0.0/0'\n", wantWarn: "subnet '0.0.0.0/0' is very broad"},
		{name: "custom IPv6 with ipv6 off warns", in: "config main 'main'\n\toption ipv6 '0'\nconfig custom 'c'\n\tlist subnet '2001:db8:3::/64'\n",
			wantWarn: "is IPv6 and is ignored while main ipv6 is '0'"},
		{name: "custom bad url", in: "config custom 'c'\n\tlist url 'file:///etc/passwd'\n", wantErr: "url is not an http:// or https:// URL"},
		{name: "custom empty warns", in: "config custom 'c'\n", wantWarn: "custom 'c': has no subnet, url, domain or domain_url"},
		{name: "custom domains", in: "config custom 'c'\n\tlist domain 'Example.ORG.'\n\tlist domain '*.example.net'\n\tlist domain 'example.org'\n\tlist domain_url 'https://example.org/d.lst'\n",
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Customs[0].Domains, []string{"example.org", "example.net"}) &&
					reflect.DeepEqual(c.Customs[0].DomainURLs, []string{"https://example.org/d.lst"})
			}},
		{name: "custom domain tld only", in: "config custom 'c'\n\tlist domain 'org'\n", wantErr: "tgtun.conf:2: custom 'c': domain \"org\" is a top-level domain alone"},
		{name: "custom domain wildcard all", in: "config custom 'c'\n\tlist domain '*'\n", wantErr: "matches every domain"},
		{name: "custom domain bad", in: "config custom 'c'\n\tlist domain 'a b.org'\n", wantErr: "is not a host name"},
		{name: "custom domain_url ftp", in: "config custom 'c'\n\tlist domain_url 'ftp://x.org/d'\n", wantErr: "domain_url is not an http:// or https:// URL"},
		{name: "anonymous custom", in: "config custom\n\tlist subnet '203.0.113.0/24'\n",
			check: func(c *Config) bool { return c.Customs[0].Name == "@custom[0]" }},

		{name: "unknown section type warns", in: "config tunnel 'x'\n\toption a 'b'\n", wantWarn: "tgtun.conf:1: unknown section type 'tunnel' is ignored"},
		{name: "misspelt section type names the closest", in: "config porxy 'x'\n\toption a 'b'\n", wantWarn: "tgtun.conf:1: unknown section type 'porxy' is ignored; did you mean 'proxy'?"},
		{name: "two main sections", in: "config main 'main'\nconfig main 'other'\n", wantErr: "tgtun.conf:2: main 'other': only one main section is allowed (the first is at line 1)"},
		{name: "anonymous main is fine", in: "config main\n\toption log_level 'debug'\n",
			check: func(c *Config) bool { return c.Main.LogLevel == slog.LevelDebug }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warns, errs := parse(t, tt.in)
			expect(t, errs, warns, tt.wantErr, tt.wantWarn)
			if tt.wantErr == "" && tt.check != nil && !tt.check(cfg) {
				t.Fatalf("unexpected config: %+v", cfg)
			}
			if tt.wantErr == "" && tt.check == nil && tt.wantWarn == "" {
				t.Fatal("case checks nothing")
			}
		})
	}
}

func TestAllErrorsAreCollected(t *testing.T) {
	in := `config main 'main'
	option enabled '1'
	option tun_mtu '100'
	option fail_mode 'panic'

config proxy 'p'
	option server 'h'
	option port '70000'

config proxy 'b'
	option type 'socks4'
	option server 'h'
	option port '1'

config custom 'c'
	list subnet 'nope'
	list url 'gopher://x'
`
	_, warns, errs := parse(t, in)
	want := []string{
		"tgtun.conf:3: main 'main': tun_mtu '100' is out of range 1280-9000",
		"tgtun.conf:4: main 'main': fail_mode 'panic' is not allowed (allowed: block, direct)",
		"tgtun.conf:8: proxy 'p': port '70000' is out of range 1-65535",
		"tgtun.conf:11: proxy 'b': type 'socks4' is not allowed",
		"tgtun.conf:16: custom 'c': subnet 'nope' is not a CIDR prefix",
		"tgtun.conf:17: custom 'c': url is not an http:// or https:// URL",
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), errs)
	}
	for i, e := range errs {
		if !strings.HasPrefix(e.Error(), want[i]) {
			t.Errorf("error %d = %q\nwant prefix %q", i, e, want[i])
		}
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
}

// A line the parser cannot read is reported first and alone: the value errors after it
// (and the options it would have held) could be its consequences and would mislead.
func TestSyntaxErrorsAlone(t *testing.T) {
	in := `config main 'main'
	option enabled '1'
	option tun_mtu '100'
	option fail_mode 'panic'
	option unterminated 'x

config proxy 'main'
	option server 'h'
	option port '70000'

config proxy 'b'
	option type 'socks4'
`
	_, warns, errs := parse(t, in)
	want := []string{
		"tgtun.conf:5: unterminated ' quote",
		"tgtun.conf:7: section name 'main' is already used by the main section at line 1",
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), errs)
	}
	for i, e := range errs {
		if !strings.HasPrefix(e.Error(), want[i]) {
			t.Errorf("error %d = %q\nwant prefix %q", i, e, want[i])
		}
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
}

func TestErrorsAPI(t *testing.T) {
	_, _, err := Parse("x.conf", strings.NewReader("config main 'main'\n\toption tun_mtu 'big'\n\toption log_level 'loud'\n"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("errors.As(Errors): %v", err)
	}
	var pes *Errors
	if !errors.As(err, &pes) || len(*pes) != 2 {
		t.Fatalf("errors.As(*Errors): %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Option != "tun_mtu" || e.Line != 2 || e.Section != "main 'main'" || e.File != "x.conf" {
		t.Fatalf("errors.As(*Error): %#v", e)
	}
	if got := err.Error(); got != "x.conf:2: main 'main': tun_mtu 'big' is not a number (1280-9000)\n"+
		"x.conf:3: main 'main': log_level 'loud' is not allowed (allowed: debug, info, warn, error)" {
		t.Fatalf("Error() = %q", got)
	}
	w := Warning{File: "f", Line: 3, Msg: "m"}
	if w.String() != "f:3: m" || (Warning{File: "f", Msg: "m"}).String() != "f: m" {
		t.Fatalf("Warning.String: %q", w.String())
	}
}

func TestLoad(t *testing.T) {
	_, _, err := Load(filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	var es Errors
	if !errors.As(err, &es) || !strings.Contains(es[0].Error(), "missing: cannot read the file: no such file or directory") {
		t.Fatalf("missing file message: %v", err)
	}
	_, _, err = Load(t.TempDir())
	if err == nil || !errors.As(err, &es) {
		t.Fatalf("directory: %v", err)
	}
	path := filepath.Join(t.TempDir(), "tgtun")
	if err := os.WriteFile(path, []byte("config main 'main'\n\toption tun_mtu '1'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: main 'main': tun_mtu '1'") {
		t.Fatalf("Load names the path: %v", err)
	}
}

func TestShippedConfig(t *testing.T) {
	cfg, warns, err := Load(shippedConfig)
	if err != nil {
		t.Fatalf("shipped config rejected: %v", err)
	}
	if !reflect.DeepEqual(cfg.Main, Default().Main) {
		t.Errorf("shipped main differs from the defaults:\n%+v\n%+v", cfg.Main, Default().Main)
	}
	if len(cfg.Proxies) != 0 || !reflect.DeepEqual(cfg.Services, []Service{{Name: "telegram", Enabled: true}}) || cfg.Customs != nil {
		t.Errorf("shipped config: %+v", cfg)
	}
	if len(warns) != 1 || !strings.Contains(warns[0].Msg, "proxy 'primary': proxy has no server") {
		t.Errorf("warnings: %v", warns)
	}

	// What a user does first: set the server and enable.
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for old, repl := range map[string]string{"option server ''": "option server '198.51.100.6'", "option enabled '0'": "option enabled '1'"} {
		if !strings.Contains(s, old) {
			t.Fatalf("shipped config lacks %q", old)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	cfg, warns, errs := parse(t, s)
	expect(t, errs, warns, "", "")
	want := []Proxy{{Name: "primary", Type: "socks5", Server: "198.51.100.6", Port: 1080, UDP: true, Priority: 10, Line: cfg.Proxies[0].Line}}
	if !cfg.Main.Enabled || !reflect.DeepEqual(cfg.Proxies, want) {
		t.Fatalf("configured shipped file: %+v", cfg)
	}
}

// TestDocsCoverEveryOption keeps docs/config.md in step with the options checked here.
func TestDocsCoverEveryOption(t *testing.T) {
	data, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []string{"enabled", "tun_name", "tun_mtu", "ipv6", "lan_iface", "router_traffic", "fwmark",
		"bypass_mark", "route_table", "rule_priority", "fail_mode", "update_interval", "health_target",
		"health_interval", "memory_limit", "max_flows", "max_flows_per_device", "log_level", "type", "server", "port", "username", "password",
		"cipher", "udp", "priority", "url", "subnet", "interface"} {
		if !strings.Contains(string(data), "`"+opt+"`") {
			t.Errorf("docs/config.md does not document `%s`", opt)
		}
	}
}

func TestDNSAndDevices(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(m Main) bool
	}{
		{name: "upstream address", in: "option dns_upstream '9.9.9.9'", check: func(m Main) bool { return m.DNSUpstream == "9.9.9.9:53" }},
		{name: "upstream address and port", in: "option dns_upstream '[2606:4700:4700::1111]:5353'", check: func(m Main) bool { return m.DNSUpstream == "[2606:4700:4700::1111]:5353" }},
		{name: "upstream doh", in: "option dns_upstream 'https://1.1.1.1/dns-query'", check: func(m Main) bool { return m.DNSUpstream == "https://1.1.1.1/dns-query" }},
		{name: "upstream host name", in: "option dns_upstream 'dns.google'", wantErr: "dns_upstream 'dns.google' is not an IP address with an optional port, or an https:// URL"},
		{name: "upstream unspecified", in: "option dns_upstream '0.0.0.0:53'", wantErr: "dns_upstream '0.0.0.0:53' is not"},
		{name: "upstream http", in: "option dns_upstream 'http://1.1.1.1/dns-query'", wantErr: "dns_upstream"},
		{name: "port", in: "option dns_port '5399'", check: func(m Main) bool { return m.DNSPort == 5399 }},
		{name: "port zero", in: "option dns_port '0'", wantErr: "dns_port '0' is"},
		{name: "domain timeout", in: "option domain_timeout '30m'", check: func(m Main) bool { return m.DomainTimeout == 30*time.Minute }},
		{name: "domain timeout zero", in: "option domain_timeout '0'", wantErr: "domain_timeout '0' is out of range"},
		{name: "devices", in: "list include_device '192.168.1.20'\n\tlist include_device '192.168.1.0/28'\n\tlist include_device 'AA:BB:CC:DD:EE:FF'\n\tlist exclude_device '2001:db8::20'\n\tlist exclude_device '192.168.1.20'",
			check: func(m Main) bool {
				return reflect.DeepEqual(m.IncludeDevices, []Device{
					{Prefix: netip.MustParsePrefix("192.168.1.20/32")}, {Prefix: netip.MustParsePrefix("192.168.1.0/28")}, {MAC: "aa:bb:cc:dd:ee:ff"},
				}) && reflect.DeepEqual(m.ExcludeDevices, []Device{
					{Prefix: netip.MustParsePrefix("2001:db8::20/128")}, {Prefix: netip.MustParsePrefix("192.168.1.20/32")},
				})
			}},
		{name: "device host bits masked", in: "list exclude_device '192.168.1.7/24'", check: func(m Main) bool {
			return m.ExcludeDevices[0].Prefix == netip.MustParsePrefix("192.168.1.0/24")
		}},
		{name: "device bad", in: "list include_device 'laptop'", wantErr: "include_device 'laptop' is not an IP address, CIDR prefix or MAC address"},
		{name: "device long mac", in: "list exclude_device '00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01'", wantErr: "not a 6-byte MAC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := Parse("tgtun.conf", strings.NewReader("config main 'main'\n\t"+tt.in+"\n"))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg.Main) {
				t.Fatalf("unexpected %+v", cfg.Main)
			}
		})
	}
}
