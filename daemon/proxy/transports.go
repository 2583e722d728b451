package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	utls "github.com/metacubex/utls"

	"github.com/tgtun/tgtun/daemon/proxy/transport"
)

// The seam between VLESS/Trojan and the transports below them (package
// transport): a transport gets TLS or REALITY connections from tlsDial, which
// runs the dialer's handshake offering the ALPN the transport asks for, and
// never sees uTLS itself.

// newTransport builds the transport spec names under t's TLS, or nil for none.
func newTransport(b *base, t *tlsClient) (transport.Transport, error) {
	s := b.spec
	tr, err := transport.New(transport.Options{
		Type: s.Transport, Path: s.Path, Host: s.Host, ServiceName: s.ServiceName, Mode: s.Mode,
		EarlyData: s.EarlyData, PaddingBytes: s.PaddingBytes, Extra: s.Extra,
		ServerName: t.sni, Reality: t.reality, ALPN: s.ALPN, Fingerprint: s.Fingerprint,
	}, b.tlsDial(t))
	if err != nil {
		return nil, err
	}
	if tr != nil {
		sec := "tls"
		if t.reality {
			sec = "reality"
		}
		b.prefix = fmt.Sprintf("%s+%s+%s %s", s.Type, s.Transport, sec, s.Address())
	}
	return tr, nil
}

// tlsDial is the transports' DialFunc: a connection to the server with t's
// handshake, offering alpn instead of the configured list when not nil, and the
// protocol the server chose.
func (b *base) tlsDial(t *tlsClient) transport.DialFunc {
	return func(ctx context.Context, alpn []string) (net.Conn, string, error) {
		tc := t
		if alpn != nil && !t.reality {
			c := *t
			c.alpn = alpn
			tc = &c
		}
		_, conn, err := b.dialTLS(ctx, tc)
		if err != nil {
			return nil, "", err
		}
		return conn, negotiatedProtocol(conn), nil
	}
}

// negotiatedProtocol is the ALPN protocol of a TLS conn, whichever TLS layer made it
// (uTLS's, or one with crypto/tls's ConnectionState); "" when none was chosen.
func negotiatedProtocol(c net.Conn) string {
	switch s := c.(type) {
	case interface{ ConnectionState() utls.ConnectionState }:
		return s.ConnectionState().NegotiatedProtocol
	case interface{ ConnectionState() tls.ConnectionState }:
		return s.ConnectionState().NegotiatedProtocol
	}
	return ""
}

// dialStream opens the protocol's stream through tr, with the dialer's prefix on
// its errors.
func (b *base) dialStream(ctx context.Context, tr transport.Transport) (net.Conn, error) {
	c, err := tr.Dial(ctx)
	if err != nil {
		if strings.HasPrefix(err.Error(), b.prefix+": ") { // from dialTLS
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", b.prefix, handshakeErr(ctx, err))
	}
	return c, nil
}
