package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// SOCKS5 address types (RFC 1928 section 5), also Shadowsocks' address format.
const (
	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4
)

// socksAddr is an address in SOCKS5 format: an IP or, from servers, a
// domain name.
type socksAddr struct {
	IP   netip.AddrPort // valid unless Host is set
	Host string
	Port uint16
}

func (a socksAddr) String() string {
	if a.Host != "" {
		return sanitize(a.Host, 64) + ":" + strconv.Itoa(int(a.Port))
	}
	return a.IP.String()
}

var errShortAddr = errors.New("address truncated")

// appendSocksAddr appends ATYP, address and port for ap.
func appendSocksAddr(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		b = append(b, atypIPv4)
	} else {
		b = append(b, atypIPv6)
	}
	b = append(b, ip.AsSlice()...)
	return append(b, byte(ap.Port()>>8), byte(ap.Port()))
}

// socksAddrLen returns the length of the address starting at b[0] (ATYP),
// or how many bytes are needed to know it (need > len(b)) when b is too
// short to tell.
func socksAddrLen(b []byte) (int, error) {
	if len(b) < 1 {
		return 1, nil
	}
	switch b[0] {
	case atypIPv4:
		return 1 + 4 + 2, nil
	case atypIPv6:
		return 1 + 16 + 2, nil
	case atypDomain:
		if len(b) < 2 {
			return 2, nil
		}
		return 1 + 1 + int(b[1]) + 2, nil
	default:
		return 0, fmt.Errorf("unknown address type %d", b[0])
	}
}

// parseSocksAddr parses the address at the start of b and returns it with
// its length in bytes.
func parseSocksAddr(b []byte) (socksAddr, int, error) {
	n, err := socksAddrLen(b)
	if err != nil {
		return socksAddr{}, 0, err
	}
	if n > len(b) {
		return socksAddr{}, 0, errShortAddr
	}
	port := uint16(b[n-2])<<8 | uint16(b[n-1])
	switch b[0] {
	case atypIPv4:
		return socksAddr{IP: netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[1:5])), port), Port: port}, n, nil
	case atypIPv6:
		return socksAddr{IP: netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[1:17])), port), Port: port}, n, nil
	default:
		host := string(b[2 : n-2])
		if host == "" {
			return socksAddr{}, 0, errors.New("empty domain name")
		}
		return socksAddr{Host: host, Port: port}, n, nil
	}
}
