package config

import (
	"fmt"
	"strings"
	"testing"
)

// dumpUCI renders a parsed file compactly for comparisons:
// `type name(anon)@line{opt=v@line,...}` with lists as `name[]=v1|v2`.
func dumpUCI(f *uciFile, lines bool) string {
	var b strings.Builder
	for _, s := range f.sections {
		fmt.Fprintf(&b, "%s %s", s.Type, s.Name)
		if s.Anonymous {
			b.WriteString("(anon)")
		}
		if lines {
			fmt.Fprintf(&b, "@%d", s.Line)
		}
		b.WriteString("{")
		for i, o := range s.Options {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(o.Name)
			if o.IsList {
				b.WriteString("[]")
			}
			b.WriteString("=")
			for j, v := range o.Values {
				if j > 0 {
					b.WriteString("|")
				}
				b.WriteString(v.Text)
				if lines {
					fmt.Fprintf(&b, "@%d", v.Line)
				}
			}
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// exportUCI writes a parsed file back in uci's export style, quoting everything.
func exportUCI(f *uciFile) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	var b strings.Builder
	for _, s := range f.sections {
		b.WriteString("config " + q(s.Type))
		if !s.Anonymous {
			b.WriteString(" " + q(s.Name))
		}
		b.WriteString("\n")
		for _, o := range s.Options {
			kw := "option"
			if o.IsList {
				kw = "list"
			}
			for _, v := range o.Values {
				b.WriteString("\t" + kw + " " + o.Name + " " + q(v.Text) + "\n")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestParseUCISyntax(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"named section with options and list",
			"config main 'main'\n\toption enabled '1'\n\tlist lan_iface 'br-lan'\n\tlist lan_iface 'br-guest'\n",
			"main main@1{enabled=1@2,lan_iface[]=br-lan@3|br-guest@4}\n"},
		{"anonymous sections count per type, named ones included",
			"config proxy 'a'\nconfig proxy\nconfig service\nconfig proxy ''\n",
			"proxy a@1{}\nproxy @proxy[1](anon)@2{}\nservice @service[0](anon)@3{}\nproxy @proxy[2](anon)@4{}\n"},
		{"unquoted, single and double quotes",
			"config t 'n'\n option a plain\n option b 'x y'\n option c \"x y\"\n",
			"t n@1{a=plain@2,b=x y@3,c=x y@4}\n"},
		{"adjacent parts concatenate",
			"config t n\n option a 'a'\"b\"c\n option b 'it'\\''s'\n",
			"t n@1{a=abc@2,b=it's@3}\n"},
		{"backslash escapes in double quotes and unquoted",
			"config t n\n option a \"a\\\"b\"\n option b \"a\\\\b\"\n option c \"\\n\"\n option d a\\ b\n option e \\'x\\'\n",
			"t n@1{a=a\"b@2,b=a\\b@3,c=n@4,d=a b@5,e='x'@6}\n"},
		{"backslash is literal in single quotes",
			"config t n\n option a 'a\\b'\n option b 'c:\\'\n",
			"t n@1{a=a\\b@2,b=c:\\@3}\n"},
		{"comments whole-line, indented and after values",
			"# header\nconfig t n # the section\n\t# indented\n option a 'x' # trailing\n option b x#y\n option c 'x#y'\n option d \"#\"\n",
			"t n@2{a=x@4,b=x@5,c=x#y@6,d=#@7}\n"},
		{"blank lines, tabs and spaces",
			"\n\n   \t\nconfig\tt\t  n  \n\t \toption   a\t'b'   \n\n",
			"t n@4{a=b@5}\n"},
		{"CRLF line endings",
			"config t 'n'\r\n\toption a 'b'\r\n\r\n\toption c d\r\n",
			"t n@1{a=b@2,c=d@4}\n"},
		{"lone CR is whitespace outside quotes, literal inside",
			"config\rt n\r\n\toption a 'b\rc'\n",
			"t n@1{a=b\rc@2}\n"},
		{"semicolon separates statements",
			"config t n; option a b; option c 'd;e'\n",
			"t n@1{a=b@1,c=d;e@1}\n"},
		{"backslash-newline continues a statement",
			"config t n\n option a \\\n  'b'\n option c \"x\\\ny\"\n option d e\n",
			"t n@1{a=b@2,c=xy@4,d=e@6}\n"},
		{"abbreviated keywords, as uci accepts",
			"c t n\no a b\nl c d\np tgtun\n",
			"t n@1{a=b@2,c[]=d@3}\n"},
		{"list after option extends it",
			"config t n\n option a x\n list a y\n",
			"t n@1{a[]=x@2|y@3}\n"},
		{"empty option value deletes the option, as uci does",
			"config t n\n option a x\n option a ''\n option b\n option c \"\"\n list d ''\n",
			"t n@1{}\n"},
		{"empty file", "", ""},
		{"comment only, no trailing newline", "# nothing", ""},
		{"package statement is accepted", "package tgtun\nconfig t n\n", "t n@2{}\n"},
		{"types may hold printable punctuation", "config 'a-b.c' n\n", "a-b.c n@1{}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, errs := parseUCI("f", []byte(tt.in))
			if len(errs) > 0 {
				t.Fatalf("unexpected errors: %v", errs)
			}
			if got := dumpUCI(f, true); got != tt.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestParseUCIWarnsOnRepeatedOption(t *testing.T) {
	f, warns, errs := parseUCI("f", []byte("config t n\n option a x\n option a y\n"))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := dumpUCI(f, true); got != "t n@1{a=y@3}\n" {
		t.Fatalf("last value must win: %q", got)
	}
	if len(warns) != 1 || warns[0].Line != 3 || !strings.Contains(warns[0].Msg, "set again (first at line 2)") {
		t.Fatalf("warnings = %v", warns)
	}
}

func TestParseUCIErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // each error, formatted
		sections string   // what still parsed
	}{
		{"unterminated single quote", "config t n\n option a 'x\n option b y\n",
			[]string{"f:2: unterminated ' quote"}, "t n{b=y}\n"},
		{"unterminated double quote", "config t n\n option a \"x\n",
			[]string{"f:2: unterminated \" quote"}, "t n{}\n"},
		{"backslash at end of file", "config t n\n option a x\\",
			[]string{"f:2: backslash at the end of the file"}, "t n{}\n"},
		{"NUL byte", "config t n\n option a 'x\x00y'\n option b \"\x00\"\n option c \\\x00\n option d x\x00\n",
			[]string{"f:2: NUL byte", "f:3: NUL byte", "f:4: NUL byte", "f:5: NUL byte"}, "t n{}\n"},
		{"unknown statement", "config t n\n opton a b\n",
			[]string{"f:2: unknown statement (expected config, option, list or package)"}, "t n{}\n"},
		{"quoted keyword", "'config' t n\n",
			[]string{"f:1: a statement must start with config"}, ""},
		{"option before the first section", "option a b\nconfig t n\n",
			[]string{"f:1: option 'a' comes before the first config section"}, "t n{}\n"},
		{"config without type", "config\n",
			[]string{"f:1: config takes a section type and an optional name"}, ""},
		{"config with too many arguments", "config t n x\n option a b\nconfig t m\n option c d\n",
			[]string{"f:1: config takes a section type"}, "t m{c=d}\n"},
		{"option with too many arguments", "config t n\n option a b c\n",
			[]string{"f:2: option takes a name and a value"}, "t n{}\n"},
		{"list without name", "config t n\n list\n",
			[]string{"f:2: list takes a name and a value"}, "t n{}\n"},
		{"invalid section name", "config t 'a-b'\n option x y\n",
			[]string{"f:1: section name 'a-b' is not valid"}, ""},
		{"invalid option name", "config t n\n option 'a.b' x\n",
			[]string{"f:2: option name 'a.b' is not valid"}, "t n{}\n"},
		{"invalid type", "config 'a b' n\n",
			[]string{"f:1: section type 'a b' is not valid"}, ""},
		{"duplicate section of the same type", "config t n\n option a 1\nconfig t n\n option a 2\n",
			[]string{"f:3: t 'n' is defined twice (first at line 1)"}, "t n{a=1}\n"},
		{"same name with another type (uci would merge them)", "config main 'main'\nconfig proxy 'main'\n option server x\n",
			[]string{"f:2: section name 'main' is already used by the main section at line 1; uci merges"}, "main main{}\n"},
		{"every error is reported and parsing goes on", "config t n\n option a 'x\n option b y\n bogus\nconfig u\n option c \"z\n option d w\n",
			[]string{"f:2: unterminated '", "f:4: unknown statement", "f:6: unterminated \""}, "t n{b=y}\nu @u[0](anon){d=w}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, errs := parseUCI("f", []byte(tt.in))
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors %v, want %d %q", len(errs), errs, len(tt.want), tt.want)
			}
			for i, e := range errs {
				if !strings.HasPrefix(e.Error(), tt.want[i]) {
					t.Errorf("error %d = %q, want prefix %q", i, e.Error(), tt.want[i])
				}
			}
			if got := dumpUCI(f, false); got != tt.sections {
				t.Errorf("sections = %q, want %q", got, tt.sections)
			}
		})
	}
}

func TestParseUCIBounds(t *testing.T) {
	big := []byte("# " + strings.Repeat("x", maxFileSize))
	if _, _, errs := parseUCI("f", big); len(errs) != 1 || !strings.Contains(errs[0].Error(), "larger than 1048576 bytes (1 MiB)") {
		t.Fatalf("file over 1 MiB: %v", errs)
	}
	exact := []byte(strings.Repeat("#"+strings.Repeat("x", 1022)+"\n", maxFileSize/1024))
	if _, _, errs := parseUCI("f", exact); len(errs) != 0 {
		t.Fatalf("file of exactly 1 MiB: %v", errs)
	}
	long := "config t n\n option a '" + strings.Repeat("x", maxLineSize) + "'\n option b '" + strings.Repeat("y", maxLineSize-14) + "'\n"
	_, _, errs := parseUCI("f", []byte(long))
	if len(errs) != 1 || errs[0].Error() != "f:2: line is longer than 65536 bytes (64 KiB)" {
		t.Fatalf("long line: %v", errs)
	}
	// Through Parse, an over-long stream is cut after 1 MiB + 1 byte, not read whole.
	r := &countingReader{}
	_, _, err := Parse("f", r)
	if err == nil || !strings.Contains(err.Error(), "larger than") || r.n > maxFileSize+64<<10 {
		t.Fatalf("endless reader: err %v after %d bytes", err, r.n)
	}
}

// countingReader is an endless stream of comment lines.
type countingReader struct{ n int }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '#'
		if i%80 == 79 {
			p[i] = '\n'
		}
	}
	r.n += len(p)
	return len(p), nil
}

func TestExportRoundTrip(t *testing.T) {
	in := "config 'we''ird' n\n option a 'it'\\''s \"q\" \\ #x;y'\n list b ' '\n list b x\nconfig t\n option c \"\\\\\"\n"
	f, _, errs := parseUCI("f", []byte(in))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	out := exportUCI(f)
	g, _, errs := parseUCI("f", []byte(out))
	if len(errs) > 0 {
		t.Fatalf("export does not re-parse: %v\n%s", errs, out)
	}
	if a, b := dumpUCI(f, false), dumpUCI(g, false); a != b {
		t.Fatalf("round trip differs:\n%q\n%q", a, b)
	}
}
