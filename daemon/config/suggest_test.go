package config

import "testing"

func TestClosest(t *testing.T) {
	known := []string{"enabled", "fail_mode", "port", "server", "tun_mtu", "telegram", "whatsapp"}
	tests := []struct{ in, want string }{
		{"fail_mod", "fail_mode"},
		{"prot", "port"},
		{"sever", "server"},
		{"tun_mut", "tun_mtu"},
		{"telegarm", "telegram"},
		{"Enabled", "enabled"},
		{"timeout", ""}, // nothing near: no guess
		{"pt", ""},      // too short to guess from
		{"wechat", ""},
	}
	for _, tt := range tests {
		if got := closest(tt.in, known); got != tt.want {
			t.Errorf("closest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
