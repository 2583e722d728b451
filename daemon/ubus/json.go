package ubus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
)

// MarshalJSON writes the table as a JSON object in field order, as `ubus call` prints it.
func (t Table) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range t {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(f.Name)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(f.Value)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.Name, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// MarshalJSON writes null: blobmsg_json maps JSON null to an empty UNSPEC and back.
func (Unspec) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// Map converts the table to plain Go values: tables become map[string]any, arrays []any,
// Unspec nil; numbers, strings and bools keep their decoded types. A repeated name keeps
// its last value.
func (t Table) Map() map[string]any {
	m := make(map[string]any, len(t))
	for _, f := range t {
		m[f.Name] = plain(f.Value)
	}
	return m
}

func plain(v any) any {
	switch v := v.(type) {
	case Table:
		return v.Map()
	case Array:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = plain(e)
		}
		return out
	case Unspec:
		return nil
	}
	return v
}

// FromMap builds a table from JSON-ish Go values (what encoding/json produces into `any`),
// with keys in sorted order. Integral numbers become int32 when they fit, else int64, like
// blobmsg_json; other numbers become doubles; nil becomes Unspec.
func FromMap(m map[string]any) (Table, error) {
	return tableFromMap(m, 1)
}

func tableFromMap(m map[string]any, depth int) (Table, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("value nested deeper than %d", MaxDepth)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t := make(Table, 0, len(keys))
	for _, k := range keys {
		v, err := fromJSONish(m[k], depth)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", k, err)
		}
		t = append(t, Field{Name: k, Value: v})
	}
	return t, nil
}

func fromJSONish(v any, depth int) (any, error) {
	switch v := v.(type) {
	case nil:
		return Unspec{}, nil
	case map[string]any:
		return tableFromMap(v, depth+1)
	case []any:
		if depth+1 > MaxDepth {
			return nil, fmt.Errorf("value nested deeper than %d", MaxDepth)
		}
		a := make(Array, len(v))
		for i, e := range v {
			c, err := fromJSONish(e, depth+1)
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			a[i] = c
		}
		return a, nil
	case float64:
		if v == math.Trunc(v) && v >= math.MinInt64 && v < math.MaxInt64 {
			return intValue(int64(v)), nil
		}
		return v, nil
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return intValue(i), nil
		}
		f, err := v.Float64()
		if err != nil {
			return nil, fmt.Errorf("number %q: %w", v, err)
		}
		return f, nil
	case int:
		return intValue(int64(v)), nil
	case Table, Array, Unspec, string, bool, int8, int16, int32, int64:
		return v, nil
	}
	return nil, fmt.Errorf("cannot represent %T in blobmsg", v)
}

func intValue(i int64) any {
	if i >= math.MinInt32 && i <= math.MaxInt32 {
		return int32(i)
	}
	return i
}

// ToTable converts a handler's result to a table: a Table as is, a map via FromMap, and
// anything else (a struct, say) through its JSON encoding, keeping the JSON field order.
func ToTable(v any) (Table, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case Table:
		return v, nil
	case map[string]any:
		return FromMap(v)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T as JSON: %w", v, err)
	}
	return TableFromJSON(data)
}

// TableFromJSON parses a JSON object into a table, keeping the order of its members.
func TableFromJSON(data []byte) (Table, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	tok, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	if tok != json.Delim('{') {
		return nil, errors.New("parse JSON: not an object")
	}
	t, err := jsonObject(d, 1)
	if err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("parse JSON: data after the object")
	}
	return t, nil
}

// jsonObject reads members after an opening brace up to and including the closing one.
func jsonObject(d *json.Decoder, depth int) (Table, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("object nested deeper than %d", MaxDepth)
	}
	t := Table{}
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		if tok == json.Delim('}') {
			return t, nil
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected %v", tok)
		}
		v, err := jsonValue(d, depth)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", name, err)
		}
		t = append(t, Field{Name: name, Value: v})
	}
}

func jsonValue(d *json.Decoder, depth int) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		return jsonObject(d, depth+1)
	case json.Delim('['):
		if depth+1 > MaxDepth {
			return nil, fmt.Errorf("array nested deeper than %d", MaxDepth)
		}
		a := Array{}
		for d.More() {
			v, err := jsonValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		if _, err := d.Token(); err != nil {
			return nil, err
		}
		return a, nil
	}
	return fromJSONish(tok, depth)
}
