package ubus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/ubus"
	"github.com/tgtun/tgtun/daemon/ubus/ubustest"
)

// waitLimit bounds every wait in these tests; generous for a loaded machine.
const waitLimit = 30 * time.Second

// logRecorder keeps the server's log records to check what it said, and how often.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}

// count tells how many records at level or above start with prefix.
func (l *logRecorder) count(level slog.Level, prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Level >= level && strings.HasPrefix(r.Message, prefix) {
			n++
		}
	}
	return n
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.recs {
		fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
		b.WriteByte('\n')
	}
	return b.String()
}

// tgtunObject is an object shaped like tgtun's, with handlers that show what reached them.
type tgtunObject struct {
	reloads, updates, checks atomic.Int32
}

func (o *tgtunObject) object() ubus.Object {
	return ubus.Object{Name: "tgtun", Methods: []ubus.Method{
		{Name: "status", Handler: func(ctx context.Context, args ubus.Table) (ubus.Table, error) {
			return ubus.Table{{Name: "running", Value: true}, {Name: "tun", Value: "tgtun0"}, {Name: "flows", Value: int32(3)}}, nil
		}},
		{Name: "reload", Handler: func(ctx context.Context, args ubus.Table) (ubus.Table, error) {
			o.reloads.Add(1)
			return nil, nil
		}},
		{Name: "update_lists", Policy: []ubus.Arg{{Name: "force", Type: ubus.TypeBool}},
			Handler: func(ctx context.Context, args ubus.Table) (ubus.Table, error) {
				o.updates.Add(1)
				force, _ := args.Get("force")
				return ubus.Table{{Name: "forced", Value: force == true}}, nil
			}},
		{Name: "check", Policy: []ubus.Arg{{Name: "target", Type: ubus.TypeString}, {Name: "port", Type: ubus.TypeInt32}},
			Handler: func(ctx context.Context, args ubus.Table) (ubus.Table, error) {
				o.checks.Add(1)
				target, _ := args.Get("target")
				switch target {
				case "missing":
					return nil, &ubus.StatusError{Code: ubus.StatusNotFound, Msg: "no such target"}
				case "wrapped":
					return nil, fmt.Errorf("check: %w", &ubus.StatusError{Code: ubus.StatusTimeout, Msg: "proxy silent"})
				case "deny":
					return nil, &ubus.StatusError{Code: ubus.StatusPermissionDenied}
				case "boom":
					return nil, errors.New("boom")
				case "panic":
					panic("handler bug")
				}
				return ubus.Table{{Name: "ok", Value: true}}, nil
			}},
	}}
}

// startBroker starts a stand-in ubusd on a fresh socket and stops it after the test.
func startBroker(t *testing.T, path string) *ubustest.Broker {
	t.Helper()
	b, err := ubustest.Listen(path)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// startServer runs a Server until the test ends, and checks Run returns on cancel.
func startServer(t *testing.T, path string, objs ...ubus.Object) (*logRecorder, context.CancelFunc) {
	t.Helper()
	logs := &logRecorder{}
	srv := &ubus.Server{Path: path, Objects: objs, Logger: slog.New(logs),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run still going %s after cancel", waitLimit)
		}
	})
	return logs, cancel
}

func dialClient(t *testing.T, path string) *ubus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := ubus.Dial(ctx, path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitRegistered polls LOOKUP until name is on the bus, and returns its description.
func waitRegistered(t *testing.T, path, name string) ubus.ObjectInfo {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := ubus.Dial(ctx, path)
		if err == nil {
			var objs []ubus.ObjectInfo
			objs, err = c.Lookup(ctx, name)
			c.Close()
			if err == nil && len(objs) == 1 {
				cancel()
				return objs[0]
			}
		}
		cancel()
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%q not registered within %s: %v", name, waitLimit, lastErr)
	return ubus.ObjectInfo{}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func TestServerAnswersCalls(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	startBroker(t, sock)
	obj := &tgtunObject{}
	startServer(t, sock, obj.object())
	info := waitRegistered(t, sock, "tgtun")
	c := dialClient(t, sock)
	ctx := callCtx(t)

	tests := []struct {
		method   string
		args     string // JSON, as `ubus call` takes it
		wantData string
		wantCode ubus.Status
		wantMsg  string
	}{
		{"status", `{}`, `{"running":true,"tun":"tgtun0","flows":3}`, ubus.StatusOK, ""},
		{"reload", `{}`, `{}`, ubus.StatusOK, ""},
		{"update_lists", `{"force":true}`, `{"forced":true}`, ubus.StatusOK, ""},
		{"update_lists", `{"force":"yes"}`, `{"error":"argument \"force\" must be bool, not string"}`, ubus.StatusInvalidArgument, `argument "force" must be bool, not string`},
		{"check", `{"target":1}`, `{"error":"argument \"target\" must be string, not int32"}`, ubus.StatusInvalidArgument, `argument "target" must be string, not int32`},
		{"check", `{"target":"x","port":"80"}`, `{"error":"argument \"port\" must be int32, not string"}`, ubus.StatusInvalidArgument, `argument "port" must be int32, not string`},
		{"check", `{"target":"x","port":80,"extra":[1]}`, `{"ok":true}`, ubus.StatusOK, ""},
		{"check", `{"target":"missing"}`, `{"error":"no such target"}`, ubus.StatusNotFound, "no such target"},
		{"check", `{"target":"wrapped"}`, `{"error":"check: proxy silent"}`, ubus.StatusTimeout, "check: proxy silent"},
		{"check", `{"target":"deny"}`, `{}`, ubus.StatusPermissionDenied, ""},
		{"check", `{"target":"boom"}`, `{"error":"boom"}`, ubus.StatusUnknownError, "boom"},
		{"check", `{"target":"panic"}`, "", ubus.StatusUnknownError, "method check panicked: handler bug"},
		{"nosuch", `{}`, `{}`, ubus.StatusMethodNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.args, func(t *testing.T) {
			args, err := ubus.TableFromJSON([]byte(tt.args))
			if err != nil {
				t.Fatal(err)
			}
			data, err := c.InvokeID(ctx, info.ID, tt.method, args)
			if code := ubus.StatusOf(err); code != tt.wantCode {
				t.Fatalf("status %s (%v), want %s", code, err, tt.wantCode)
			}
			var se *ubus.StatusError
			if err != nil && (!errors.As(err, &se) || !strings.HasPrefix(se.Msg, tt.wantMsg) || (tt.wantMsg == "") != (se.Msg == "")) {
				t.Fatalf("error %#v, want message %q", err, tt.wantMsg)
			}
			j, _ := data.MarshalJSON()
			if tt.wantData != "" && string(j) != tt.wantData {
				t.Fatalf("data %s, want %s", j, tt.wantData)
			}
		})
	}
	if n := obj.reloads.Load(); n != 1 {
		t.Errorf("reload handler ran %d times, want 1", n)
	}
	if n := obj.updates.Load(); n != 1 {
		t.Errorf("update_lists handler ran %d times, want 1 (bad arguments must not reach it)", n)
	}
	if n := obj.checks.Load(); n != 6 {
		t.Errorf("check handler ran %d times, want 6", n)
	}

	// By path, like `ubus call tgtun status`.
	data, err := c.Invoke(ctx, "tgtun", "status", nil)
	if err != nil {
		t.Fatalf("Invoke by path: %v", err)
	}
	if v, _ := data.Get("tun"); v != "tgtun0" {
		t.Errorf("Invoke by path: got %v", data)
	}
	if _, err := c.Invoke(ctx, "nope", "status", nil); ubus.StatusOf(err) != ubus.StatusNotFound {
		t.Errorf("Invoke on a missing object: %v, want NOT_FOUND", err)
	}
	if _, err := c.InvokeID(ctx, info.ID+1, "status", nil); ubus.StatusOf(err) != ubus.StatusNotFound {
		t.Errorf("InvokeID on a missing id: %v, want NOT_FOUND", err)
	}

	// Many calls at once on one connection.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			if _, err := c.InvokeID(ctx, info.ID, "status", nil); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent call: %v", err)
	}
}

func TestLookupSignatures(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	startBroker(t, sock)
	obj := &tgtunObject{}
	startServer(t, sock, obj.object(), ubus.Object{Name: "tgtest", Methods: []ubus.Method{
		{Name: "m", Handler: func(context.Context, ubus.Table) (ubus.Table, error) { return nil, nil }},
	}})
	waitRegistered(t, sock, "tgtest")
	c := dialClient(t, sock)
	ctx := callCtx(t)

	objs, err := c.Lookup(ctx, "tgtun")
	if err != nil {
		t.Fatal(err)
	}
	want := []ubus.Signature{
		{Name: "status", Args: []ubus.Arg{}},
		{Name: "reload", Args: []ubus.Arg{}},
		{Name: "update_lists", Args: []ubus.Arg{{Name: "force", Type: ubus.TypeBool}}},
		{Name: "check", Args: []ubus.Arg{{Name: "target", Type: ubus.TypeString}, {Name: "port", Type: ubus.TypeInt32}}},
	}
	if len(objs) != 1 || objs[0].Path != "tgtun" || objs[0].ID == 0 || objs[0].TypeID == 0 || !reflect.DeepEqual(objs[0].Methods, want) {
		t.Fatalf("lookup tgtun: %+v\nwant methods %+v", objs, want)
	}

	paths := func(objs []ubus.ObjectInfo) string {
		var p []string
		for _, o := range objs {
			p = append(p, o.Path)
		}
		return strings.Join(p, ",")
	}
	for _, tt := range []struct{ query, want string }{{"", "tgtest,tgtun"}, {"tgt*", "tgtest,tgtun"}, {"tgtu*", "tgtun"}} {
		objs, err := c.Lookup(ctx, tt.query)
		if err != nil || paths(objs) != tt.want {
			t.Errorf("lookup %q: %s, %v; want %s", tt.query, paths(objs), err, tt.want)
		}
	}
	for _, q := range []string{"nope", "x*"} {
		if _, err := c.Lookup(ctx, q); ubus.StatusOf(err) != ubus.StatusNotFound {
			t.Errorf("lookup %q: %v, want NOT_FOUND", q, err)
		}
	}

	// A second registration of the same name is refused, as ubusd does.
	if _, err := c.AddObject(ctx, "tgtun", obj.object().Methods...); ubus.StatusOf(err) != ubus.StatusInvalidArgument {
		t.Errorf("duplicate AddObject: %v, want INVALID_ARGUMENT", err)
	}
}

func TestServerReconnectsAfterBrokerRestart(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	broker, err := ubustest.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	obj := &tgtunObject{}
	logs, _ := startServer(t, sock, obj.object())
	first := waitRegistered(t, sock, "tgtun")

	if err := broker.Close(); err != nil {
		t.Fatalf("stop broker: %v", err)
	}
	// Let the server notice and fail to reconnect a few times.
	deadline := time.Now().Add(waitLimit)
	for logs.count(slog.LevelInfo, "ubus connection lost") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server did not notice ubusd going away:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)

	startBroker(t, sock)
	second := waitRegistered(t, sock, "tgtun")
	if second.ID == first.ID {
		t.Logf("same object id %08x by chance", second.ID)
	}
	c := dialClient(t, sock)
	data, err := c.InvokeID(callCtx(t), second.ID, "status", nil)
	if err != nil {
		t.Fatalf("call after re-registration: %v", err)
	}
	if v, _ := data.Get("running"); v != true {
		t.Fatalf("status after re-registration: %v", data)
	}
	if n := logs.count(slog.LevelInfo, "ubus objects registered"); n != 2 {
		t.Errorf("%d registrations logged, want 2:\n%s", n, logs)
	}
	// The outage is reported once; the failed attempts during it only at debug level.
	if n := logs.count(slog.LevelInfo, "ubus unavailable"); n != 0 {
		t.Errorf("retries during the outage logged at info %d times:\n%s", n, logs)
	}
	if n := logs.count(slog.LevelDebug, "ubus still unavailable"); n == 0 {
		t.Errorf("no reconnection attempts during the outage:\n%s", logs)
	}
}

func TestServerWaitsQuietlyForUbusd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	obj := &tgtunObject{}
	logs, cancel := startServer(t, sock, obj.object())
	deadline := time.Now().Add(waitLimit)
	for logs.count(slog.LevelDebug, "ubus still unavailable") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("server is not retrying:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := logs.count(slog.LevelInfo, ""); n != 1 || logs.count(slog.LevelInfo, "ubus unavailable") != 1 {
		t.Fatalf("want exactly one info record saying ubus is unavailable:\n%s", logs)
	}

	broker := startBroker(t, sock)
	waitRegistered(t, sock, "tgtun")

	// Cancelling stops the server, which disconnects and so unregisters.
	cancel()
	for len(broker.Objects()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("objects still registered after cancel: %v", broker.Objects())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerRefusesBadObjects(t *testing.T) {
	noop := func(context.Context, ubus.Table) (ubus.Table, error) { return nil, nil }
	tests := []struct {
		name string
		obj  ubus.Object
	}{
		{"no name", ubus.Object{Methods: []ubus.Method{{Name: "m", Handler: noop}}}},
		{"method without name", ubus.Object{Name: "o", Methods: []ubus.Method{{Handler: noop}}}},
		{"method without handler", ubus.Object{Name: "o", Methods: []ubus.Method{{Name: "m"}}}},
		{"method twice", ubus.Object{Name: "o", Methods: []ubus.Method{{Name: "m", Handler: noop}, {Name: "m", Handler: noop}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			srv := &ubus.Server{Path: filepath.Join(t.TempDir(), "none.sock"), Objects: []ubus.Object{tt.obj}}
			if err := srv.Run(ctx); err == nil || ctx.Err() != nil {
				t.Fatalf("Run: %v, want an immediate error", err)
			}
		})
	}
}

func TestDialFailures(t *testing.T) {
	ctx := callCtx(t)
	if _, err := ubus.Dial(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("dialled a missing socket")
	}
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	startBroker(t, sock)
	c := dialClient(t, sock)
	if c.ID() == 0 || c.Path() != sock {
		t.Fatalf("client id %08x path %s", c.ID(), c.Path())
	}
	c.Close()
	select {
	case <-c.Done():
	case <-time.After(waitLimit):
		t.Fatal("Done not closed after Close")
	}
	if _, err := c.Lookup(ctx, "tgtun"); !errors.Is(err, ubus.ErrClosed) {
		t.Fatalf("Lookup on a closed connection: %v", err)
	}
}

func TestServerReportsRegistrationFailureOnce(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	startBroker(t, sock)
	startServer(t, sock, (&tgtunObject{}).object())
	waitRegistered(t, sock, "tgtun")
	logs, _ := startServer(t, sock, (&tgtunObject{}).object())
	deadline := time.Now().Add(waitLimit)
	for logs.count(slog.LevelDebug, "ubus still unavailable") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("second server is not retrying:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := logs.count(slog.LevelWarn, "ubus registration failed"); n != 1 || logs.count(slog.LevelInfo, "") != 1 {
		t.Fatalf("want one warning that the name is taken, nothing else above debug:\n%s", logs)
	}
}
