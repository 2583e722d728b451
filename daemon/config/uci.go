package config

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
)

// Bounds on input: a UCI file is a few kilobytes; anything far larger is a mistake
// (or an attack through the LuCI upload path) and must not make the daemon allocate
// without limit.
const (
	maxFileSize = 1 << 20
	maxLineSize = 64 << 10
)

// uciFile is a parsed UCI file: its sections in file order.
type uciFile struct {
	sections []*uciSection
}

// uciSection is one `config TYPE ['NAME']` block.
type uciSection struct {
	Type      string
	Name      string // given name, or uci's `@type[N]` for anonymous sections
	Anonymous bool
	Line      int
	Options   []*uciOption // in order of first appearance
}

// uciOption is one option or list of a section.
type uciOption struct {
	Name   string
	IsList bool
	Line   int // line of the first statement that set it (of the last `option` if replaced)
	Values []uciValue
}

// uciValue is one value with the line it came from.
type uciValue struct {
	Text string
	Line int
}

// label is how messages name the section: `type 'name'`, or uci's `@type[N]`.
func (s *uciSection) label() string {
	if s.Anonymous {
		return s.Name
	}
	return s.Type + " '" + s.Name + "'"
}

func (s *uciSection) option(name string) *uciOption {
	for _, o := range s.Options {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// parseUCI parses data with the syntax of libuci. Problems are returned as errors and
// warnings (never containing a value, which may be a secret) and parsing goes on with
// the next statement, so that one run reports every problem.
func parseUCI(file string, data []byte) (*uciFile, []Warning, Errors) {
	var errs Errors
	if len(data) > maxFileSize {
		return nil, nil, Errors{{File: file, Msg: fmt.Sprintf("file is larger than %d bytes (1 MiB)", maxFileSize)}}
	}
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(line) > maxLineSize {
			errs = append(errs, &Error{File: file, Line: i + 1, Msg: fmt.Sprintf("line is longer than %d bytes (64 KiB)", maxLineSize)})
		}
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}

	p := &uciParser{file: file, sc: scanner{src: data, line: 1}, out: &uciFile{}, byName: map[string]*uciSection{}, count: map[string]int{}}
	p.run()
	return p.out, p.warnings, p.errs
}

type uciParser struct {
	file     string
	sc       scanner
	out      *uciFile
	cur      *uciSection // nil before the first section; discarded for a bad `config`
	discard  bool        // the current `config` statement was bad: drop its options quietly
	byName   map[string]*uciSection
	count    map[string]int // sections per type, for @type[N]
	warnings []Warning
	errs     Errors
}

func (p *uciParser) errorf(line int, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *uciParser) run() {
	for {
		words, line, err, eof := p.sc.statement()
		if err != "" {
			p.errorf(p.sc.errLine, "%s", err)
			if len(words) > 0 && (words[0].text == "config" || words[0].text == "c") {
				p.discard = true
			}
		} else if len(words) > 0 {
			p.statement(words, line)
		}
		if eof {
			return
		}
	}
}

func (p *uciParser) statement(words []word, line int) {
	args := words[1:]
	switch kw := words[0]; {
	case kw.quoted:
		p.errorf(line, "a statement must start with config, option, list or package")
	case kw.text == "package", kw.text == "p":
		if len(args) != 1 {
			p.errorf(line, "package takes one argument, the package name")
		}
	case kw.text == "config", kw.text == "c":
		p.config(args, line)
	case kw.text == "option", kw.text == "o":
		p.option("option", args, line)
	case kw.text == "list", kw.text == "l":
		p.option("list", args, line)
	default:
		// The word itself is not echoed: a misplaced line may well be a password.
		p.errorf(line, "unknown statement (expected config, option, list or package)")
	}
}

func (p *uciParser) config(args []word, line int) {
	p.discard = true
	if len(args) < 1 || len(args) > 2 {
		p.errorf(line, "config takes a section type and an optional name, as in: config proxy 'main'")
		return
	}
	typ := args[0].text
	if !validType(typ) {
		p.errorf(line, "section type %s is not valid (printable ASCII without spaces)", quoteValue(typ))
		return
	}
	s := &uciSection{Type: typ, Line: line}
	if len(args) == 2 && args[1].text != "" {
		s.Name = args[1].text
		if !validName(s.Name) {
			p.errorf(line, "section name %s is not valid (letters, digits and _ only)", quoteValue(s.Name))
			return
		}
		if prev, ok := p.byName[s.Name]; ok {
			if prev.Type == typ {
				p.errorf(line, "%s is defined twice (first at line %d)", s.label(), prev.Line)
			} else {
				p.errorf(line, "section name '%s' is already used by the %s section at line %d; uci merges sections of the same name, so give each its own name",
					s.Name, prev.Type, prev.Line)
			}
			return
		}
		p.byName[s.Name] = s
	} else {
		s.Anonymous = true
		s.Name = "@" + typ + "[" + strconv.Itoa(p.count[typ]) + "]"
	}
	p.count[typ]++
	p.discard = false
	p.cur = s
	p.out.sections = append(p.out.sections, s)
}

func (p *uciParser) option(kw string, args []word, line int) {
	if len(args) < 1 || len(args) > 2 {
		p.errorf(line, "%s takes a name and a value, as in: %s name 'value'", kw, kw)
		return
	}
	name := args[0].text
	val := uciValue{Line: line}
	if len(args) == 2 {
		val.Text = args[1].text
	}
	if !validName(name) {
		p.errorf(line, "%s name %s is not valid (letters, digits and _ only)", kw, quoteValue(name))
		return
	}
	if p.discard {
		return
	}
	if p.cur == nil {
		p.errorf(line, "%s '%s' comes before the first config section", kw, name)
		return
	}
	i := slices.IndexFunc(p.cur.Options, func(o *uciOption) bool { return o.Name == name })
	switch {
	case val.Text == "" && kw == "list":
		// An empty list item carries nothing; LuCI writes none.
	case val.Text == "":
		// As in uci, setting an option to '' deletes it: '' means "not set".
		if i >= 0 {
			p.cur.Options = slices.Delete(p.cur.Options, i, i+1)
		}
	case i < 0:
		p.cur.Options = append(p.cur.Options, &uciOption{Name: name, IsList: kw == "list", Line: line, Values: []uciValue{val}})
	case kw == "list":
		// As in uci: a list after an option of the same name extends it.
		o := p.cur.Options[i]
		o.IsList = true
		o.Values = append(o.Values, val)
	default:
		o := p.cur.Options[i]
		p.warnings = append(p.warnings, Warning{File: p.file, Line: line,
			Msg: fmt.Sprintf("%s: option '%s' is set again (first at line %d); the last value wins", p.cur.label(), name, o.Line)})
		o.IsList, o.Line, o.Values = false, line, []uciValue{val}
	}
}

// validName is uci's rule for section and option names.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// validType is uci's rule for section types: printable ASCII without spaces.
func validType(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

// word is one shell-like token of a statement.
type word struct {
	text   string
	quoted bool // some part of it was quoted: never a keyword
}

// scanner splits input into statements of words the way libuci does: whitespace
// separates words, a newline or ';' ends a statement, '#' outside quotes starts a
// comment, 'single' quotes take everything literally, "double" quotes and unquoted
// text take a backslash to mean "the next character literally" (backslash-newline
// continues the statement on the next line), and adjacent parts concatenate.
type scanner struct {
	src     []byte
	pos     int
	line    int
	errLine int
}

// statement returns the words of the next statement and the line it starts on. On a
// syntax error it returns the message (never the text) and skips to the end of the line.
func (sc *scanner) statement() (words []word, line int, errMsg string, eof bool) {
	line = sc.line
	for {
		sc.skipSpace()
		if sc.pos >= len(sc.src) {
			return words, line, "", true
		}
		switch c := sc.src[sc.pos]; c {
		case '\n':
			sc.pos++
			sc.line++
			return words, line, "", false
		case ';':
			sc.pos++
			return words, line, "", false
		case '#':
			for sc.pos < len(sc.src) && sc.src[sc.pos] != '\n' {
				sc.pos++
			}
			continue
		}
		if len(words) == 0 {
			line = sc.line
		}
		w, msg := sc.word()
		if msg != "" {
			sc.errLine = sc.line
			for sc.pos < len(sc.src) && sc.src[sc.pos] != '\n' {
				sc.pos++
			}
			return append(words, w), line, msg, sc.pos >= len(sc.src)
		}
		words = append(words, w)
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

func (sc *scanner) skipSpace() {
	for sc.pos < len(sc.src) {
		c := sc.src[sc.pos]
		switch {
		case isSpace(c):
			sc.pos++
		case c == '\\' && sc.pos+1 < len(sc.src) && sc.src[sc.pos+1] == '\n':
			sc.pos += 2
			sc.line++
		default:
			return
		}
	}
}

func (sc *scanner) word() (word, string) {
	var b []byte
	var w word
	for sc.pos < len(sc.src) {
		c := sc.src[sc.pos]
		switch {
		case isSpace(c), c == '\n', c == ';', c == '#':
			w.text = string(b)
			return w, ""
		case c == 0:
			return w, "NUL byte in the file"
		case c == '\'':
			w.quoted = true
			end := bytes.IndexAny(sc.src[sc.pos+1:], "'\n")
			if end < 0 || sc.src[sc.pos+1+end] != '\'' {
				return w, "unterminated ' quote (a value must end on its line)"
			}
			part := sc.src[sc.pos+1 : sc.pos+1+end]
			if bytes.IndexByte(part, 0) >= 0 {
				return w, "NUL byte in the file"
			}
			b = append(b, part...)
			sc.pos += end + 2
		case c == '"':
			w.quoted = true
			sc.pos++
			for {
				if sc.pos >= len(sc.src) || sc.src[sc.pos] == '\n' {
					return w, "unterminated \" quote (a value must end on its line)"
				}
				c := sc.src[sc.pos]
				if c == '"' {
					sc.pos++
					break
				}
				if c == 0 {
					return w, "NUL byte in the file"
				}
				if c == '\\' {
					var msg string
					if b, msg = sc.escape(b); msg != "" {
						return w, msg
					}
					continue
				}
				b = append(b, c)
				sc.pos++
			}
		case c == '\\':
			var msg string
			if b, msg = sc.escape(b); msg != "" {
				return w, msg
			}
		default:
			b = append(b, c)
			sc.pos++
		}
	}
	w.text = string(b)
	return w, ""
}

// escape handles a backslash at sc.pos: the next character is taken literally, and a
// newline after it continues the statement.
func (sc *scanner) escape(b []byte) ([]byte, string) {
	if sc.pos+1 >= len(sc.src) {
		return b, "backslash at the end of the file"
	}
	c := sc.src[sc.pos+1]
	sc.pos += 2
	switch c {
	case '\n':
		sc.line++
		return b, ""
	case 0:
		return b, "NUL byte in the file"
	}
	return append(b, c), ""
}
