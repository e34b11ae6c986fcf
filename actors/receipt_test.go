package actors

import (
	"fmt"
	"testing"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

func receipts(effs []effect) []*actorpb.ReceiptDeliver {
	var out []*actorpb.ReceiptDeliver
	for _, e := range effs {
		if r, ok := e.(effReceipt); ok {
			out = append(out, r.msg)
		}
	}
	return out
}

func TestReceiptsAtTheRecipient(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	plain := &actorpb.Deliver{FromUser: "alice", Message: &wire.Message{MessageId: "p1", Sender: "alice", Conversation: convAlice, Type: 1}}
	asked := &actorpb.Deliver{FromUser: "alice", Message: &wire.Message{MessageId: "r1", Sender: "alice", Conversation: convAlice, Type: 1,
		Options: &wire.SendOptions{ReceiptRequested: true}}}
	h.run(h.st.deliver(plain, t0))
	if r := receipts(h.st.cursorAck(sk(1), uint64(h.st.committed), t0)); len(r) != 0 {
		t.Fatalf("receipt for a message that did not ask: %v", r)
	}
	h.run(h.st.deliver(asked, t0))
	seq := h.st.committed
	// An ack below the message: nothing yet.
	if r := receipts(h.st.cursorAck(sk(1), uint64(seq)-1, t0)); len(r) != 0 {
		t.Fatalf("receipt before the device had the message: %v", r)
	}
	r := receipts(h.st.cursorAck(sk(1), uint64(seq), t0))
	if len(r) != 1 || r[0].GetFromUser() != "bob" || r[0].GetLastDeliveredAtMs() == 0 || r[0].GetLastReadAtMs() != 0 {
		t.Fatalf("delivered receipt %v", r)
	}
	if again := receipts(h.st.cursorAck(sk(1), uint64(seq)+5, t0)); len(again) != 0 {
		t.Fatal("delivered reported twice")
	}
	effs := h.st.markRead(sk(1), 2, &wire.MarkRead{Conversation: convAlice}, nil, t0)
	r = receipts(effs)
	h.run(effs)
	if len(r) != 1 || r[0].GetLastReadAtMs() == 0 {
		t.Fatalf("read receipt %v", r)
	}
	if cs := h.st.convs["d:alice"]; cs.GetReceiptReadSeq() != 0 || cs.GetReceiptDeliveredSeq() != 0 {
		t.Fatalf("pending receipts left: %v", cs)
	}
}

func TestReceiptLoggedForSender(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	effs := h.st.receipt(&actorpb.ReceiptDeliver{FromUser: "bob", LastReadAtMs: 77}, t0)
	done := h.completeAppends(effs)
	f := framesTo(done, 1)
	if len(f) != 1 {
		t.Fatalf("sender device got %v", f)
	}
	re := f[0].GetPush().GetEntries()[0].GetReceipt()
	if re.GetConversation().GetId() != "bob" || re.GetLastReadAtMs() != 77 || re.GetLastDeliveredAtMs() != 77 {
		t.Fatalf("ReceiptEvent %v, want conversation bob, read 77 (and delivered 77)", re)
	}
}

// fromAlice appends a message from alice to bob's log (receipt requested
// or not) with its seq in alice's log, and returns its seq in bob's.
func (h *harness) fromAlice(id string, originSeq uint64, asked bool) uint64 {
	h.t.Helper()
	m := &wire.Message{MessageId: id, Sender: "alice", Conversation: convAlice, Type: 1}
	if asked {
		m.Options = &wire.SendOptions{ReceiptRequested: true}
	}
	h.run(h.st.deliver(&actorpb.Deliver{FromUser: "alice", Message: m, OriginSeq: originSeq}, t0))
	return uint64(h.st.committed)
}

// readUpTo marks alice's conversation read up to seq (0: all), giving
// markRead the later entries as the shell would, and returns the receipts.
func (h *harness) readUpTo(seq uint64) []*actorpb.ReceiptDeliver {
	h.t.Helper()
	mr := &wire.MarkRead{Conversation: convAlice, UpToSeq: seq}
	var later []*wire.Entry
	if h.st.needsLater(mr) {
		for _, e := range h.logged {
			if e.GetSeq() > seq {
				later = append(later, e)
			}
		}
	}
	effs := h.st.markRead(sk(1), 9, mr, later, t0)
	r := receipts(effs)
	h.run(effs)
	return r
}

// ackUpTo acks a device's cursor and returns the receipts.
func (h *harness) ackUpTo(sid, seq uint64) []*actorpb.ReceiptDeliver {
	h.t.Helper()
	effs := h.st.cursorAck(sk(sid), seq, t0)
	r := receipts(effs)
	h.run(effs)
	return r
}

// covers checks that rs is one receipt, read or only delivered, up to the
// message id with sender seq origin.
func covers(rs []*actorpb.ReceiptDeliver, read bool, id string, origin uint64) error {
	if len(rs) != 1 {
		return fmt.Errorf("%d receipts %v, want 1", len(rs), rs)
	}
	r := rs[0]
	if r.GetFromUser() != "bob" || r.GetLastDeliveredAtMs() == 0 || (r.GetLastReadAtMs() != 0) != read ||
		r.GetUpToMessageId() != id || r.GetUpToOriginSeq() != origin {
		return fmt.Errorf("receipt %v, want read=%v up to %s (sender seq %d)", r, read, id, origin)
	}
	return nil
}

// TestReceiptsFollowTheReadPosition: a partial mark-read reports exactly
// the receipt-requested messages it passed (issue 9).
func TestReceiptsFollowTheReadPosition(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	r1 := h.fromAlice("r1", 11, true)
	h.fromAlice("p1", 12, false)
	r2 := h.fromAlice("r2", 13, true)
	p2 := h.fromAlice("p2", 14, false)

	if err := covers(h.readUpTo(r1), true, "r1", 11); err != nil {
		t.Fatalf("read up to the first: %v", err)
	}
	if r := h.readUpTo(r2 - 1); len(r) != 0 {
		t.Fatalf("read past a message that did not ask: %v", r)
	}
	if err := covers(h.readUpTo(r2), true, "r2", 13); err != nil {
		t.Fatalf("read up to the second: %v", err)
	}
	if r := h.readUpTo(p2); len(r) != 0 {
		t.Fatalf("read up to a message that did not ask: %v", r)
	}
	// Passing several at once: one receipt, up to the newest.
	h.fromAlice("r3", 15, true)
	h.fromAlice("r4", 16, true)
	h.fromAlice("p3", 17, false)
	if err := covers(h.readUpTo(0), true, "r4", 16); err != nil {
		t.Fatalf("mark all read: %v", err)
	}
	if cs := h.st.convs["d:alice"]; len(cs.GetPendingReceipts()) != 0 {
		t.Fatalf("pending receipts left: %v", cs.GetPendingReceipts())
	}
	h.checkRecount()
}

// TestReceiptsFollowTheCursor: delivered receipts on cursor acks, each up
// to the newest receipt-requested message the ack passed; a read receipt
// still follows for messages already reported delivered.
func TestReceiptsFollowTheCursor(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	h.login(2, "pad", false, 0)
	r1 := h.fromAlice("r1", 21, true)
	p1 := h.fromAlice("p1", 22, false)
	r2 := h.fromAlice("r2", 23, true)
	r3 := h.fromAlice("r3", 24, true)

	if err := covers(h.ackUpTo(1, r1), false, "r1", 21); err != nil {
		t.Fatalf("ack up to the first: %v", err)
	}
	if r := h.ackUpTo(1, p1); len(r) != 0 {
		t.Fatalf("ack past a message that did not ask: %v", r)
	}
	// Another device acking what was reported: nothing new.
	if r := h.ackUpTo(2, r1); len(r) != 0 {
		t.Fatalf("delivered reported twice: %v", r)
	}
	if err := covers(h.ackUpTo(2, r3), false, "r3", 24); err != nil {
		t.Fatalf("ack past two: %v", err)
	}
	if r := h.ackUpTo(1, r3); len(r) != 0 {
		t.Fatalf("delivered reported twice: %v", r)
	}
	if err := covers(h.readUpTo(r2), true, "r2", 23); err != nil {
		t.Fatalf("read after delivered: %v", err)
	}
	if err := covers(h.readUpTo(r3), true, "r3", 24); err != nil {
		t.Fatalf("read after delivered: %v", err)
	}
}

// A conversation deleted or cleared reads everything, receipts included.
func TestReceiptOnClear(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	h.fromAlice("r1", 31, true)
	effs := h.st.conversationOp(sk(1), 4, &wire.ConversationOp{Conversation: convAlice, Op: wire.ConversationOp_CLEAR_HISTORY}, t0)
	r := receipts(effs)
	h.run(effs)
	if err := covers(r, true, "r1", 31); err != nil {
		t.Fatal(err)
	}
}

// A record stored before pending_receipts (one pending seq) still reports,
// without naming the message.
func TestReceiptFromOlderRecord(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	seq := h.fromAlice("p1", 41, false)
	cs := h.st.convs["d:alice"]
	cs.ReceiptDeliveredSeq, cs.ReceiptReadSeq = seq, seq
	if err := covers(h.ackUpTo(1, seq), false, "", 0); err != nil {
		t.Fatal(err)
	}
	r2 := h.fromAlice("r2", 42, true)
	if err := covers(h.readUpTo(seq), true, "", 0); err != nil {
		t.Fatal(err)
	}
	if err := covers(h.readUpTo(r2), true, "r2", 42); err != nil {
		t.Fatal(err)
	}
	if cs.GetReceiptReadSeq() != 0 || cs.GetReceiptDeliveredSeq() != 0 || len(cs.GetPendingReceipts()) != 0 {
		t.Fatalf("pending receipts left: %v", cs)
	}
}

// Past the bound the oldest pending receipt stays, so the first read still
// reports; a later read covers the dropped ones.
func TestPendingReceiptsBounded(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	var seqs []uint64
	for i := range maxPendingReceipts + 8 {
		seqs = append(seqs, h.fromAlice(fmt.Sprint("r", i), uint64(100+i), true))
	}
	if n := len(h.st.convs["d:alice"].GetPendingReceipts()); n != maxPendingReceipts {
		t.Fatalf("%d pending, want %d", n, maxPendingReceipts)
	}
	if err := covers(h.readUpTo(seqs[3]), true, "r0", 100); err != nil {
		t.Fatal(err)
	}
	last := len(seqs) - 1
	if err := covers(h.readUpTo(seqs[last]), true, fmt.Sprint("r", last), uint64(100+last)); err != nil {
		t.Fatal(err)
	}
}

func TestReceiptNamesTheMessage(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	effs := h.st.receipt(&actorpb.ReceiptDeliver{FromUser: "bob", LastDeliveredAtMs: 5, UpToMessageId: "01JDV6Q0V3M3R5X8Q6G3G0Y8ZB", UpToOriginSeq: 45}, t0)
	f := framesTo(h.completeAppends(effs), 1)
	if len(f) != 1 {
		t.Fatalf("sender device got %v", f)
	}
	re := f[0].GetPush().GetEntries()[0].GetReceipt()
	if re.GetUpToMessageId() != "01JDV6Q0V3M3R5X8Q6G3G0Y8ZB" || re.GetUpToSenderSeq() != 45 || re.GetLastDeliveredAtMs() != 5 || re.GetLastReadAtMs() != 0 {
		t.Fatalf("ReceiptEvent %v", re)
	}
}
