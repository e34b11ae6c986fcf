package gateway

import (
	"math"
	"testing"

	"github.com/tandem-im/tandem/proto/wire"
)

func sendFrame(id uint64, content string) *wire.Frame {
	return &wire.Frame{Id: id, Body: &wire.Frame_Send{Send: &wire.Send{
		ClientMessageId: "c" + string(rune('a'+id%26)),
		Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"},
		Content:         []byte(content),
	}}}
}

func expectRateLimited(t *testing.T, f *wire.Frame, id uint64, retryMS uint32) {
	t.Helper()
	expectError(t, f, id, wire.CodeRateLimited)
	e := f.GetError()
	if !e.GetTemporary() || e.GetRetryAfterMs() != retryMS {
		t.Fatalf("RATE_LIMITED: temporary %v, retry_after_ms %d; want true, %d", e.GetTemporary(), e.GetRetryAfterMs(), retryMS)
	}
}

// handed waits until the handler has received n frames.
func (h *fakeHandler) handed(t *testing.T, n int) {
	t.Helper()
	h.waitFor(t, "frames handed on", func() bool { return len(h.frames) >= n })
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.frames) != n {
		t.Fatalf("handler got %d frames, want %d", len(h.frames), n)
	}
}

func TestSessionSendBound(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{MaxSessionSends: 3}, h)
	c := dial(t, srv)
	c.login(1, "alice")
	sid := onlySession(t, srv)
	for id := uint64(10); id < 13; id++ {
		c.send(sendFrame(id, "hi"))
	}
	h.handed(t, 3)
	c.send(sendFrame(13, "hi"))
	expectRateLimited(t, c.read(), 13, 100)
	if st := srv.Stats(); st.SendsInFlight != 3 || st.SendBytesInFlight != 6 || st.SendsRefused != 1 {
		t.Fatalf("stats: %d in flight, %d bytes, %d refused; want 3, 6, 1", st.SendsInFlight, st.SendBytesInFlight, st.SendsRefused)
	}

	// A SendAck and an Error for sends in flight make room; other frames
	// with the same ids do not count twice.
	srv.Deliver(sid, []*wire.Frame{
		{Id: 10, Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{Seq: 1}}},
		wire.ErrFrame(11, wire.CodeUnavailable, "retry"),
		{Id: 10, Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{Seq: 1}}},
	})
	for range 3 {
		c.read()
	}
	c.send(sendFrame(14, "hi"))
	c.send(sendFrame(15, "hi"))
	h.handed(t, 5)
	c.send(sendFrame(16, "hi"))
	expectRateLimited(t, c.read(), 16, 100)
	if st := srv.Stats(); st.SendsInFlight != 3 {
		t.Fatalf("in flight %d, want 3", st.SendsInFlight)
	}

	// The session survives: a ping is answered.
	c.send(pingFrame(20))
	if got := c.read(); got.GetPong() == nil || got.Id != 20 {
		t.Fatalf("after refusals: %v, want Pong 20", got)
	}
}

func TestNodeSendBound(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{MaxNodeSends: 2, MaxNodeSendBytes: 100}, h)
	a := dial(t, srv)
	a.login(1, "alice")
	b := dial(t, srv)
	b.login(1, "bob")
	a.send(sendFrame(10, "hi"))
	a.send(sendFrame(11, "hi"))
	h.handed(t, 2)
	b.send(sendFrame(10, "hi"))
	expectRateLimited(t, b.read(), 10, 500)

	// A session that ends gives its sends back.
	a.send(&wire.Frame{Id: 12, Body: &wire.Frame_Logout{Logout: &wire.Logout{}}})
	a.readClose()
	waitSessions(t, srv, 1)
	if st := srv.Stats(); st.SendsInFlight != 0 || st.SendBytesInFlight != 0 {
		t.Fatalf("after the session ended: %d in flight, %d bytes; want 0, 0", st.SendsInFlight, st.SendBytesInFlight)
	}
	b.send(sendFrame(11, "hi"))
	h.handed(t, 3)

	// The byte bound: 98 bytes more would pass it.
	big := make([]byte, 99)
	for i := range big {
		big[i] = 'x'
	}
	b.send(sendFrame(12, string(big)))
	expectRateLimited(t, b.read(), 12, 500)
	b.send(sendFrame(13, string(big[:98])))
	h.handed(t, 4)
	if st := srv.Stats(); st.SendsInFlight != 2 || st.SendBytesInFlight != 100 || st.SendsRefused != 2 {
		t.Fatalf("stats: %d in flight, %d bytes, %d refused; want 2, 100, 2", st.SendsInFlight, st.SendBytesInFlight, st.SendsRefused)
	}
}

func TestMemoryPressureRefusesSends(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)
	c := dial(t, srv)
	c.login(1, "alice")
	srv.adm.pressure.Store(true)
	c.send(sendFrame(10, "hi"))
	expectRateLimited(t, c.read(), 10, 500)
	srv.adm.pressure.Store(false)
	c.send(sendFrame(11, "hi"))
	h.handed(t, 1)
}

func TestStaleSendsReleased(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{MaxSessionSends: 1}, h)
	c := dial(t, srv)
	c.login(1, "alice")
	c.send(sendFrame(10, "hi"))
	h.handed(t, 1)
	sid := onlySession(t, srv)
	srv.mu.RLock()
	s := srv.sessions[sid]
	srv.mu.RUnlock()
	s.releaseOlder(0) // nothing was handed on before the epoch
	if st := srv.Stats(); st.SendsInFlight != 1 {
		t.Fatalf("in flight %d, want 1", st.SendsInFlight)
	}
	s.releaseOlder(math.MaxInt64) // an answer that never came
	if st := srv.Stats(); st.SendsInFlight != 0 {
		t.Fatalf("in flight %d, want 0", st.SendsInFlight)
	}
	c.send(sendFrame(11, "hi"))
	h.handed(t, 2)
}
