package actors

import (
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
