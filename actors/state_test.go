package actors

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/oklog/ulid/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// testConfig is c with its defaults, as newUserState takes it.
func testConfig(c Config) *Config {
	c = c.withDefaults()
	return &c
}

// fakeLog is an in-memory logReader: what a store would return for dedup
// keys of committed entries.
type fakeLog struct {
	byKey map[string]*wire.Entry
	index map[string]persistence.Seq // raw values of dedup keys ("v:" versions)
	err   error
}

func (f *fakeLog) indexed(_, key string) (persistence.Seq, bool, error) {
	if f.err != nil {
		return 0, false, f.err
	}
	v, ok := f.index[key]
	return v, ok, nil
}

func (f *fakeLog) entryByKey(_, key string) (*wire.Entry, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.byKey[key], nil
}

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

type harness struct {
	t      *testing.T
	st     *userState
	log    *fakeLog
	ids    int
	logged []*wire.Entry // what h.run saw appended (conv_test.go)
}

func newHarness(t *testing.T, user string) *harness {
	h := &harness{t: t, log: &fakeLog{byKey: map[string]*wire.Entry{}}}
	h.st = newUserState(user, testConfig(Config{}), h.log, func() string { h.ids++; return fmt.Sprintf("M%04d", h.ids) })
	h.st.activated(1, 0, 0, nil, t0)
	return h
}

func sk(sid uint64) sessionKey { return sessionKey{addr: "node1", id: "gateway", sid: sid} }

func (h *harness) login(sid uint64, device string, hasCursor bool, cursor uint64) *wire.LoginOk {
	h.t.Helper()
	platform := "web" // web allows 10 sessions by default: tests of other rules don't trip the kick policy
	if device == "phone" {
		platform = "ios"
	}
	req := &actorpb.LoginRequest{Login: &wire.Login{DeviceId: device, Platform: platform, HasCursor: hasCursor, Cursor: cursor}}
	reply, effs := h.st.login(sk(sid), req, t0, 1, 1)
	// The login writes the device record, then asks for the first page.
	h.completeAppends(effs)
	h.st.catchupPage(sk(sid), nil, pageLimit)
	if !h.st.sessions.get(sk(sid)).live {
		h.t.Fatalf("session %d not live after an empty catch-up page", sid)
	}
	return reply.GetLoginOk()
}

// completeAppends acknowledges every append in effs as durable, in order,
// and returns the effects that followed.
func (h *harness) completeAppends(effs []effect) []effect {
	var out []effect
	for _, e := range effs {
		if _, ok := e.(effAppend); ok {
			out = append(out, h.st.appendDone(nil, t0)...)
		}
	}
	return out
}

func appends(effs []effect) []persistence.AppendRequest {
	var out []persistence.AppendRequest
	for _, e := range effs {
		if a, ok := e.(effAppend); ok {
			out = append(out, a.req)
		}
	}
	return out
}

// framesTo returns the frames effs push to session sid.
func framesTo(effs []effect, sid uint64) []*wire.Frame {
	var out []*wire.Frame
	for _, e := range effs {
		if p, ok := e.(effPush); ok {
			for _, s := range p.sids {
				if s == sid {
					out = append(out, p.frames...)
				}
			}
		}
	}
	return out
}

func delivers(effs []effect) []*actorpb.OutboxItem {
	var out []*actorpb.OutboxItem
	for _, e := range effs {
		switch d := e.(type) {
		case effDeliver:
			out = append(out, d.item)
		case effDeliverBulk: // a group message's: one item per member it goes to
			if d.idx == nil {
				for i := range d.b.members {
					out = append(out, d.b.item(i))
				}
			}
			for _, i := range d.idx {
				out = append(out, d.b.item(int(i)))
			}
		}
	}
	return out
}

func directSend(cmid, peer, text string) *wire.Send {
	return &wire.Send{
		ClientMessageId: cmid,
		Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
		Type:            int32(wire.MessageType_TEXT),
		Content:         []byte(text),
		MentionList:     []string{"bob"},
	}
}

func TestSendAckCarbonDeliver(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	h.login(2, "laptop", false, 0)
	seq := h.st.lastSeq + 1 // after the two devices' login events

	effs := h.st.send(sk(1), 7, directSend("c1", "bob", "hi"), t0)
	reqs := appends(effs)
	if len(reqs) != 1 {
		t.Fatalf("send gave %d appends, want 1", len(reqs))
	}
	r := reqs[0]
	if r.User != "alice" || r.Epoch != 1 || len(r.Entries) != 1 || r.Entries[0].Seq != seq {
		t.Fatalf("append = %+v, want alice epoch 1 seq %d", r, seq)
	}
	if len(r.Dedup) != 2 || r.Dedup[0] != (persistence.DedupKey{Key: "c:c1", Seq: seq}) || r.Dedup[1] != (persistence.DedupKey{Key: "m:M0001", Seq: seq}) {
		t.Fatalf("dedup = %+v", r.Dedup)
	}
	if len(r.OutboxPut) != 0 || r.Fanout == nil || *r.Fanout != (persistence.FanoutMark{Done: seq - 1, Pending: true}) {
		t.Fatalf("outbox put %+v, mark %+v: the entry is the pending fan-out, the mark pending from it in the same append", r.OutboxPut, r.Fanout)
	}
	if got := framesTo(effs, 1); len(got) != 0 {
		t.Fatalf("acked before the append was durable: %v", got)
	}

	done := h.st.appendDone(nil, t0)
	acks := framesTo(done, 1)
	if len(acks) != 1 || acks[0].GetId() != 7 || acks[0].GetSendAck().GetSeq() != uint64(seq) || acks[0].GetSendAck().GetMessageId() != "M0001" || acks[0].GetSendAck().GetDuplicate() {
		t.Fatalf("sender session got %v, want one SendAck id 7 seq %d", acks, seq)
	}
	carbons := framesTo(done, 2)
	if len(carbons) != 1 || len(carbons[0].GetPush().GetEntries()) != 1 {
		t.Fatalf("other device got %v, want one Push (carbon)", carbons)
	}
	if m := carbons[0].GetPush().GetEntries()[0].GetMessage(); m.GetConversation().GetId() != "bob" || m.GetSenderDevice() != "phone" || string(m.GetContent()) != "hi" {
		t.Fatalf("carbon message = %v", m)
	}
	d := delivers(done)
	if len(d) != 1 || d[0].GetToUser() != "bob" {
		t.Fatalf("delivers = %v, want one to bob", d)
	}
	theirs := d[0].GetDeliver().GetMessage()
	if theirs.GetConversation().GetId() != "alice" || !theirs.GetMentioned() || theirs.GetMessageId() != "M0001" {
		t.Fatalf("recipient's copy = %v: conversation must be from bob's side and mention bob", theirs)
	}
	if h.st.committed != seq || h.st.out.itemCount() != 1 {
		t.Fatalf("committed %d outbox %d, want %d and 1", h.st.committed, h.st.out.itemCount(), seq)
	}
}

func TestSendDedup(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	seq := h.st.lastSeq + 1

	first := h.st.send(sk(1), 1, directSend("c1", "bob", "hi"), t0)
	// A resend while the first is in flight waits for the same commit.
	if effs := h.st.send(sk(1), 2, directSend("c1", "bob", "hi"), t0); len(effs) != 0 {
		t.Fatalf("in-flight resend produced %v, want nothing until the commit", effs)
	}
	done := h.completeAppends(first)
	acks := framesTo(done, 1)
	if len(acks) != 2 || acks[0].GetSendAck().GetDuplicate() || !acks[1].GetSendAck().GetDuplicate() ||
		acks[0].GetSendAck().GetSeq() != acks[1].GetSendAck().GetSeq() || acks[1].GetId() != 2 {
		t.Fatalf("acks = %v, want original then duplicate with the same seq", acks)
	}

	// After the commit the activation's recent acks answer: same ids, no
	// new append (the store's index answers older ones: dedup_test.go).
	effs := h.st.send(sk(1), 3, directSend("c1", "bob", "hi"), t0)
	if len(appends(effs)) != 0 {
		t.Fatal("a resend after commit appended again")
	}
	a := framesTo(effs, 1)
	orig := acks[0].GetSendAck()
	if len(a) != 1 || !a[0].GetSendAck().GetDuplicate() || a[0].GetSendAck().GetMessageId() != orig.GetMessageId() ||
		a[0].GetSendAck().GetSeq() != orig.GetSeq() || a[0].GetSendAck().GetServerTimeMs() != orig.GetServerTimeMs() {
		t.Fatalf("late resend answered %v, want a duplicate of %v", a, orig)
	}
	if h.st.lastSeq != seq {
		t.Fatalf("lastSeq = %d after duplicates, want %d", h.st.lastSeq, seq)
	}

	// A storage error on the lookup is a temporary error, not a new message.
	h.log.err = errors.New("disk on fire")
	effs = h.st.send(sk(1), 4, directSend("c2", "bob", "x"), t0)
	if f := framesTo(effs, 1); len(f) != 1 || f[0].GetError().GetName() != "UNAVAILABLE" || len(appends(effs)) != 0 {
		t.Fatalf("lookup failure answered %v", f)
	}
}

func TestSendValidation(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	base := h.st.lastSeq
	bad := map[string]*wire.Send{
		"empty client id": {Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Type: 1},
		"bad peer id":     {ClientMessageId: "c", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "b b"}, Type: 1},
		"no conversation": {ClientMessageId: "c", Type: 1},
		"group (not yet)": {ClientMessageId: "c", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, Type: 1},
		"type 0":          {ClientMessageId: "c", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}},
		"reserved type":   {ClientMessageId: "c", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Type: 500},
		"bad mention":     {ClientMessageId: "c", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Type: 1, MentionList: []string{""}},
		"empty attr key":  {ClientMessageId: "c", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Type: 1, Attributes: map[string]string{"": "v"}},
		"long client id":  {ClientMessageId: string(make([]byte, 65)), Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Type: 1},
	}
	for name, m := range bad {
		t.Run(name, func(t *testing.T) {
			effs := h.st.send(sk(1), 9, m, t0)
			f := framesTo(effs, 1)
			if len(f) != 1 || f[0].GetError().GetName() != "INVALID_ARGUMENT" || f[0].GetId() != 9 {
				t.Fatalf("got %v, want INVALID_ARGUMENT for id 9", f)
			}
			if len(appends(effs)) != 0 || h.st.lastSeq != base {
				t.Fatal("a refused send changed the log")
			}
		})
	}
	// Custom types pass.
	ok := directSend("c9", "bob", "x")
	ok.Type = 1234
	if len(appends(h.st.send(sk(1), 1, ok, t0))) != 1 {
		t.Fatal("custom type 1234 refused")
	}
}

func TestDeliverIdempotentAndPushed(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	h.login(2, "pad", false, 0)
	seq := h.st.lastSeq + 1
	d := &actorpb.Deliver{FromUser: "alice", OriginSeq: 5, Message: &wire.Message{
		MessageId: "M1", Sender: "alice", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}, Type: 1,
	}}
	effs := h.st.deliver(d, t0)
	if r := appends(effs); len(r) != 1 || r[0].Dedup[0].Key != "m:M1" || r[0].Entries[0].Seq != seq {
		t.Fatalf("deliver appended %+v", r)
	}
	if again := h.st.deliver(d, t0); len(again) != 0 {
		t.Fatalf("repeat while in flight gave %v", again)
	}
	done := h.completeAppends(effs)
	if len(framesTo(done, 1)) != 1 || len(framesTo(done, 2)) != 1 {
		t.Fatal("both live devices must get the push")
	}
	var ack *actorpb.DeliverAck
	for _, e := range done {
		if a, ok := e.(effDeliverAck); ok && a.to == "alice" {
			ack = a.ack
		}
	}
	if ack == nil || ack.GetSeq() != uint64(seq) || ack.GetOriginSeq() != 5 || ack.GetToUser() != "bob" {
		t.Fatalf("deliver ack = %v", ack)
	}
	// A re-driven copy after the commit is answered from the index.
	h.log.byKey["m:M1"] = &wire.Entry{Seq: uint64(seq)}
	effs = h.st.deliver(d, t0)
	if len(appends(effs)) != 0 || len(effs) != 1 {
		t.Fatalf("re-driven deliver gave %v, want only an ack", effs)
	}
}

func TestOutboxConfirmRedriveAndFlush(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	seq := h.st.lastSeq + 1
	h.completeAppends(h.st.send(sk(1), 1, directSend("c1", "bob", "hi"), t0))
	if h.st.out.itemCount() != 1 {
		t.Fatal("no pending fan-out after the commit")
	}
	// Not confirmed: re-driven after the delay, not before.
	if d := delivers(h.st.tick(t0.Add(500 * time.Millisecond))); len(d) != 0 {
		t.Fatalf("re-driven too early: %v", d)
	}
	if d := delivers(h.st.tick(t0.Add(time.Second))); len(d) != 1 {
		t.Fatalf("not re-driven after 1 s: %v", d)
	}
	// Confirmed: the mark is cleared in the next flush, never re-driven again.
	h.st.deliverAck(&actorpb.DeliverAck{ToUser: "bob", MessageId: "M0001", OriginSeq: uint64(seq), Seq: 3})
	effs := h.st.tick(t0.Add(time.Hour))
	if len(delivers(effs)) != 0 {
		t.Fatal("re-driven after confirmation")
	}
	r := appends(effs)
	if len(r) != 1 || r[0].Fanout == nil || r[0].Fanout.Pending || len(r[0].OutboxDone) != 0 || len(r[0].Entries) != 0 {
		t.Fatalf("flush = %+v, want the mark cleared", r)
	}
	h.completeAppends(effs)
	if h.st.needsTick() {
		t.Fatal("not idle once the mark is cleared")
	}
	// An ack for something else changes nothing.
	if effs := h.st.deliverAck(&actorpb.DeliverAck{ToUser: "carol", OriginSeq: uint64(seq)}); len(effs) != 0 {
		t.Fatal("stray ack acted on")
	}
}

func TestActivationRedrivesOutbox(t *testing.T) {
	st := newUserState("alice", testConfig(Config{}), &fakeLog{}, NewMessageID)
	item := &actorpb.OutboxItem{ToUser: "bob", Deliver: &actorpb.Deliver{FromUser: "alice", OriginSeq: 3, Message: &wire.Message{MessageId: "X"}}}
	effs := st.activated(4, 3, 100, []*actorpb.OutboxItem{item}, t0)
	if d := delivers(effs); len(d) != 1 || !proto.Equal(d[0], item) {
		t.Fatalf("activation re-drove %v", d)
	}
	if st.lastSeq != 3 || st.committed != 3 || st.epoch != 4 || st.idle() {
		t.Fatalf("state after activation: seq %d committed %d epoch %d idle %v", st.lastSeq, st.committed, st.epoch, st.idle())
	}
}

func TestSeqsDenseAndTimeMonotonic(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	base := h.st.lastSeq
	var seqs []persistence.Seq
	var times []int64
	for i := range 5 {
		now := t0.Add(-time.Duration(i) * time.Second) // the clock steps back
		for _, r := range appends(h.st.send(sk(1), uint64(i+1), directSend(fmt.Sprint("s", i), "bob", "x"), now)) {
			seqs = append(seqs, r.Entries[0].Seq)
			times = append(times, r.Entries[0].TimeMS)
		}
		for _, r := range appends(h.st.deliver(&actorpb.Deliver{FromUser: "bob", Message: &wire.Message{MessageId: fmt.Sprint("d", i)}}, now)) {
			seqs = append(seqs, r.Entries[0].Seq)
			times = append(times, r.Entries[0].TimeMS)
		}
	}
	for i, s := range seqs {
		if s != base+persistence.Seq(i+1) {
			t.Fatalf("seqs %v not dense from %d", seqs, base+1)
		}
		if i > 0 && times[i] < times[i-1] {
			t.Fatalf("entry times went backwards: %v", times)
		}
	}
}

func TestCatchupPagesThenLive(t *testing.T) {
	h := newHarness(t, "bob")
	h.st.activated(1, 450, 0, nil, t0)
	reply, effs := h.st.login(sk(1), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "d", Platform: "web", HasCursor: true, Cursor: 100}}, t0, 0, 1)
	if reply.GetLoginOk().GetLastSeq() != 450 || reply.GetLoginOk().GetCompensationFromSeq() != 0 {
		t.Fatalf("LoginOk = %v", reply)
	}
	h.completeAppends(effs)
	sess := h.st.sessions.get(sk(1))
	if sess.next != 101 {
		t.Fatalf("catch-up starts at %d, want 101", sess.next)
	}
	// A live push while catching up skips this session (it reads it from the log).
	pushed := h.completeAppends(h.st.deliver(&actorpb.Deliver{FromUser: "alice", Message: &wire.Message{MessageId: "new"}}, t0))
	if len(framesTo(pushed, 1)) != 0 {
		t.Fatal("pushed to a session still catching up")
	}
	page := func(from, n int) []*wire.Entry {
		var es []*wire.Entry
		for i := range n {
			es = append(es, &wire.Entry{Seq: uint64(from + i)})
		}
		return es
	}
	effs = h.st.catchupPage(sk(1), page(101, pageLimit), pageLimit)
	f := framesTo(effs, 1)
	if len(f) != 1 || !f[0].GetSyncPage().GetHasMore() || f[0].GetId() != 0 {
		t.Fatalf("first page = %v, want has_more and id 0", f)
	}
	if _, again := effs[len(effs)-1].(effCatchup); !again || sess.live {
		t.Fatal("a full page must ask for the next one")
	}
	effs = h.st.catchupPage(sk(1), page(301, 151), pageLimit)
	if f := framesTo(effs, 1); len(f) != 2 || f[0].GetSyncPage().GetHasMore() || !sess.live || f[1].GetConversationList() == nil {
		t.Fatalf("last page = %v live=%v, want the last page then the conversation list", f, sess.live)
	}
	pushes := 0
	for _, e := range effs {
		if _, ok := e.(effPush); ok {
			pushes++
		}
	}
	if pushes != 1 {
		t.Fatalf("the last page and the conversation list in %d pushes, want one (one message to the gateway)", pushes)
	}
	pushed = h.completeAppends(h.st.deliver(&actorpb.Deliver{FromUser: "alice", Message: &wire.Message{MessageId: "newer"}}, t0))
	if len(framesTo(pushed, 1)) != 1 {
		t.Fatal("no live push after catch-up")
	}
}

func TestLoginCompensationAndCursorBeyondLog(t *testing.T) {
	h := newHarness(t, "bob")
	h.st.activated(1, 10, 0, nil, t0)
	for _, l := range []*wire.Login{
		{DeviceId: "new", Platform: "ios"},
		{DeviceId: "wiped", Platform: "ios", HasCursor: true, Cursor: 99},
		{DeviceId: "at-end", Platform: "ios", HasCursor: true, Cursor: 10},
	} {
		reply, _ := h.st.login(sk(uint64(len(l.DeviceId))), &actorpb.LoginRequest{Login: l}, t0, 7, 1)
		ok := reply.GetLoginOk()
		// A cursor beyond the log (10) is never accepted silently.
		if ahead := l.GetCursor() > 10; ok.GetCursorAhead() != ahead {
			t.Fatalf("%s: cursor_ahead = %v, want %v", l.DeviceId, ok.GetCursorAhead(), ahead)
		}
		if l.GetDeviceId() == "at-end" {
			if ok.GetCompensationFromSeq() != 0 || h.st.sessions.get(sk(uint64(len(l.DeviceId)))).next != 11 {
				t.Fatalf("at-end: %v, catch-up from %d; want a plain catch-up from 11", ok, h.st.sessions.get(sk(uint64(len(l.DeviceId)))).next)
			}
			continue
		}
		if got := ok.GetCompensationFromSeq(); got != 7 {
			t.Fatalf("%s: compensation_from_seq = %d, want 7", l.DeviceId, got)
		}
		if next := h.st.sessions.get(sk(uint64(len(l.DeviceId)))).next; next != 7 {
			t.Fatalf("%s: catch-up from %d, want 7", l.DeviceId, next)
		}
	}
}

func TestSameDeviceReplacesItself(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	_, effs := h.st.login(sk(2), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "phone", Platform: "ios", LoginExt: "new one"}}, t0, 1, 1)
	var kicked *wire.Kick
	for _, e := range effs {
		if k, ok := e.(effKick); ok && k.key == sk(1) {
			kicked = k.kick
		}
	}
	if kicked == nil || kicked.GetReason() != wire.Kick_LOGIN_CONFLICT || kicked.GetNewDeviceLoginExt() != "new one" || kicked.GetCloseCode() != wire.CloseLoginConflict {
		t.Fatalf("old session kick = %v", kicked)
	}
	if h.st.sessions.get(sk(1)) != nil || h.st.sessions.get(sk(2)) == nil {
		t.Fatal("session table not replaced")
	}
}

func TestCursorAckClampedAndFlushed(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	h.completeAppends(h.st.send(sk(1), 1, directSend("c1", "alice", "note to self"), t0))
	h.st.cursorAck(sk(1), 1000, t0) // beyond the log: clamped
	r := appends(h.st.tick(t0))
	if len(r) != 1 || len(r[0].Devices) != 1 || r[0].Devices[0].Cursor != h.st.committed || r[0].Devices[0].Data != nil {
		t.Fatalf("cursor flush = %+v, want cursor %d (the log's end) without rewriting the record", r, h.st.committed)
	}
}

func TestNoteToSelfHasNoFanout(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	effs := h.st.send(sk(1), 1, directSend("c1", "alice", "me"), t0)
	if r := appends(effs); len(r[0].OutboxPut) != 0 {
		t.Fatal("a note to self put a fan-out in the outbox")
	}
	if d := delivers(h.completeAppends(effs)); len(d) != 0 {
		t.Fatal("a note to self was delivered to another actor")
	}
}

func TestAppendFailureStopsWithoutAck(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	h.login(2, "pad", false, 0)
	first := h.st.send(sk(1), 1, directSend("c1", "bob", "a"), t0)
	h.st.send(sk(1), 2, directSend("c2", "bob", "b"), t0)
	_ = first
	effs := h.st.appendDone(persistence.ErrFenced, t0)
	var unavailable, lost int
	stopped := false
	for _, e := range effs {
		switch e := e.(type) {
		case effPush:
			if e.frames[0].GetSendAck() != nil {
				t.Fatal("acked after a failed append")
			}
			if e.frames[0].GetError().GetName() == "UNAVAILABLE" {
				unavailable++
			}
		case effKick:
			lost++
		case effStop:
			stopped = true
		case effDeliver:
			t.Fatal("delivered after a failed append")
		}
	}
	if unavailable != 2 || lost != 2 || !stopped {
		t.Fatalf("failure handling: %d UNAVAILABLE, %d sessions sent to log in again, stopped=%v", unavailable, lost, stopped)
	}
}

func TestFrameFromUnknownSession(t *testing.T) {
	h := newHarness(t, "alice")
	effs := h.st.send(sk(9), 1, directSend("c1", "bob", "x"), t0)
	if len(effs) != 1 {
		t.Fatalf("got %v", effs)
	}
	k, ok := effs[0].(effKick)
	if !ok || k.kick.GetCloseCode() != wire.CloseSessionLost || !k.kick.GetMayReconnect() {
		t.Fatalf("unknown session answered %v, want a kick asking to log in again", effs[0])
	}
}

func TestValidID(t *testing.T) {
	for s, want := range map[string]bool{
		"alice": true, "a.b@c:d-e_f": true, "": false, "a b": false, "ü": false,
		string(make([]byte, 64)): false, strings.Repeat("x", 65): false, strings.Repeat("x", 64): true,
	} {
		if got := ValidID(s); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestDeviceEventsInLog(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	if h.st.lastSeq != 1 {
		t.Fatalf("a login must write one LOGGED_IN entry, lastSeq = %d", h.st.lastSeq)
	}
	// A second device logs in: the live phone is told.
	_, effs := h.st.login(sk(2), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "laptop", Platform: "macos", LoginExt: "MBP"}}, t0, 1, 1)
	pushed := framesTo(h.completeAppends(effs), 1)
	if len(pushed) != 1 || pushed[0].GetPush().GetEntries()[0].GetDevice().GetKind() != wire.DeviceEvent_LOGGED_IN ||
		pushed[0].GetPush().GetEntries()[0].GetDevice().GetDevice().GetLoginExt() != "MBP" {
		t.Fatalf("phone got %v, want the laptop's LOGGED_IN event", pushed)
	}
	h.st.catchupPage(sk(2), nil, pageLimit)

	// A new phone kicks the old one: KICKED then LOGGED_IN, one append.
	_, effs = h.st.login(sk(3), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "phone2", Platform: "android"}}, t0, 1, 1)
	r := appends(effs)
	if len(r) != 1 || len(r[0].Entries) != 2 {
		t.Fatalf("kicking login appended %+v, want KICKED and LOGGED_IN in one append", r)
	}
	pushed = framesTo(h.completeAppends(effs), 2)
	es := pushed[0].GetPush().GetEntries()
	if len(es) != 2 || es[0].GetDevice().GetKind() != wire.DeviceEvent_KICKED || es[0].GetDevice().GetDevice().GetDeviceId() != "phone" ||
		es[1].GetDevice().GetKind() != wire.DeviceEvent_LOGGED_IN {
		t.Fatalf("laptop got %v", es)
	}
	h.st.catchupPage(sk(3), nil, pageLimit)

	// A drop writes nothing; a logout writes LOGGED_OUT.
	before := h.st.lastSeq
	if effs := h.st.closed(sk(3), false, t0); len(appends(effs)) != 0 || h.st.lastSeq != before {
		t.Fatalf("a dropped session wrote %v", appends(effs))
	}
	effs = h.st.closed(sk(2), true, t0)
	if r := appends(effs); len(r) != 1 || len(r[0].Entries) != 1 || h.st.lastSeq != before+1 {
		t.Fatalf("logout appended %+v", r)
	}
}

// notifications returns the webhook events in effs, as "type:device:reason".
func notifications(effs []effect) []string {
	var out []string
	for _, e := range effs {
		if n, ok := e.(effNotify); ok {
			out = append(out, fmt.Sprintf("%s:%s:%s", n.ev.Type, n.ev.Device.GetDeviceId(), n.ev.Reason))
		}
	}
	return out
}

func lastPresence(effs []effect) (devs []string, found bool) {
	for _, e := range effs {
		if p, ok := e.(effPresence); ok {
			devs, found = nil, true
			for _, d := range p.devices {
				devs = append(devs, d.GetDeviceId())
			}
		}
	}
	return devs, found
}

func TestPresenceAndWebhookEvents(t *testing.T) {
	h := newHarness(t, "alice")
	login := func(sid uint64, dev, platform string) []effect {
		_, effs := h.st.login(sk(sid), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: dev, Platform: platform}}, t0, 1, 1)
		h.st.catchupPage(sk(sid), nil, pageLimit)
		return effs
	}
	effs := login(1, "phone", "ios")
	if got := fmt.Sprint(notifications(effs)); got != "[device.login:phone: user.online:phone:]" {
		t.Fatalf("first login notified %s", got)
	}
	if devs, ok := lastPresence(effs); !ok || fmt.Sprint(devs) != "[phone]" {
		t.Fatalf("presence after first login: %v %v", devs, ok)
	}
	effs = login(2, "web1", "web")
	if got := fmt.Sprint(notifications(effs)); got != "[device.login:web1:]" {
		t.Fatalf("second login notified %s (the user was already online)", got)
	}
	effs = login(3, "phone2", "android")
	if got := fmt.Sprint(notifications(effs)); got != "[device.kicked:phone:LOGIN_CONFLICT device.login:phone2:]" {
		t.Fatalf("kicking login notified %s", got)
	}
	for _, e := range effs {
		if n, ok := e.(effNotify); ok && n.ev.Type == "device.kicked" && n.ev.KickedBy.GetDeviceId() != "phone2" {
			t.Fatalf("kick event names %q as the kicker", n.ev.KickedBy.GetDeviceId())
		}
	}
	if devs, _ := lastPresence(effs); fmt.Sprint(devs) != "[web1 phone2]" {
		t.Fatalf("presence = %v", devs)
	}
	effs = h.st.closed(sk(2), false, t0)
	if got := fmt.Sprint(notifications(effs)); got != "[device.logout:web1:dropped]" {
		t.Fatalf("drop notified %s", got)
	}
	// Admin kick of the last device: kicked, offline, presence empty, a KICKED entry.
	kicked, effs := h.st.adminKick("", t0)
	if len(kicked) != 1 || kicked[0].GetDeviceId() != "phone2" {
		t.Fatalf("admin kick ended %v", kicked)
	}
	if got := fmt.Sprint(notifications(effs)); got != "[device.kicked:phone2:ADMIN user.offline:phone2:ADMIN]" {
		t.Fatalf("admin kick notified %s", got)
	}
	var kick *wire.Kick
	for _, e := range effs {
		if k, ok := e.(effKick); ok {
			kick = k.kick
		}
	}
	if kick.GetReason() != wire.Kick_ADMIN || kick.GetCloseCode() != wire.CloseKickedByAdmin || kick.GetMayReconnect() {
		t.Fatalf("admin kick frame %v", kick)
	}
	if devs, ok := lastPresence(effs); !ok || len(devs) != 0 {
		t.Fatalf("presence after the last kick: %v", devs)
	}
	if r := appends(effs); len(r) != 1 || len(r[0].Entries) != 1 {
		t.Fatalf("admin kick must log one KICKED entry: %+v", r)
	}
	if k, effs := h.st.adminKick("", t0); k != nil || effs != nil {
		t.Fatal("kicking an offline user did something")
	}
}

func TestTransientSendNeverStored(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	h.login(2, "laptop", false, 0)
	before := h.st.lastSeq
	m := directSend("typing-1", "bob", "...")
	m.Options = &wire.SendOptions{Transient: true}
	effs := h.st.send(sk(1), 4, m, t0)
	if len(appends(effs)) != 0 || h.st.lastSeq != before || len(h.st.sending) != 0 {
		t.Fatal("a transient message was stored or got a seq")
	}
	ack := framesTo(effs, 1)
	if len(ack) != 1 || ack[0].GetSendAck().GetSeq() != 0 || ack[0].GetSendAck().GetMessageId() == "" || ack[0].GetId() != 4 {
		t.Fatalf("sender got %v, want a SendAck with seq 0", ack)
	}
	peer, _ := transients(effs)
	if len(peer) != 1 || peer[0].GetMessage().GetConversation().GetId() != "alice" || !peer[0].GetMessage().GetMentioned() {
		t.Fatalf("peer got %v", peer)
	}
	if f := framesTo(effs, 2); len(f) != 1 || len(f[0].GetPush().GetTransient()) != 1 || len(f[0].GetPush().GetEntries()) != 0 {
		t.Fatalf("alice's other device got %v, want the transient carbon", f)
	}
	if len(delivers(effs)) != 0 || h.st.out.itemCount() != 0 {
		t.Fatal("a transient message must never be retried")
	}
	// The same client message ID twice: two transients (no dedup, nothing to dedup against).
	if peer, _ := transients(h.st.send(sk(1), 5, m, t0)); len(peer) != 1 {
		t.Fatal("second transient not sent")
	}
}

func TestCursorTooOld(t *testing.T) {
	h := newHarness(t, "bob")
	h.st.activated(1, 50, 0, nil, t0)
	// Entries up to 19 were removed by retention: first retained is 20.
	reply, _ := h.st.login(sk(1), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "d", Platform: "web", HasCursor: true, Cursor: 10}}, t0, 20, 20)
	lo := reply.GetLoginOk()
	if !lo.GetCursorTooOld() || lo.GetCompensationFromSeq() != 20 || h.st.sessions.get(sk(1)).next != 20 {
		t.Fatalf("LoginOk %v, want cursor_too_old and compensation from 20", lo)
	}
	// A cursor right before the first retained entry is fine.
	reply, _ = h.st.login(sk(2), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "e", Platform: "web", HasCursor: true, Cursor: 19}}, t0, 0, 20)
	if lo := reply.GetLoginOk(); lo.GetCursorTooOld() || lo.GetCompensationFromSeq() != 0 {
		t.Fatalf("cursor 19 with first 20: %v", lo)
	}
}

// A repeated Deliver of a message this activation stored is answered from
// memory (no store read, nothing appended); one older than the bounded
// index falls back to the store's dedup index.
func TestRepeatedDeliverAnsweredFromMemory(t *testing.T) {
	h := newHarness(t, "bob")
	deliver := func(id string) []effect {
		return h.st.deliver(&actorpb.Deliver{FromUser: "alice", OriginSeq: 7, Message: &wire.Message{MessageId: id}}, t0)
	}
	acks := func(effs []effect) []uint64 {
		var out []uint64
		for _, e := range effs {
			if a, ok := e.(effDeliverAck); ok {
				out = append(out, a.ack.GetSeq())
			}
		}
		return out
	}
	first := h.completeAppends(deliver("m1"))
	if got := acks(first); len(got) != 1 || got[0] != 1 {
		t.Fatalf("first delivery acks %v, want [1]", got)
	}
	h.log.err = errors.New("the store must not be read for a recent repeat")
	again := deliver("m1")
	if len(appends(again)) != 0 {
		t.Fatal("a repeat was appended again")
	}
	if got := acks(again); len(got) != 1 || got[0] != 1 {
		t.Fatalf("repeat acks %v, want [1] (from memory)", got)
	}

	// Push m1 out of the bounded index: a repeat now asks the store.
	h.log.err = nil
	for i := range recentSize {
		h.completeAppends(deliver(fmt.Sprintf("n%d", i)))
	}
	if _, ok := h.st.delivered.get("m1"); ok {
		t.Fatal("the index kept more than recentSize keys")
	}
	h.log.byKey["m:m1"] = &wire.Entry{Seq: 1}
	if got := acks(deliver("m1")); len(got) != 1 || got[0] != 1 {
		t.Fatalf("old repeat acks %v, want [1] (from the store)", got)
	}
}

// A message minted well after the activation began is known to be new
// without a store read; one minted around or before it, or older than a
// delivery the bounded index forgot, is looked up.
func TestDeliveredBeforeSkipsReadOnlyWhenSound(t *testing.T) {
	h := newHarness(t, "bob")
	start := time.Now()
	h.st.freshMS = start.UnixMilli()
	mint := func(at time.Time) string { return ulid.MustNew(ulid.Timestamp(at), rand.Reader).String() }
	h.log.err = errors.New("store read")

	if e, err := h.st.deliveredBefore(mint(start.Add(clockSkew + time.Second))); e != nil || err != nil {
		t.Fatalf("new message: %v, %v; want no read", e, err)
	}
	for _, at := range []time.Time{start.Add(-time.Hour), start, start.Add(clockSkew / 2)} {
		if _, err := h.st.deliveredBefore(mint(at)); err == nil {
			t.Fatalf("message minted at %v (activation %v): not looked up", at, start)
		}
	}
	if _, err := h.st.deliveredBefore("not-a-ulid"); err == nil {
		t.Fatal("a non-ULID ID was not looked up")
	}
	// Forgetting a delivery minted at T makes messages up to T uncertain.
	late := start.Add(2 * clockSkew)
	h.st.delivered.forgottenMS = late.UnixMilli()
	if _, err := h.st.deliveredBefore(mint(late)); err == nil {
		t.Fatal("a message as old as a forgotten delivery was not looked up")
	}
	if _, err := h.st.deliveredBefore(mint(late.Add(time.Millisecond))); err != nil {
		t.Fatalf("a message newer than every forgotten delivery: %v", err)
	}
}

// Re-sends of unconfirmed fan-outs wait several times the recent
// confirmation time: lagging recipients are not flooded with copies of
// what is still in their queues.
func TestRedriveWaitsForSlowConfirmations(t *testing.T) {
	var l ackLatency
	if d := l.redriveDelay(1); d != time.Second {
		t.Fatalf("no confirmations seen: first re-send after %v, want 1s", d)
	}
	for range 50 {
		l.observe(5 * time.Second) // confirmations take 5 s
	}
	if d := l.redriveDelay(1); d < 15*time.Second || d > maxFirstRedrive {
		t.Fatalf("confirmations take 5 s: first re-send after %v", d)
	}
	if d := l.redriveDelay(10); d != 2*maxFirstRedrive {
		t.Fatalf("tenth re-send after %v, want the %v cap", d, 2*maxFirstRedrive)
	}

	// Through the state: an ack 5 s after the send teaches it, and the
	// next unconfirmed item is not re-sent after 1 s.
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	send := func(cmid string, at time.Time) {
		effs := h.st.send(sk(1), 1, directSend(cmid, "bob", "x"), at)
		for _, e := range effs {
			if _, ok := e.(effAppend); ok {
				h.st.appendDone(nil, at)
			}
		}
	}
	for i := range 20 {
		at := t0.Add(time.Duration(i) * time.Minute)
		send(fmt.Sprintf("c%d", i), at)
		for ref, e := range h.st.out.items {
			h.st.deliverAckAt(&actorpb.DeliverAck{ToUser: "bob", MessageId: e.item.GetDeliver().GetMessage().GetMessageId(), OriginSeq: uint64(ref.seq)}, at.Add(5*time.Second))
		}
	}
	late := t0.Add(time.Hour)
	send("slow", late)
	if redriven := h.st.tick(late.Add(2 * time.Second)); countDelivers(redriven) != 0 {
		t.Fatalf("re-sent after 2 s although confirmations take 5 s: %v", redriven)
	}
	if redriven := h.st.tick(late.Add(maxFirstRedrive)); countDelivers(redriven) != 1 {
		t.Fatalf("not re-sent after %v: %v", maxFirstRedrive, redriven)
	}
}

func countDelivers(effs []effect) int {
	n := 0
	for _, e := range effs {
		if _, ok := e.(effDeliver); ok {
			n++
		}
	}
	return n
}

// Deliveries that arrive while a delivery commit is in flight wait and go
// into one append when it completes: one entry and dedup key each, each
// conversation's state once (the latest), one push frame, every ack.
func TestDeliveriesCoalesceWhileCommitInFlight(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	direct := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}
	group := &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g1"}
	d := func(id string, conv *wire.Conversation) *actorpb.Deliver {
		dl := &actorpb.Deliver{FromUser: "alice", OriginSeq: 9, Message: &wire.Message{MessageId: id, Sender: "alice", Conversation: conv, Type: 1}}
		if conv == group {
			dl.ViaGroup, dl.RelayAddress = "g1", "node2"
		}
		return dl
	}
	base := h.st.lastSeq
	first := h.st.deliver(d("M1", direct), t0)
	if r := appends(first); len(r) != 1 || len(r[0].Entries) != 1 {
		t.Fatalf("an idle member's delivery must be appended at once: %+v", r)
	}
	for _, dl := range []*actorpb.Deliver{d("M2", direct), d("G1", group), d("M3", direct), d("M2", direct)} {
		if effs := h.st.deliver(dl, t0); len(effs) != 0 {
			t.Fatalf("delivery %s while a commit is in flight gave %v, want it held", dl.GetMessage().GetMessageId(), effs)
		}
	}
	// A recall of a held message waits for its sender's re-drive.
	if effs := h.st.recallDelivered(&actorpb.RecallDeliver{FromUser: "alice", MessageId: "M2", Conversation: direct, By: "alice"}, t0); len(effs) != 0 {
		t.Fatalf("recall of a held delivery gave %v", effs)
	}

	done := h.st.appendDone(nil, t0)
	r := appends(done)
	if len(r) != 1 {
		t.Fatalf("the held deliveries gave %d appends, want 1", len(r))
	}
	req := r[0]
	var keys []string
	for i, e := range req.Entries {
		if e.Seq != base+2+persistence.Seq(i) {
			t.Fatalf("entry %d has seq %d, want %d", i, e.Seq, base+2+persistence.Seq(i))
		}
		keys = append(keys, req.Dedup[i].Key)
	}
	if !slices.Equal(keys, []string{"m:M2", "m:G1", "m:M3"}) {
		t.Fatalf("dedup keys %v", keys)
	}
	if len(req.Convs) != 2 {
		t.Fatalf("%d conversation records, want one per conversation (2)", len(req.Convs))
	}
	for _, c := range req.Convs {
		want := convRecord(h.st.convs[c.Key])
		if !bytes.Equal(c.Data, want.Data) {
			t.Fatalf("conversation %s: the record is not its latest state", c.Key)
		}
	}
	if u := h.st.convs["d:alice"].GetUnread(); u != 3 {
		t.Fatalf("unread of the direct conversation %d, want 3", u)
	}

	later := h.st.appendDone(nil, t0)
	acks := map[string]effDeliverAck{}
	for _, e := range later {
		if a, ok := e.(effDeliverAck); ok {
			acks[a.ack.GetMessageId()] = a
		}
	}
	if len(acks) != 3 || acks["M2"].ack.GetSeq() != uint64(base+2) || acks["G1"].ack.GetSeq() != uint64(base+3) || acks["M3"].ack.GetSeq() != uint64(base+4) {
		t.Fatalf("acks %v", acks)
	}
	if a := acks["G1"]; a.to != "g1" || a.kind != GroupKind || a.relay != "node2" {
		t.Fatalf("the group delivery's ack goes to %q/%q via %q", a.to, a.kind, a.relay)
	}
	fr := framesTo(later, 1)
	if len(fr) != 1 || len(fr[0].GetPush().GetEntries()) != 3 {
		t.Fatalf("pushes %v, want one frame with 3 entries", fr)
	}
	if len(h.st.held) != 0 || len(h.st.delivering) != 0 || h.st.deliveriesInFlight != 0 {
		t.Fatalf("held %d, delivering %d, in flight %d after the commits", len(h.st.held), len(h.st.delivering), h.st.deliveriesInFlight)
	}
	// Repeats are answered from memory now.
	if effs := h.st.deliver(d("M3", direct), t0); len(appends(effs)) != 0 || len(effs) != 1 {
		t.Fatalf("repeat after the commit gave %v", effs)
	}
}

// A member holds at most maxHeldDeliveries: the next one appends them all
// without waiting.
func TestHeldDeliveriesBounded(t *testing.T) {
	h := newHarness(t, "bob")
	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}
	deliver := func(i int) []effect {
		return h.st.deliver(&actorpb.Deliver{FromUser: "alice", Message: &wire.Message{MessageId: fmt.Sprintf("M%d", i), Sender: "alice", Conversation: conv}}, t0)
	}
	if len(appends(deliver(0))) != 1 {
		t.Fatal("first delivery not appended")
	}
	for i := 1; i < maxHeldDeliveries; i++ {
		if effs := deliver(i); len(effs) != 0 {
			t.Fatalf("delivery %d not held", i)
		}
	}
	r := appends(deliver(maxHeldDeliveries))
	if len(r) != 1 || len(r[0].Entries) != maxHeldDeliveries {
		t.Fatalf("at the bound: %d appends, want one of %d entries", len(r), maxHeldDeliveries)
	}
	// Both commits complete; nothing is left held.
	h.st.appendDone(nil, t0)
	if effs := h.st.appendDone(nil, t0); len(appends(effs)) != 0 || h.st.deliveriesInFlight != 0 || len(h.st.held) != 0 {
		t.Fatalf("after both commits: %d appends, %d in flight, %d held", len(appends(effs)), h.st.deliveriesInFlight, len(h.st.held))
	}
}

// A failed commit drops the held deliveries unanswered (their senders
// re-drive them to the next activation).
func TestHeldDeliveriesDroppedOnFailure(t *testing.T) {
	h := newHarness(t, "bob")
	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}
	for i := range 3 {
		h.st.deliver(&actorpb.Deliver{FromUser: "alice", Message: &wire.Message{MessageId: fmt.Sprintf("M%d", i), Sender: "alice", Conversation: conv}}, t0)
	}
	effs := h.st.appendDone(errors.New("disk on fire"), t0)
	for _, e := range effs {
		switch e.(type) {
		case effAppend, effDeliverAck:
			t.Fatalf("after a failed commit: %T %v", e, e)
		}
	}
	if len(h.st.held) != 0 {
		t.Fatalf("%d deliveries still held", len(h.st.held))
	}
}

// An entry built around the relay's marshalled message reads back as the
// entry marshalled whole, and zero fields are handled like the marshaller.
func TestMessageEntryBytes(t *testing.T) {
	m := &wire.Message{MessageId: "M1", Sender: "alice", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g1"},
		Type: 1, Content: []byte("hi"), Mentioned: true, Attributes: map[string]string{"a": "b"}, ServerTimeMs: 17}
	for _, e := range []*wire.Entry{
		{Seq: 42, ServerTimeMs: 1_790_000_000_000, Kind: &wire.Entry_Message{Message: m}},
		{Seq: 1, ServerTimeMs: 0, Kind: &wire.Entry_Message{Message: &wire.Message{}}},
	} {
		got := messageEntryBytes(e, mustMarshal(e.GetMessage()))
		var back wire.Entry
		if err := proto.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&back, e) {
			t.Fatalf("built %v, want %v", &back, e)
		}
	}
	e := &wire.Entry{Seq: 3, Kind: &wire.Entry_Message{Message: m}}
	if !bytes.Equal(messageEntryBytes(e, nil), mustMarshal(e)) {
		t.Fatal("without the relay's bytes the entry is not marshalled whole")
	}
}
