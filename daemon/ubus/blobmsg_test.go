package ubus_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/ubus"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBlobmsgEveryType(t *testing.T) {
	tests := []struct {
		name  string
		value any
		wire  string // one field named "k"
	}{
		{"string", "hi", "83 00 00 0b 00 01 6b 00 68 69 00 00"},
		{"empty string", "", "83 00 00 09 00 01 6b 00 00 00 00 00"},
		{"int32", int32(-2), "85 00 00 0c 00 01 6b 00 ff ff ff fe"},
		{"int64", int64(1) << 40, "84 00 00 10 00 01 6b 00 00 00 01 00 00 00 00 00"},
		{"int16", int16(0x1234), "86 00 00 0a 00 01 6b 00 12 34 00 00"},
		{"int8", int8(-5), "87 00 00 09 00 01 6b 00 fb 00 00 00"},
		{"bool true", true, "87 00 00 09 00 01 6b 00 01 00 00 00"},
		{"bool false", false, "87 00 00 09 00 01 6b 00 00 00 00 00"},
		{"double", 1.5, "88 00 00 10 00 01 6b 00 3f f8 00 00 00 00 00 00"},
		{"unspec", ubus.Unspec{}, "80 00 00 08 00 01 6b 00"},
		{"table", ubus.Table{{Name: "a", Value: int32(1)}}, "82 00 00 14 00 01 6b 00 85 00 00 0c 00 01 61 00 00 00 00 01"},
		{"empty table", ubus.Table{}, "82 00 00 08 00 01 6b 00"},
		{"array", ubus.Array{"x", true}, "81 00 00 20 00 01 6b 00 83 00 00 0a 00 00 00 00 78 00 00 00 87 00 00 09 00 00 00 00 01 00 00 00"},
		{"nested", ubus.Table{{Name: "a", Value: ubus.Array{ubus.Table{}}}},
			"82 00 00 18 00 01 6b 00 81 00 00 10 00 01 61 00 82 00 00 08 00 00 00 00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := ubus.Table{{Name: "k", Value: tt.value}}
			got, err := tab.Encode()
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, tt.wire)
			if !bytes.Equal(got, want) {
				t.Fatalf("encode:\n got %x\nwant %x", got, want)
			}
			back, err := ubus.DecodeTable(want)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tab) {
				t.Fatalf("decode: got %#v, want %#v", back, tab)
			}
		})
	}
}

func TestBlobmsgEncodeConveniences(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want any // what it decodes as
	}{
		{"small int", 7, int32(7)},
		{"big int", int64(1 << 40), int64(1 << 40)},
		{"nil", nil, ubus.Unspec{}},
		{"map, sorted", map[string]any{"b": "2", "a": 1.0}, ubus.Table{{Name: "a", Value: int32(1)}, {Name: "b", Value: "2"}}},
		{"slice", []any{int8(9)}, ubus.Array{int8(9)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ubus.Table{{Name: "v", Value: tt.in}}.Encode()
			if err != nil {
				t.Fatal(err)
			}
			back, err := ubus.DecodeTable(b)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := back.Get("v"); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func nest(depth int) ubus.Table {
	t := ubus.Table{}
	for range depth - 1 {
		t = ubus.Table{{Name: "n", Value: t}}
	}
	return t
}

func TestBlobmsgLimits(t *testing.T) {
	if _, err := nest(ubus.MaxDepth).Encode(); err != nil {
		t.Fatalf("depth %d refused: %v", ubus.MaxDepth, err)
	}
	if _, err := nest(ubus.MaxDepth + 1).Encode(); err == nil {
		t.Fatalf("depth %d encoded", ubus.MaxDepth+1)
	}
	// A hand-made table nested one level too deep must be refused by the decoder too.
	deep := []byte{}
	for range ubus.MaxDepth {
		hdr := []byte{0x82, 0, 0, 0, 0, 0, 0, 0}
		n := len(hdr) + len(deep)
		hdr[1], hdr[2], hdr[3] = byte(n>>16), byte(n>>8), byte(n)
		deep = append(hdr, deep...)
	}
	if _, err := ubus.DecodeTable(deep); err == nil {
		t.Fatalf("decoded %d levels of nesting", ubus.MaxDepth+1)
	}
	big := strings.Repeat("x", ubus.MaxMessageSize)
	if _, err := (ubus.Table{{Name: "s", Value: big}}).Encode(); err == nil {
		t.Fatal("encoded a string of MaxMessageSize")
	}
	self := ubus.Array{nil}
	self[0] = self
	if _, err := (ubus.Table{{Name: "loop", Value: self}}).Encode(); err == nil {
		t.Fatal("encoded a self-referencing array")
	}
	if _, err := (ubus.Table{{Name: "c", Value: make(chan int)}}).Encode(); err == nil {
		t.Fatal("encoded a channel")
	}
}

func TestBlobmsgMalformed(t *testing.T) {
	tests := []struct{ name, wire string }{
		{"truncated header", "85 00 00"},
		{"length below header", "85 00 00 02"},
		{"length past end", "85 00 00 10 00 01 6b 00"},
		{"unpadded last attribute", "87 00 00 09 00 01 6b 00 01"},
		{"not extended", "05 00 00 0c 00 01 6b 00 00 00 00 01"},
		{"name past end", "85 00 00 08 00 09 6b 00"},
		{"name not terminated", "85 00 00 0c 00 01 6b 01 00 00 00 01"},
		{"name header truncated", "85 00 00 05 00 00 00 00"},
		{"int32 of 2 bytes", "85 00 00 0a 00 01 6b 00 00 01 00 00"},
		{"int64 of 4 bytes", "84 00 00 0c 00 01 6b 00 00 00 00 01"},
		{"int16 of 1 byte", "86 00 00 09 00 01 6b 00 01 00 00 00"},
		{"int8 of 2 bytes", "87 00 00 0a 00 01 6b 00 01 01 00 00"},
		{"double of 4 bytes", "88 00 00 0c 00 01 6b 00 00 00 00 01"},
		{"string not terminated", "83 00 00 0a 00 01 6b 00 68 69 00 00"},
		{"empty string data", "83 00 00 08 00 01 6b 00"},
		{"unknown type", "89 00 00 08 00 01 6b 00"},
		{"bad child", "82 00 00 0c 00 01 6b 00 85 00 00 02"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := ubus.DecodeTable(unhex(t, tt.wire)); err == nil {
				t.Fatalf("decoded %#v", got)
			}
		})
	}
}

func TestMessageMalformed(t *testing.T) {
	tests := []struct{ name, wire string }{
		{"short", "00 00 00 00 00 00 00"},
		{"blob id set", "00 00 00 00 00 00 00 00 01 00 00 04"},
		{"blob below header", "00 00 00 00 00 00 00 00 00 00 00 03"},
		{"blob longer than message", "00 00 00 00 00 00 00 00 00 00 00 08"},
		{"blob over the limit", "00 00 00 00 00 00 00 00 00 ff ff ff"},
		{"extended attribute", "00 00 00 00 00 00 00 00 00 00 00 0c 83 00 00 08 00 00 00 00"},
		{"attribute past end", "00 00 00 00 00 00 00 00 00 00 00 08 03 00 00 08"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m ubus.Message
			if err := m.UnmarshalBinary(unhex(t, tt.wire)); err == nil {
				t.Fatalf("decoded %+v", m)
			}
			if _, err := ubus.ReadMessage(bytes.NewReader(unhex(t, tt.wire))); err == nil {
				t.Fatal("ReadMessage accepted it")
			}
		})
	}
	var m ubus.Message
	if err := m.UnmarshalBinary(unhex(t, "00 01 00 05 00 00 00 07 00 00 00 08 01 00 00 04")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Status(); err == nil {
		t.Fatal("a 0-byte STATUS attribute read as a status")
	}
	if _, err := m.String(ubus.AttrStatus); err == nil {
		t.Fatal("an unterminated attribute read as a string")
	}
	if _, err := m.Uint32(ubus.AttrObjID); err == nil {
		t.Fatal("a missing attribute read as a number")
	}
}

func TestTableJSON(t *testing.T) {
	in := `{"z":1,"a":[true,"s",2.5,null,{"n":-3000000000}],"m":{}}`
	tab, err := ubus.TableFromJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := ubus.Table{
		{Name: "z", Value: int32(1)},
		{Name: "a", Value: ubus.Array{true, "s", 2.5, ubus.Unspec{}, ubus.Table{{Name: "n", Value: int64(-3000000000)}}}},
		{Name: "m", Value: ubus.Table{}},
	}
	if !reflect.DeepEqual(tab, want) {
		t.Fatalf("TableFromJSON: got %#v", tab)
	}
	out, err := json.Marshal(tab)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Fatalf("MarshalJSON: got %s, want %s", out, in)
	}
	m := tab.Map()
	if !reflect.DeepEqual(m["a"], []any{true, "s", 2.5, nil, map[string]any{"n": int64(-3000000000)}}) || m["z"] != int32(1) {
		t.Fatalf("Map: got %#v", m)
	}
	for _, bad := range []string{`[1]`, `{"a":}`, `{} {}`, `{"a":1e999}`, strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)} {
		if _, err := ubus.TableFromJSON([]byte(bad)); err == nil {
			t.Errorf("TableFromJSON(%q) accepted", bad)
		}
	}
	type status struct {
		Running bool   `json:"running"`
		Name    string `json:"name"`
		Flows   int    `json:"flows"`
	}
	st, err := ubus.ToTable(status{Running: true, Name: "tgtun0", Flows: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(st); string(got) != `{"running":true,"name":"tgtun0","flows":3}` {
		t.Fatalf("ToTable(struct) = %s", got)
	}
	if _, err := ubus.ToTable([]int{1}); err == nil {
		t.Fatal("ToTable of a slice accepted")
	}
}

func TestTypeMatches(t *testing.T) {
	tests := []struct {
		typ  ubus.Type
		v    any
		want bool
	}{
		{ubus.TypeString, "x", true},
		{ubus.TypeString, int32(1), false},
		{ubus.TypeInt32, int32(1), true},
		{ubus.TypeInt32, int64(1), false},
		{ubus.TypeInt64, int32(1), true},
		{ubus.TypeInt64, "1", false},
		{ubus.TypeBool, true, true},
		{ubus.TypeBool, int8(3), true},
		{ubus.TypeBool, int32(1), false},
		{ubus.TypeTable, ubus.Table{}, true},
		{ubus.TypeArray, ubus.Table{}, false},
		{ubus.TypeDouble, math.Pi, true},
		{ubus.TypeUnspec, "anything", true},
	}
	for _, tt := range tests {
		if got := tt.typ.Matches(tt.v); got != tt.want {
			t.Errorf("%s.Matches(%#v) = %v, want %v", tt.typ, tt.v, got, tt.want)
		}
	}
}

func TestStatusNames(t *testing.T) {
	tests := []struct {
		s          ubus.Status
		name, text string
	}{
		{ubus.StatusOK, "OK", "Success"},
		{ubus.StatusInvalidArgument, "INVALID_ARGUMENT", "Invalid argument"},
		{ubus.StatusMethodNotFound, "METHOD_NOT_FOUND", "Method not found"},
		{ubus.StatusNotFound, "NOT_FOUND", "Not found"},
		{ubus.StatusUnknownError, "UNKNOWN_ERROR", "Unknown error"},
		{ubus.StatusConnectionFailed, "CONNECTION_FAILED", "Connection failed"},
		{ubus.Status(99), "STATUS_99", "Unknown status 99"},
	}
	for _, tt := range tests {
		if tt.s.String() != tt.name || tt.s.Text() != tt.text {
			t.Errorf("status %d: %q/%q, want %q/%q", int32(tt.s), tt.s.String(), tt.s.Text(), tt.name, tt.text)
		}
	}
}
