package openwrt

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/ubus"
)

// ProcdCall is one call an init script made on procd's `service` object.
type ProcdCall struct {
	Method string
	// Args as JSON, as `ubus call service METHOD` carried it, decoded into plain values
	// (objects map[string]any, arrays []any, numbers float64).
	Args map[string]any
}

// Procd stands where procd sits on the bus: it registers the object `service` on the real
// ubusd with the methods procd.sh calls (set, add, delete, signal, list, event, ...) and
// records every call instead of starting anything. `list` answers an empty table, as
// procd does for a service it does not run.
type Procd struct {
	conn *ubus.Conn

	mu    sync.Mutex
	calls []ProcdCall
}

// procdMethods are the methods procd's service object has (procd's service/service.c).
var procdMethods = []string{"set", "add", "list", "delete", "signal", "update_start",
	"update_complete", "event", "validate", "get_data", "state", "watchdog"}

// ServeProcd registers the `service` object on ubusd at sock until the test ends.
func ServeProcd(t testing.TB, sock string) *Procd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := ubus.Dial(ctx, sock)
	if err != nil {
		t.Fatalf("procd's side of the bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &Procd{conn: conn}
	var methods []ubus.Method
	for _, name := range procdMethods {
		methods = append(methods, ubus.Method{Name: name, Handler: func(_ context.Context, args ubus.Table) (ubus.Table, error) {
			raw, err := args.MarshalJSON()
			if err != nil {
				return nil, err
			}
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				return nil, err
			}
			p.mu.Lock()
			p.calls = append(p.calls, ProcdCall{Method: name, Args: m})
			p.mu.Unlock()
			if name == "list" {
				return ubus.Table{}, nil
			}
			return nil, nil
		}})
	}
	if _, err := conn.AddObject(ctx, "service", methods...); err != nil {
		t.Fatalf("register service on ubusd: %v", err)
	}
	return p
}

// Calls returns the calls so far and forgets them.
func (p *Procd) Calls() []ProcdCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls
	p.calls = nil
	return c
}

// String renders calls for a failure message.
func (c ProcdCall) String() string {
	b, _ := json.Marshal(c.Args)
	return fmt.Sprintf("%s %s", c.Method, b)
}

// Iface is one logical interface as netifd reports it in `network.interface dump`.
type Iface struct {
	Name   string         // "lan", "wan", "wan6"
	Device string         // its L3 device
	Addrs  []netip.Prefix // its addresses
}

// ServeNetifd answers, where netifd sits on the bus, the call fw4 makes to map its zones'
// networks to devices and addresses: `network.interface dump`, with the interfaces up.
func ServeNetifd(t testing.TB, sock string, ifaces ...Iface) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := ubus.Dial(ctx, sock)
	if err != nil {
		t.Fatalf("netifd's side of the bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	var list ubus.Array
	for _, ifc := range ifaces {
		var v4, v6 ubus.Array
		for _, p := range ifc.Addrs {
			a := ubus.Table{{Name: "address", Value: p.Addr().String()}, {Name: "mask", Value: int32(p.Bits())}}
			if p.Addr().Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
		list = append(list, ubus.Table{
			{Name: "interface", Value: ifc.Name}, {Name: "up", Value: true}, {Name: "pending", Value: false},
			{Name: "available", Value: true}, {Name: "proto", Value: "static"},
			{Name: "device", Value: ifc.Device}, {Name: "l3_device", Value: ifc.Device},
			{Name: "ipv4-address", Value: v4}, {Name: "ipv6-address", Value: v6},
			{Name: "data", Value: ubus.Table{}},
		})
	}
	dump := ubus.Table{{Name: "interface", Value: list}}
	if _, err := conn.AddObject(ctx, "network.interface", ubus.Method{Name: "dump",
		Handler: func(context.Context, ubus.Table) (ubus.Table, error) { return dump, nil }}); err != nil {
		t.Fatalf("register network.interface on ubusd: %v", err)
	}
}
