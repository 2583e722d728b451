package control

import (
	"context"
	"testing"

	"github.com/tgtun/tgtun/daemon/ubus"
)

// Calls through uhttpd's /ubus (LuCI) carry the caller's session as ubus_rpc_session: the
// object must answer them as it answers `ubus call`, and still refuse other unknown names.
func TestUbusObjectIgnoresSession(t *testing.T) {
	obj := UbusObject(testTable())
	handler := func(name string) ubus.Handler {
		for _, m := range obj.Methods {
			if m.Name == name {
				return m.Handler
			}
		}
		t.Fatalf("no method %s", name)
		return nil
	}
	session := ubus.Field{Name: "ubus_rpc_session", Value: "0123456789abcdef0123456789abcdef"}
	tests := []struct {
		name   string
		method string
		args   ubus.Table
		status ubus.Status
	}{
		{"session alone", "status", ubus.Table{session}, ubus.StatusOK},
		{"session and arguments", "echo", ubus.Table{session, {Name: "msg", Value: "hi"}}, ubus.StatusOK},
		{"another unknown argument", "status", ubus.Table{session, {Name: "bogus", Value: int32(1)}}, ubus.StatusInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := handler(tt.method)(context.Background(), tt.args)
			if got := ubus.StatusOf(err); got != tt.status {
				t.Fatalf("status = %v (%v), want %v", got, err, tt.status)
			}
			if tt.method == "echo" && err == nil {
				if _, ok := res.Get("ubus_rpc_session"); ok {
					t.Errorf("the session reached the method: %v", res)
				}
			}
		})
	}
}
