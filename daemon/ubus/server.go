package ubus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"
)

// Arg is one entry of a method's argument policy: the argument's name and blobmsg type.
type Arg struct {
	Name string
	Type Type
}

// Handler answers a call. Returning a nil table sends no DATA, only the status.
type Handler func(ctx context.Context, args Table) (Table, error)

// Method is one method of an object.
//
// Replies: success is DATA (the handler's table, unless nil) then STATUS 0. An unknown
// method is STATUS METHOD_NOT_FOUND alone, as libubus answers. Arguments whose type differs
// from the policy are DATA {"error": "..."} then STATUS INVALID_ARGUMENT, without calling
// the handler; arguments the policy does not name are passed through. A handler error is
// DATA {"error": err.Error()} then STATUS: the code of a *StatusError in its chain, else
// UNKNOWN_ERROR. The DATA is left out when the message would only repeat the status's
// own text (a *StatusError with no Msg).
type Method struct {
	Name string
	// Policy is published in the object's signature (what `ubus -v list` prints) in this
	// order, and enforced on every call.
	Policy  []Arg
	Handler Handler
}

func (m *Method) check(args Table) error {
	for _, a := range m.Policy {
		v, ok := args.Get(a.Name)
		if !ok || a.Type.Matches(v) {
			continue
		}
		got := "unknown"
		if t, ok := TypeOf(v); ok {
			got = t.String()
		}
		return fmt.Errorf("argument %q must be %s, not %s", a.Name, a.Type, got)
	}
	return nil
}

// call runs the handler; a panic becomes an UNKNOWN_ERROR rather than a dead daemon. The
// stack is returned for the log, not for the caller.
func (m *Method) call(ctx context.Context, args Table) (res Table, stack []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err, stack = fmt.Errorf("method %s panicked: %v", m.Name, p), debug.Stack()
		}
	}()
	res, err = m.Handler(ctx, args)
	return res, nil, err
}

// Object is an object to publish: its path on the bus and its methods.
type Object struct {
	Name    string
	Methods []Method
}

func newObject(name string, methods []Method) (*object, error) {
	if name == "" {
		return nil, errors.New("ubus object without a name")
	}
	obj := &object{name: name, methods: make(map[string]*Method, len(methods))}
	for i := range methods {
		m := &methods[i]
		switch {
		case m.Name == "":
			return nil, fmt.Errorf("ubus object %q: method %d without a name", name, i)
		case m.Handler == nil:
			return nil, fmt.Errorf("ubus object %q: method %q without a handler", name, m.Name)
		case obj.methods[m.Name] != nil:
			return nil, fmt.Errorf("ubus object %q: method %q twice", name, m.Name)
		}
		obj.methods[m.Name] = m
	}
	return obj, nil
}

// Server keeps objects registered on ubus: it connects, registers, serves, and when
// ubusd goes away it reconnects with backoff and registers again.
type Server struct {
	// Path is ubusd's socket; empty tries DefaultSocket, then LegacySocket.
	Path    string
	Objects []Object
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts (250ms and 5s when zero).
	MinBackoff, MaxBackoff time.Duration
}

// Serve runs a Server with the default logger and backoff until ctx is cancelled.
func Serve(ctx context.Context, path string, objects ...Object) error {
	return (&Server{Path: path, Objects: objects}).Run(ctx)
}

// Run serves until ctx is cancelled, then returns nil. It returns an error at once only
// for objects that can never be registered (no name, a method without handler...).
// While ubusd is missing it says so once at info level and retries quietly.
func (s *Server) Run(ctx context.Context) error {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	names := make([]string, len(s.Objects))
	for i, o := range s.Objects {
		if _, err := newObject(o.Name, o.Methods); err != nil {
			return err
		}
		names[i] = o.Name
	}
	minWait, maxWait := s.MinBackoff, s.MaxBackoff
	if minWait <= 0 {
		minWait = 250 * time.Millisecond
	}
	if maxWait < minWait {
		maxWait = max(5*time.Second, minWait)
	}
	where := s.Path
	if where == "" {
		where = DefaultSocket + " or " + LegacySocket
	}

	wait := minWait
	quiet := false // a failure was already reported at info/warn; the rest go to debug
	for {
		registered, err := s.session(ctx, log, names)
		if ctx.Err() != nil {
			return nil
		}
		var regErr *registerError
		switch {
		case registered:
			if isEOF(err) {
				err = errors.New("ubusd closed the connection")
			}
			log.Info("ubus connection lost; reconnecting in the background", "err", err)
			quiet, wait = true, minWait
		case quiet:
			log.Debug("ubus still unavailable", "socket", where, "err", err)
		case errors.As(err, &regErr):
			log.Warn("ubus registration failed; retrying in the background", "socket", where, "err", err)
			quiet = true
		default:
			log.Info("ubus unavailable; retrying in the background", "socket", where, "err", err)
			quiet = true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
}

// registerError marks a failure after the connection was made.
type registerError struct{ err error }

func (e *registerError) Error() string { return e.err.Error() }
func (e *registerError) Unwrap() error { return e.err }

// session connects, registers the objects and serves them until the connection or ctx
// ends. It reports whether registration succeeded, and why the session ended.
func (s *Server) session(ctx context.Context, log *slog.Logger, names []string) (bool, error) {
	c, err := dial(ctx, s.Path, log)
	if err != nil {
		return false, err
	}
	defer c.Close()
	if err := s.register(ctx, c); err != nil {
		return false, &registerError{err}
	}
	log.Info("ubus objects registered", "objects", strings.Join(names, ","), "socket", c.Path())
	select {
	case <-ctx.Done():
		return true, ctx.Err()
	case <-c.Done():
		return true, c.Err()
	}
}

// registerTimeout bounds a registration, so a wedged ubusd leads to a reconnect.
const registerTimeout = 10 * time.Second

func (s *Server) register(ctx context.Context, c *Conn) error {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	for _, o := range s.Objects {
		if _, err := c.AddObject(ctx, o.Name, o.Methods...); err != nil {
			return err
		}
	}
	return nil
}
