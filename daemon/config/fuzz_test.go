package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that no input panics, that every problem names the file, and that
// whatever is accepted survives a round trip through uci's export format unchanged.
func FuzzParse(f *testing.F) {
	if shipped, err := os.ReadFile(shippedConfig); err == nil {
		f.Add(string(shipped))
	} else {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"",
		"config main 'main'\n\toption enabled '1'\n" + proxyOK,
		"config t n\n option a 'a'\"b\"c\\ d # x\n list b 'it'\\''s'; option c \"\\\\\"\n",
		"c t n\r\no a b\r\nl c d\r\n",
		"config proxy\n option server h\n option port 1\nconfig proxy\n",
		"config custom 'c'\n option subnet '203.0.113.5/24 2001:db8:3::1/64'\n list url 'https://example.org/x'\n",
		"config proxy 'p'\n option type shadowsocks\n option server '[2001:db8:2::6]'\n option port 8388\n option cipher aes-256-gcm\n option password \"p w\"\n",
		"config main 'main'\n option fwmark '0x10/0xff'\n option bypass_mark 0x100\n option update_interval 7d\n",
		"option a 'unterminated\nconfig 'x y'\n\x00\\",
		"config t n\n option a \\\n b\n",
		"config proxy 'w'\n option type interface\n option interface wg0\n option server x\n",
		"config proxy 's'\n option type shadowsocks\n option server h\n option port 1\n option cipher 2022-blake3-chacha20-poly1305\n option password 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		file, _, errs := parseUCI("f", []byte(in))
		for _, e := range errs {
			if e.File != "f" || e.Msg == "" {
				t.Fatalf("incomplete error %#v", e)
			}
		}
		if file != nil && len(errs) == 0 {
			out := exportUCI(file)
			again, _, errs2 := parseUCI("f", []byte(out))
			if len(errs2) > 0 {
				t.Fatalf("export of an accepted file is rejected: %v\n%q", errs2, out)
			}
			if a, b := dumpUCI(file, false), dumpUCI(again, false); a != b {
				t.Fatalf("round trip changed the file:\n%q\n%q", a, b)
			}
		}

		cfg, _, err := Parse("f", strings.NewReader(in))
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		cfg2, _, err := Parse("f", strings.NewReader(exportUCI(file)))
		if err != nil {
			t.Fatalf("accepted config rejected after export: %v", err)
		}
		for i := range cfg.Proxies {
			cfg.Proxies[i].Line, cfg2.Proxies[i].Line = 0, 0
		}
		if !reflect.DeepEqual(cfg, cfg2) {
			t.Fatalf("config changed after export:\n%+v\n%+v", cfg, cfg2)
		}
	})
}
