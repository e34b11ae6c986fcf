package actors

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

func editReq(id, text string) *wire.Edit {
	return &wire.Edit{Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, MessageId: id, Content: []byte(text)}
}

func TestEditBySender(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	h.login(2, "laptop", false, 0)
	orig := h.commitSend(1, "c1", "bob", "helo")
	id := orig.GetMessage().GetMessageId()

	effs := h.st.edit(sk(1), 8, editReq(id, "hello"), t0)
	r := appends(effs)
	if len(r) != 1 || len(r[0].Rewrites) != 1 || len(r[0].Entries) != 1 || len(r[0].OutboxPut) != 1 {
		t.Fatalf("edit wrote %+v", r)
	}
	var updated wire.Entry
	if err := proto.Unmarshal(r[0].Rewrites[0].Data, &updated); err != nil {
		t.Fatal(err)
	}
	um := updated.GetMessage()
	if string(um.GetContent()) != "hello" || !um.GetEdited() || um.GetType() != 1 || updated.GetSeq() != orig.GetSeq() {
		t.Fatalf("rewritten entry %v", &updated)
	}
	// Another edit while this one is in flight waits its turn.
	if f := framesTo(h.st.edit(sk(1), 9, editReq(id, "x"), t0), 1); len(f) != 1 || f[0].GetError().GetName() != "UNAVAILABLE" {
		t.Fatalf("concurrent edit: %v", f)
	}
	done := h.completeAppends(effs)
	var ok, event bool
	for _, f := range framesTo(done, 1) {
		ok = ok || (f.GetOk() != nil && f.GetId() == 8)
		for _, e := range f.GetPush().GetEntries() {
			event = event || string(e.GetEdit().GetMessage().GetContent()) == "hello"
		}
	}
	if !ok || !event || len(framesTo(done, 2)) != 1 {
		t.Fatalf("ok %v, EditEvent %v, other device %v", ok, event, framesTo(done, 2))
	}
	d := delivers(done)
	if len(d) != 1 || string(d[0].GetEdit().GetMessage().GetContent()) != "hello" || d[0].GetEdit().GetMessage().GetConversation().GetId() != "alice" {
		t.Fatalf("edit fan-out %v", d)
	}
}

func TestEditRules(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	orig := h.commitSend(1, "c1", "bob", "hi")
	id := orig.GetMessage().GetMessageId()
	h.log.byKey["m:B1"] = &wire.Entry{Seq: 9, Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "B1", Sender: "bob", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}}}}
	recalled := proto.Clone(orig).(*wire.Entry)
	recalled.GetMessage().Recalled = true
	recalled.GetMessage().MessageId = "R1"
	h.log.byKey["m:R1"] = recalled
	bad := editReq(id, "x")
	bad.Type = 500
	for name, tc := range map[string]struct {
		req  *wire.Edit
		code string
	}{
		"somebody else's": {editReq("B1", "x"), "FORBIDDEN"},
		"recalled":        {editReq("R1", "x"), "FORBIDDEN"},
		"unknown":         {editReq("nope", "x"), "NOT_FOUND"},
		"reserved type":   {bad, "INVALID_ARGUMENT"},
	} {
		effs := h.st.edit(sk(1), 2, tc.req, t0)
		if f := framesTo(effs, 1); len(f) != 1 || f[0].GetError().GetName() != tc.code || len(appends(effs)) != 0 {
			t.Fatalf("%s: %v, want %s", name, f, tc.code)
		}
	}
}

func TestEditDeliveredOrdered(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	h.log.index = map[string]persistence.Seq{}
	h.log.byKey["m:A1"] = &wire.Entry{Seq: 4, Kind: &wire.Entry_Message{Message: &wire.Message{
		MessageId: "A1", Sender: "alice", Content: []byte("v0"), Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"},
	}}}
	ed := func(origin uint64, text string) *actorpb.EditDeliver {
		return &actorpb.EditDeliver{FromUser: "alice", OriginSeq: origin, Message: &wire.Message{MessageId: "A1", Content: []byte(text), Edited: true}}
	}
	effs := h.st.editDelivered(ed(20, "v2"), t0)
	r := appends(effs)
	if len(r) != 1 || len(r[0].Rewrites) != 1 || r[0].Rewrites[0].Seq != 4 || r[0].Dedup[0] != (persistence.DedupKey{Key: "v:A1", Seq: 20}) {
		t.Fatalf("edit at the recipient wrote %+v", r)
	}
	h.completeAppends(effs)
	h.log.index["v:A1"] = 20
	// An older edit arriving late, or the same one again: acked, not applied.
	for _, origin := range []uint64{10, 20} {
		effs := h.st.editDelivered(ed(origin, "v1"), t0)
		if len(appends(effs)) != 0 || len(effs) != 1 {
			t.Fatalf("edit %d after 20: %v, want only an ack", origin, effs)
		}
	}
	// A newer one applies.
	if r := appends(h.st.editDelivered(ed(30, "v3"), t0)); len(r) != 1 {
		t.Fatal("a newer edit was not applied")
	}
}
