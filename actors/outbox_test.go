package actors

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// marks returns the fan-out marks the appends among effs write.
func marks(effs []effect) []persistence.FanoutMark {
	var out []persistence.FanoutMark
	for _, r := range appends(effs) {
		if r.Fanout != nil {
			out = append(out, *r.Fanout)
		}
		if len(r.OutboxPut) > 0 {
			panic(fmt.Sprintf("a message's fan-out wrote outbox items: %+v", r.OutboxPut))
		}
	}
	return out
}

// TestFanoutMarkAmortised: a burst of one-to-one sends writes the mark
// once (with the first entry), flushes move it to the highest seq through
// which every delivery is confirmed — never past an unconfirmed one,
// whatever order the confirmations come in — and it is cleared once all
// are.
func TestFanoutMarkAmortised(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	base := h.st.lastSeq
	var written []persistence.FanoutMark
	var delivered []*actorpb.OutboxItem
	for i := range 5 {
		effs := h.st.send(sk(1), uint64(i+1), directSend(fmt.Sprint("c", i), "bob", "hi"), t0)
		written = append(written, marks(effs)...)
		delivered = append(delivered, delivers(h.completeAppends(effs))...)
	}
	if len(written) != 1 || written[0] != (persistence.FanoutMark{Done: base, Pending: true}) {
		t.Fatalf("marks written by 5 sends = %+v, want one, pending after %d", written, base)
	}
	if len(delivered) != 5 {
		t.Fatalf("delivered %d, want 5", len(delivered))
	}
	ack := func(i int) {
		d := delivered[i].GetDeliver()
		h.st.deliverAck(&actorpb.DeliverAck{ToUser: "bob", MessageId: d.GetMessage().GetMessageId(), OriginSeq: d.GetOriginSeq(), Seq: 1})
	}
	// The 2nd and 4th are confirmed first: the mark may only pass the 1st
	// once it is.
	ack(1)
	ack(3)
	if m := marks(h.st.tick(t0)); len(m) != 0 {
		t.Fatalf("mark moved to %+v with the first delivery unconfirmed", m)
	}
	ack(0)
	effs := h.st.tick(t0)
	if m := marks(effs); len(m) != 1 || m[0] != (persistence.FanoutMark{Done: base + 2, Pending: true}) {
		t.Fatalf("mark after confirming 1, 2, 4 = %+v, want pending after %d", m, base+2)
	}
	h.completeAppends(effs)
	ack(2)
	ack(4)
	effs = h.st.tick(t0)
	if m := marks(effs); len(m) != 1 || m[0].Pending {
		t.Fatalf("mark after confirming all = %+v, want cleared", m)
	}
	h.completeAppends(effs)
	if h.st.needsTick() {
		t.Fatal("still ticking with everything confirmed")
	}
	// The next burst sets it again, from the current end of the log.
	next := h.st.lastSeq + 1
	if m := marks(h.st.send(sk(1), 9, directSend("c9", "bob", "again"), t0)); len(m) != 1 || m[0] != (persistence.FanoutMark{Done: next - 1, Pending: true}) {
		t.Fatalf("mark of the next burst = %+v, want pending after %d", m, next-1)
	}
}

func directEntry(seq uint64, sender, peer, id string) *wire.Entry {
	return &wire.Entry{Seq: seq, ServerTimeMs: 1, Kind: &wire.Entry_Message{Message: &wire.Message{
		MessageId: id, Sender: sender, Type: 1, Content: []byte(id), MentionList: []string{peer},
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
	}}}
}

// TestActivationRedrivesAfterMark: an activation with a pending mark
// re-drives every fan-out-bearing entry after it, reading page by page
// (each page a separate turn), and the mark never passes what the scan
// has not looked at.
func TestActivationRedrivesAfterMark(t *testing.T) {
	st := newUserState("alice", testConfig(Config{}), &fakeLog{}, NewMessageID)
	st.activated(1, 7, 1, nil, t0)
	effs := st.fanoutMark(persistence.FanoutMark{Done: 2, Pending: true})
	if len(effs) != 1 {
		t.Fatalf("activation with a pending mark gave %v, want one page read", effs)
	}
	if _, ok := effs[0].(effRedrive); !ok || st.idle() {
		t.Fatalf("effects %v, idle %v", effs, st.idle())
	}
	// First page (full): alice's message to bob, and one bob sent her.
	page1 := []*wire.Entry{directEntry(3, "alice", "bob", "A3"), directEntry(4, "bob", "alice", "B4")}
	effs = st.redrivePage(page1, true, t0)
	d := delivers(effs)
	if len(d) != 1 || d[0].GetToUser() != "bob" || d[0].GetDeliver().GetOriginSeq() != 3 ||
		d[0].GetDeliver().GetMessage().GetConversation().GetId() != "alice" || !d[0].GetDeliver().GetMessage().GetMentioned() {
		t.Fatalf("page 1 re-drove %v, want alice's message to bob, from bob's side", d)
	}
	if _, ok := effs[len(effs)-1].(effRedrive); !ok {
		t.Fatal("a full page does not ask for the next")
	}
	st.deliverAck(&actorpb.DeliverAck{ToUser: "bob", MessageId: "A3", OriginSeq: 3})
	if m := marks(st.tick(t0)); len(m) != 1 || m[0] != (persistence.FanoutMark{Done: 4, Pending: true}) {
		t.Fatalf("mark mid-scan = %+v, want pending after 4 (what the scan has seen)", m)
	}
	st.appendDone(nil, t0)
	// Last page: a note to self (no fan-out) and a message to dan.
	effs = st.redrivePage([]*wire.Entry{directEntry(5, "alice", "alice", "N5"), directEntry(7, "alice", "dan", "A7")}, false, t0)
	if d := delivers(effs); len(d) != 1 || d[0].GetToUser() != "dan" {
		t.Fatalf("page 2 re-drove %v, want dan's only", d)
	}
	for _, e := range effs {
		if _, ok := e.(effRedrive); ok {
			t.Fatal("a short page asked for another")
		}
	}
	if m := marks(st.tick(t0)); len(m) != 1 || m[0] != (persistence.FanoutMark{Done: 6, Pending: true}) {
		t.Fatalf("mark = %+v, want pending after 6 (dan's at 7 unconfirmed)", m)
	}
	st.appendDone(nil, t0)
	st.deliverAck(&actorpb.DeliverAck{ToUser: "dan", MessageId: "A7", OriginSeq: 7})
	if m := marks(st.tick(t0)); len(m) != 1 || m[0].Pending {
		t.Fatalf("mark = %+v, want cleared", m)
	}
	st.appendDone(nil, t0)
	if !st.idle() {
		t.Fatal("not idle after the re-drive")
	}
}

// TestGroupFanoutIsTheLog: a group message writes no per-member outbox
// record; a re-activated group re-drives it to every member from its log.
func TestGroupFanoutIsTheLog(t *testing.T) {
	g := newGroup(t)
	m := &wire.Send{ClientMessageId: "c1", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, Type: 1, MentionList: []string{"c"}}
	effs := g.send(sk(1), 2, "a", "", m, t0)
	if mk := marks(effs); len(mk) != 1 || !mk[0].Pending {
		t.Fatalf("marks %+v", mk)
	}
	entry := appends(effs)[0].Entries[0]
	var stored wire.Entry
	if err := proto.Unmarshal(entry.Data, &stored); err != nil {
		t.Fatal(err)
	}

	// A new activation of the same group with the mark before the message.
	g2 := &groupState{id: "g", rd: g.rd, newID: NewMessageID, epoch: 2, st: g.st, lastSeq: g.lastSeq, committed: g.lastSeq,
		sending: map[string]*pendingSend{}, awaiting: map[string]*groupAck{}, out: newOutbox()}
	if effs := g2.out.activated(persistence.FanoutMark{Done: entry.Seq - 1, Pending: true}, g2.lastSeq); len(effs) != 1 {
		t.Fatalf("activation %v", effs)
	}
	d := delivers(g2.redrivePage([]*wire.Entry{&stored}, false, t0.Add(time.Second)))
	if len(d) != 3 {
		t.Fatalf("re-drove to %d members, want 3", len(d))
	}
	for _, it := range d {
		if it.GetDeliver().GetViaGroup() != "g" || it.GetDeliver().GetMessage().GetMentioned() != (it.GetToUser() == "c") {
			t.Fatalf("re-driven %v", it)
		}
		g2.deliverAck(&actorpb.DeliverAck{ToUser: it.GetToUser(), MessageId: it.GetDeliver().GetMessage().GetMessageId(), OriginSeq: uint64(entry.Seq)}, t0)
	}
	if mk := marks(g2.tick(t0)); len(mk) != 1 || mk[0].Pending {
		t.Fatalf("marks %+v, want cleared", mk)
	}
}

// TestRedriveOvertakenOrStalled: an unconfirmed delivery is re-sent once a
// later one was confirmed or confirmations stopped — not while a long
// queue (a big group's fan-out, all sent at once) is still being confirmed.
func TestRedriveOvertakenOrStalled(t *testing.T) {
	o := new(outbox)
	*o = newOutbox()
	item := func(to string, seq uint64) *actorpb.OutboxItem {
		return &actorpb.OutboxItem{ToUser: to, Deliver: &actorpb.Deliver{OriginSeq: seq, Message: &wire.Message{MessageId: fmt.Sprint("M", seq)}}}
	}
	ack := func(to string, seq uint64, at time.Time) {
		if !o.ack(&actorpb.DeliverAck{ToUser: to, MessageId: fmt.Sprint("M", seq), OriginSeq: seq}, at) {
			t.Fatalf("ack of %s/%d not taken", to, seq)
		}
	}
	// A long queue: 100 deliveries of one message sent at t0, confirmed
	// slowly. While confirmations flow none is re-sent.
	var batch []*actorpb.OutboxItem
	for i := range 100 {
		batch = append(batch, item(fmt.Sprint("u", i), 1))
	}
	o.sent(batch, true, t0)
	for i := range 50 {
		ack(fmt.Sprint("u", i), 1, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	last := t0.Add(49 * 100 * time.Millisecond)
	if d := delivers(o.tick(last)); len(d) != 0 {
		t.Fatalf("re-sent %d of a queue still being confirmed", len(d))
	}
	// A later message's delivery is confirmed: once due (the delay has
	// grown with the slow confirmations, to well over 4 s), the first
	// message's are overtaken, and re-sent although confirmations flow.
	at := last.Add(20 * time.Second)
	o.sent([]*actorpb.OutboxItem{item("u0", 2)}, true, at.Add(-500*time.Millisecond))
	ack("u0", 2, at.Add(-100*time.Millisecond))
	if d := delivers(o.tick(at)); len(d) != 50 {
		t.Fatalf("re-sent %d overtaken deliveries, want 50", len(d))
	}

	// Stalled: nothing confirmed for longer than the re-send delay.
	*o = newOutbox()
	o.sent([]*actorpb.OutboxItem{item("a", 1), item("b", 1)}, true, t0)
	ack("a", 1, t0.Add(100*time.Millisecond))
	if d := delivers(o.tick(t0.Add(900 * time.Millisecond))); len(d) != 0 {
		t.Fatalf("re-sent before the delay: %v", d)
	}
	if d := delivers(o.tick(t0.Add(2 * time.Second))); len(d) != 1 || d[0].GetToUser() != "b" {
		t.Fatalf("stalled: re-sent %v, want b's", d)
	}
}

// tick scans the items only once one can be due; a confirmation that
// overtakes a delivery waiting for it makes the next tick scan again.
func TestTickScansOnlyWhenSomethingCanBeDue(t *testing.T) {
	o := new(outbox)
	*o = newOutbox()
	item := func(to string, seq uint64) *actorpb.OutboxItem {
		return &actorpb.OutboxItem{ToUser: to, Deliver: &actorpb.Deliver{OriginSeq: seq, Message: &wire.Message{MessageId: fmt.Sprint("M", seq)}}}
	}
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	o.sent([]*actorpb.OutboxItem{item("a", 1), item("x", 1)}, true, t0)
	if d := delivers(o.tick(ms(500))); len(d) != 0 || !o.nextScan.Equal(ms(1000)) {
		t.Fatalf("tick at 0.5 s re-sent %d, next scan at %v, want none and t0+1s", len(d), o.nextScan.Sub(t0))
	}
	// x is confirmed at once; a is due by time at 1.02 s but neither
	// overtaken nor stalled: it waits, and the next scan is the stall.
	o.ack(&actorpb.DeliverAck{ToUser: "x", MessageId: "M1", OriginSeq: 1}, ms(50))
	if d := delivers(o.tick(ms(1020))); len(d) != 0 {
		t.Fatalf("re-sent %v while confirmations flow", d)
	}
	if !o.nextScan.Equal(ms(1050)) {
		t.Fatalf("next scan at %v, want the stall at t0+1.05s", o.nextScan.Sub(t0))
	}
	// A later delivery, sent more than 1 s after a's, is confirmed: a is
	// overtaken and re-sent at the next tick, before the stall time.
	o.sent([]*actorpb.OutboxItem{item("b", 2)}, true, ms(1030))
	o.ack(&actorpb.DeliverAck{ToUser: "b", MessageId: "M2", OriginSeq: 2}, ms(1040))
	if d := delivers(o.tick(ms(1045))); len(d) != 1 || d[0].GetToUser() != "a" {
		t.Fatalf("after a was overtaken the tick re-sent %v, want a's", d)
	}
	if d := delivers(o.tick(ms(1500))); len(d) != 0 {
		t.Fatalf("re-sent %v again at once", d)
	}
}
