package gateway

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// The byte bound counts what waits, what is held for after the Login
// reply, and the batch being written until it is out.
func TestQueueBytesBound(t *testing.T) {
	t.Parallel()
	srvEnd, peer := net.Pipe() // writes block until the peer reads
	defer srvEnd.Close()
	defer peer.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	var q outQueue
	q.init(newNetSocket(srvEnd), &queueConfig{max: 100, maxBytes: 100, writeTimeout: 5 * time.Second, spawn: wg.Go, stats: &counters{}})

	frame := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	mustEnqueue := func(what string, frames [][]byte, deliver bool, wantOK, wantOverflow bool) {
		t.Helper()
		ok, overflow := q.enqueue(frames, deliver)
		if ok != wantOK || overflow != wantOverflow {
			t.Fatalf("%s: enqueue = ok %v, overflow %v; want %v, %v", what, ok, overflow, wantOK, wantOverflow)
		}
	}

	// Before the Login reply, delivered frames are held, and count.
	mustEnqueue("held 60", [][]byte{frame(60, 'h')}, true, true, false)
	mustEnqueue("held 41 more", [][]byte{frame(41, 'x')}, true, false, true)
	// The reply (10) goes out first; the writer blocks on the pipe with
	// the reply and the held frame as its batch: 70 bytes in flight.
	if !q.openGate(frame(10, 'r'), true) {
		t.Fatal("openGate refused")
	}
	mustEnqueue("30 more (100 in all)", [][]byte{frame(30, 'a')}, false, true, false)
	mustEnqueue("1 more", [][]byte{frame(1, 'z')}, false, false, true)
	mustEnqueue("an empty call", nil, false, true, false)

	// Once everything is written, the whole bound is free again.
	want := append(append(frame(10, 'r'), frame(60, 'h')...), frame(30, 'a')...)
	got := make([]byte, len(want))
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("read what was queued: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("written %q, want %q", got, want)
	}
	q.wait()
	mustEnqueue("exactly the bound", [][]byte{frame(40, 'b'), frame(60, 'c')}, false, true, false)
	q.stop()
	srvEnd.Close() // ends the write in progress
}

// One Deliver call whose frames are more bytes than WriteQueueBytes
// overflows at once, whatever the socket could take: the session is a
// slow consumer. Below the bound, frames go out.
func TestWriteQueueBytesSlowConsumer(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{WriteQueueBytes: 64 << 10}, h)
	c := dial(t, srv)
	c.login(1, "rita")
	id := onlySession(t, srv)

	push := func(n int) *wire.Frame {
		return &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{{Content: make([]byte, n)}}}}}
	}
	if !srv.Deliver(id, []*wire.Frame{push(30 << 10), push(30 << 10)}) {
		t.Fatal("60 KiB refused by a 64 KiB bound")
	}
	for range 2 {
		if f := c.read(); f.GetPush() == nil {
			t.Fatalf("got %v, want a Push", f)
		}
	}
	if srv.Deliver(id, []*wire.Frame{push(40 << 10), push(40 << 10)}) {
		t.Fatal("80 KiB in one call accepted by a 64 KiB bound")
	}
	if st := srv.Stats(); st.SlowConsumers != 1 {
		t.Fatalf("SlowConsumers = %d, want 1", st.SlowConsumers)
	}
	code, frames := c.readClose()
	if code != wire.CloseSlowConsumer {
		t.Fatalf("close code %d, want %d", code, wire.CloseSlowConsumer)
	}
	if len(frames) != 1 || frames[0].GetKick().GetReason() != wire.Kick_SLOW_CONSUMER {
		t.Fatalf("frames before the close: %v, want only Kick SLOW_CONSUMER", frames)
	}
	waitSessions(t, srv, 0)
	if n := h.closedCount(id); n != 1 {
		t.Fatalf("Closed called %d times, want 1", n)
	}
}

// Frames delivered while the Login is being decided are held for after
// its reply, and count against the bound: too many of them close the
// session as a slow consumer before it ever gets its reply.
func TestWriteQueueBytesCountsHeldFrames(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{WriteQueueBytes: 64 << 10}, h)
	push := &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{{Content: make([]byte, 40<<10)}}}}}
	results := make(chan bool, 2)
	h.beforeLoginReply = func(_ context.Context, sid uint64) {
		results <- srv.Deliver(sid, []*wire.Frame{push})
		results <- srv.Deliver(sid, []*wire.Frame{push})
	}
	c := dial(t, srv)
	c.send(loginFrame(1, "ok:sam"))
	if first, second := <-results, <-results; !first || second {
		t.Fatalf("Deliver during login: %v then %v, want true then false (80 KiB held over a 64 KiB bound)", first, second)
	}
	code, frames := c.readClose()
	if code != wire.CloseSlowConsumer {
		t.Fatalf("close code %d, want %d", code, wire.CloseSlowConsumer)
	}
	if len(frames) != 1 || frames[0].GetKick().GetReason() != wire.Kick_SLOW_CONSUMER {
		t.Fatalf("frames before the close: %v, want only Kick SLOW_CONSUMER", frames)
	}
	if st := srv.Stats(); st.SlowConsumers != 1 {
		t.Fatalf("SlowConsumers = %d, want 1", st.SlowConsumers)
	}
	waitSessions(t, srv, 0)
}
