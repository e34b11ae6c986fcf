package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tandem-im/tandem/proto/wire"
)

func TestUpgradeSubprotocols(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{}, newFakeHandler())
	for _, tc := range []struct {
		name   string
		offer  []string
		want   string
		isJSON bool
	}{
		{name: "none offered: protobuf", offer: nil, want: ""},
		{name: "protobuf", offer: []string{SubprotocolProto}, want: SubprotocolProto},
		{name: "json", offer: []string{SubprotocolJSON}, want: SubprotocolJSON, isJSON: true},
		{name: "first supported in client order", offer: []string{"mqtt", SubprotocolJSON, SubprotocolProto}, want: SubprotocolJSON, isJSON: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv, tc.offer...)
			if c.proto != tc.want {
				t.Fatalf("negotiated %q, want %q", c.proto, tc.want)
			}
			c.send(pingFrame(1))
			op, p, err := c.readMsg()
			if err != nil {
				t.Fatal(err)
			}
			if wantOp := map[bool]ws.OpCode{false: ws.OpBinary, true: ws.OpText}[tc.isJSON]; op != wantOp {
				t.Fatalf("reply opcode %v, want %v", op, wantOp)
			}
			if f := c.decode(op, p); f.GetPong() == nil || f.Id != 1 {
				t.Fatalf("got %v, want Pong 1 (Ping is answered before Login)", f)
			}
		})
	}
}

func TestUpgradeRejections(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{}, newFakeHandler())

	status := func(path string, protocols ...string) int {
		t.Helper()
		var got int
		_, _, _, err := ws.Dialer{
			Protocols: protocols,
			Timeout:   5 * time.Second,
			OnStatusError: func(s int, _ []byte, _ io.Reader) {
				got = s
			},
		}.Dial(context.Background(), "ws://"+srv.Addr().String()+path)
		var se ws.StatusError
		if !errors.As(err, &se) {
			t.Fatalf("dial %s: err %v, want a status error", path, err)
		}
		return got
	}
	if got := status("/other"); got != http.StatusNotFound {
		t.Errorf("wrong path: status %d, want 404", got)
	}
	if got := status("/ws/x"); got != http.StatusNotFound {
		t.Errorf("path below: status %d, want 404", got)
	}
	if got := status("/ws", "mqtt", "v2.tandem"); got != http.StatusBadRequest {
		t.Errorf("unknown subprotocols only: status %d, want 400", got)
	}
	if c, err := tryDial(srv, "/ws?token=abc"); err != nil {
		t.Errorf("query string: %v", err)
	} else {
		c.conn.Close()
	}

	resp, err := http.Get("http://" + srv.Addr().String() + "/ws")
	if err != nil {
		t.Fatalf("plain GET: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET: status %d, want 400 or 426", resp.StatusCode)
	}
	// The last failure is counted once the server stops lingering on it.
	for deadline := time.Now().Add(5 * time.Second); srv.Stats().HandshakeFailures < 4; {
		if time.Now().After(deadline) {
			t.Fatalf("HandshakeFailures = %d, want 4", srv.Stats().HandshakeFailures)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A handshake that never completes is dropped after HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{HandshakeTimeout: 100 * time.Millisecond}, newFakeHandler())
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := nc.Read(make([]byte, 512))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server kept an incomplete handshake open")
	}
	if err == nil {
		t.Fatalf("read %d bytes, want the server to hang up", n)
	}
}

// Serve returns after ctx is canceled: every session gets Kick{SHUTDOWN}
// and 4015, Closed is called for the logged-in ones, handshakes in
// progress are dropped, and no server goroutine is left.
func TestShutdown(t *testing.T) {
	// Not parallel: it checks that no server goroutine is left anywhere.
	h := newFakeHandler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{CloseTimeout: time.Second}, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	waitServing(t, srv)

	in := dial(t, srv)
	in.login(1, "uma")
	idIn := onlySession(t, srv)
	out := dial(t, srv, SubprotocolJSON) // not logged in
	busy := dial(t, srv)                 // logged in, frames queued
	busy.login(1, "vic")
	waitSessions(t, srv, 3)
	srv.mu.RLock()
	for id := range srv.sessions {
		srv.Deliver(id, []*wire.Frame{ackFrame(1), ackFrame(2)})
	}
	srv.mu.RUnlock()
	raw, err := net.Dial("tcp", srv.Addr().String()) // mid-handshake
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte("GET /ws HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	cancel()
	for _, c := range []*client{in, out, busy} {
		code, frames := c.readClose()
		if code != wire.CloseShutdown {
			t.Errorf("close code %d, want %d", code, wire.CloseShutdown)
		}
		if n := len(frames); n == 0 || frames[n-1].GetKick().GetReason() != wire.Kick_SHUTDOWN {
			t.Errorf("frames before close %v, want a Kick SHUTDOWN last", frames)
		}
	}
	// "raw" never finishes its handshake.
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if n := h.closedCount(idIn); n != 1 {
		t.Errorf("Closed called %d times for a logged-in session, want 1", n)
	}
	h.mu.Lock()
	if len(h.closed) != 2 {
		t.Errorf("Closed called for %d sessions, want the 2 logged in", len(h.closed))
	}
	h.mu.Unlock()
	if leaked := waitNoServerGoroutines(2 * time.Second); leaked != "" {
		t.Fatalf("goroutines left after Serve returned:\n%s", leaked)
	}
	if srv.Sessions() != 0 {
		t.Fatalf("%d sessions left", srv.Sessions())
	}
	if _, err := net.Dial("tcp", srv.Addr().String()); err == nil {
		t.Fatalf("the listener still accepts")
	}
}

func TestServeErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = New(Config{Path: "ws", WriteQueue: -1}, newFakeHandler()).Serve(context.Background(), ln)
	if err == nil || !strings.Contains(err.Error(), "path") || !strings.Contains(err.Error(), "write queue") {
		t.Fatalf("Serve with a bad config: %v, want both problems reported", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatalf("Serve left the listener open")
	}

	// A listener that fails for good ends Serve with its error.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{}, newFakeHandler())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), ln) }()
	waitServing(t, srv)
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve did not return after its listener closed")
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	var zero Config
	if err := zero.Validate(); err != nil {
		t.Fatalf("zero Config invalid: %v", err)
	}
	c := zero.withDefaults()
	if c.Addr != ":7400" || c.Path != "/ws" || c.MaxFrameBytes != 1<<20 || c.WriteQueue != 1024 ||
		c.LoginTimeout != 10*time.Second || c.HandshakeTimeout != 5*time.Second || c.Logger == nil {
		t.Fatalf("defaults = %+v", c)
	}
	bad := Config{MaxFrameBytes: -1, LoginTimeout: -time.Second, CloseTimeout: -1}
	if err := bad.Validate(); err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("Validate = %v, want three errors", err)
	}
}
