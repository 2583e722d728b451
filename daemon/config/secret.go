package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
)

// Proxy holds credentials, and a Proxy ends up in logs, status output and error
// messages through %v of whatever contains it. These methods make every generic
// rendering show only whether a secret is set.

const redacted = "<redacted>"

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// String describes the proxy without its credentials.
func (p Proxy) String() string {
	auth := ""
	if p.Username != "" || p.Password != "" || p.UUID != "" {
		auth = ", credentials " + redacted
	}
	return fmt.Sprintf("proxy '%s' (%s %s, priority %d%s)", p.Name, p.Type,
		hostPort(p.Server, p.Port), p.Priority, auth)
}

func hostPort(host string, port uint16) string {
	return fmt.Sprintf("%s:%d", bracketIPv6(host), port)
}

func bracketIPv6(host string) string {
	for i := 0; i < len(host); i++ {
		if host[i] == ':' {
			return "[" + host + "]"
		}
	}
	return host
}

// GoString is %#v without the credentials.
func (p Proxy) GoString() string {
	return fmt.Sprintf("config.Proxy{Name:%s, Type:%s, Server:%s, Port:%d, Username:%s, Password:%s, Cipher:%s, UDP:%t, Priority:%d, Line:%d}",
		strconv.Quote(p.Name), strconv.Quote(p.Type), strconv.Quote(p.Server), p.Port,
		strconv.Quote(redact(p.Username)), strconv.Quote(redact(p.Password)), strconv.Quote(p.Cipher),
		p.UDP, p.Priority, p.Line)
}

// Format handles every verb, so that neither %v, %+v, %#v, %s, %q nor %x can reach the
// credentials (fmt would otherwise print the fields of the struct one by one).
func (p Proxy) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		fmt.Fprint(f, p.GoString())
	case verb == 'v' && f.Flag('+'):
		fmt.Fprintf(f, "{Name:%s Type:%s Server:%s Port:%d Username:%s Password:%s Cipher:%s UDP:%t Priority:%d Line:%d}",
			p.Name, p.Type, p.Server, p.Port, redact(p.Username), redact(p.Password), p.Cipher, p.UDP, p.Priority, p.Line)
	case verb == 'v':
		fmt.Fprintf(f, "{%s %s %s %d %s %s %s %t %d %d}",
			p.Name, p.Type, p.Server, p.Port, redact(p.Username), redact(p.Password), p.Cipher, p.UDP, p.Priority, p.Line)
	case verb == 'q':
		fmt.Fprint(f, strconv.Quote(p.String()))
	default:
		fmt.Fprint(f, p.String())
	}
}

// LogValue is what slog records for a Proxy.
func (p Proxy) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", p.Name),
		slog.String("type", p.Type),
		slog.String("server", p.Server),
		slog.Int("port", int(p.Port)),
		slog.Bool("auth", p.Username != "" || p.Password != "" || p.UUID != ""),
		slog.String("cipher", p.Cipher),
		slog.Bool("udp", p.UDP),
		slog.Int("priority", p.Priority),
	)
}

// MarshalJSON keeps the credentials out of JSON (slog's JSON handler, status output).
func (p Proxy) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		Server   string `json:"server"`
		Port     uint16 `json:"port"`
		Username string `json:"username,omitempty"`
		Password string `json:"password,omitempty"`
		Cipher   string `json:"cipher,omitempty"`
		UDP      bool   `json:"udp"`
		Priority int    `json:"priority"`
		Line     int    `json:"line"`
		UUID     string `json:"uuid,omitempty"`
		Security string `json:"security,omitempty"`
		Flow     string `json:"flow,omitempty"`
		SNI      string `json:"sni,omitempty"`
	}{p.Name, p.Type, p.Server, p.Port, redact(p.Username), redact(p.Password), p.Cipher, p.UDP, p.Priority, p.Line,
		redact(p.UUID), p.Security, p.Flow, p.SNI})
}
