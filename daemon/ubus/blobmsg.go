package ubus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Limits applied to everything read from and written to the bus. ubusd itself refuses
// messages over 1 MiB, so nothing legitimate is lost.
const (
	// MaxMessageSize bounds a whole message: the 8-byte header plus its blob.
	MaxMessageSize = 1 << 20
	// MaxDepth bounds the nesting of blobmsg tables and arrays.
	MaxDepth = 32
)

// Type is a blobmsg type code, as it appears in the attribute header and as the value
// of an argument in a method signature.
type Type uint8

// Blobmsg types. TypeBool is TypeInt8 on the wire (as in libubox); there is no separate
// code, so a policy of either accepts both Go representations.
const (
	TypeUnspec Type = iota
	TypeArray
	TypeTable
	TypeString
	TypeInt64
	TypeInt32
	TypeInt16
	TypeInt8
	TypeDouble

	TypeBool = TypeInt8
)

var typeNames = [...]string{"unspec", "array", "table", "string", "int64", "int32", "int16", "bool", "double"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type%d", uint8(t))
}

// Field is one named member of a table.
type Field struct {
	Name  string
	Value any
}

// Table is a blobmsg table. It is ordered because ubus peers see the order (and the
// encoding must reproduce received bytes exactly).
//
// Values are, after decoding: Table, Array, string, int64, int32, int16, bool (an int8 of
// 0 or 1), int8 (any other int8), float64 (double) and Unspec. Encoding also accepts nil
// (unspec), int (int32 when it fits, else int64), map[string]any (keys sorted) and []any.
type Table []Field

// Array is a blobmsg array. The names its elements carry on the wire are ignored.
type Array []any

// Unspec is the payload of a blobmsg UNSPEC attribute; JSON null decodes to an empty one.
type Unspec []byte

// Get returns the value of the first field called name.
func (t Table) Get(name string) (any, bool) {
	for _, f := range t {
		if f.Name == name {
			return f.Value, true
		}
	}
	return nil, false
}

var errTruncated = errors.New("truncated blob attribute")

func align4(n int) int { return (n + 3) &^ 3 }

const (
	blobExtended = 0x80000000
	blobIDShift  = 24
	blobIDMask   = 0x7f
	blobLenMask  = 0x00ffffff
	blobHdrLen   = 4
)

// walkAttrs splits b into blob attributes. Every attribute, padding included, must lie
// inside b: a container's length always covers its children's padding.
func walkAttrs(b []byte, fn func(word uint32, payload []byte) error) error {
	for len(b) > 0 {
		if len(b) < blobHdrLen {
			return errTruncated
		}
		word := binary.BigEndian.Uint32(b)
		n := int(word & blobLenMask)
		if n < blobHdrLen {
			return fmt.Errorf("blob attribute length %d below header size", n)
		}
		if align4(n) > len(b) {
			return fmt.Errorf("blob attribute length %d exceeds the %d bytes left", n, len(b))
		}
		if err := fn(word, b[blobHdrLen:n]); err != nil {
			return err
		}
		b = b[align4(n):]
	}
	return nil
}

// DecodeTable decodes a sequence of blobmsg attributes (the payload of a table, or of
// UBUS_ATTR_DATA) into a Table.
func DecodeTable(b []byte) (Table, error) {
	return decodeTable(b, 1)
}

func decodeTable(b []byte, depth int) (Table, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("blobmsg nested deeper than %d", MaxDepth)
	}
	t := Table{}
	err := walkAttrs(b, func(word uint32, payload []byte) error {
		name, v, err := decodeField(word, payload, depth)
		if err != nil {
			return err
		}
		t = append(t, Field{Name: name, Value: v})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func decodeArray(b []byte, depth int) (Array, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("blobmsg nested deeper than %d", MaxDepth)
	}
	a := Array{}
	err := walkAttrs(b, func(word uint32, payload []byte) error {
		_, v, err := decodeField(word, payload, depth)
		if err != nil {
			return err
		}
		a = append(a, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// decodeField decodes one blobmsg attribute: name header, then a value of its type.
func decodeField(word uint32, payload []byte, depth int) (string, any, error) {
	if word&blobExtended == 0 {
		return "", nil, errors.New("blob attribute is not a blobmsg attribute (extended bit unset)")
	}
	if len(payload) < 2 {
		return "", nil, errors.New("blobmsg name header truncated")
	}
	nameLen := int(binary.BigEndian.Uint16(payload))
	hdrLen := align4(2 + nameLen + 1)
	if hdrLen > len(payload) {
		return "", nil, fmt.Errorf("blobmsg name of %d bytes exceeds its attribute", nameLen)
	}
	if payload[2+nameLen] != 0 {
		return "", nil, errors.New("blobmsg name not NUL-terminated")
	}
	name := string(payload[2 : 2+nameLen])
	data := payload[hdrLen:]
	typ := Type(word >> blobIDShift & blobIDMask)
	v, err := decodeValue(typ, data, depth)
	if err != nil {
		return "", nil, fmt.Errorf("blobmsg field %q: %w", name, err)
	}
	return name, v, nil
}

func decodeValue(typ Type, data []byte, depth int) (any, error) {
	fixed := func(n int) error {
		if len(data) != n {
			return fmt.Errorf("%s of %d bytes, want %d", typ, len(data), n)
		}
		return nil
	}
	switch typ {
	case TypeUnspec:
		return Unspec(append([]byte{}, data...)), nil
	case TypeArray:
		return decodeArray(data, depth+1)
	case TypeTable:
		return decodeTable(data, depth+1)
	case TypeString:
		if len(data) == 0 || data[len(data)-1] != 0 {
			return nil, errors.New("string not NUL-terminated")
		}
		return string(data[:len(data)-1]), nil
	case TypeInt64:
		if err := fixed(8); err != nil {
			return nil, err
		}
		return int64(binary.BigEndian.Uint64(data)), nil
	case TypeInt32:
		if err := fixed(4); err != nil {
			return nil, err
		}
		return int32(binary.BigEndian.Uint32(data)), nil
	case TypeInt16:
		if err := fixed(2); err != nil {
			return nil, err
		}
		return int16(binary.BigEndian.Uint16(data)), nil
	case TypeInt8:
		if err := fixed(1); err != nil {
			return nil, err
		}
		switch data[0] {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
		return int8(data[0]), nil
	case TypeDouble:
		if err := fixed(8); err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(data)), nil
	}
	return nil, fmt.Errorf("unknown blobmsg type %d", uint8(typ))
}

// Encode returns the blobmsg encoding of t's fields, back to back: the payload of a table
// or of UBUS_ATTR_DATA.
func (t Table) Encode() ([]byte, error) {
	e := encoder{}
	if err := e.fields(t, 1); err != nil {
		return nil, err
	}
	return e.buf, nil
}

type encoder struct{ buf []byte }

func (e *encoder) fields(t Table, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("blobmsg nested deeper than %d", MaxDepth)
	}
	for _, f := range t {
		if err := e.field(f.Name, f.Value, depth); err != nil {
			return fmt.Errorf("blobmsg field %q: %w", f.Name, err)
		}
	}
	return nil
}

func (e *encoder) elements(a []any, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("blobmsg nested deeper than %d", MaxDepth)
	}
	for i, v := range a {
		if err := e.field("", v, depth); err != nil {
			return fmt.Errorf("array element %d: %w", i, err)
		}
	}
	return nil
}

// field appends one attribute: header word, name header, value, then padding. The header
// word is patched once the value's length is known.
func (e *encoder) field(name string, v any, depth int) error {
	if len(name) > math.MaxUint16 {
		return errors.New("name longer than 65535 bytes")
	}
	start := len(e.buf)
	hdrLen := align4(2 + len(name) + 1)
	if start+blobHdrLen+hdrLen > MaxMessageSize {
		return errTooLarge
	}
	e.buf = append(e.buf, 0, 0, 0, 0)
	e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(len(name)))
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, make([]byte, hdrLen-2-len(name))...)
	typ, err := e.value(v, depth)
	if err != nil {
		return err
	}
	n := len(e.buf) - start
	if n > blobLenMask || start+align4(n) > MaxMessageSize {
		return errTooLarge
	}
	binary.BigEndian.PutUint32(e.buf[start:], blobExtended|uint32(typ)<<blobIDShift|uint32(n))
	e.buf = append(e.buf, make([]byte, align4(n)-n)...)
	return nil
}

var errTooLarge = fmt.Errorf("encoding exceeds %d bytes", MaxMessageSize)

func (e *encoder) value(v any, depth int) (Type, error) {
	switch v := v.(type) {
	case nil:
		return TypeUnspec, nil
	case Unspec:
		if len(e.buf)+len(v) > MaxMessageSize {
			return 0, errTooLarge
		}
		e.buf = append(e.buf, v...)
		return TypeUnspec, nil
	case Table:
		return TypeTable, e.fields(v, depth+1)
	case map[string]any:
		t, err := tableFromMap(v, depth+1)
		if err != nil {
			return 0, err
		}
		return TypeTable, e.fields(t, depth+1)
	case Array:
		return TypeArray, e.elements(v, depth+1)
	case []any:
		return TypeArray, e.elements(v, depth+1)
	case string:
		if len(e.buf)+len(v)+1 > MaxMessageSize {
			return 0, errTooLarge
		}
		e.buf = append(e.buf, v...)
		e.buf = append(e.buf, 0)
		return TypeString, nil
	case int64:
		e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(v))
		return TypeInt64, nil
	case int32:
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(v))
		return TypeInt32, nil
	case int16:
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(v))
		return TypeInt16, nil
	case int8:
		e.buf = append(e.buf, byte(v))
		return TypeInt8, nil
	case bool:
		b := byte(0)
		if v {
			b = 1
		}
		e.buf = append(e.buf, b)
		return TypeBool, nil
	case int:
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			return e.value(int32(v), depth)
		}
		return e.value(int64(v), depth)
	case float64:
		e.buf = binary.BigEndian.AppendUint64(e.buf, math.Float64bits(v))
		return TypeDouble, nil
	}
	return 0, fmt.Errorf("cannot encode %T as blobmsg", v)
}

// TypeOf tells the blobmsg type a decoded Go value has on the wire.
func TypeOf(v any) (Type, bool) {
	switch v.(type) {
	case nil, Unspec:
		return TypeUnspec, true
	case Table, map[string]any:
		return TypeTable, true
	case Array, []any:
		return TypeArray, true
	case string:
		return TypeString, true
	case int64:
		return TypeInt64, true
	case int32:
		return TypeInt32, true
	case int16:
		return TypeInt16, true
	case int8, bool:
		return TypeInt8, true
	case float64:
		return TypeDouble, true
	}
	return 0, false
}

// Matches reports whether v is acceptable for an argument of type t. TypeUnspec accepts
// anything; TypeInt64 accepts every integer width (like libubox's BLOBMSG_CAST_INT64),
// since JSON numbers arrive as int32 when they fit.
func (t Type) Matches(v any) bool {
	if t == TypeUnspec {
		return true
	}
	if t == TypeInt64 {
		switch v.(type) {
		case int16, int32, int64:
			return true
		}
		return false
	}
	got, ok := TypeOf(v)
	return ok && got == t
}
