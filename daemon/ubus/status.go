package ubus

import (
	"errors"
	"fmt"
)

// Status is a UBUS_STATUS_* code, the value of the STATUS attribute.
type Status int32

// Status codes, numbered as in ubusmsg.h (the last three exist in newer ubus only).
const (
	StatusOK Status = iota
	StatusInvalidCommand
	StatusInvalidArgument
	StatusMethodNotFound
	StatusNotFound
	StatusNoData
	StatusPermissionDenied
	StatusTimeout
	StatusNotSupported
	StatusUnknownError
	StatusConnectionFailed
	StatusNoMemory
	StatusParseError
	StatusSystemError
)

var statusNames = [...]struct{ name, text string }{
	{"OK", "Success"},
	{"INVALID_COMMAND", "Invalid command"},
	{"INVALID_ARGUMENT", "Invalid argument"},
	{"METHOD_NOT_FOUND", "Method not found"},
	{"NOT_FOUND", "Not found"},
	{"NO_DATA", "No response"},
	{"PERMISSION_DENIED", "Permission denied"},
	{"TIMEOUT", "Request timed out"},
	{"NOT_SUPPORTED", "Operation not supported"},
	{"UNKNOWN_ERROR", "Unknown error"},
	{"CONNECTION_FAILED", "Connection failed"},
	{"NO_MEMORY", "Out of memory"},
	{"PARSE_ERROR", "Parsing message data failed"},
	{"SYSTEM_ERROR", "System error"},
}

// String is the code's name without prefix, e.g. "METHOD_NOT_FOUND".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s].name
	}
	return fmt.Sprintf("STATUS_%d", int32(s))
}

// Text is the phrase the ubus CLI prints for the code, e.g. "Method not found".
func (s Status) Text() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s].text
	}
	return fmt.Sprintf("Unknown status %d", int32(s))
}

// StatusError is a failed call with its ubus status. Handlers return it to choose the
// status sent to the caller; Invoke returns it when the callee answered with a non-zero
// status (Msg then holds the "error" member of its reply, if it sent one).
type StatusError struct {
	Code Status
	Msg  string
}

func (e *StatusError) Error() string {
	if e.Msg == "" {
		return e.Code.Text()
	}
	return e.Msg
}

// StatusOf tells the status an error carries: StatusOK for nil, the code of a
// *StatusError in the chain, StatusUnknownError otherwise.
func StatusOf(err error) Status {
	if err == nil {
		return StatusOK
	}
	var se *StatusError
	if errors.As(err, &se) && se.Code != StatusOK {
		return se.Code
	}
	return StatusUnknownError
}
