package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/tgtun/tgtun/daemon/ubus"
)

// sessionArg is the argument uhttpd's /ubus adds to every call it forwards (LuCI's JSON-RPC):
// the caller's rpcd session. Objects built on libubus never see it, as blobmsg_parse skips
// names their policy lacks; here it would be an unknown argument, and every call from LuCI
// would fail with INVALID_ARGUMENT.
const sessionArg = "ubus_rpc_session"

// UbusObject publishes the method table as the ubus object "tgtun", with each method's
// argument policy in its signature so `ubus -v list tgtun` describes it. The session that
// uhttpd adds to a call is dropped before the method's policy is checked.
func UbusObject(t *Table) ubus.Object {
	obj := ubus.Object{Name: "tgtun"}
	for _, m := range t.Methods() {
		name := m.Name
		var policy []ubus.Arg
		for _, arg := range slices.Sorted(maps.Keys(m.Args)) {
			policy = append(policy, ubus.Arg{Name: arg, Type: ubusType(m.Args[arg])})
		}
		obj.Methods = append(obj.Methods, ubus.Method{
			Name:   name,
			Policy: policy,
			Handler: func(ctx context.Context, args ubus.Table) (ubus.Table, error) {
				m := args.Map()
				delete(m, sessionArg)
				result, err := t.Call(ctx, name, m)
				if err != nil {
					return nil, &ubus.StatusError{Code: ubus.Status(CodeOf(err)), Msg: err.Error()}
				}
				return resultTable(result)
			},
		})
	}
	return obj
}

// resultTable turns a method result into a blobmsg table through its JSON form, so ubus
// and the CLI socket show the same field names.
func resultTable(result any) (ubus.Table, error) {
	raw, err := json.Marshal(result)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return ubus.TableFromJSON(raw)
}

func ubusType(t ArgType) ubus.Type {
	switch t {
	case ArgString:
		return ubus.TypeString
	case ArgBool:
		return ubus.TypeBool
	default:
		return ubus.TypeInt32
	}
}

// serveUbus keeps the object registered while the daemon runs. Where no ubusd exists
// (Debian, tests) the ubus package logs that once and keeps retrying quietly.
func (d *Daemon) serveUbus(ctx context.Context, t *Table) {
	srv := &ubus.Server{Path: d.opts.UbusSocket, Objects: []ubus.Object{UbusObject(t)}, Logger: d.log}
	if err := srv.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		d.log.Error("ubus", "err", err)
	}
}
