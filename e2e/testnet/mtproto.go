package testnet

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"time"
)

// StartMTProto serves, on addr in namespace ns, what tgtun's health probe asks of a
// Telegram data centre (health_check 'mtproto'): MTProto's intermediate transport
// (the tag 0xeeeeeeee, then packets with a 4-byte little-endian length) carrying an
// unencrypted req_pq_multi, answered with resPQ echoing its nonce, as laid out in
// core.telegram.org/mtproto/samples-auth_key. The real data centres cannot be in the
// test network; anything else sent here is met with a close, as a data centre does.
func (n *Net) StartMTProto(ns string, addr netip.AddrPort) error {
	l, err := n.Listen(ns, "tcp", addr.String())
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveMTProto(c)
		}
	}()
	return nil
}

func serveMTProto(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var tag [4]byte
	if _, err := io.ReadFull(c, tag[:]); err != nil || binary.LittleEndian.Uint32(tag[:]) != 0xeeeeeeee {
		return
	}
	for {
		var l [4]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(l[:])
		if n < 20 || n > 1024 {
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		// auth_key_id 0, msg_id, length 20, req_pq_multi#be7e8ef1, nonce.
		if n != 40 || binary.LittleEndian.Uint64(msg) != 0 || binary.LittleEndian.Uint32(msg[20:]) != 0xbe7e8ef1 {
			_, _ = c.Write([]byte{4, 0, 0, 0, 0x6c, 0xfe, 0xff, 0xff}) // transport error -404
			return
		}
		var serverNonce [16]byte
		_, _ = rand.Read(serverNonce[:])
		body := binary.LittleEndian.AppendUint32(nil, 0x05162463) // resPQ
		body = append(body, msg[24:40]...)
		body = append(body, serverNonce[:]...)
		body = append(body, 8, 0x17, 0xed, 0x48, 0x94, 0x1a, 0x08, 0xf9, 0x81, 0, 0, 0) // pq
		body = binary.LittleEndian.AppendUint32(body, 0x1cb5c415)                       // vector
		body = binary.LittleEndian.AppendUint32(body, 1)
		body = binary.LittleEndian.AppendUint64(body, 0xc3b42b026ce86b21)
		out := binary.LittleEndian.AppendUint64(nil, 0)
		out = binary.LittleEndian.AppendUint64(out, uint64(time.Now().Unix())<<32|1)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
		out = append(out, body...)
		if _, err := c.Write(append(binary.LittleEndian.AppendUint32(nil, uint32(len(out))), out...)); err != nil {
			return
		}
	}
}
