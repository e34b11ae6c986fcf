package actors

import (
	"errors"
	"github.com/oklog/ulid/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// commitSend sends and commits one message, and makes the fake store
// answer for its message ID as the real index would.
func (h *harness) commitSend(sid uint64, cmid, peer, text string) *wire.Entry {
	h.t.Helper()
	effs := h.st.send(sk(sid), 1, directSend(cmid, peer, text), t0)
	r := appends(effs)
	h.completeAppends(effs)
	var e wire.Entry
	if err := proto.Unmarshal(r[0].Entries[0].Data, &e); err != nil {
		h.t.Fatal(err)
	}
	h.log.byKey["m:"+e.GetMessage().GetMessageId()] = &e
	return &e
}

func recallReq(id string) *wire.Recall {
	return &wire.Recall{Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, MessageId: id}
}

func TestRecallBySender(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	h.login(2, "laptop", false, 0)
	orig := h.commitSend(1, "c1", "bob", "oops")
	id := orig.GetMessage().GetMessageId()

	effs := h.st.recall(sk(1), 7, recallReq(id), t0.Add(time.Minute))
	r := appends(effs)
	if len(r) != 1 || len(r[0].Entries) != 1 || len(r[0].Rewrites) != 1 || len(r[0].OutboxPut) != 1 {
		t.Fatalf("recall wrote %+v, want one RecallEvent, one rewrite, one outbox item", r)
	}
	var erased wire.Entry
	if err := proto.Unmarshal(r[0].Rewrites[0].Data, &erased); err != nil {
		t.Fatal(err)
	}
	if r[0].Rewrites[0].Seq != persistence.Seq(orig.GetSeq()) || len(erased.GetMessage().GetContent()) != 0 || !erased.GetMessage().GetRecalled() || erased.GetMessage().GetMessageId() != id {
		t.Fatalf("rewritten entry %v: content must be gone, recalled set", &erased)
	}
	if len(framesTo(effs, 1)) != 0 {
		t.Fatal("answered before the recall was durable")
	}
	done := h.completeAppends(effs)
	f := framesTo(done, 1)
	if len(f) != 2 || f[0].GetRecall() == nil && f[0].GetPush() == nil {
		t.Fatalf("requesting device got %v, want the RecallEvent push and Ok", f)
	}
	var sawOk, sawEvent bool
	for _, fr := range f {
		sawOk = sawOk || (fr.GetOk() != nil && fr.GetId() == 7)
		for _, e := range fr.GetPush().GetEntries() {
			sawEvent = sawEvent || e.GetRecall().GetMessageId() == id
		}
	}
	if !sawOk || !sawEvent || len(framesTo(done, 2)) != 1 {
		t.Fatalf("ok %v event %v; other device got %v", sawOk, sawEvent, framesTo(done, 2))
	}
	d := delivers(done)
	if len(d) != 1 || d[0].GetRecall().GetMessageId() != id || d[0].GetRecall().GetConversation().GetId() != "alice" {
		t.Fatalf("fan-out %v, want the recall to bob", d)
	}
	// A DeliverAck for the recall clears the outbox item.
	h.st.deliverAck(&actorpb.DeliverAck{ToUser: "bob", MessageId: id, OriginSeq: d[0].GetRecall().GetOriginSeq()})
	if h.st.out.itemCount() != 1 { // the message's own delivery is still pending
		t.Fatalf("outbox has %d items, want only the message's own delivery", h.st.out.itemCount())
	}
}

func TestRecallRules(t *testing.T) {
	h := newHarness(t, "alice")
	h.st.cfg.RecallWindow = 2 * time.Minute
	h.login(1, "phone", false, 0)
	orig := h.commitSend(1, "c1", "bob", "hi")
	id := orig.GetMessage().GetMessageId()
	theirs := &wire.Entry{Seq: 99, Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "B1", Sender: "bob", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}}}}
	h.log.byKey["m:B1"] = theirs
	for name, tc := range map[string]struct {
		req  *wire.Recall
		at   time.Time
		code string
	}{
		"somebody else's": {recallReq("B1"), t0, "FORBIDDEN"},
		"unknown":         {recallReq("nope"), t0, "NOT_FOUND"},
		"no id":           {recallReq(""), t0, "INVALID_ARGUMENT"},
		"other convo":     {&wire.Recall{Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "carol"}, MessageId: id}, t0, "NOT_FOUND"},
		"window passed":   {recallReq(id), t0.Add(3 * time.Minute), "RECALL_WINDOW_PASSED"},
	} {
		effs := h.st.recall(sk(1), 3, tc.req, tc.at)
		if f := framesTo(effs, 1); len(f) != 1 || f[0].GetError().GetName() != tc.code || len(appends(effs)) != 0 {
			t.Fatalf("%s: %v, want %s and nothing written", name, f, tc.code)
		}
	}
	// Already recalled: Ok, nothing new.
	recalled := *orig.GetMessage()
	recalled.Recalled = true
	h.log.byKey["m:"+id] = &wire.Entry{Seq: orig.GetSeq(), Kind: &wire.Entry_Message{Message: &recalled}}
	effs := h.st.recall(sk(1), 4, recallReq(id), t0)
	if f := framesTo(effs, 1); len(f) != 1 || f[0].GetOk() == nil || len(appends(effs)) != 0 {
		t.Fatalf("second recall: %v", f)
	}
}

func TestRecallDelivered(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	// bob has alice's message.
	copyEntry := &wire.Entry{Seq: 5, ServerTimeMs: 1, Kind: &wire.Entry_Message{Message: &wire.Message{
		MessageId: "A1", Sender: "alice", Content: []byte("secret"), Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"},
	}}}
	h.log.byKey["m:A1"] = copyEntry
	rd := &actorpb.RecallDeliver{FromUser: "alice", MessageId: "A1", By: "alice", OriginSeq: 9, Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}}
	effs := h.st.recallDelivered(rd, t0)
	r := appends(effs)
	if len(r) != 1 || len(r[0].Rewrites) != 1 || r[0].Rewrites[0].Seq != 5 || r[0].Dedup[0].Key != "r:A1" {
		t.Fatalf("recall at the recipient wrote %+v", r)
	}
	if again := h.st.recallDelivered(rd, t0); len(again) != 0 {
		t.Fatal("a repeat while in flight acted")
	}
	done := h.completeAppends(effs)
	var acked bool
	for _, e := range done {
		if a, ok := e.(effDeliverAck); ok && a.to == "alice" && a.ack.GetOriginSeq() == 9 {
			acked = true
		}
	}
	if !acked || len(framesTo(done, 1)) != 1 {
		t.Fatal("no ack to the sender or no push of the RecallEvent")
	}
	// A re-driven recall after the commit is acked from the index.
	h.log.byKey["r:A1"] = &wire.Entry{Seq: 6}
	if effs := h.st.recallDelivered(rd, t0); len(appends(effs)) != 0 || len(effs) != 1 {
		t.Fatalf("re-driven recall: %v", effs)
	}

	// Recalled before the copy arrived: the late copy must never be stored.
	rd2 := &actorpb.RecallDeliver{FromUser: "alice", MessageId: "A2", By: "alice", OriginSeq: 10, Conversation: rd.Conversation}
	effs = h.st.recallDelivered(rd2, t0)
	r = appends(effs)
	if len(r[0].Rewrites) != 0 || len(r[0].Dedup) != 2 || r[0].Dedup[1].Key != "m:A2" {
		t.Fatalf("early recall wrote %+v, want the message ID indexed to the event", r)
	}
	h.completeAppends(effs)
	h.log.byKey["m:A2"] = &wire.Entry{Seq: uint64(r[0].Entries[0].Seq), Kind: &wire.Entry_Recall{Recall: &wire.RecallEvent{MessageId: "A2"}}}
	late := h.st.deliver(&actorpb.Deliver{FromUser: "alice", OriginSeq: 3, Message: &wire.Message{MessageId: "A2", Content: []byte("late")}}, t0)
	if len(appends(late)) != 0 || len(late) != 1 {
		t.Fatalf("late copy of a recalled message: %v, want only an ack", late)
	}
}

func TestGroupMessageChangesRefused(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	h.log.byKey["m:G1"] = &wire.Entry{Seq: 3, Kind: &wire.Entry_Message{Message: &wire.Message{
		MessageId: "G1", Sender: "alice", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "team"}}}}
	for name, effs := range map[string][]effect{
		"recall": h.st.recall(sk(1), 2, &wire.Recall{MessageId: "G1"}, t0),
		"edit":   h.st.edit(sk(1), 2, &wire.Edit{MessageId: "G1", Content: []byte("x")}, t0),
	} {
		if f := framesTo(effs, 1); len(f) != 1 || f[0].GetError().GetName() != "INVALID_ARGUMENT" || len(appends(effs)) != 0 {
			t.Fatalf("%s of a group message: %v", name, f)
		}
	}
}

// With the store read skipped for freshly minted IDs (deliveredBefore), a
// recall or an edit that arrived before its message must still keep the
// late copy out: the early change registers the ID in memory.
func TestEarlyChangeSeenWithoutStoreRead(t *testing.T) {
	for _, kind := range []string{"recall", "edit"} {
		t.Run(kind, func(t *testing.T) {
			h := newHarness(t, "bob")
			h.st.freshMS = time.Now().Add(-time.Hour).UnixMilli() // activated long before the message was minted
			id := ulid.Make().String()
			conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}
			var effs []effect
			if kind == "recall" {
				effs = h.st.recallDelivered(&actorpb.RecallDeliver{FromUser: "alice", MessageId: id, By: "alice", OriginSeq: 10, Conversation: conv}, t0)
			} else {
				effs = h.st.editDelivered(&actorpb.EditDeliver{FromUser: "alice", OriginSeq: 10,
					Message: &wire.Message{MessageId: id, Sender: "alice", Conversation: conv, Content: []byte("new")}}, t0)
			}
			if len(appends(effs)) != 1 {
				t.Fatalf("early %s appended %v", kind, appends(effs))
			}
			h.completeAppends(effs)
			h.log.err = errors.New("no store read expected") // only memory may answer now
			late := h.st.deliver(&actorpb.Deliver{FromUser: "alice", OriginSeq: 3, Message: &wire.Message{MessageId: id, Content: []byte("late")}}, t0)
			if len(appends(late)) != 0 || len(late) != 1 {
				t.Fatalf("late copy after an early %s: %v, want only an ack", kind, late)
			}
		})
	}
}
