package config

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Error is one problem in a configuration file. Msg never contains a secret value.
type Error struct {
	File    string
	Line    int    // 0 when the problem is not tied to a line (e.g. the file cannot be read)
	Section string // `type 'name'` or `@type[N]`; empty outside sections
	Option  string // the option at fault, if any
	Msg     string // what is wrong and what is allowed; starts with the option name
	err     error  // the underlying cause, for errors.Is (e.g. fs.ErrNotExist)
}

// Error formats as `file:line: section: message`.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Section != "" {
		b.WriteString(e.Section)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.err }

// Errors holds every problem found in a file, in file order.
type Errors []*Error

// Error joins the problems one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Error and errors.Is reach their causes.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// As also fills a *Errors target, so that both `var e Errors` and `var e *Errors`
// work with errors.As.
func (es Errors) As(target any) bool {
	if p, ok := target.(**Errors); ok {
		c := es
		*p = &c
		return true
	}
	return false
}

// Warning is a problem that does not stop the configuration from being used: an
// unknown option, a proxy section without a server, a value that was adjusted.
type Warning struct {
	File string
	Line int
	Msg  string
}

func (w Warning) String() string {
	if w.Line > 0 {
		return w.File + ":" + strconv.Itoa(w.Line) + ": " + w.Msg
	}
	return w.File + ": " + w.Msg
}

// quoteValue shows a user's value in a message: 'value' when it is plain text,
// Go-quoted when it holds control or invalid characters, shortened when long.
// It must never be called with a secret.
func quoteValue(v string) string {
	const max = 80
	short := v
	if len(short) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(short[cut]) {
			cut--
		}
		short = short[:cut]
	}
	plain := utf8.ValidString(short) && !strings.ContainsFunc(short, func(r rune) bool {
		return !unicode.IsPrint(r) || r == '\''
	})
	var q string
	if plain {
		q = "'" + short + "'"
	} else {
		q = strconv.Quote(short)
	}
	if len(short) < len(v) {
		q += "…"
	}
	return q
}
