package ubustest_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/ubus"
	"github.com/tgtun/tgtun/daemon/ubus/ubustest"
)

const waitLimit = 30 * time.Second

func readTrace(t *testing.T, name string) []ubustest.TraceConn {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conns, err := ubustest.ReadTrace(f)
	if err != nil {
		t.Fatal(err)
	}
	return conns
}

// rawPeer is a connection to the broker that sends and expects exact bytes.
type rawPeer struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
	id uint32
}

func connect(t *testing.T, path string) *rawPeer {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitLimit))
	p := &rawPeer{t: t, nc: nc, r: bufio.NewReader(nc)}
	hello := p.read(1)
	if hello[1] != byte(ubus.MsgHello) || len(hello) != 12 {
		t.Fatalf("first message %x is not an empty HELLO", hello)
	}
	p.id = binary.BigEndian.Uint32(hello[4:])
	return p
}

// read returns the raw bytes of the next n messages.
func (p *rawPeer) read(n int) []byte {
	p.t.Helper()
	var out []byte
	for range n {
		m, err := ubus.ReadMessage(p.r)
		if err != nil {
			p.t.Fatalf("read: %v", err)
		}
		b, err := m.MarshalBinary()
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func (p *rawPeer) write(b []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

// ids maps the ids in the trace to those of this run.
type ids map[uint32]uint32

func (m ids) apply(b []byte) []byte {
	b = bytes.Clone(b)
	for from, to := range m {
		b = bytes.ReplaceAll(b, binary.BigEndian.AppendUint32(nil, from), binary.BigEndian.AppendUint32(nil, to))
	}
	return b
}

func u32(b []byte, off int) uint32 { return binary.BigEndian.Uint32(b[off:]) }

// TestBrokerFollowsTraces replays the peers' side of the real captures against the
// broker and wants ubusd's side back byte for byte, up to the random ids it assigns.
func TestBrokerFollowsTraces(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatalf("the traces were captured as root (USER=root GROUP=root in INVOKE); run this test as root")
	}
	srvTrace := readTrace(t, "server-register-invoke.trace")[0]
	cliTrace := readTrace(t, "client-call-list-error.trace")
	srvChunks := srvTrace.Chunks

	b, err := ubustest.Listen(filepath.Join(t.TempDir(), "ubus.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	// The object server registers "test" and a subscriber object.
	srv := connect(t, b.Path())
	srv.write(srvChunks[1].Data)
	reply := srv.read(2)
	m := ids{0x4b3a4780: u32(reply, 16), 0xd5b199bb: u32(reply, 24)}
	want := append(bytes.Clone(srvChunks[2].Data), srvChunks[3].Data...)
	if got := reply; !bytes.Equal(got, m.apply(want)) {
		t.Fatalf("ADD_OBJECT reply:\n got %x\nwant %x", got, m.apply(want))
	}
	srv.write(srvChunks[4].Data)
	reply = srv.read(2)
	m[0xbb344d1e] = u32(reply, 16)
	if !bytes.Equal(reply, m.apply(srvChunks[5].Data)) {
		t.Fatalf("second ADD_OBJECT reply:\n got %x\nwant %x", reply, m.apply(srvChunks[5].Data))
	}
	if got := b.Objects(); len(got) != 1 || got[0] != "test" {
		t.Fatalf("objects %v", got)
	}

	// `ubus call test hello`, `ubus -v list test`, `ubus call test nosuch`: each a new
	// client whose id stands in for the trace's, then the same exchange.
	callers := []struct {
		trace    ubustest.TraceConn
		clientID uint32
		srvIn    int // chunk of the server trace holding the forwarded INVOKE, or -1
	}{
		{cliTrace[0], 0xa4416a40, 6},
		{cliTrace[1], 0xd4a86a5b, -1},
		{cliTrace[2], 0x9c2ba590, 8},
	}
	for i, c := range callers {
		cli := connect(t, b.Path())
		m[c.clientID] = cli.id
		var fromBroker []byte
		for _, ch := range c.trace.Chunks {
			if ch.FromBroker {
				fromBroker = append(fromBroker, ch.Data...)
			}
		}
		fromBroker = fromBroker[12:] // the HELLO, read by connect
		for _, ch := range c.trace.Chunks {
			if ch.FromBroker {
				continue
			}
			cli.write(m.apply(ch.Data))
			var msg ubus.Message
			if err := msg.UnmarshalBinary(ch.Data); err != nil {
				t.Fatal(err)
			}
			if msg.Type == ubus.MsgInvoke {
				fwd := srv.read(1)
				if want := m.apply(srvChunks[c.srvIn].Data); !bytes.Equal(fwd, want) {
					t.Fatalf("caller %d: forwarded INVOKE:\n got %x\nwant %x", i, fwd, want)
				}
				srv.write(m.apply(srvChunks[c.srvIn+1].Data))
			}
		}
		got := cli.read(countMessages(t, fromBroker))
		if want := m.apply(fromBroker); !bytes.Equal(got, want) {
			t.Fatalf("caller %d: replies:\n got %x\nwant %x", i, got, want)
		}
	}
}

func countMessages(t *testing.T, stream []byte) int {
	r := bytes.NewReader(stream)
	n := 0
	for r.Len() > 0 {
		if _, err := ubus.ReadMessage(r); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

func TestBrokerRefusals(t *testing.T) {
	b, err := ubustest.Listen(filepath.Join(t.TempDir(), "ubus.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	p := connect(t, b.Path())
	tests := []struct {
		name string
		msg  ubus.Message
		want ubus.Status
	}{
		{"invoke unknown object", ubus.Message{Type: ubus.MsgInvoke, Attrs: []ubus.Attr{
			ubus.Uint32Attr(ubus.AttrObjID, 7), ubus.StringAttr(ubus.AttrMethod, "x")}}, ubus.StatusNotFound},
		{"invoke without method", ubus.Message{Type: ubus.MsgInvoke, Attrs: []ubus.Attr{
			ubus.Uint32Attr(ubus.AttrObjID, 7)}}, ubus.StatusInvalidArgument},
		{"lookup empty path", ubus.Message{Type: ubus.MsgLookup, Attrs: []ubus.Attr{
			ubus.StringAttr(ubus.AttrObjPath, "")}}, ubus.StatusInvalidArgument},
		{"add object with a bad signature", ubus.Message{Type: ubus.MsgAddObject, Attrs: []ubus.Attr{
			ubus.StringAttr(ubus.AttrObjPath, "o"), {ID: ubus.AttrSignature, Data: []byte{1, 2, 3}}}}, ubus.StatusInvalidArgument},
		{"remove unknown object", ubus.Message{Type: ubus.MsgRemoveObject, Attrs: []ubus.Attr{
			ubus.Uint32Attr(ubus.AttrObjID, 7)}}, ubus.StatusNotFound},
		{"subscribe", ubus.Message{Type: ubus.MsgSubscribe}, ubus.StatusInvalidCommand},
	}
	for i, tt := range tests {
		tt.msg.Seq = uint16(i + 1)
		raw, err := tt.msg.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		p.write(raw)
		var got ubus.Message
		if err := got.UnmarshalBinary(p.read(1)); err != nil {
			t.Fatal(err)
		}
		st, err := got.Status()
		if got.Type != ubus.MsgStatus || got.Seq != tt.msg.Seq || err != nil || st != tt.want {
			t.Errorf("%s: got %s seq %d status %s (%v), want STATUS %s", tt.name, got.Type, got.Seq, st, err, tt.want)
		}
	}

	// PING is answered with the same body as DATA, then STATUS 0.
	ping := ubus.Message{Type: ubus.MsgPing, Seq: 99, Attrs: []ubus.Attr{ubus.StringAttr(ubus.AttrMethod, "x")}}
	raw, _ := ping.MarshalBinary()
	p.write(raw)
	pong := ping
	pong.Type = ubus.MsgData
	status := ubus.Message{Type: ubus.MsgStatus, Seq: 99, Attrs: []ubus.Attr{ubus.Uint32Attr(ubus.AttrStatus, 0)}}
	want, _ := pong.MarshalBinary()
	want, _ = status.AppendBinary(want)
	if got := p.read(2); !bytes.Equal(got, want) {
		t.Errorf("PING:\n got %x\nwant %x", got, want)
	}

	// An object goes when its connection does.
	add := ubus.Message{Type: ubus.MsgAddObject, Seq: 100, Attrs: []ubus.Attr{ubus.StringAttr(ubus.AttrObjPath, "gone")}}
	raw, _ = add.MarshalBinary()
	p.write(raw)
	p.read(2)
	if got := b.Objects(); len(got) != 1 || got[0] != "gone" {
		t.Fatalf("objects %v after ADD_OBJECT", got)
	}
	p.nc.Close()
	deadline := time.Now().Add(waitLimit)
	for len(b.Objects()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("objects %v after the owner disconnected", b.Objects())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
