package proxy

import (
	"errors"
	"net"
)

// visionConn is the XTLS Vision flow on a VLESS connection.
type visionConn struct {
	net.Conn
	header []byte
}

func newVisionConn(tc net.Conn, raw net.Conn, id [16]byte) (*visionConn, error) {
	return nil, errors.New("flow xtls-rprx-vision is not implemented yet")
}
