package control

import (
	"reflect"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/proxy"
)

// TestSpecIDCoversEverySetting: proxySpec carries every option of a proxy section
// into proxy.Spec, and specID changes with every one that makes another dialer. A
// reload or a subscription refresh keeps a pool member of the same name and ID with
// its old dialer (Pool.SetMembers): a setting missing from the ID (the transport's
// path, say) would change in the file and not on the wire.
func TestSpecIDCoversEverySetting(t *testing.T) {
	base := config.Proxy{Name: "p", Type: config.TypeVLESS, Server: "198.51.100.1", Port: 443, UUID: "u"}
	id := specID(base)
	specType := reflect.TypeOf(proxy.Spec{})
	pt := reflect.TypeOf(base)
	for i := range pt.NumField() {
		f := pt.Field(i)
		p := base
		v := reflect.ValueOf(&p).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Uint16:
			v.SetUint(v.Uint() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Slice:
			v.Set(reflect.ValueOf([]string{"x"}))
		default:
			t.Fatalf("config.Proxy.%s: kind %s, which this test does not vary", f.Name, v.Kind())
		}
		sf, ok := specType.FieldByName(f.Name)
		if !ok {
			t.Errorf("proxy.Spec has no field %s of config.Proxy", f.Name)
			continue
		}
		if got := reflect.ValueOf(proxySpec(p)).FieldByIndex(sf.Index); !reflect.DeepEqual(got.Interface(), v.Interface()) {
			t.Errorf("proxySpec drops config.Proxy.%s", f.Name)
		}
		switch f.Name {
		case "Name", "Priority", "Line": // the pool matches names and updates priorities itself
			if specID(p) != id {
				t.Errorf("specID changes with %s", f.Name)
			}
		default:
			if specID(p) == id {
				t.Errorf("specID ignores %s: a change of it alone keeps the member's old dialer", f.Name)
			}
		}
	}
}
