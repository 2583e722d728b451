package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultSocket is where the daemon listens for the CLI.
const DefaultSocket = "/var/run/tgtun.sock"

// ErrUnreachable is wrapped by Call when nothing answers on the socket: the daemon is not
// running (not enabled, not started, or exited).
var ErrUnreachable = errors.New("the tgtun daemon is not reachable (is it running?)")

// maxRequest bounds one request line on the CLI socket: requests are tiny, and a peer
// that sends more is not a tgtun CLI.
const maxRequest = 64 << 10

// maxReply bounds what the CLI reads back; a status is a few KiB.
const maxReply = 16 << 20

// request and response are the CLI socket's protocol: one JSON object a line each way,
// one request per connection.
type request struct {
	Method string         `json:"method"`
	Args   map[string]any `json:"args,omitempty"`
}

type response struct {
	OK     bool            `json:"ok"`
	Code   string          `json:"code,omitempty"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// ServeSocket answers method calls on a unix socket until ctx is done. A stale socket
// file from a killed daemon is replaced; a socket a live daemon still answers on is not.
func ServeSocket(ctx context.Context, path string, table *Table, log *slog.Logger) error {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: another tgtun is already listening", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	defer os.Remove(path)
	if err := serveListener(ctx, ln, table, log); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	return nil
}

// serveListener accepts and answers connections until ctx is done, then closes ln and
// waits for the calls in progress.
func serveListener(ctx context.Context, ln net.Listener, table *Table, log *slog.Logger) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer wg.Wait()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: the daemon's own passing
			// state, never a reason to stop. Wait a little and accept again.
			backoff = nextAcceptBackoff(backoff)
			log.Warn("control socket: accept failed, retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(ctx, conn, table, log)
		}()
	}
}

// nextAcceptBackoff doubles the pause after a failed Accept, from 5 ms up to 1 s.
func nextAcceptBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	return min(2*d, time.Second)
}

func serveConn(ctx context.Context, conn net.Conn, table *Table, log *slog.Logger) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(conn, maxRequest).ReadSlice('\n')
	if err != nil && !(errors.Is(err, bufio.ErrBufferFull) && len(line) > 0) {
		log.Debug("control socket: read request", "err", err)
		return
	}
	var resp response
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		resp = response{Code: CodeInvalidArgument.String(), Error: "malformed request: " + err.Error()}
	} else {
		result, err := table.Call(ctx, req.Method, req.Args)
		resp = toResponse(result, err)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	enc := json.NewEncoder(conn)
	if err := enc.Encode(resp); err != nil {
		log.Debug("control socket: write response", "err", err)
	}
}

func toResponse(result any, err error) response {
	if err != nil {
		return response{Code: CodeOf(err).String(), Error: err.Error()}
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return response{Code: CodeUnknown.String(), Error: "encode result: " + err.Error()}
	}
	return response{OK: true, Result: raw}
}

// Call sends one method call to a running daemon and returns its result.
func Call(ctx context.Context, socket, method string, args map[string]any) (json.RawMessage, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrUnreachable, socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := json.NewEncoder(conn).Encode(request{Method: method, Args: args}); err != nil {
		return nil, fmt.Errorf("send %s to %s: %w", method, socket, err)
	}
	var resp response
	if err := json.NewDecoder(io.LimitReader(conn, maxReply)).Decode(&resp); err != nil {
		return nil, fmt.Errorf("read %s reply from %s: %w", method, socket, err)
	}
	if !resp.OK {
		return nil, &Error{Code: ParseCode(resp.Code), Msg: resp.Error}
	}
	return resp.Result, nil
}
