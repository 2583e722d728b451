package control

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// Code is the outcome class of a method call. The values are ubus's UBUS_STATUS_* codes,
// so the same table answers on ubus and on the CLI socket with the same meaning.
type Code int

const (
	CodeOK              Code = 0
	CodeInvalidCommand  Code = 1
	CodeInvalidArgument Code = 2
	CodeMethodNotFound  Code = 3
	CodeNotFound        Code = 4
	CodeNoData          Code = 5
	CodePermission      Code = 6
	CodeTimeout         Code = 7
	CodeNotSupported    Code = 8
	CodeUnknown         Code = 9
)

var codeNames = map[Code]string{
	CodeOK: "OK", CodeInvalidCommand: "INVALID_COMMAND", CodeInvalidArgument: "INVALID_ARGUMENT",
	CodeMethodNotFound: "METHOD_NOT_FOUND", CodeNotFound: "NOT_FOUND", CodeNoData: "NO_DATA",
	CodePermission: "PERMISSION_DENIED", CodeTimeout: "TIMEOUT", CodeNotSupported: "NOT_SUPPORTED",
	CodeUnknown: "UNKNOWN_ERROR",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("STATUS_%d", int(c))
}

// ParseCode is the inverse of Code.String; unknown names are CodeUnknown.
func ParseCode(s string) Code {
	for c, n := range codeNames {
		if n == s {
			return c
		}
	}
	return CodeUnknown
}

// Error is a method failure with its code and a message for people.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// CodeOf tells the code an error carries; plain errors are CodeUnknown.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeUnknown
}

// ArgType is what a method argument must be. The names follow blobmsg types so the same
// policy describes the method on ubus.
type ArgType int

const (
	ArgString ArgType = iota
	ArgBool
	ArgInt
)

func (t ArgType) String() string {
	switch t {
	case ArgString:
		return "string"
	case ArgBool:
		return "boolean"
	default:
		return "integer"
	}
}

// Method is one entry of the method table.
type Method struct {
	Name   string
	Args   map[string]ArgType
	Handle func(ctx context.Context, args map[string]any) (any, error)
}

// Table is the one method table served on ubus and on the CLI socket.
type Table struct {
	methods map[string]Method
}

// NewTable builds a table from methods.
func NewTable(methods ...Method) *Table {
	t := &Table{methods: make(map[string]Method, len(methods))}
	for _, m := range methods {
		t.methods[m.Name] = m
	}
	return t
}

// Methods lists the table in name order.
func (t *Table) Methods() []Method {
	out := make([]Method, 0, len(t.methods))
	for _, m := range t.methods {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Call checks the arguments against the method's policy and runs it.
func (t *Table) Call(ctx context.Context, name string, args map[string]any) (any, error) {
	m, ok := t.methods[name]
	if !ok {
		return nil, &Error{Code: CodeMethodNotFound, Msg: fmt.Sprintf("method %q not found", name)}
	}
	for k, v := range args {
		want, ok := m.Args[k]
		if !ok {
			return nil, &Error{Code: CodeInvalidArgument, Msg: fmt.Sprintf("%s: unknown argument %q", name, k)}
		}
		if !argIs(v, want) {
			return nil, &Error{Code: CodeInvalidArgument, Msg: fmt.Sprintf("%s: argument %q must be a %s", name, k, want)}
		}
	}
	return m.Handle(ctx, args)
}

func argIs(v any, t ArgType) bool {
	switch t {
	case ArgString:
		_, ok := v.(string)
		return ok
	case ArgBool:
		_, ok := v.(bool)
		return ok
	default:
		switch n := v.(type) {
		case float64: // JSON numbers
			return n == float64(int64(n))
		case int, int8, int16, int32, int64:
			return true
		}
		return false
	}
}
