// Package ubus speaks OpenWrt's ubus wire protocol natively: blob/blobmsg encoding, the
// message framing, a client (lookup, invoke) and an object server that keeps its objects
// registered with ubusd across ubusd restarts.
//
// On the wire a message is an 8-byte header (version, type, sequence number, peer id,
// big-endian) followed by one blob attribute whose payload holds UBUS_ATTR_* attributes.
// Method arguments, replies and signatures are blobmsg tables.
package ubus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MsgType is the type byte of the message header.
type MsgType uint8

// Message types, numbered as in ubusmsg.h.
const (
	MsgHello MsgType = iota
	MsgStatus
	MsgData
	MsgPing
	MsgLookup
	MsgInvoke
	MsgAddObject
	MsgRemoveObject
	MsgSubscribe
	MsgUnsubscribe
	MsgNotify
	MsgMonitor
)

var msgTypeNames = [...]string{"HELLO", "STATUS", "DATA", "PING", "LOOKUP", "INVOKE",
	"ADD_OBJECT", "REMOVE_OBJECT", "SUBSCRIBE", "UNSUBSCRIBE", "NOTIFY", "MONITOR"}

func (t MsgType) String() string {
	if int(t) < len(msgTypeNames) {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MSG_%d", uint8(t))
}

// AttrID names a UBUS_ATTR_* attribute of a message.
type AttrID uint8

// Message attributes, numbered as in ubusmsg.h.
const (
	AttrUnspec AttrID = iota
	AttrStatus
	AttrObjPath
	AttrObjID
	AttrMethod
	AttrObjType
	AttrSignature
	AttrData
	AttrTarget
	AttrActive
	AttrNoReply
	AttrSubscribers
	AttrUser
	AttrGroup
)

var attrNames = [...]string{"UNSPEC", "STATUS", "OBJPATH", "OBJID", "METHOD", "OBJTYPE",
	"SIGNATURE", "DATA", "TARGET", "ACTIVE", "NO_REPLY", "SUBSCRIBERS", "USER", "GROUP"}

func (a AttrID) String() string {
	if int(a) < len(attrNames) {
		return attrNames[a]
	}
	return fmt.Sprintf("ATTR_%d", uint8(a))
}

// HeaderSize is the fixed message header before the blob.
const HeaderSize = 8

// Attr is one message attribute with its raw payload (padding excluded).
type Attr struct {
	ID   AttrID
	Data []byte
}

// Message is one ubus message. Attributes keep their order so a decoded message encodes
// back to the same bytes.
type Message struct {
	Version uint8
	Type    MsgType
	Seq     uint16
	Peer    uint32
	Attrs   []Attr
}

// Get returns the first attribute with the id.
func (m *Message) Get(id AttrID) (Attr, bool) {
	for _, a := range m.Attrs {
		if a.ID == id {
			return a, true
		}
	}
	return Attr{}, false
}

// Uint32 returns the value of a 32-bit attribute (OBJID, OBJTYPE, STATUS...).
func (m *Message) Uint32(id AttrID) (uint32, error) {
	a, ok := m.Get(id)
	if !ok {
		return 0, fmt.Errorf("%s message without %s", m.Type, id)
	}
	if len(a.Data) != 4 {
		return 0, fmt.Errorf("%s attribute of %d bytes, want 4", id, len(a.Data))
	}
	return binary.BigEndian.Uint32(a.Data), nil
}

// String returns the value of a string attribute (OBJPATH, METHOD, USER...).
func (m *Message) String(id AttrID) (string, error) {
	a, ok := m.Get(id)
	if !ok {
		return "", fmt.Errorf("%s message without %s", m.Type, id)
	}
	if len(a.Data) == 0 || a.Data[len(a.Data)-1] != 0 {
		return "", fmt.Errorf("%s attribute not NUL-terminated", id)
	}
	return string(a.Data[:len(a.Data)-1]), nil
}

// Table decodes a nested blobmsg attribute (DATA, SIGNATURE); absent means empty.
func (m *Message) Table(id AttrID) (Table, error) {
	a, ok := m.Get(id)
	if !ok {
		return Table{}, nil
	}
	t, err := DecodeTable(a.Data)
	if err != nil {
		return nil, fmt.Errorf("%s attribute: %w", id, err)
	}
	return t, nil
}

// Status returns the STATUS attribute as a Status.
func (m *Message) Status() (Status, error) {
	v, err := m.Uint32(AttrStatus)
	return Status(int32(v)), err
}

// StringAttr builds a string attribute (NUL-terminated on the wire).
func StringAttr(id AttrID, s string) Attr {
	return Attr{ID: id, Data: append([]byte(s), 0)}
}

// Uint32Attr builds a 32-bit attribute.
func Uint32Attr(id AttrID, v uint32) Attr {
	return Attr{ID: id, Data: binary.BigEndian.AppendUint32(nil, v)}
}

// TableAttr builds a nested attribute holding a blobmsg table (DATA, SIGNATURE).
func TableAttr(id AttrID, t Table) (Attr, error) {
	data, err := t.Encode()
	if err != nil {
		return Attr{}, fmt.Errorf("%s attribute: %w", id, err)
	}
	return Attr{ID: id, Data: data}, nil
}

// Size is the number of bytes the message takes on the wire.
func (m *Message) Size() int {
	n := HeaderSize + blobHdrLen
	for _, a := range m.Attrs {
		n += align4(blobHdrLen + len(a.Data))
	}
	return n
}

// AppendBinary appends the wire form of the message to b.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	size := m.Size()
	if size > MaxMessageSize {
		return nil, fmt.Errorf("%s message of %d bytes: %w", m.Type, size, errTooLarge)
	}
	b = append(b, m.Version, byte(m.Type))
	b = binary.BigEndian.AppendUint16(b, m.Seq)
	b = binary.BigEndian.AppendUint32(b, m.Peer)
	b = binary.BigEndian.AppendUint32(b, uint32(size-HeaderSize))
	for _, a := range m.Attrs {
		if a.ID > blobIDMask {
			return nil, fmt.Errorf("attribute id %d out of range", a.ID)
		}
		n := blobHdrLen + len(a.Data)
		b = binary.BigEndian.AppendUint32(b, uint32(a.ID)<<blobIDShift|uint32(n))
		b = append(b, a.Data...)
		b = append(b, make([]byte, align4(n)-n)...)
	}
	return b, nil
}

// MarshalBinary returns the wire form of the message.
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, m.Size()))
}

// UnmarshalBinary decodes exactly one message from b.
func (m *Message) UnmarshalBinary(b []byte) error {
	if len(b) < HeaderSize+blobHdrLen {
		return fmt.Errorf("message of %d bytes shorter than its header", len(b))
	}
	n, err := blobLen(b[HeaderSize:])
	if err != nil {
		return err
	}
	if HeaderSize+n != len(b) {
		return fmt.Errorf("message blob says %d bytes, have %d", n, len(b)-HeaderSize)
	}
	msg := Message{
		Version: b[0],
		Type:    MsgType(b[1]),
		Seq:     binary.BigEndian.Uint16(b[2:]),
		Peer:    binary.BigEndian.Uint32(b[4:]),
	}
	err = walkAttrs(b[HeaderSize+blobHdrLen:], func(word uint32, payload []byte) error {
		if word&blobExtended != 0 {
			return errors.New("extended blob attribute at message level")
		}
		msg.Attrs = append(msg.Attrs, Attr{
			ID:   AttrID(word >> blobIDShift & blobIDMask),
			Data: append([]byte{}, payload...),
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s message: %w", msg.Type, err)
	}
	*m = msg
	return nil
}

// blobLen checks the message's outer blob header and returns its length.
func blobLen(hdr []byte) (int, error) {
	word := binary.BigEndian.Uint32(hdr)
	if word&^blobLenMask != 0 {
		return 0, fmt.Errorf("message blob header %#08x has id bits set", word)
	}
	n := int(word & blobLenMask)
	if n < blobHdrLen {
		return 0, fmt.Errorf("message blob length %d below header size", n)
	}
	if HeaderSize+n > MaxMessageSize {
		return 0, fmt.Errorf("message of %d bytes: %w", HeaderSize+n, errTooLarge)
	}
	return n, nil
}

// ReadMessage reads one message from a stream.
func ReadMessage(r io.Reader) (*Message, error) {
	var hdr [HeaderSize + blobHdrLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n, err := blobLen(hdr[HeaderSize:])
	if err != nil {
		return nil, err
	}
	buf := make([]byte, HeaderSize+n)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[len(hdr):]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	m := new(Message)
	if err := m.UnmarshalBinary(buf); err != nil {
		return nil, err
	}
	return m, nil
}
