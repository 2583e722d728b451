package ubus_test

import (
	"bytes"
	"testing"

	"github.com/tgtun/tgtun/daemon/ubus"
)

// traceSeeds returns every message of both traces, and every blobmsg payload in them.
func traceSeeds(t testing.TB) (msgs, tables [][]byte) {
	for _, name := range []string{serverTrace, clientTrace} {
		for _, c := range readTrace(t, name) {
			for _, stream := range [][]byte{c.FromBroker, c.ToBroker} {
				ms, raws := splitMessages(t, stream)
				msgs = append(msgs, raws...)
				msgs = append(msgs, stream)
				for _, m := range ms {
					for _, a := range m.Attrs {
						if a.ID == ubus.AttrData || a.ID == ubus.AttrSignature {
							tables = append(tables, a.Data)
						}
					}
				}
			}
		}
	}
	return msgs, tables
}

// FuzzReadMessage feeds arbitrary streams to the message decoder: it must not panic, and
// whatever it accepts must encode to as many bytes and re-decode to the same encoding.
func FuzzReadMessage(f *testing.F) {
	msgs, _ := traceSeeds(f)
	for _, s := range msgs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		for r.Len() > 0 {
			before := r.Len()
			m, err := ubus.ReadMessage(r)
			if err != nil {
				return
			}
			enc, err := m.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded message does not encode: %v", err)
			}
			if len(enc) != before-r.Len() {
				t.Fatalf("re-encoded to %d bytes, read %d", len(enc), before-r.Len())
			}
			var again ubus.Message
			if err := again.UnmarshalBinary(enc); err != nil {
				t.Fatalf("re-encoding does not decode: %v", err)
			}
			enc2, _ := again.MarshalBinary()
			if !bytes.Equal(enc, enc2) {
				t.Fatalf("encoding not stable:\n%x\n%x", enc, enc2)
			}
			for _, a := range m.Attrs {
				if a.ID == ubus.AttrData {
					checkTableStable(t, a.Data)
				}
			}
		}
	})
}

// FuzzDecodeTable feeds arbitrary bytes to the blobmsg decoder, with the same demands.
func FuzzDecodeTable(f *testing.F) {
	_, tables := traceSeeds(f)
	for _, s := range tables {
		f.Add(s)
	}
	f.Add(unhex(f, "81 00 00 20 00 01 6b 00 83 00 00 0a 00 00 00 00 78 00 00 00 87 00 00 09 00 00 00 00 01 00 00 00"))
	f.Add(unhex(f, "88 00 00 10 00 01 6b 00 3f f8 00 00 00 00 00 00 86 00 00 0a 00 01 6b 00 12 34 00 00"))
	f.Fuzz(checkTableStable)
}

func checkTableStable(t *testing.T, b []byte) {
	tab, err := ubus.DecodeTable(b)
	if err != nil {
		return
	}
	enc, err := tab.Encode()
	if err != nil {
		t.Fatalf("decoded table does not encode: %v", err)
	}
	// Lengths may differ: names of array elements are not kept.
	back, err := ubus.DecodeTable(enc)
	if err != nil {
		t.Fatalf("re-encoding does not decode: %v", err)
	}
	enc2, err := back.Encode()
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding not stable (%v):\n%x\n%x", err, enc, enc2)
	}
}
