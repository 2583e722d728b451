package ubus_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/ubus"
	"github.com/tgtun/tgtun/daemon/ubus/ubustest"
)

// The captures of the real ubusd (see ../../../shared/ubus/README.md), copied here.
const (
	serverTrace = "server-register-invoke.trace"
	clientTrace = "client-call-list-error.trace"
)

func readTrace(t testing.TB, name string) []ubustest.TraceConn {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("open trace: %v", err)
	}
	defer f.Close()
	conns, err := ubustest.ReadTrace(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return conns
}

// splitMessages decodes a stream into messages, keeping each one's raw bytes.
func splitMessages(t testing.TB, stream []byte) (msgs []*ubus.Message, raws [][]byte) {
	t.Helper()
	r := bytes.NewReader(stream)
	for r.Len() > 0 {
		start := len(stream) - r.Len()
		m, err := ubus.ReadMessage(r)
		if err != nil {
			t.Fatalf("message at offset %d: %v", start, err)
		}
		msgs = append(msgs, m)
		raws = append(raws, stream[start:len(stream)-r.Len()])
	}
	return msgs, raws
}

// describe renders a message for comparison with what README.md says it is.
func describe(t testing.TB, m *ubus.Message) string {
	t.Helper()
	parts := []string{fmt.Sprintf("%s seq=%d peer=%08x", m.Type, m.Seq, m.Peer)}
	for _, a := range m.Attrs {
		var v string
		switch a.ID {
		case ubus.AttrStatus:
			s, err := m.Status()
			if err != nil {
				t.Fatal(err)
			}
			v = s.String()
		case ubus.AttrObjID, ubus.AttrObjType:
			n, err := m.Uint32(a.ID)
			if err != nil {
				t.Fatal(err)
			}
			v = fmt.Sprintf("%08x", n)
		case ubus.AttrObjPath, ubus.AttrMethod, ubus.AttrUser, ubus.AttrGroup:
			s, err := m.String(a.ID)
			if err != nil {
				t.Fatal(err)
			}
			v = s
		case ubus.AttrData, ubus.AttrSignature:
			tab, err := m.Table(a.ID)
			if err != nil {
				t.Fatal(err)
			}
			j, err := tab.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			v = string(j)
		default:
			v = hex.EncodeToString(a.Data)
		}
		parts = append(parts, fmt.Sprintf("%s=%s", a.ID, v))
	}
	return strings.Join(parts, " ")
}

const testSig = `{"hello":{"id":5,"msg":3},"watch":{"id":5,"counter":5},"count":{"to":5,"string":3}}`

func TestTracesDecodeAndReencode(t *testing.T) {
	tests := []struct {
		trace string
		// Per connection: what ubusd sent, what the peer sent.
		want [][2][]string
	}{
		{serverTrace, [][2][]string{{
			{
				"HELLO seq=0 peer=cf9954f1",
				"DATA seq=1 peer=00000000 OBJID=4b3a4780 OBJTYPE=d5b199bb",
				"STATUS seq=1 peer=00000000 STATUS=OK",
				"DATA seq=2 peer=00000000 OBJID=bb344d1e",
				"STATUS seq=2 peer=00000000 STATUS=OK",
				`INVOKE seq=2 peer=a4416a40 OBJID=4b3a4780 METHOD=hello USER=root GROUP=root DATA={"id":1,"msg":"hi"}`,
				"INVOKE seq=2 peer=9c2ba590 OBJID=4b3a4780 METHOD=nosuch USER=root GROUP=root DATA={}",
			}, {
				"ADD_OBJECT seq=1 peer=00000000 OBJPATH=test SIGNATURE=" + testSig,
				"ADD_OBJECT seq=2 peer=00000000",
				`DATA seq=2 peer=a4416a40 OBJID=4b3a4780 DATA={"message":"test received a message: hi"}`,
				"STATUS seq=2 peer=a4416a40 STATUS=OK OBJID=4b3a4780",
				"STATUS seq=2 peer=9c2ba590 STATUS=METHOD_NOT_FOUND OBJID=4b3a4780",
			},
		}}},
		{clientTrace, [][2][]string{
			{{
				"HELLO seq=0 peer=a4416a40",
				"DATA seq=1 peer=00000000 OBJPATH=test OBJID=4b3a4780 OBJTYPE=d5b199bb SIGNATURE=" + testSig,
				"STATUS seq=1 peer=00000000 STATUS=OK",
				`DATA seq=2 peer=4b3a4780 OBJID=4b3a4780 DATA={"message":"test received a message: hi"}`,
				"STATUS seq=2 peer=4b3a4780 STATUS=OK OBJID=4b3a4780",
			}, {
				"LOOKUP seq=1 peer=00000000 OBJPATH=test",
				`INVOKE seq=2 peer=4b3a4780 OBJID=4b3a4780 METHOD=hello DATA={"id":1,"msg":"hi"}`,
			}},
			{{
				"HELLO seq=0 peer=d4a86a5b",
				"DATA seq=1 peer=00000000 OBJPATH=test OBJID=4b3a4780 OBJTYPE=d5b199bb SIGNATURE=" + testSig,
				"STATUS seq=1 peer=00000000 STATUS=OK",
			}, {
				"LOOKUP seq=1 peer=00000000 OBJPATH=test",
			}},
			{{
				"HELLO seq=0 peer=9c2ba590",
				"DATA seq=1 peer=00000000 OBJPATH=test OBJID=4b3a4780 OBJTYPE=d5b199bb SIGNATURE=" + testSig,
				"STATUS seq=1 peer=00000000 STATUS=OK",
				"STATUS seq=2 peer=4b3a4780 STATUS=METHOD_NOT_FOUND OBJID=4b3a4780",
			}, {
				"LOOKUP seq=1 peer=00000000 OBJPATH=test",
				"INVOKE seq=2 peer=4b3a4780 OBJID=4b3a4780 METHOD=nosuch DATA={}",
			}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.trace, func(t *testing.T) {
			conns := readTrace(t, tt.trace)
			if len(conns) != len(tt.want) {
				t.Fatalf("%d connections, want %d", len(conns), len(tt.want))
			}
			for ci, c := range conns {
				for di, stream := range [][]byte{c.FromBroker, c.ToBroker} {
					msgs, raws := splitMessages(t, stream)
					var got []string
					for i, m := range msgs {
						got = append(got, describe(t, m))
						checkReencode(t, m, raws[i])
					}
					if want := tt.want[ci][di]; strings.Join(got, "\n") != strings.Join(want, "\n") {
						t.Errorf("connection %d direction %d:\ngot\n%s\nwant\n%s", ci, di,
							strings.Join(got, "\n"), strings.Join(want, "\n"))
					}
				}
			}
		})
	}
}

// checkReencode encodes m again, and every blobmsg table in it, and wants the same bytes.
func checkReencode(t *testing.T, m *ubus.Message, raw []byte) {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatalf("re-encode %s: %v", m.Type, err)
	}
	if !bytes.Equal(b, raw) {
		t.Errorf("re-encoded %s differs:\n got %x\nwant %x", m.Type, b, raw)
	}
	for _, a := range m.Attrs {
		if a.ID != ubus.AttrData && a.ID != ubus.AttrSignature {
			continue
		}
		tab, err := ubus.DecodeTable(a.Data)
		if err != nil {
			t.Fatalf("%s: %v", a.ID, err)
		}
		enc, err := tab.Encode()
		if err != nil {
			t.Fatalf("%s: encode: %v", a.ID, err)
		}
		if !bytes.Equal(enc, a.Data) {
			t.Errorf("re-encoded %s table differs:\n got %x\nwant %x", a.ID, enc, a.Data)
		}
	}
}

// traceMessages returns one direction's messages of a trace connection, raw.
func traceRaw(t *testing.T, trace string, conn int, fromBroker bool) [][]byte {
	t.Helper()
	c := readTrace(t, trace)[conn]
	stream := c.ToBroker
	if fromBroker {
		stream = c.FromBroker
	}
	_, raws := splitMessages(t, stream)
	return raws
}

func marshalAll(t *testing.T, msgs ...*ubus.Message) []byte {
	t.Helper()
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.AppendBinary(out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// testMethods is the example server's object, as the trace registers it.
func testMethods() []ubus.Method {
	return []ubus.Method{
		{Name: "hello", Policy: []ubus.Arg{{"id", ubus.TypeInt32}, {"msg", ubus.TypeString}}},
		{Name: "watch", Policy: []ubus.Arg{{"id", ubus.TypeInt32}, {"counter", ubus.TypeInt32}}},
		{Name: "count", Policy: []ubus.Arg{{"to", ubus.TypeInt32}, {"string", ubus.TypeString}}},
	}
}

func TestEncoderMatchesTrace(t *testing.T) {
	const objID = 0x4b3a4780
	srvOut := traceRaw(t, serverTrace, 0, false)
	srvIn := traceRaw(t, serverTrace, 0, true)
	cli1 := traceRaw(t, clientTrace, 0, false)
	cli3 := traceRaw(t, clientTrace, 2, false)
	srvWrites := readTrace(t, serverTrace)[0].Chunks

	hiArgs, err := ubus.TableFromJSON([]byte(`{"id":1,"msg":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	build := func(m *ubus.Message, err error, seq uint16) *ubus.Message {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		m.Seq = seq
		return m
	}
	inv := func(raw []byte) *ubus.Message {
		var m ubus.Message
		if err := m.UnmarshalBinary(raw); err != nil {
			t.Fatal(err)
		}
		return &m
	}
	reply := func(inv *ubus.Message, data ubus.Table, st ubus.Status) []byte {
		msgs, err := ubus.ReplyMessages(inv, objID, data, st)
		if err != nil {
			t.Fatal(err)
		}
		return marshalAll(t, msgs...)
	}
	addObj, addErr := ubus.AddObjectMessage("test", testMethods())
	invHello, helloErr := ubus.InvokeMessage(objID, "hello", hiArgs)
	invNosuch, nosuchErr := ubus.InvokeMessage(objID, "nosuch", ubus.Table{})

	tests := []struct {
		name      string
		got, want []byte
	}{
		{"ADD_OBJECT with signature", marshalAll(t, build(addObj, addErr, 1)), srvOut[0]},
		{"LOOKUP", marshalAll(t, build(ubus.LookupMessage("test"), nil, 1)), cli1[0]},
		{"INVOKE hello", marshalAll(t, build(invHello, helloErr, 2)), cli1[1]},
		{"INVOKE nosuch", marshalAll(t, build(invNosuch, nosuchErr, 2)), cli3[1]},
		// The server's answers were each one write: DATA+STATUS, and STATUS alone.
		{"DATA+STATUS reply", reply(inv(srvIn[5]), ubus.Table{{Name: "message", Value: "test received a message: hi"}}, ubus.StatusOK), srvWrites[7].Data},
		{"STATUS 3 reply", reply(inv(srvIn[6]), nil, ubus.StatusMethodNotFound), srvWrites[9].Data},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s:\n got %x\nwant %x", tt.name, tt.got, tt.want)
		}
	}
	if srvWrites[7].FromBroker || srvWrites[9].FromBroker {
		t.Fatal("trace chunks 7 and 9 should be the server's replies")
	}

	var lookup ubus.Message
	if err := lookup.UnmarshalBinary(traceRaw(t, clientTrace, 1, true)[1]); err != nil {
		t.Fatal(err)
	}
	sig, err := lookup.Table(ubus.AttrSignature)
	if err != nil {
		t.Fatal(err)
	}
	methods, err := ubus.ParseSignature(sig)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(methods), fmt.Sprint(signaturesOf(testMethods())); got != want {
		t.Errorf("signature from `ubus -v list test`: got %s, want %s", got, want)
	}
}

func signaturesOf(methods []ubus.Method) []ubus.Signature {
	out := make([]ubus.Signature, len(methods))
	for i, m := range methods {
		out[i] = ubus.Signature{Name: m.Name, Args: m.Policy}
	}
	return out
}
