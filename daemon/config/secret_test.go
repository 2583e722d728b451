package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const (
	secretUser = "Us3rSecretXQ"
	secretPass = "Pa55SecretZW"
)

// assertNoSecret fails when s holds a secret, even in part.
func assertNoSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{secretUser, secretPass, "SecretXQ", "SecretZW"} {
		if strings.Contains(s, secret) {
			t.Errorf("%s leaks a secret: %s", what, s)
		}
	}
}

func TestSecretsNeverFormatted(t *testing.T) {
	in := "config main 'main'\n\toption enabled '1'\n" +
		"config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\toption username '" + secretUser + "'\n\toption password '" + secretPass + "'\n" +
		"config proxy 'b'\n\toption type 'shadowsocks'\n\toption server 'h'\n\toption port '2'\n\toption cipher 'aes-256-gcm'\n\toption password '" + secretPass + "'\n"
	cfg, warns, errs := parse(t, in)
	expect(t, errs, warns, "", "")
	if cfg.Proxies[0].Password != secretPass || cfg.Proxies[0].Username != secretUser {
		t.Fatal("the values themselves must stay usable")
	}
	p := cfg.Proxies[0]
	values := map[string]any{"Proxy": p, "*Proxy": &p, "Config": *cfg, "*Config": cfg, "[]Proxy": cfg.Proxies}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			out := fmt.Sprintf(verb, v)
			assertNoSecret(t, name+" "+verb, out)
			if !strings.Contains(out, "a") {
				t.Errorf("%s %s printed nothing useful: %q", name, verb, out)
			}
		}
		assertNoSecret(t, name+" Sprint", fmt.Sprint(v))
		assertNoSecret(t, name+" Sprintln", fmt.Sprintln(v))
	}
	if s := fmt.Sprintf("%+v", p); !strings.Contains(s, "Username:<redacted> Password:<redacted>") || !strings.Contains(s, "Server:h") {
		t.Errorf("%%+v should show which secrets are set: %s", s)
	}
	if s := fmt.Sprintf("%#v", p); !strings.Contains(s, `Password:"<redacted>"`) {
		t.Errorf("%%#v: %s", s)
	}
	if s := p.String(); s != "proxy 'a' (socks5 h:1, priority 10, credentials <redacted>)" {
		t.Errorf("String() = %q", s)
	}

	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(h(&buf))
		log.Info("loaded", "config", cfg, "proxy", p, "proxies", cfg.Proxies, "ptr", &p)
		log.Info("loaded", slog.Any("config", *cfg))
		assertNoSecret(t, "slog", buf.String())
		if !strings.Contains(buf.String(), "priority") && !strings.Contains(buf.String(), "Priority") {
			t.Errorf("slog output lacks the proxy: %s", buf.String())
		}
	}

	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "json", string(data))
	if !strings.Contains(string(data), `"password":"\u003credacted\u003e"`) {
		t.Errorf("json: %s", data)
	}
}

func TestSecretsNeverInErrorsOrWarnings(t *testing.T) {
	long := strings.Repeat(secretPass, 30) // over 255 bytes
	tests := []struct{ name, in string }{
		{"password too long", "config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\toption username 'u'\n\toption password '" + long + "'\n"},
		{"username too long", "config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\toption username '" + strings.Repeat(secretUser, 30) + "'\n\toption password 'p'\n"},
		{"password with control character", "config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\toption username 'u'\n\toption password \"" + secretPass + "\x01\"\n"},
		{"password without username", "config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\toption password '" + secretPass + "'\n"},
		{"username without password", "config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\toption username '" + secretUser + "'\n"},
		{"http username with colon", "config proxy 'a'\n\toption type 'http'\n\toption server 'h'\n\toption port '1'\n\toption username '" + secretUser + ":x'\n\toption password '" + secretPass + "'\n"},
		{"password as list", "config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\tlist password '" + secretPass + "'\n\tlist username '" + secretUser + "'\n"},
		{"password repeated", "config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\toption username 'u'\n\toption password '" + secretPass + "'\n\toption password '" + secretPass + "'\n"},
		{"misspelt password option", "config proxy 'a'\n\toption server 'h'\n\toption port '1'\n\toption pasword '" + secretPass + "'\n"},
		{"shadowsocks 2022 bad key", "config proxy 'a'\n\toption type 'shadowsocks'\n\toption server 'h'\n\toption port '1'\n\toption cipher '2022-blake3-aes-128-gcm'\n\toption password '" + secretPass + "'\n\toption username '" + secretUser + "'\n"},
		{"unterminated quote", "config proxy 'a'\n\toption password '" + secretPass + "\n"},
		{"unterminated double quote", "config proxy 'a'\n\toption password \"" + secretPass + "\n"},
		{"secret on a line of its own", "config proxy 'a'\n" + secretPass + "\n"},
		{"secret before any section", "option password '" + secretPass + "'\n"},
		{"too many arguments", "config proxy 'a'\n\toption password '" + secretPass + "' '" + secretUser + "'\n"},
		{"secret with NUL", "config proxy 'a'\n\toption password '" + secretPass + "\x00'\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, warns, err := Parse("f", strings.NewReader(tt.in))
			if err == nil && len(warns) == 0 {
				t.Fatal("expected an error or a warning")
			}
			if err != nil {
				assertNoSecret(t, "error", err.Error())
				assertNoSecret(t, "error %+v", fmt.Sprintf("%+v %#v", err, err))
			}
			for _, w := range warns {
				assertNoSecret(t, "warning", w.String())
			}
			var buf bytes.Buffer
			slog.New(slog.NewJSONHandler(&buf, nil)).Error("config", "err", err, "warnings", warns)
			assertNoSecret(t, "slog", buf.String())
		})
	}
}
