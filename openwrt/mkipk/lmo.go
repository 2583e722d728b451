package main

// LuCI's compiled translations (.lmo), written from a gettext .po file. The format is what
// LuCI's po2lmo writes and its lmo library (and the ucode runtime built on it) reads:
//
//	strings   each translated string, padded with NULs to a multiple of 4 bytes
//	index     one 16-byte entry per string: key hash, value count, offset, length,
//	          four big-endian uint32s, sorted by key hash (the reader bisects it)
//	trailer   big-endian uint32: the offset of the index
//
// The key hash is Paul Hsieh's SuperFastHash ("sfh") of the canonical key, seeded with the
// key's length in bytes. The canonical key is the msgid with leading and trailing white
// space removed and every run of white space turned into one space (what the runtime
// does to the string a view passes to _()), prefixed by "CONTEXT\x01" for a msgctxt and
// followed by "\x02N" for plural form N. The browser asks the router for a table
// hash→string (admin/translations/LANG) and looks strings up by the same hash, which
// cbi.js computes with the same function. Entry 0 (key hash 0) holds the Plural-Forms
// expression of the header.
//
// Where this compiler differs from po2lmo, it follows what the runtime looks up: escapes
// (\n, \t, \", \\) are decoded as gettext defines them, keys are canonicalized before
// hashing, fuzzy entries are left out (msgfmt does the same), and a key hash shared by two
// different keys is an error instead of a silently unreachable string.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// sfhHash is SuperFastHash as lmo.c and cbi.js compute it: little-endian 16-bit reads and
// the last odd byte taken as a signed char.
func sfhHash(data []byte) uint32 {
	if len(data) == 0 {
		return 0
	}
	get16 := func(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 }
	signed := func(b byte) uint32 { return uint32(int32(int8(b))) }
	hash := uint32(len(data))
	rem := len(data) & 3
	n := len(data) >> 2
	for ; n > 0; n-- {
		hash += get16(data)
		tmp := (get16(data[2:]) << 11) ^ hash
		hash = (hash << 16) ^ tmp
		data = data[4:]
		hash += hash >> 11
	}
	switch rem {
	case 3:
		hash += get16(data)
		hash ^= hash << 16
		hash ^= signed(data[2]) << 18
		hash += hash >> 11
	case 2:
		hash += get16(data)
		hash ^= hash << 11
		hash += hash >> 17
	case 1:
		hash += signed(data[0])
		hash ^= hash << 10
		hash += hash >> 1
	}
	hash ^= hash << 3
	hash += hash >> 5
	hash ^= hash << 4
	hash += hash >> 17
	hash ^= hash << 25
	hash += hash >> 6
	return hash
}

// canonText trims white space and turns each run of it into one space, as the runtime
// does before hashing (lmo_canon_hash, trimws in cbi.js).
func canonText(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
	}), " ")
}

// lmoKey is the string whose hash finds a translation; plural < 0 for a singular message.
func lmoKey(ctxt, id string, plural int) string {
	k := canonText(id)
	if ctxt != "" {
		k = canonText(ctxt) + "\x01" + k
	}
	if plural >= 0 {
		k += "\x02" + strconv.Itoa(plural)
	}
	return k
}

// POMessage is one entry of a .po file.
type POMessage struct {
	Context  string
	ID       string
	IDPlural string
	Str      []string // msgstr, or msgstr[0..n-1] for a plural message
	Fuzzy    bool
	Line     int // where the entry starts, for error messages
}

// ParsePO reads a gettext .po file: msgctxt, msgid, msgid_plural, msgstr and msgstr[N]
// with continuation lines, comments and the "#, fuzzy" flag. The header (msgid "") is
// returned as the first message like any other.
func ParsePO(r io.Reader) ([]POMessage, error) {
	var (
		msgs   []POMessage
		cur    *POMessage
		target *string
		fuzzy  bool
		lineNo int
	)
	flush := func() {
		if cur != nil {
			msgs = append(msgs, *cur)
			cur = nil
			target = nil
		}
	}
	start := func() {
		if cur == nil {
			cur = &POMessage{Line: lineNo, Fuzzy: fuzzy}
			fuzzy = false
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#,"):
			// Flags belong to the next entry.
			flush()
			if slices.Contains(strings.Split(strings.ReplaceAll(line[2:], " ", ""), ","), "fuzzy") {
				fuzzy = true
			}
			continue
		case strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, `"`):
			if target == nil {
				return nil, fmt.Errorf("line %d: a string continues no keyword", lineNo)
			}
			s, err := unquotePO(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
			*target += s
			continue
		}
		kw, rest, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("line %d: want KEYWORD \"STRING\"", lineNo)
		}
		s, err := unquotePO(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNo, err)
		}
		switch {
		case kw == "msgctxt":
			flush()
			start()
			cur.Context = s
			target = &cur.Context
		case kw == "msgid":
			if cur != nil && target != &cur.Context {
				flush()
			}
			start()
			cur.ID = s
			target = &cur.ID
		case kw == "msgid_plural":
			if cur == nil {
				return nil, fmt.Errorf("line %d: msgid_plural without msgid", lineNo)
			}
			cur.IDPlural = s
			target = &cur.IDPlural
		case kw == "msgstr" || strings.HasPrefix(kw, "msgstr["):
			if cur == nil {
				return nil, fmt.Errorf("line %d: msgstr without msgid", lineNo)
			}
			n := 0
			if kw != "msgstr" {
				n, err = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(kw, "msgstr["), "]"))
				if err != nil || n < 0 || n > 9 || !strings.HasSuffix(kw, "]") {
					return nil, fmt.Errorf("line %d: %s: want msgstr[0] to msgstr[9]", lineNo, kw)
				}
			}
			if n != len(cur.Str) {
				return nil, fmt.Errorf("line %d: %s out of order", lineNo, kw)
			}
			cur.Str = append(cur.Str, s)
			target = &cur.Str[n]
		default:
			return nil, fmt.Errorf("line %d: unknown keyword %q", lineNo, kw)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	for _, m := range msgs {
		if len(m.Str) == 0 {
			return nil, fmt.Errorf("line %d: msgid %q has no msgstr", m.Line, m.ID)
		}
	}
	return msgs, nil
}

// unquotePO decodes one "..." string with C escapes, as gettext writes them.
func unquotePO(s string) (string, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", fmt.Errorf("want a quoted string, got %q", s)
	}
	var b strings.Builder
	in := s[1 : len(s)-1]
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c == '"' {
			return "", fmt.Errorf("unescaped quote in %s", s)
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i == len(in) {
			return "", fmt.Errorf("string ends in a backslash: %s", s)
		}
		switch in[i] {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '"', '\\':
			b.WriteByte(in[i])
		default:
			return "", fmt.Errorf("unknown escape \\%c in %s", in[i], s)
		}
	}
	return b.String(), nil
}

// pluralForms is the expression of the header's Plural-Forms field, "" when there is none.
func pluralForms(header string) string {
	for _, l := range strings.Split(header, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Plural-Forms") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

type lmoEntry struct {
	key, val, off, length uint32
}

// CompileLMO turns a .po file into an .lmo. A message without a translation (empty
// msgstr, or one equal to its msgid) is left out: the runtime shows the msgid then.
// It fails on a file with nothing to translate, as po2lmo writes no file for one.
func CompileLMO(po []byte) ([]byte, error) {
	msgs, err := ParsePO(bytes.NewReader(po))
	if err != nil {
		return nil, err
	}
	var (
		data    bytes.Buffer
		entries []lmoEntry
		keys    = map[uint32]string{}
	)
	add := func(key uint32, val uint32, s string) {
		entries = append(entries, lmoEntry{key: key, val: val, off: uint32(data.Len()), length: uint32(len(s))})
		data.WriteString(s)
		for data.Len()%4 != 0 {
			data.WriteByte(0)
		}
	}
	translated := 0
	for _, m := range msgs {
		if m.ID == "" && m.Context == "" {
			if pf := pluralForms(m.Str[0]); pf != "" {
				add(0, 0, pf)
			}
			continue
		}
		if m.Fuzzy {
			continue
		}
		for i, s := range m.Str {
			plural := -1
			if m.IDPlural != "" {
				plural = i
			}
			k := lmoKey(m.Context, m.ID, plural)
			if s == "" || s == k {
				continue
			}
			h := sfhHash([]byte(k))
			if h == 0 {
				return nil, fmt.Errorf("line %d: msgid %q hashes to 0, which marks the plural rule", m.Line, m.ID)
			}
			if prev, ok := keys[h]; ok {
				if prev == k {
					return nil, fmt.Errorf("line %d: msgid %q given twice", m.Line, m.ID)
				}
				return nil, fmt.Errorf("line %d: msgid %q and %q have the same hash %08x: reword one", m.Line, m.ID, prev, h)
			}
			keys[h] = k
			add(h, uint32(len(m.Str)), s)
			translated++
		}
	}
	if translated == 0 {
		return nil, errors.New("no translated messages")
	}
	slices.SortFunc(entries, func(a, b lmoEntry) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	out := data.Bytes()
	index := uint32(len(out))
	for _, e := range entries {
		out = binary.BigEndian.AppendUint32(out, e.key)
		out = binary.BigEndian.AppendUint32(out, e.val)
		out = binary.BigEndian.AppendUint32(out, e.off)
		out = binary.BigEndian.AppendUint32(out, e.length)
	}
	return binary.BigEndian.AppendUint32(out, index), nil
}

// LMO is a decoded .lmo: the strings by key hash.
type LMO struct {
	Strings map[uint32]string
	index   []uint32 // key hashes in file order
}

// DecodeLMO reads an .lmo the way lmo_open and the runtime do, checking every bound.
func DecodeLMO(b []byte) (*LMO, error) {
	if len(b) < 4 || len(b)%4 != 0 {
		return nil, fmt.Errorf("lmo: %d bytes: not a multiple of 4 of at least 4", len(b))
	}
	idx := binary.BigEndian.Uint32(b[len(b)-4:])
	if uint64(idx) > uint64(len(b)-4) || (uint64(len(b)-4)-uint64(idx))%16 != 0 {
		return nil, fmt.Errorf("lmo: index offset %d does not fit %d bytes", idx, len(b))
	}
	l := &LMO{Strings: map[uint32]string{}}
	for p := int(idx); p < len(b)-4; p += 16 {
		key := binary.BigEndian.Uint32(b[p:])
		off := binary.BigEndian.Uint32(b[p+8:])
		n := binary.BigEndian.Uint32(b[p+12:])
		if uint64(off)+uint64(n) > uint64(idx) {
			return nil, fmt.Errorf("lmo: entry %08x: string at %d+%d outside the string area", key, off, n)
		}
		if len(l.index) > 0 && key <= l.index[len(l.index)-1] {
			return nil, fmt.Errorf("lmo: index not sorted by hash at %08x", key)
		}
		l.index = append(l.index, key)
		l.Strings[key] = string(b[off : off+n])
	}
	return l, nil
}

// Translate looks a message up as the runtime does; ok is false when the catalogue has none.
func (l *LMO) Translate(ctxt, id string, plural int) (string, bool) {
	s, ok := l.Strings[sfhHash([]byte(lmoKey(ctxt, id, plural)))]
	return s, ok
}

// PluralForms is the header's plural rule (entry 0), "" if none.
func (l *LMO) PluralForms() string { return l.Strings[0] }
