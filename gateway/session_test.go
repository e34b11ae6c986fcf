package gateway

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

func TestLoginThenDeliverInOrder(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)

	ok := c.login(1, "alice")
	if got := ok.GetLoginOk().GetLastSeq(); got != 42 {
		t.Fatalf("LoginOk.last_seq = %d, want the handler's 42", got)
	}
	id := onlySession(t, srv)
	for i := range uint64(200) {
		if !srv.Deliver(id, []*wire.Frame{ackFrame(2 * i), ackFrame(2*i + 1)}) {
			t.Fatalf("Deliver #%d = false", i)
		}
	}
	for want := range uint64(400) {
		f := c.read()
		if got := f.GetSendAck().GetSeq(); got != want || f.Id != 0 {
			t.Fatalf("frame %d = %v, want SendAck seq %d", want, f, want)
		}
	}
	// The writer counts a batch after the write returns: the client may be
	// faster.
	for deadline := time.Now().Add(5 * time.Second); srv.Stats().FramesOut < 401 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if st := srv.Stats(); st.FramesOut != 401 || st.FramesIn != 1 || st.LoggedIn != 1 || st.Sessions != 1 {
		t.Fatalf("stats = %+v, want FramesOut 401, FramesIn 1, LoggedIn 1, Sessions 1", st)
	}
	if srv.Deliver(id+1000, []*wire.Frame{ackFrame(1)}) {
		t.Fatalf("Deliver to an unknown session = true")
	}
}

// Frames delivered while Login is still being decided (the actor streams
// a sync page before it answers) must follow the Login reply.
func TestDeliverDuringLoginFollowsReply(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	var srv *Server
	h.beforeLoginReply = func(_ context.Context, id uint64) {
		if !srv.Deliver(id, []*wire.Frame{ackFrame(1), ackFrame(2)}) {
			t.Errorf("Deliver during login = false")
		}
	}
	srv = startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(7, "bob")
	for want := uint64(1); want <= 2; want++ {
		if got := c.read().GetSendAck().GetSeq(); got != want {
			t.Fatalf("after LoginOk got seq %d, want %d", got, want)
		}
	}
}

func TestLoginFailureClosesWithAuthFailed(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.send(loginFrame(3, "wrong"))
	code, frames := c.readClose()
	if len(frames) != 1 {
		t.Fatalf("got %d frames before close, want the Error only: %v", len(frames), frames)
	}
	expectError(t, frames[0], 3, wire.CodeBadToken)
	if code != wire.CloseAuthFailed {
		t.Fatalf("close code %d, want %d", code, wire.CloseAuthFailed)
	}
	waitSessions(t, srv, 0)
	if n := len(h.closed); n != 0 {
		t.Fatalf("Closed called for a session that never logged in")
	}
}

func TestFrameBeforeLogin(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)

	// Ping is a keep-alive, answered before Login as after it.
	c.send(pingFrame(5))
	if f := c.read(); f.GetPong() == nil || f.Id != 5 {
		t.Fatalf("got %v, want Pong 5 before Login", f)
	}
	c.send(pingFrame(0)) // a bare heartbeat
	if f := c.read(); f.GetPong() == nil || f.Id != 0 {
		t.Fatalf("got %v, want Pong 0 before Login", f)
	}
	c.send(&wire.Frame{Id: 6, Body: &wire.Frame_Send{Send: &wire.Send{ClientMessageId: "x"}}})
	expectError(t, c.read(), 6, wire.CodeNotLoggedIn)
	c.send(loginFrame(0, "ok:carol"))
	expectError(t, c.read(), 0, wire.CodeInvalidArgument)

	c.login(8, "carol") // the connection survived all of that
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.frames) != 0 || len(h.logins) != 1 {
		t.Fatalf("handler saw %d frames and %d logins, want 0 and 1", len(h.frames), len(h.logins))
	}
}

func TestSecondLogin(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "dave")
	c.send(loginFrame(2, "ok:dave"))
	expectError(t, c.read(), 2, wire.CodeAlreadyLoggedIn)
	c.send(pingFrame(3))
	if f := c.read(); f.GetPong() == nil || f.Id != 3 {
		t.Fatalf("got %v, want Pong 3", f)
	}
}

func TestAppPing(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "erin")
	before := time.Now().UnixMilli()
	for _, id := range []uint64{9, 0} { // id 0 is tolerated for heartbeats
		c.send(pingFrame(id))
		f := c.read()
		if f.GetPong() == nil || f.Id != id {
			t.Fatalf("got %v, want Pong with id %d", f, id)
		}
		if ms := f.GetPong().GetServerTimeMs(); ms < before || ms > time.Now().UnixMilli() {
			t.Fatalf("server_time_ms %d outside [%d, now]", ms, before)
		}
	}
	if n := len(h.frames); n != 0 {
		t.Fatalf("Ping reached the handler (%d frames)", n)
	}
}

func TestFramesReachHandler(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "frank")
	send := &wire.Frame{Id: 2, Body: &wire.Frame_Send{Send: &wire.Send{ClientMessageId: "c1", Content: []byte("hi")}}}
	c.send(send)
	// Id 0 on a request and server-only bodies are refused by the gateway.
	c.send(&wire.Frame{Body: &wire.Frame_CursorAck{CursorAck: &wire.CursorAck{Seq: 1}}})
	expectError(t, c.read(), 0, wire.CodeInvalidArgument)
	c.send(&wire.Frame{Id: 4, Body: &wire.Frame_Pong{Pong: &wire.Pong{}}})
	expectError(t, c.read(), 4, wire.CodeBadFrame)

	h.waitFor(t, "the Send frame", func() bool { return len(h.frames) == 1 })
	h.mu.Lock()
	defer h.mu.Unlock()
	if !proto.Equal(h.frames[0], send) {
		t.Fatalf("handler got %v, want %v", h.frames[0], send)
	}
}

func TestBadPayloadKeepsConnection(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "gina")

	c.sendMsg(ws.OpBinary, []byte{0xff, 0xff, 0xff, 0xff})
	expectError(t, c.read(), 0, wire.CodeBadFrame)
	// A text message on tandem.v1: refused, saying what is expected, with
	// the id of the JSON it holds.
	c.sendMsg(ws.OpText, []byte("{not json"))
	expectError(t, c.read(), 0, wire.CodeBadFrame)
	c.sendMsg(ws.OpText, []byte(`{"id":"31","ping":{}}`))
	f := c.read()
	expectError(t, f, 31, wire.CodeBadFrame)
	if msg := f.GetError().GetMessage(); !strings.Contains(msg, "send a protobuf Frame in binary messages, not text") {
		t.Fatalf("message %q does not say what was expected", msg)
	}
	// Undecodable after a readable id: the id is echoed.
	c.sendMsg(ws.OpBinary, []byte{0x08, 0x20, 0x52, 0x05, 0x0a})
	expectError(t, c.read(), 32, wire.CodeBadFrame)

	// id 7 (field 1), then field 99, which no frame type has: a frame the
	// server does not know. Its id is still answered.
	c.sendMsg(ws.OpBinary, []byte{0x08, 0x07, 0x98, 0x06, 0x01})
	f = c.read()
	expectError(t, f, 7, wire.CodeBadFrame)
	if msg := f.GetError().GetMessage(); msg != "unknown frame type" {
		t.Fatalf("message %q, want %q", msg, "unknown frame type")
	}
	c.sendMsg(ws.OpBinary, []byte{0x08, 0x08, 0x98, 0x06, 0x01})
	expectError(t, c.read(), 8, wire.CodeBadFrame)

	c.send(pingFrame(9))
	if f := c.read(); f.GetPong() == nil {
		t.Fatalf("got %v after bad frames, want Pong", f)
	}
	if st := srv.Stats(); st.Errors[wire.CodeBadFrame] < 6 {
		t.Fatalf("stats errors = %v, want >= 6 BAD_FRAME", st.Errors)
	}
}

func TestOversizeFrameKeepsConnection(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{MaxFrameBytes: 1024}, h)
	c := dial(t, srv)
	c.login(1, "hank")

	c.sendMsg(ws.OpBinary, bytes.Repeat([]byte{0xff}, 4096))
	expectError(t, c.read(), 0, wire.CodeFrameTooLarge)

	// Fragmented: 3 × 600 bytes, over the limit from the second fragment.
	for i := range 3 {
		op := ws.OpContinuation
		if i == 0 {
			op = ws.OpBinary
		}
		c.sendFrame(ws.Header{OpCode: op, Fin: i == 2}, bytes.Repeat([]byte{0xff}, 600), false)
	}
	expectError(t, c.read(), 0, wire.CodeFrameTooLarge)

	// Exactly the limit is fine and reaches the handler.
	var exact *wire.Frame
	for n := 900; exact == nil; n++ {
		f := &wire.Frame{Id: 5, Body: &wire.Frame_Send{Send: &wire.Send{Content: make([]byte, n)}}}
		if proto.Size(f) == 1024 {
			exact = f
		}
	}
	c.send(exact)
	h.waitFor(t, "the 1024-byte frame", func() bool { return len(h.frames) == 1 })

	c.send(pingFrame(2))
	if f := c.read(); f.GetPong() == nil || f.Id != 2 {
		t.Fatalf("got %v after oversize frames, want Pong 2", f)
	}
}

func TestDiscardLimitCloses(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{MaxFrameBytes: 1024}, h)
	c := dial(t, srv)
	c.login(1, "ivan")
	// Only the header: a payload the server must refuse to even discard.
	hdr := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Length: maxDiscardBytes + 1}
	c.deadline()
	if err := ws.WriteHeader(c.conn, hdr); err != nil {
		t.Fatal(err)
	}
	code, _ := c.readClose()
	if code != wire.CloseFrameTooLarge {
		t.Fatalf("close code %d, want %d", code, wire.CloseFrameTooLarge)
	}
	c.expectEOF()
	c.conn.Close()
	h.waitFor(t, "Closed", func() bool { return len(h.closed) == 1 })
}

func TestLogout(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "judy")
	id := onlySession(t, srv)
	c.send(&wire.Frame{Id: 2, Body: &wire.Frame_Logout{Logout: &wire.Logout{}}})
	code, frames := c.readClose()
	if len(frames) != 1 || frames[0].GetOk() == nil || frames[0].Id != 2 {
		t.Fatalf("frames before close = %v, want Ok 2", frames)
	}
	if code != ws.StatusNormalClosure {
		t.Fatalf("close code %d, want 1000", code)
	}
	c.expectEOF()
	waitSessions(t, srv, 0)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.logouts) != 1 || h.logouts[0] != id {
		t.Fatalf("logouts = %v, want [%d]", h.logouts, id)
	}
	if len(h.closed) != 0 {
		t.Fatalf("Closed called after Logout: %v", h.closed)
	}
}

func TestLogoutFailureKeepsSession(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	h.logoutErr = errors.New("actor unreachable")
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "kim")
	id := onlySession(t, srv)
	c.send(&wire.Frame{Id: 2, Body: &wire.Frame_Logout{Logout: &wire.Logout{}}})
	expectError(t, c.read(), 2, wire.CodeUnavailable)
	c.conn.Close()
	h.waitFor(t, "Closed", func() bool { return h.closed[id] == 1 })
}

func TestAbruptCloseCallsClosedOnce(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "liam")
	id := onlySession(t, srv)
	c.conn.Close()
	waitSessions(t, srv, 0)
	if n := h.closedCount(id); n != 1 {
		t.Fatalf("Closed called %d times, want 1", n)
	}
	if srv.Deliver(id, []*wire.Frame{ackFrame(1)}) {
		t.Fatalf("Deliver to a closed session = true")
	}
}

func TestClientCloseFrame(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "mia")
	id := onlySession(t, srv)
	c.sendFrame(ws.Header{Fin: true, OpCode: ws.OpClose}, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye"), false)
	code, frames := c.readClose()
	if code != ws.StatusGoingAway || len(frames) != 0 {
		t.Fatalf("echo close %d after %d frames, want 1001 after none", code, len(frames))
	}
	c.expectEOF()
	waitSessions(t, srv, 0)
	if n := h.closedCount(id); n != 1 {
		t.Fatalf("Closed called %d times, want 1", n)
	}
}

func TestKick(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "noah")
	id := onlySession(t, srv)

	srv.Deliver(id, []*wire.Frame{ackFrame(1)})
	k := &wire.Kick{Reason: wire.Kick_LOGIN_CONFLICT, NewDevicePlatform: "ios", CloseCode: wire.CloseLoginConflict}
	if !srv.Kick(id, k) {
		t.Fatalf("Kick = false")
	}
	if srv.Kick(id, k) || srv.Deliver(id, []*wire.Frame{ackFrame(2)}) {
		t.Fatalf("a closing session accepted a second Kick or a Deliver")
	}
	code, frames := c.readClose()
	if len(frames) != 2 || frames[0].GetSendAck().GetSeq() != 1 || !proto.Equal(frames[1].GetKick(), k) {
		t.Fatalf("frames before close = %v, want SendAck 1 then the Kick", frames)
	}
	if code != wire.CloseLoginConflict {
		t.Fatalf("close code %d, want %d", code, wire.CloseLoginConflict)
	}
	c.expectEOF()
	waitSessions(t, srv, 0)
	if n := h.closedCount(id); n != 1 {
		t.Fatalf("Closed called %d times, want 1", n)
	}
}

func TestKickWithoutCloseCode(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{}, newFakeHandler())
	c := dial(t, srv)
	c.login(1, "olga")
	k := &wire.Kick{Reason: wire.Kick_ADMIN}
	srv.Kick(onlySession(t, srv), k)
	code, frames := c.readClose()
	if code != wire.CloseKickedByAdmin || len(frames) != 1 || frames[0].GetKick().GetCloseCode() != wire.CloseKickedByAdmin {
		t.Fatalf("close %d after %v, want %d after a Kick carrying it", code, frames, wire.CloseKickedByAdmin)
	}
	if k.CloseCode != 0 {
		t.Fatalf("Kick modified the caller's message")
	}
}

func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{WriteQueue: 4, CloseTimeout: 5 * time.Second}, h)
	c := dial(t, srv)
	c.login(1, "pete")
	id := onlySession(t, srv)

	// The client stops reading. Deliver big frames until the socket
	// buffers are full and the queue overflows; no call may block.
	big := &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{{Content: make([]byte, 64<<10)}}}}}
	deadline := time.Now().Add(20 * time.Second)
	delivered := 0
	for srv.Deliver(id, []*wire.Frame{big}) {
		delivered++
		if time.Now().After(deadline) {
			t.Fatalf("still accepting after %d frames of 64 KiB", delivered)
		}
	}
	if st := srv.Stats(); st.SlowConsumers != 1 {
		t.Fatalf("SlowConsumers = %d, want 1", st.SlowConsumers)
	}

	// Reading again, the client gets what was already on its way, then
	// the Kick and the close code.
	code, frames := c.readClose()
	if code != wire.CloseSlowConsumer {
		t.Fatalf("close code %d, want %d", code, wire.CloseSlowConsumer)
	}
	last := frames[len(frames)-1].GetKick()
	if last.GetReason() != wire.Kick_SLOW_CONSUMER || last.GetCloseCode() != wire.CloseSlowConsumer {
		t.Fatalf("last frame %v, want Kick SLOW_CONSUMER", frames[len(frames)-1])
	}
	if len(frames)-1 > delivered {
		t.Fatalf("got %d frames, %d delivered", len(frames)-1, delivered)
	}
	waitSessions(t, srv, 0)
	if n := h.closedCount(id); n != 1 {
		t.Fatalf("Closed called %d times, want 1", n)
	}
}

// A client that never reads at all: the close is bounded by CloseTimeout.
func TestSlowConsumerNeverReading(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{WriteQueue: 2, CloseTimeout: 200 * time.Millisecond}, h)
	c := dial(t, srv)
	c.login(1, "quinn")
	id := onlySession(t, srv)
	big := &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{{Content: make([]byte, 64<<10)}}}}}
	for srv.Deliver(id, []*wire.Frame{big}) {
	}
	start := time.Now()
	waitSessions(t, srv, 0)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("session lasted %v after the overflow, want about CloseTimeout", d)
	}
	if n := h.closedCount(id); n != 1 {
		t.Fatalf("Closed called %d times, want 1", n)
	}
}

func TestLoginTimeout(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{LoginTimeout: 100 * time.Millisecond}, h)
	start := time.Now()
	c := dial(t, srv)
	c.send(pingFrame(1)) // answered, but not a login: does not stop the clock
	if f := c.read(); f.GetPong() == nil || f.Id != 1 {
		t.Fatalf("got %v, want Pong 1", f)
	}
	code, _ := c.readClose()
	if code != wire.CloseAuthFailed {
		t.Fatalf("close code %d, want %d", code, wire.CloseAuthFailed)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("closed after %v, before the login timeout", d)
	}
	c.expectEOF()

	// A successful login stops the clock.
	c2 := dial(t, srv)
	c2.login(1, "rita")
	time.Sleep(300 * time.Millisecond)
	c2.send(pingFrame(2))
	if f := c2.read(); f.GetPong() == nil {
		t.Fatalf("got %v, want Pong: the login timeout hit a logged-in session", f)
	}
}

func TestJSONSubprotocol(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv, SubprotocolJSON)
	if c.proto != SubprotocolJSON {
		t.Fatalf("negotiated %q, want %q", c.proto, SubprotocolJSON)
	}
	c.sendMsg(ws.OpText, []byte(`{"id":"11","login":{"token":"ok:sara","deviceId":"d"}}`))
	op, p, err := c.readMsg()
	if err != nil {
		t.Fatal(err)
	}
	if op != ws.OpText {
		t.Fatalf("opcode %v, want text", op)
	}
	if !strings.Contains(string(p), `"loginOk"`) || !strings.Contains(string(p), `"lastSeq"`) {
		t.Fatalf("reply %s is not canonical protobuf JSON", p)
	}
	f := new(wire.Frame)
	if err := protojson.Unmarshal(p, f); err != nil || f.Id != 11 || f.GetLoginOk() == nil {
		t.Fatalf("reply %s: %v, want LoginOk 11", p, err)
	}
	// The subprotocol decides the encoding: JSON in a binary message is
	// understood, protobuf is refused with its id and what was expected;
	// the answers are JSON text.
	c.sendMsg(ws.OpBinary, []byte(`{"id":"12","ping":{}}`))
	if f := c.read(); f.GetPong() == nil || f.Id != 12 {
		t.Fatalf("got %v, want Pong 12", f)
	}
	b, _ := proto.Marshal(pingFrame(13))
	c.sendMsg(ws.OpBinary, b)
	f = c.read()
	expectError(t, f, 13, wire.CodeBadFrame)
	if msg := f.GetError().GetMessage(); !strings.Contains(msg, "negotiated tandem.v1.json: send a Frame in canonical JSON in text messages") {
		t.Fatalf("message %q does not say what was expected", msg)
	}
	// JSON that fails to decode after its id: the id is echoed.
	c.sendMsg(ws.OpText, []byte(`{"id":"14","send":{"type":"x"}}`))
	expectError(t, c.read(), 14, wire.CodeBadFrame)
	c.sendMsg(ws.OpText, []byte(`{"id":15,"ping":7}`))
	expectError(t, c.read(), 15, wire.CodeBadFrame)
	srv.Deliver(onlySession(t, srv), []*wire.Frame{ackFrame(5)})
	if f := c.read(); f.GetSendAck().GetSeq() != 5 {
		t.Fatalf("got %v, want SendAck 5", f)
	}
}

func TestHandlerCallsAreSerialPerSession(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	var wg sync.WaitGroup
	for range 8 {
		c := dial(t, srv)
		wg.Go(func() {
			c.send(loginFrame(1, "ok:u"))
			// Read the reply: closing with unread data would reset the
			// connection, and the server might lose frames in flight.
			if op, _, err := c.readMsg(); err != nil || op != ws.OpBinary {
				t.Errorf("login reply: %v %v", op, err)
			}
			for i := range uint64(20) {
				c.send(&wire.Frame{Id: i + 2, Body: &wire.Frame_CursorAck{CursorAck: &wire.CursorAck{Seq: i}}})
			}
			c.conn.Close()
		})
	}
	wg.Wait()
	h.waitFor(t, "8 Closed", func() bool { return len(h.closed) == 8 })
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.frames) != 8*20 {
		t.Fatalf("handler got %d frames, want %d", len(h.frames), 8*20)
	}
}

// A Kick while Login blocks cancels the Login's context; the session still
// counts as logged in if Login then succeeds, so Closed follows.
func TestKickDuringLogin(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	entered := make(chan uint64, 1)
	h.beforeLoginReply = func(ctx context.Context, id uint64) {
		entered <- id
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("Login's context was not canceled by the Kick")
		}
	}
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.send(loginFrame(1, "ok:wendy"))
	id := <-entered
	if !srv.Kick(id, &wire.Kick{Reason: wire.Kick_LOGIN_CONFLICT}) {
		t.Fatalf("Kick = false")
	}
	code, frames := c.readClose()
	if code != wire.CloseLoginConflict || len(frames) != 1 || frames[0].GetKick() == nil {
		t.Fatalf("close %d after %v, want %d after the Kick alone", code, frames, wire.CloseLoginConflict)
	}
	h.waitFor(t, "Closed", func() bool { return h.closed[id] == 1 })
}
