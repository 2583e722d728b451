package control

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testTable() *Table {
	return NewTable(
		Method{Name: "status", Handle: func(context.Context, map[string]any) (any, error) {
			return map[string]any{"running": true}, nil
		}},
		Method{Name: "echo", Args: map[string]ArgType{"msg": ArgString, "n": ArgInt, "on": ArgBool},
			Handle: func(_ context.Context, args map[string]any) (any, error) { return args, nil }},
		Method{Name: "fail", Handle: func(context.Context, map[string]any) (any, error) {
			return nil, &Error{Code: CodeNotSupported, Msg: "not here"}
		}},
	)
}

func TestTableCall(t *testing.T) {
	tests := []struct {
		name   string
		method string
		args   map[string]any
		code   Code
	}{
		{"ok", "status", nil, CodeOK},
		{"args ok", "echo", map[string]any{"msg": "hi", "n": float64(3), "on": true}, CodeOK},
		{"unknown method", "nosuch", nil, CodeMethodNotFound},
		{"unknown argument", "status", map[string]any{"x": 1}, CodeInvalidArgument},
		{"string wanted", "echo", map[string]any{"msg": 1.0}, CodeInvalidArgument},
		{"integer wanted", "echo", map[string]any{"n": 1.5}, CodeInvalidArgument},
		{"bool wanted", "echo", map[string]any{"on": "yes"}, CodeInvalidArgument},
		{"handler error keeps its code", "fail", nil, CodeNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testTable().Call(context.Background(), tt.method, tt.args)
			got := CodeOK
			if err != nil {
				got = CodeOf(err)
			}
			if got != tt.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
			}
		})
	}
}

func TestCodeNames(t *testing.T) {
	for c := CodeOK; c <= CodeUnknown; c++ {
		if ParseCode(c.String()) != c {
			t.Errorf("ParseCode(%q) != %d", c.String(), c)
		}
	}
	if CodeOf(errors.New("plain")) != CodeUnknown {
		t.Error("a plain error must be UNKNOWN_ERROR")
	}
}

// TestSocketRoundTrip serves the table on a real unix socket and calls it as the CLI does.
func TestSocketRoundTrip(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "tgtun.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeSocket(ctx, sock, testTable(), slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeSocket: %v", err)
		}
	})
	callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer callCancel()
	var raw []byte
	var err error
	for i := 0; i < 50; i++ { // the listener may not be up yet
		if raw, err = Call(callCtx, sock, "status", nil); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || string(raw) != `{"running":true}` {
		t.Fatalf("status = %s, %v", raw, err)
	}
	if _, err := Call(callCtx, sock, "nosuch", nil); CodeOf(err) != CodeMethodNotFound {
		t.Errorf("unknown method over the socket: %v", err)
	}
	if _, err := Call(callCtx, sock, "echo", map[string]any{"msg": 5}); CodeOf(err) != CodeInvalidArgument {
		t.Errorf("bad argument over the socket: %v", err)
	}
	// A second daemon must not steal the socket of a live one.
	if err := ServeSocket(callCtx, sock, testTable(), slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a second ServeSocket on a live socket succeeded")
	}
}

func TestPrintCheckFails(t *testing.T) {
	var buf strings.Builder
	err := Print(&buf, "check", []byte(`{"ok":false,"steps":[{"name":"proxy 'p'","ok":false,"detail":"socks5 x: authentication failed","hint":"check them"}]}`))
	if !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("Print(check) = %v, want ErrCheckFailed", err)
	}
	if want := "[FAIL] proxy 'p'"; !strings.Contains(buf.String(), want) || !strings.Contains(buf.String(), "hint: check them") {
		t.Errorf("output %q lacks %q and the hint", buf.String(), want)
	}
}
