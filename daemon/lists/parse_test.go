package lists

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func prefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		opts ParseOptions
		want []string
	}{
		{"plain", "91.108.4.0/22\n2001:b28:f23d::/48\n", ParseOptions{}, []string{"91.108.4.0/22", "2001:b28:f23d::/48"}},
		{"comments and blanks", "# Telegram\n; also a comment\n\n91.108.4.0/22 # inline\n   \n149.154.160.0/20 ; inline\n", ParseOptions{},
			[]string{"91.108.4.0/22", "149.154.160.0/20"}},
		{"CRLF", "91.108.4.0/22\r\n149.154.160.0/20\r\n", ParseOptions{}, []string{"91.108.4.0/22", "149.154.160.0/20"}},
		{"BOM", "\xef\xbb\xbf91.108.4.0/22\n", ParseOptions{}, []string{"91.108.4.0/22"}},
		{"BOM before a comment", "\xef\xbb\xbf# list\n91.108.4.0/22\n", ParseOptions{}, []string{"91.108.4.0/22"}},
		{"trailing and leading spaces and tabs", "  91.108.4.0/22 \t \n\t149.154.160.0/20  \n", ParseOptions{}, []string{"91.108.4.0/22", "149.154.160.0/20"}},
		{"bare addresses are hosts", "149.154.167.51\n2001:b28:f23d::1\n", ParseOptions{}, []string{"149.154.167.51/32", "2001:b28:f23d::1/128"}},
		{"no final newline on a valid line", "91.108.4.0/22\n149.154.160.0/20", ParseOptions{}, []string{"91.108.4.0/22", "149.154.160.0/20"}},
		{"duplicates are kept for Merge", "91.108.4.0/22\n91.108.4.0/22\n", ParseOptions{}, []string{"91.108.4.0/22", "91.108.4.0/22"}},
		{"overlapping are kept for Merge", "91.108.0.0/16\n91.108.4.0/22\n", ParseOptions{}, []string{"91.108.0.0/16", "91.108.4.0/22"}},
		{"/8 is the shortest untrusted IPv4", "91.0.0.0/8\n", ParseOptions{}, []string{"91.0.0.0/8"}},
		{"/16 is the shortest untrusted IPv6", "2a0a::/16\n", ParseOptions{}, []string{"2a0a::/16"}},
		{"/7 trusted", "90.0.0.0/7\n", ParseOptions{Trusted: true}, []string{"90.0.0.0/7"}},
		{"documentation allowed", "203.0.113.0/24\n2001:db8:3::/64\n198.51.100.7\n", ParseOptions{AllowDocumentation: true},
			[]string{"203.0.113.0/24", "2001:db8:3::/64", "198.51.100.7/32"}},
		{"a real range around a documentation range", "203.0.0.0/16\n", ParseOptions{}, []string{"203.0.0.0/16"}},
		{"only blank lines between entries", "\n\n\n91.108.4.0/22\n\n\n", ParseOptions{}, []string{"91.108.4.0/22"}},
		{"exactly the entry cap", "91.108.4.0/22\n91.108.8.0/22\n", ParseOptions{MaxEntries: 2}, []string{"91.108.4.0/22", "91.108.8.0/22"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in), tt.opts)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if want := prefixes(t, tt.want...); !slices.Equal(got, want) {
				t.Fatalf("Parse(%q) = %v, want %v", tt.in, got, want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	html := "<!DOCTYPE html>\n<html><head><title>Login</title></head><body>captive portal</body></html>\n"
	tests := []struct {
		name     string
		in       string
		opts     ParseOptions
		wantLine int
		wantText string // in the error message
	}{
		{"IPv4 default route", "91.108.4.0/22\n0.0.0.0/0\n", ParseOptions{}, 2, "0.0.0.0/0 is a default route"},
		{"IPv6 default route", "::/0\n", ParseOptions{}, 1, "::/0 is a default route"},
		{"default route even trusted", "0.0.0.0/0\n", ParseOptions{Trusted: true}, 1, "default route"},
		{"RFC1918 10/8", "91.108.4.0/22\n149.154.160.0/20\n10.0.0.0/8\n", ParseOptions{}, 3, "10.0.0.0/8 is a private range"},
		{"RFC1918 192.168.1.0/24", "192.168.1.0/24\n", ParseOptions{}, 1, "192.168.1.0/24 is a private range (inside 192.168.0.0/16)"},
		{"RFC1918 172.16/12 trusted", "172.20.0.0/16\n", ParseOptions{Trusted: true}, 1, "private range"},
		{"a range covering a private one", "10.0.0.0/7\n", ParseOptions{Trusted: true}, 1, "10.0.0.0/7 covers a private range (10.0.0.0/8)"},
		{"ULA", "fc00::/7\n", ParseOptions{}, 1, "fc00::/7 is a private (unique local) range"},
		{"ULA inside", "fd12:3456::/32\n", ParseOptions{}, 1, "unique local"},
		{"loopback address", "127.0.0.1\n", ParseOptions{}, 1, "127.0.0.1/32 is a loopback range"},
		{"IPv6 loopback", "::1\n", ParseOptions{}, 1, "::1/128 is the loopback address"},
		{"IPv4 link-local", "169.254.0.0/16\n", ParseOptions{}, 1, "169.254.0.0/16 is a link-local range"},
		{"IPv6 link-local", "fe80::/64\n", ParseOptions{}, 1, "link-local"},
		{"IPv4 multicast", "224.0.0.0/4\n", ParseOptions{}, 1, "224.0.0.0/4 is a multicast range"},
		{"IPv6 multicast", "ff02::1\n", ParseOptions{}, 1, "multicast"},
		{"CGNAT", "100.64.0.0/10\n", ParseOptions{}, 1, "100.64.0.0/10 is the shared CGNAT range"},
		{"unspecified", "0.0.0.0\n", ParseOptions{}, 1, "unspecified"},
		{"IPv6 unspecified", "::\n", ParseOptions{}, 1, "unspecified"},
		{"broadcast", "255.255.255.255\n", ParseOptions{}, 1, "reserved"},
		{"IPv4-mapped", "::ffff:149.154.167.51\n", ParseOptions{}, 1, "IPv4-mapped"},
		{"outside global unicast", "4000::/16\n", ParseOptions{}, 1, "outside the global unicast range"},
		{"documentation without the option", "203.0.113.0/24\n", ParseOptions{}, 1, "203.0.113.0/24 is a documentation range"},
		{"IPv6 documentation without the option", "2001:db8:3::/64\n", ParseOptions{}, 1, "documentation range"},
		{"/7 untrusted", "90.0.0.0/7\n", ParseOptions{}, 1, "90.0.0.0/7 is shorter than /8"},
		{"/15 IPv6 untrusted", "2a0a::/15\n", ParseOptions{}, 1, "shorter than /16"},
		{"HTML page", html, ParseOptions{}, 1, "HTML page"},
		{"HTML after a comment", "# list\n91.108.4.0/22\n<HTML>\n", ParseOptions{}, 3, "HTML page"},
		{"HTML with leading blank lines", "\n\n  <body>oops</body>\n", ParseOptions{}, 3, "HTML page"},
		{"truncated download", "91.108.4.0/22\n149.154.16", ParseOptions{}, 2, `"149.154.16" is cut off`},
		{"truncated inside a prefix length", "91.108.4.0/22\n91.108.56.0/2", ParseOptions{}, 2, "cut off"},
		{"empty answer", "", ParseOptions{}, 0, "no entries"},
		{"only comments", "# nothing here\n\n; still nothing\n", ParseOptions{}, 0, "no entries (3 lines"},
		{"only a BOM", "\xef\xbb\xbf", ParseOptions{}, 0, "no entries"},
		{"garbage line", "91.108.4.0/22\nhello world\n91.108.8.0/22\n", ParseOptions{}, 2, `"hello world" is not an IP address`},
		{"bad CIDR", "91.108.4.0/33\n", ParseOptions{}, 1, "not a CIDR prefix"},
		{"host bits set", "91.108.4.1/22\n", ParseOptions{}, 1, "host bits set (the prefix would be 91.108.4.0/22)"},
		{"zone", "fe80::1%eth0\n", ParseOptions{}, 1, "not an IP address"},
		{"a JSON answer", `{"error":"rate limited"}` + "\n", ParseOptions{}, 1, "not an IP address"},
		{"NUL bytes", "91.108.4.0/22\n\x00\x00\x00\n", ParseOptions{}, 2, "not an IP address"},
		{"not UTF-8", "91.108.4.0/22\n\xff\xfe\n", ParseOptions{}, 2, "not UTF-8"},
		{"over the size cap", "91.108.4.0/22\n", ParseOptions{MaxBytes: 10}, 0, "larger than the 10-byte limit"},
		{"over the entry cap", "91.108.4.0/22\n91.108.8.0/22\n91.108.12.0/22\n", ParseOptions{MaxEntries: 2}, 3, "more than 2 entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in), tt.opts)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want an error", tt.in, got)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) error %T %v, want *ParseError", tt.in, err, err)
			}
			if pe.Line != tt.wantLine {
				t.Errorf("Parse(%q) error %q names line %d, want %d", tt.in, err, pe.Line, tt.wantLine)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Parse(%q) error %q, want it to contain %q", tt.in, err, tt.wantText)
			}
			if tt.wantLine > 0 && !strings.HasPrefix(err.Error(), fmt.Sprintf("line %d: ", tt.wantLine)) {
				t.Errorf("error %q does not start with its line", err)
			}
		})
	}
}

// TestParseMessageFormat pins the wording users see in `tgtun status`.
func TestParseMessageFormat(t *testing.T) {
	_, err := Parse([]byte("91.108.4.0/22\n149.154.160.0/20\n10.0.0.0/8\n"), ParseOptions{})
	if err == nil || err.Error() != "line 3: 10.0.0.0/8 is a private range" {
		t.Fatalf("error = %v, want %q", err, "line 3: 10.0.0.0/8 is a private range")
	}
}

func TestParseMillionLines(t *testing.T) {
	data := []byte(strings.Repeat("91.108.4.0/22\n", 1_000_000))

	_, err := Parse(data, ParseOptions{})
	if err == nil || !strings.Contains(err.Error(), "larger than the 1048576-byte limit") {
		t.Fatalf("default limits: error = %v, want the size cap", err)
	}
	_, err = Parse(data, ParseOptions{MaxBytes: int64(len(data))})
	if err == nil || err.Error() != "line 20001: more than 20000 entries" {
		t.Fatalf("no size cap: error = %v, want the entry cap at line 20001", err)
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		"91.108.4.0/22\n2001:b28:f23d::/48\n",
		"# c\r\n\xef\xbb\xbf149.154.167.51\r\n",
		"0.0.0.0/0\n", "::/0\n", "10.0.0.0/8\n", "fc00::/7\n", "127.0.0.1\n", "224.0.0.0/4\n",
		"<html>\n", "91.108.4.0/22\n149.154.16", "", ";\n#\n", "203.0.113.0/24\n", "90.0.0.0/7\n",
		"::ffff:1.2.3.4\n", "fe80::1%eth0\n", "91.108.4.1/22\n", "\x00\xff\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), false, false)
		f.Add([]byte(s), true, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, trusted, allowDoc bool) {
		opts := ParseOptions{Trusted: trusted, AllowDocumentation: allowDoc, MaxEntries: 1000}
		got, err := Parse(data, opts)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || got != nil {
				t.Fatalf("Parse error %T %v with result %v", err, err, got)
			}
			return
		}
		if len(got) == 0 || len(got) > 1000 {
			t.Fatalf("Parse accepted %d entries", len(got))
		}
		check := newChecker(opts)
		for _, p := range got {
			if !p.IsValid() || p.Masked() != p || check.check(p) != nil {
				t.Fatalf("Parse accepted %v: %v", p, check.check(p))
			}
		}
		// What Parse accepted, written back out, parses to the same list.
		var b strings.Builder
		for _, p := range got {
			b.WriteString(p.String() + "\n")
		}
		again, err := Parse([]byte(b.String()), opts)
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("round trip: %v, %v; want %v", again, err, got)
		}
		// Merging keeps every accepted address and stays valid.
		merged := Merge(got)
		for _, p := range got {
			if !covered(merged, p) {
				t.Fatalf("Merge(%v) = %v loses %v", got, merged, p)
			}
		}
	})
}

// covered reports whether p lies inside one prefix of set.
func covered(set []netip.Prefix, p netip.Prefix) bool {
	for _, q := range set {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
