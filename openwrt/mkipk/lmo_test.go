package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The LuCI app's translations, relative to this test's directory.
const poDir = "../../luci-app/po"

// TestSFHHash pins the hash to values computed by cbi.js's sfh() of LuCI (the function
// the browser looks translations up with), run in node: lengths 1-4 mod 4, multi-byte
// UTF-8 in the signed tail bytes, context and plural separators.
func TestSFHHash(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
	}{
		{"a", 0x115ea782},
		{"ab", 0x516b8b44},
		{"abc", 0xd2be198a},
		{"abcd", 0xdad8b8db},
		{"Settings", 0x60cc7d18},
		{"Статус", 0x48e75849},
		{"й", 0x3dbd1ebb},
		{"йa", 0x184b2a34},
		{"aй", 0xb7f202ca},
		{"aaй", 0x985698f0},
		{"Enable\x01Status", 0x194e176f},
		{"proxy\x020", 0xee9a68c8},
		{"€x", 0x1fd2b11d},
		{"😀", 0x6dd06281},
	} {
		if got := sfhHash([]byte(tc.in)); got != tc.want {
			t.Errorf("sfh(%q) = %08x, want %08x", tc.in, got, tc.want)
		}
	}
	if sfhHash(nil) != 0 {
		t.Error("sfh of nothing is not 0")
	}
}

// TestLMORoundTrip compiles every shipped .po and finds each translated msgid in the
// decoded .lmo the way LuCI looks it up, with the header's plural rule as entry 0.
func TestLMORoundTrip(t *testing.T) {
	pos, err := filepath.Glob(filepath.Join(poDir, "*", "*.po"))
	if err != nil || len(pos) == 0 {
		t.Fatalf("no .po files under %s (%v)", poDir, err)
	}
	for _, po := range pos {
		t.Run(filepath.Base(filepath.Dir(po)), func(t *testing.T) {
			src := readFile(t, po)
			msgs, err := ParsePO(bytes.NewReader(src))
			if err != nil {
				t.Fatalf("%s: %v", po, err)
			}
			lmo, err := CompileLMO(src)
			if err != nil {
				t.Fatalf("%s: %v", po, err)
			}
			if len(lmo)%4 != 0 {
				t.Errorf("lmo length %d not a multiple of 4", len(lmo))
			}
			cat, err := DecodeLMO(lmo)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			found := 0
			for _, m := range msgs {
				if m.ID == "" {
					if pf := pluralForms(m.Str[0]); pf != cat.PluralForms() {
						t.Errorf("plural rule %q, want %q", cat.PluralForms(), pf)
					}
					continue
				}
				for i, want := range m.Str {
					plural := -1
					if m.IDPlural != "" {
						plural = i
					}
					got, ok := cat.Translate(m.Context, m.ID, plural)
					switch {
					case m.Fuzzy || want == "" || want == m.ID:
						if ok {
							t.Errorf("msgid %q: untranslated or fuzzy, but the lmo has %q", m.ID, got)
						}
					case !ok:
						t.Errorf("msgid %q (line %d): not found", m.ID, m.Line)
					case got != want:
						t.Errorf("msgid %q: got %q, want %q", m.ID, got, want)
					default:
						found++
					}
				}
			}
			if found < len(msgs)/2 {
				t.Errorf("only %d of %d messages translated", found, len(msgs))
			}
			t.Logf("%s: %d strings, %d bytes", po, found, len(lmo))
		})
	}
}

// TestLMOFeatures covers what the shipped .po does not use: context, plurals, escapes,
// white space the runtime canonicalizes, fuzzy and untranslated entries.
func TestLMOFeatures(t *testing.T) {
	po := `# comment
msgid ""
msgstr ""
"Language: ru\n"
"Plural-Forms: nplurals=3; plural=(n%10==1 ? 0 : 1);\n"

msgctxt "menu"
msgid "Status"
msgstr "Состояние"

msgid "Status"
msgstr "Статус"

msgid "%d flow"
msgid_plural "%d flows"
msgstr[0] "%d поток"
msgstr[1] "%d потока"
msgstr[2] "%d потоков"

msgid ""
"two  spaces\n"
"and a \"quote\""
msgstr "два\tпробела"

#, fuzzy
msgid "Maybe"
msgstr "Может быть"

msgid "Same"
msgstr "Same"

msgid "Empty"
msgstr ""
`
	lmo, err := CompileLMO([]byte(po))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := DecodeLMO(lmo)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ctxt, id string
		plural   int
		want     string // "" = not in the catalogue
	}{
		{"menu", "Status", -1, "Состояние"},
		{"", "Status", -1, "Статус"},
		{" menu ", " Status\n", -1, "Состояние"},
		{"", "%d flow", 0, "%d поток"},
		{"", "%d flow", 2, "%d потоков"},
		{"", "two spaces and a \"quote\"", -1, "два\tпробела"},
		{"", "Maybe", -1, ""},
		{"", "Same", -1, ""},
		{"", "Empty", -1, ""},
	} {
		got, ok := cat.Translate(tc.ctxt, tc.id, tc.plural)
		if ok != (tc.want != "") || got != tc.want {
			t.Errorf("Translate(%q, %q, %d) = %q, %v; want %q", tc.ctxt, tc.id, tc.plural, got, ok, tc.want)
		}
	}
	if got := cat.PluralForms(); got != "nplurals=3; plural=(n%10==1 ? 0 : 1);" {
		t.Errorf("plural rule %q", got)
	}
	if len(cat.Strings) != 1+2+3+1 {
		t.Errorf("%d entries, want 7: %v", len(cat.Strings), cat.Strings)
	}
}

func TestLMORejects(t *testing.T) {
	for name, po := range map[string]string{
		"nothing translated": "msgid \"\"\nmsgstr \"Language: ru\\n\"\n",
		"twice":              "msgid \"a\"\nmsgstr \"b\"\nmsgid \"a\"\nmsgstr \"c\"\n",
		"no msgstr":          "msgid \"a\"\nmsgid \"b\"\nmsgstr \"c\"\n",
		"bad escape":         "msgid \"a\\q\"\nmsgstr \"b\"\n",
		"unquoted":           "msgid a\nmsgstr \"b\"\n",
		"stray string":       "\"x\"\nmsgid \"a\"\nmsgstr \"b\"\n",
		"plural order":       "msgid \"a\"\nmsgid_plural \"as\"\nmsgstr[1] \"b\"\n",
		"unknown keyword":    "msgid \"a\"\nmsgstring \"b\"\n",
	} {
		if _, err := CompileLMO([]byte(po)); err == nil {
			t.Errorf("%s: compiled without an error", name)
		}
	}
	for name, b := range map[string][]byte{
		"empty":           {},
		"odd length":      {0, 0, 0, 0, 0},
		"index past end":  {0, 0, 0, 9},
		"string past end": append(make([]byte, 4), 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 4),
	} {
		if _, err := DecodeLMO(b); err == nil {
			t.Errorf("decode %s: no error", name)
		}
	}
}

// TestPackagedLMO: the LuCI package built with -lmo carries the compiled catalogue at the
// path LuCI reads (/usr/lib/lua/luci/i18n/NAME.LANG.lmo), decodable and complete.
func TestPackagedLMO(t *testing.T) {
	out := t.TempDir()
	po := filepath.Join(poDir, "ru", "tgtun.po")
	err := run([]string{"-name", "luci-app-tgtun", "-version", "1.0-r1", "-arch", "all",
		"-tree", "../../luci-app/htdocs:/www", "-files", "../../luci-app/root",
		"-lmo", po + ":/usr/lib/lua/luci/i18n/tgtun.ru.lmo", "-out", out}, &bytes.Buffer{}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	p := openIPK(t, filepath.Join(out, "luci-app-tgtun_1.0-r1_all.ipk"))
	lmo := p.dataFile(t, "./usr/lib/lua/luci/i18n/tgtun.ru.lmo")
	want, err := CompileLMO(readFile(t, po))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(lmo, want) {
		t.Error("packaged .lmo differs from the compiled .po")
	}
	if _, err := DecodeLMO(lmo); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"x.po", po + ":relative/x.lmo", po} {
		if err := run([]string{"-name", "luci-app-tgtun", "-version", "1", "-arch", "all",
			"-files", "../../luci-app/root", "-lmo", bad, "-out", out}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("-lmo %q accepted", bad)
		}
	}
}

func FuzzCompileLMO(f *testing.F) {
	f.Add([]byte("msgid \"a\"\nmsgstr \"b\"\n"))
	f.Add([]byte("msgid \"\"\nmsgstr \"Plural-Forms: nplurals=2; plural=n!=1;\\n\"\nmsgid \"x\"\nmsgid_plural \"xs\"\nmsgstr[0] \"y\"\nmsgstr[1] \"ys\"\n"))
	f.Fuzz(func(t *testing.T, po []byte) {
		lmo, err := CompileLMO(po)
		if err != nil {
			return
		}
		cat, err := DecodeLMO(lmo)
		if err != nil {
			t.Fatalf("compiled .lmo does not decode: %v", err)
		}
		msgs, _ := ParsePO(bytes.NewReader(po))
		for _, m := range msgs {
			if m.ID == "" || m.Fuzzy || m.IDPlural != "" || m.Str[0] == "" || m.Str[0] == lmoKey(m.Context, m.ID, -1) {
				continue
			}
			if got, _ := cat.Translate(m.Context, m.ID, -1); got != m.Str[0] {
				t.Fatalf("%q: got %q want %q", m.ID, got, m.Str[0])
			}
		}
	})
}

func FuzzDecodeLMO(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeLMO(b)
	})
}
