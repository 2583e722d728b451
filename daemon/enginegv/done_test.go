package enginegv

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTUNDeletedReported: `ip link del` of the TUN under a running engine ends its
// reader; the engine reports it (Done, Err) and Run returns the reason instead of
// serving nothing for ever.
func TestTUNDeletedReported(t *testing.T) {
	for _, mode := range []tunMode{tunVnet, tunPlain} {
		t.Run(mode.String(), func(t *testing.T) {
			requireRoot(t)
			ns := newNetns(t)
			fd := openTUN(t, ns, mode)
			t.Cleanup(func() { unix.Close(fd) })
			eng, err := New(Config{}, echoDialer(t), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ran := make(chan error, 1)
			go func() { ran <- eng.Run(ctx, fd) }()
			env := &testEnv{ns: ns, eng: eng}
			c := env.mustDial(t, "tcp", "203.0.113.70:443")
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-eng.Done():
				t.Fatal("Done closed while the engine serves")
			default:
			}

			runCmd(t, "ip", "-n", ns, "link", "del", tunName)
			select {
			case <-eng.Done():
			case <-time.After(20 * time.Second):
				t.Fatal("the TUN was deleted and the engine did not report it within 20s")
			}
			if eng.Err() == nil {
				t.Error("Err() = nil after the TUN reader died")
			}
			select {
			case err := <-ran:
				if err == nil {
					t.Error("Run returned nil after the TUN reader died")
				}
				t.Logf("Run: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after the TUN reader died")
			}
		})
	}
}

// TestStopIsNotAnError: a stop asked for closes Done with Err nil.
func TestStopIsNotAnError(t *testing.T) {
	env := startEngine(t, Config{}, echoDialer(t))
	env.cancel()
	if err := env.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-env.eng.Done():
	default:
		t.Fatal("Done not closed after Run returned")
	}
	if err := env.eng.Err(); err != nil {
		t.Errorf("Err() after a stop = %v, want nil", err)
	}
}

// TestIPv4OnlyMTU: with IPv6 off the engine takes the MTUs config and netcfg take
// (576..1279 included) and relays at 576; with IPv6 it refuses them.
func TestIPv4OnlyMTU(t *testing.T) {
	if _, err := New(Config{MTU: 576}, &testDialer{}, nil); err == nil {
		t.Error("MTU 576 with IPv6 accepted")
	}
	if _, err := New(Config{MTU: 575, IPv4Only: true}, &testDialer{}, nil); err == nil {
		t.Error("MTU 575 accepted")
	}
	env := startEngine(t, Config{MTU: 576, IPv4Only: true}, echoDialer(t))
	c := env.mustDial(t, "tcp", "203.0.113.70:443")
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	msg := make([]byte, 8000)
	for i := range msg {
		msg[i] = byte(i)
	}
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo at MTU 576: %v", err)
	}
}
