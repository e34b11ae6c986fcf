package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/leakcheck"
	"github.com/tandem-im/tandem/proto/wire"
)

func TestMain(m *testing.M) {
	// Everything the tests started must be gone, the fake server's
	// goroutines included.
	leakcheck.Main(m, 5*time.Second, "tandem/client.")
}

// packageGoroutines returns the stacks of goroutines other than the
// current one that run code whose name contains pattern.
func packageGoroutines(pattern string) []string { return leakcheck.Matching(pattern) }

// ---------------------------------------------------------------- helpers

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder collects what a client's callbacks see.
type recorder struct {
	mu         sync.Mutex
	seqs       []uint64
	entries    []*wire.Entry
	kicks      []*wire.Kick
	logins     []*wire.LoginOk
	transients []*wire.Message
	errs       []error
	reconnects []ReconnectEvent
}

func (r *recorder) hook(o *Options) {
	o.OnEntry = func(e *wire.Entry) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seqs = append(r.seqs, e.GetSeq())
		r.entries = append(r.entries, e)
	}
	o.OnKick = func(k *wire.Kick) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.kicks = append(r.kicks, k)
	}
	o.OnLogin = func(ok *wire.LoginOk) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.logins = append(r.logins, ok)
	}
	o.OnTransient = func(m *wire.Message) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.transients = append(r.transients, m)
	}
	o.OnError = func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.errs = append(r.errs, err)
	}
	o.OnReconnect = func(ev ReconnectEvent) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.reconnects = append(r.reconnects, ev)
	}
}

func (r *recorder) errList() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

func (r *recorder) events() []ReconnectEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reconnects)
}

func (r *recorder) counts() (logins, kicks, transients int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.logins), len(r.kicks), len(r.transients)
}

func (r *recorder) seqList() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seqs)
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// dial connects device of user to srv with rec's callbacks; mod adjusts
// the options. The client is closed at cleanup.
func dial(t *testing.T, srv *fakeServer, user, device string, rec *recorder, mod func(*Options)) *Client {
	t.Helper()
	o := Options{
		URL:        srv.url,
		Token:      "tok-" + user,
		DeviceID:   device,
		Platform:   "linux",
		HasCursor:  true,
		BackoffMin: 10 * time.Millisecond,
		BackoffMax: 50 * time.Millisecond,
	}
	if rec != nil {
		rec.hook(&o)
	}
	if mod != nil {
		mod(&o)
	}
	c, err := Dial(testCtx(t), o)
	if err != nil {
		t.Fatalf("Dial %s/%s: %v", user, device, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func text(to, body string) *wire.Send {
	return &wire.Send{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: to},
		Type:         int32(wire.MessageType_TEXT),
		Content:      []byte(body),
	}
}

func byClientMessageID(id string) func(*wire.Entry) bool {
	return func(e *wire.Entry) bool { return e.GetMessage().GetClientMessageId() == id }
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- tests

// Catch-up in several pages, then pushes carrying duplicates, an old seq
// and a gap: OnEntry must see every seq once, in order, with the gap
// pulled from the cursor.
func TestOrderedDeliveryWithGapAndDuplicates(t *testing.T) {
	srv := newFakeServer(t)
	srv.set(func(s *fakeServer) { s.pageSize = 2 })
	srv.addEntries("alice", 5)
	rec := &recorder{}
	c := dial(t, srv, "alice", "a1", rec, func(o *Options) { o.Cursor = 2 })
	ctx := testCtx(t)
	if err := c.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.seqList(); !slices.Equal(got, seqRange(3, 5)) {
		t.Fatalf("after catch-up OnEntry saw %v, want 3..5", got)
	}
	if n := len(received[*wire.Frame_Sync](srv, "a1")); n != 0 {
		t.Fatalf("%d gap pulls during a gap-free catch-up", n)
	}

	srv.addEntries("alice", 5)  // 6..10 in the log
	srv.push("alice", 6, 6, 4)  // a duplicate and an old seq
	srv.push("alice", 9)        // gap: 7 and 8 never pushed
	srv.push("alice", 10, 9, 6) // held, duplicate of held, old
	if err := c.WaitCursor(ctx, 10); err != nil {
		t.Fatal(err)
	}
	srv.push("alice", 8) // late duplicate after the gap was filled
	srv.addEntries("alice", 1)
	srv.push("alice", 11)
	if err := c.WaitCursor(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if got := rec.seqList(); !slices.Equal(got, seqRange(3, 11)) {
		t.Fatalf("OnEntry saw %v, want 3..11 once each in order", got)
	}
	pulls := received[*wire.Frame_Sync](srv, "a1")
	if len(pulls) == 0 {
		t.Fatal("the gap was not pulled")
	}
	if p := pulls[0].Sync; p.GetAfterSeq() != 6 || p.GetLimit() != 200 {
		t.Fatalf("first gap pull = %v, want after_seq 6 limit 200", p)
	}
	st := c.Stats()
	if st.Duplicates < 5 {
		t.Errorf("Stats.Duplicates = %d, want >= 5", st.Duplicates)
	}
	if st.Delivered != 9 || st.GapPulls == 0 {
		t.Errorf("Stats = %+v", st)
	}
	eventually(t, "cursor ack 11", func() bool {
		acks := srv.acksOf("a1")
		return len(acks) > 0 && acks[len(acks)-1] == 11
	})
	acks := srv.acksOf("a1")
	if !slices.IsSorted(acks) || len(acks) > 6 {
		t.Errorf("cursor acks %v: want few, increasing", acks)
	}
}

// A gap pull answered with nothing is retried; one answered with
// CURSOR_TOO_OLD makes the client log in again and catch up from there.
func TestGapPullRetries(t *testing.T) {
	srv := newFakeServer(t)
	srv.set(func(s *fakeServer) { s.pullFaults = []wire.Code{0, wire.CodeCursorTooOld} })
	rec := &recorder{}
	c := dial(t, srv, "alice", "a1", rec, func(o *Options) {
		o.Reconnect = true
		o.AckInterval = 10 * time.Millisecond
	})
	ctx := testCtx(t)
	if err := c.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	srv.addEntries("alice", 3)
	srv.push("alice", 3) // 1 and 2 missing
	if err := c.WaitCursor(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if got := rec.seqList(); !slices.Equal(got, seqRange(1, 3)) {
		t.Fatalf("OnEntry saw %v, want 1..3", got)
	}
	if n := len(received[*wire.Frame_Sync](srv, "a1")); n != 2 {
		t.Fatalf("%d gap pulls, want 2 (empty page, then CURSOR_TOO_OLD)", n)
	}
	logins := srv.loginList()
	if len(logins) != 2 || !logins[1].GetReconnect() || logins[1].GetCursor() != 0 {
		t.Fatalf("logins %v: want a reconnect from cursor 0 after CURSOR_TOO_OLD", logins)
	}
}

// Two devices of alice and one of bob: the sender's own entry is filled by
// its ack (whether or not the server also pushes it), carbons reach the
// other device, the peer gets the message, and nothing is pulled.
func TestTwoDevicesOwnSendsAndCarbons(t *testing.T) {
	for _, pushToSender := range []bool{false, true} {
		t.Run(fmt.Sprintf("pushToSender=%v", pushToSender), func(t *testing.T) {
			srv := newFakeServer(t)
			srv.set(func(s *fakeServer) { s.pushToSender = pushToSender })
			ctx := testCtx(t)
			var a1r, a2r, b1r recorder
			a1 := dial(t, srv, "alice", "a1", &a1r, nil)
			a2 := dial(t, srv, "alice", "a2", &a2r, nil)
			b1 := dial(t, srv, "bob", "b1", &b1r, nil)
			for _, c := range []*Client{a1, a2, b1} {
				if err := c.WaitCaughtUp(ctx); err != nil {
					t.Fatal(err)
				}
			}

			ack, err := a1.Send(ctx, text("bob", "hi bob"))
			if err != nil {
				t.Fatal(err)
			}
			if ack.GetSeq() != 1 || ack.GetDuplicate() {
				t.Fatalf("ack = %v, want seq 1, not duplicate", ack)
			}
			// Delivered before Send returned.
			own := a1.Entries()
			if len(own) != 1 || own[0].GetMessage().GetMessageId() != ack.GetMessageId() ||
				own[0].GetMessage().GetSenderDevice() != "a1" || string(own[0].GetMessage().GetContent()) != "hi bob" {
				t.Fatalf("a1 entries after its send = %v", own)
			}
			got, err := b1.WaitEntry(ctx, func(e *wire.Entry) bool { return string(e.GetMessage().GetContent()) == "hi bob" })
			if err != nil {
				t.Fatal(err)
			}
			if got.GetMessage().GetConversation().GetId() != "alice" {
				t.Fatalf("bob's copy conversation = %v, want DIRECT alice", got.GetMessage().GetConversation())
			}
			if _, err := a2.WaitEntry(ctx, func(e *wire.Entry) bool { return e.GetMessage().GetMessageId() == ack.GetMessageId() }); err != nil {
				t.Fatal(err)
			}

			// bob answers: alice's seq 2 reaches both devices.
			if _, err := b1.Send(ctx, text("alice", "hi alice")); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*Client{a1, a2} {
				if err := c.WaitCursor(ctx, 2); err != nil {
					t.Fatal(err)
				}
			}
			// A late copy of seq 1 changes nothing.
			srv.push("alice", 1)
			if _, err := a1.Ping(ctx); err != nil { // orders after the push
				t.Fatal(err)
			}
			for name, r := range map[string]*recorder{"a1": &a1r, "a2": &a2r} {
				if got := r.seqList(); !slices.Equal(got, []uint64{1, 2}) {
					t.Errorf("%s OnEntry saw %v, want [1 2]", name, got)
				}
			}
			if got := b1r.seqList(); !slices.Equal(got, []uint64{1, 2}) {
				t.Errorf("b1 OnEntry saw %v, want [1 2]", got)
			}
			for name, c := range map[string]*Client{"a1": a1, "a2": a2, "b1": b1} {
				if n := c.Stats().GapPulls; n != 0 {
					t.Errorf("%s made %d gap pulls, want 0", name, n)
				}
			}
		})
	}
}

// A send the server stored but never acked (the connection dropped) is
// resent after the reconnect with the same client message ID; the second
// ack says duplicate. The reconnect logs in with reconnect and the cursor,
// catches up what was missed, and sends queued meanwhile go out after it.
func TestResendAfterReconnect(t *testing.T) {
	srv := newFakeServer(t)
	srv.addEntries("alice", 3)
	rec := &recorder{}
	c := dial(t, srv, "alice", "a1", rec, func(o *Options) {
		o.Reconnect = true
		o.BackoffMin, o.BackoffMax = 150*time.Millisecond, 200*time.Millisecond
	})
	ctx := testCtx(t)
	if err := c.WaitCursor(ctx, 3); err != nil {
		t.Fatal(err)
	}

	srv.set(func(s *fakeServer) { s.swallowSends = 1 })
	first := c.SendAsync(text("bob", "one"))
	if first.ClientMessageID() == "" {
		t.Fatal("no client message ID generated")
	}
	eventually(t, "the drop", func() bool { return !c.Connected() })
	srv.addEntries("alice", 1) // seq 5 arrives while alice is away
	second := c.SendAsync(text("bob", "two"))

	ack1, err := first.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !ack1.GetDuplicate() || ack1.GetSeq() != 4 {
		t.Fatalf("ack of the resend = %v, want duplicate, seq 4", ack1)
	}
	ack2, err := second.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ack2.GetDuplicate() || ack2.GetSeq() != 6 {
		t.Fatalf("ack of the queued send = %v, want seq 6, not duplicate", ack2)
	}

	sends := received[*wire.Frame_Send](srv, "a1")
	var ids []string
	for _, s := range sends {
		ids = append(ids, s.Send.GetClientMessageId())
	}
	want := []string{first.ClientMessageID(), first.ClientMessageID(), second.ClientMessageID()}
	if !slices.Equal(ids, want) {
		t.Fatalf("server saw sends %v, want %v", ids, want)
	}
	// Generated IDs are first attempts; the resend is not one (the server
	// must look it up), the send queued during the reconnect still is.
	var firsts []bool
	for _, s := range sends {
		firsts = append(firsts, s.Send.GetFirstAttempt())
	}
	if !slices.Equal(firsts, []bool{true, false, true}) {
		t.Fatalf("first_attempt of the sends %v, want [true false true]", firsts)
	}
	if !first.msg.GetFirstAttempt() {
		t.Fatal("the resend changed the caller's message")
	}
	logins := srv.loginList()
	if len(logins) != 2 {
		t.Fatalf("%d logins, want 2", len(logins))
	}
	if l := logins[1]; !l.GetReconnect() || !l.GetHasCursor() || l.GetCursor() != 3 {
		t.Fatalf("reconnect login = %v, want reconnect, cursor 3", l)
	}
	if err := c.WaitCursor(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if got := rec.seqList(); !slices.Equal(got, seqRange(1, 6)) {
		t.Fatalf("OnEntry saw %v, want 1..6", got)
	}
	st := c.Stats()
	if st.Reconnects != 1 || st.Resent != 1 || st.DuplicateAcks != 1 || st.Acks != 2 {
		t.Fatalf("Stats = %+v, want 1 reconnect, 1 resent, 2 acks (1 duplicate)", st)
	}
	if n := srv.logLen("bob"); n != 2 {
		t.Fatalf("bob's log has %d entries, want 2 (no double message)", n)
	}
	if n, _, _ := rec.counts(); n != 2 {
		t.Fatalf("OnLogin called %d times, want 2", n)
	}
}

// JSON subprotocol: frames travel as protojson text both ways.
func TestJSONMode(t *testing.T) {
	srv := newFakeServer(t)
	ctx := testCtx(t)
	a := dial(t, srv, "alice", "a1", nil, func(o *Options) { o.JSON = true })
	b := dial(t, srv, "bob", "b1", nil, nil)
	if err := b.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	m := text("bob", "über json")
	m.Attributes = map[string]string{"k": "v"}
	ack, err := a.Send(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.WaitEntry(ctx, byClientMessageID(m.GetClientMessageId()))
	if err != nil {
		t.Fatal(err)
	}
	if e.GetMessage().GetMessageId() != ack.GetMessageId() || string(e.GetMessage().GetContent()) != "über json" {
		t.Fatalf("bob got %v", e)
	}
	if _, err := b.Send(ctx, text("alice", "back")); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitCursor(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	sessions := srv.live("alice")
	if len(sessions) != 1 || !sessions[0].json {
		t.Fatal("alice's session did not negotiate tandem.v1.json")
	}
	srv.mu.Lock()
	wrong := srv.wrongOpcode
	srv.mu.Unlock()
	if wrong != 0 {
		t.Fatalf("%d frames with the wrong opcode", wrong)
	}
}

// CursorAck: batched by count, by interval, and flushed on Close.
func TestCursorAck(t *testing.T) {
	srv := newFakeServer(t)
	ctx := testCtx(t)
	c := dial(t, srv, "alice", "a1", nil, func(o *Options) {
		o.AckEvery = 3
		o.AckInterval = time.Hour
	})
	if err := c.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	srv.push("alice", srv.addEntries("alice", 3)...)
	eventually(t, "cursor ack after 3 entries", func() bool { return slices.Equal(srv.acksOf("a1"), []uint64{3}) })
	srv.push("alice", srv.addEntries("alice", 1)...)
	if err := c.WaitCursor(ctx, 4); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := srv.acksOf("a1"); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("acks %v before Close, want [3]", got)
	}
	c.Close()
	eventually(t, "cursor ack on Close", func() bool { return slices.Equal(srv.acksOf("a1"), []uint64{3, 4}) })

	d := dial(t, srv, "alice", "a2", nil, func(o *Options) {
		o.Cursor = 4
		o.AckInterval = 20 * time.Millisecond
	})
	srv.push("alice", srv.addEntries("alice", 1)...)
	if err := d.WaitCursor(ctx, 5); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cursor ack by interval", func() bool { return slices.Equal(srv.acksOf("a2"), []uint64{5}) })
}

func TestKick(t *testing.T) {
	t.Run("no reconnect", func(t *testing.T) {
		srv := newFakeServer(t)
		rec := &recorder{}
		c := dial(t, srv, "alice", "a1", rec, func(o *Options) { o.Reconnect = true })
		ctx := testCtx(t)
		if err := c.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		k := &wire.Kick{Reason: wire.Kick_LOGIN_CONFLICT, NewDevicePlatform: "ios", NewDeviceLoginExt: "phone",
			CloseCode: wire.CloseLoginConflict}
		srv.live("alice")[0].kick(k)
		select {
		case <-c.Done():
		case <-ctx.Done():
			t.Fatal("client did not stop after a kick without may_reconnect")
		}
		var ke *KickError
		if !errors.As(c.Err(), &ke) || ke.Kick.GetReason() != wire.Kick_LOGIN_CONFLICT || ke.Kick.GetNewDeviceLoginExt() != "phone" {
			t.Fatalf("Err = %v, want KickError LOGIN_CONFLICT", c.Err())
		}
		if _, n, _ := rec.counts(); n != 1 || c.Kicked().GetNewDevicePlatform() != "ios" {
			t.Fatalf("OnKick called %d times, Kicked = %v", n, c.Kicked())
		}
		if _, err := c.Send(ctx, text("bob", "x")); !errors.As(err, &ke) {
			t.Fatalf("Send after kick: %v, want the KickError", err)
		}
		time.Sleep(100 * time.Millisecond) // ten back-offs
		if n := len(srv.loginList()); n != 1 {
			t.Fatalf("%d logins, want 1: a kicked client must not reconnect", n)
		}
	})
	t.Run("may reconnect", func(t *testing.T) {
		srv := newFakeServer(t)
		c := dial(t, srv, "alice", "a1", nil, func(o *Options) { o.Reconnect = true })
		ctx := testCtx(t)
		if err := c.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		srv.live("alice")[0].kick(&wire.Kick{Reason: wire.Kick_SHUTDOWN, CloseCode: wire.CloseShutdown, MayReconnect: true})
		eventually(t, "reconnect", func() bool { return c.Stats().Reconnects == 1 && c.Connected() })
		if _, err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reconnect refused", func(t *testing.T) {
		srv := newFakeServer(t)
		c := dial(t, srv, "alice", "a1", nil, func(o *Options) { o.Reconnect = true })
		srv.set(func(s *fakeServer) { s.refuseReconnect = true })
		srv.live("alice")[0].drop()
		select {
		case <-c.Done():
		case <-testCtx(t).Done():
			t.Fatal("client kept reconnecting after LOGIN_CONFLICT")
		}
		if ErrorCode(c.Err()) != wire.CodeLoginConflict {
			t.Fatalf("Err = %v, want LOGIN_CONFLICT", c.Err())
		}
	})
}

func TestDropWithoutReconnect(t *testing.T) {
	srv := newFakeServer(t)
	c := dial(t, srv, "alice", "a1", nil, nil)
	p := c.SendAsync(text("bob", "x"))
	if _, err := p.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	srv.live("alice")[0].drop()
	<-c.Done()
	if !errors.Is(c.Err(), ErrConnectionLost) {
		t.Fatalf("Err = %v, want ErrConnectionLost", c.Err())
	}
}

func TestLoginRefused(t *testing.T) {
	srv := newFakeServer(t)
	_, err := Dial(testCtx(t), Options{URL: srv.url, Token: "garbage", DeviceID: "d"})
	if ErrorCode(err) != wire.CodeBadToken {
		t.Fatalf("Dial with a bad token: %v, want BAD_TOKEN", err)
	}
	if _, err := Dial(testCtx(t), Options{URL: srv.url}); err == nil {
		t.Fatal("Dial without token and device ID succeeded")
	}
	if gs := packageGoroutines("tandem/client.(*Client)"); len(gs) != 0 {
		t.Fatalf("failed Dial left goroutines:\n%s", strings.Join(gs, "\n\n"))
	}
}

func TestCompensation(t *testing.T) {
	t.Run("announced", func(t *testing.T) {
		srv := newFakeServer(t)
		srv.set(func(s *fakeServer) { s.compFrom = 3 })
		srv.addEntries("alice", 5)
		rec := &recorder{}
		c := dial(t, srv, "alice", "a1", rec, func(o *Options) { o.HasCursor = false })
		if err := c.WaitCaughtUp(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if got := rec.seqList(); !slices.Equal(got, seqRange(3, 5)) || c.Cursor() != 5 {
			t.Fatalf("OnEntry saw %v, cursor %d; want 3..5", got, c.Cursor())
		}
		if c.LoginOk().GetCompensationFromSeq() != 3 {
			t.Fatalf("LoginOk = %v", c.LoginOk())
		}
		if l := srv.loginList()[0]; l.GetHasCursor() {
			t.Fatalf("login %v has a cursor", l)
		}
	})
	t.Run("not announced", func(t *testing.T) {
		srv := newFakeServer(t)
		srv.set(func(s *fakeServer) { s.compFrom, s.compAnnounce = 4, false })
		srv.addEntries("alice", 5)
		rec := &recorder{}
		c := dial(t, srv, "alice", "a1", rec, func(o *Options) { o.HasCursor = false })
		if err := c.WaitCaughtUp(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		srv.push("alice", srv.addEntries("alice", 1)...)
		if err := c.WaitCursor(testCtx(t), 6); err != nil {
			t.Fatal(err)
		}
		if got := rec.seqList(); !slices.Equal(got, seqRange(4, 6)) {
			t.Fatalf("OnEntry saw %v, want 4..6", got)
		}
		if n := c.Stats().GapPulls; n != 0 {
			t.Fatalf("%d gap pulls", n)
		}
	})
	t.Run("nothing to compensate", func(t *testing.T) {
		srv := newFakeServer(t)
		srv.set(func(s *fakeServer) { s.compFrom, s.compAnnounce = 8, false })
		srv.addEntries("alice", 7)
		rec := &recorder{}
		c := dial(t, srv, "alice", "a1", rec, func(o *Options) { o.HasCursor = false })
		if err := c.WaitCaughtUp(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if c.Cursor() != 7 {
			t.Fatalf("cursor %d after an empty compensation, want 7", c.Cursor())
		}
		srv.push("alice", srv.addEntries("alice", 1)...)
		if err := c.WaitCursor(testCtx(t), 8); err != nil {
			t.Fatal(err)
		}
		if got := rec.seqList(); !slices.Equal(got, []uint64{8}) || c.Stats().GapPulls != 0 {
			t.Fatalf("OnEntry saw %v, %d pulls; want [8], none", got, c.Stats().GapPulls)
		}
	})
}

// Many sends in flight on one connection; Request and error replies.
func TestPipelinedSendsAndRequests(t *testing.T) {
	srv := newFakeServer(t)
	ctx := testCtx(t)
	c := dial(t, srv, "alice", "a1", nil, func(o *Options) { o.KeepEntries = -1 })
	const n = 300
	ps := make([]*Pending, n)
	for i := range ps {
		ps[i] = c.SendAsync(text("bob", fmt.Sprint(i)))
	}
	seen := map[uint64]bool{}
	for i, p := range ps {
		ack, err := p.Wait(ctx)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if ack.GetSeq() != uint64(i+1) || seen[ack.GetSeq()] {
			t.Fatalf("send %d acked with seq %d", i, ack.GetSeq())
		}
		seen[ack.GetSeq()] = true
	}
	if err := c.WaitCursor(ctx, n); err != nil {
		t.Fatal(err)
	}
	if c.Unacked() != 0 || len(c.Entries()) != 0 {
		t.Fatalf("Unacked %d, kept entries %d", c.Unacked(), len(c.Entries()))
	}

	_, err := c.Send(ctx, &wire.Send{Content: []byte("no conversation")})
	if ErrorCode(err) != wire.CodeInvalidArgument {
		t.Fatalf("invalid send: %v, want INVALID_ARGUMENT", err)
	}
	f, err := c.Request(ctx, &wire.Frame{Body: &wire.Frame_ListDevices{ListDevices: &wire.ListDevices{}}})
	if err != nil || f.GetOk() == nil || f.GetId() == 0 {
		t.Fatalf("Request = %v, %v", f, err)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTransient(t *testing.T) {
	srv := newFakeServer(t)
	ctx := testCtx(t)
	rec := &recorder{}
	a := dial(t, srv, "alice", "a1", nil, nil)
	b := dial(t, srv, "bob", "b1", rec, nil)
	if err := b.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	m := text("bob", "typing")
	m.Options = &wire.SendOptions{Transient: true}
	ack, err := a.Send(ctx, m)
	if err != nil || ack.GetSeq() != 0 {
		t.Fatalf("transient ack %v, %v", ack, err)
	}
	got, err := b.WaitTransient(ctx, func(m *wire.Message) bool { return string(m.GetContent()) == "typing" })
	if err != nil {
		t.Fatal(err)
	}
	if _, _, n := rec.counts(); got.GetClientMessageId() != m.GetClientMessageId() || n != 1 {
		t.Fatalf("transient %v, OnTransient saw %d", got, n)
	}
	if a.Cursor() != 0 || len(a.Entries()) != 0 || len(rec.seqList()) != 0 {
		t.Fatal("a transient message became an entry")
	}
}

func TestLogout(t *testing.T) {
	srv := newFakeServer(t)
	c := dial(t, srv, "alice", "a1", nil, func(o *Options) { o.Reconnect = true })
	srv.push("alice", srv.addEntries("alice", 2)...)
	if err := c.WaitCursor(testCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err = %v after Logout", c.Err())
	}
	if n := len(received[*wire.Frame_Logout](srv, "a1")); n != 1 {
		t.Fatalf("server saw %d Logouts", n)
	}
	if acks := srv.acksOf("a1"); len(acks) == 0 || acks[len(acks)-1] != 2 {
		t.Fatalf("acks %v, want the cursor acked before Logout", acks)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(srv.loginList()); n != 1 {
		t.Fatalf("%d logins: reconnected after Logout", n)
	}
	if _, err := c.Send(testCtx(t), text("bob", "late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Logout: %v", err)
	}
}

// Close returns only after every goroutine of the client exited: while
// connected, and while it is backing off between failed reconnects.
func TestCloseStopsGoroutines(t *testing.T) {
	srv := newFakeServer(t)
	ctx := testCtx(t)
	c1 := dial(t, srv, "alice", "a1", nil, func(o *Options) { o.PingInterval = 10 * time.Millisecond })
	c2 := dial(t, srv, "alice", "a2", nil, func(o *Options) { o.Reconnect = true })
	if err := c1.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	// Two per client once they run: otherwise the check proves nothing.
	eventually(t, "client goroutines visible", func() bool {
		return len(packageGoroutines("tandem/client.(*Client)")) >= 4
	})
	stuck := c1.SendAsync(text("bob", "x"))
	c1.Close()
	if _, err := stuck.Result(); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("pending send after Close: %v", err)
	}

	srv.close() // c2 now fails to reconnect, again and again
	eventually(t, "failed reconnects", func() bool { return !c2.Connected() })
	time.Sleep(50 * time.Millisecond)
	c2.Close()
	if gs := packageGoroutines("tandem/client.(*Client)"); len(gs) != 0 {
		t.Fatalf("goroutines left after Close:\n%s", strings.Join(gs, "\n\n"))
	}
	if !errors.Is(c2.Err(), ErrClosed) {
		t.Fatalf("Err = %v", c2.Err())
	}
}

func TestMintToken(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			UserID     string `json:"user_id"`
			TTLSeconds int64  `json:"ttl_seconds"`
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v1/tokens" || r.Header.Get("Authorization") != "Bearer sekret" {
			http.Error(w, `{"code":1016,"name":"UNAUTHORIZED"}`, http.StatusUnauthorized)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"token":"tok-%s-%d","expires_at_ms":123}`, body.UserID, body.TTLSeconds)
	}))
	defer api.Close()
	ctx := testCtx(t)
	tok, err := MintToken(ctx, api.URL+"/", "sekret", "alice", time.Hour)
	if err != nil || tok != "tok-alice-3600" {
		t.Fatalf("MintToken = %q, %v", tok, err)
	}
	if _, err := MintToken(ctx, api.URL, "wrong", "alice", time.Hour); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("MintToken with a wrong key: %v", err)
	}
}

func TestTokenSubject(t *testing.T) {
	// {"alg":"HS256"}.{"sub":"alice","exp":1}.sig
	tok := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2ln"
	if got := tokenSubject(tok); got != "alice" {
		t.Fatalf("tokenSubject = %q", got)
	}
	if got := tokenSubject("tok-alice"); got != "" {
		t.Fatalf("tokenSubject of a non-JWT = %q", got)
	}
}
