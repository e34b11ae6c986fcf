package actors

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

var (
	convAlice = &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}
	convCarol = &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "carol"}
)

// logged keeps every entry the harness's user appended, decoded, so tests
// can recount from "the log".
func (h *harness) run(effs []effect) []effect {
	for _, r := range appends(effs) {
		for _, e := range r.Entries {
			var we wire.Entry
			if err := proto.Unmarshal(e.Data, &we); err != nil {
				h.t.Fatal(err)
			}
			h.logged = append(h.logged, &we)
			if m := we.GetMessage(); m != nil {
				h.log.byKey["m:"+m.GetMessageId()] = &we
			}
		}
		for _, rw := range r.Rewrites {
			var we wire.Entry
			if err := proto.Unmarshal(rw.Data, &we); err != nil {
				h.t.Fatal(err)
			}
			for i, old := range h.logged {
				if old.GetSeq() == we.GetSeq() {
					h.logged[i] = &we
				}
			}
			h.log.byKey["m:"+we.GetMessage().GetMessageId()] = &we
		}
	}
	return h.completeAppends(effs)
}

func (h *harness) incoming(from, id string, mentioned bool) {
	h.t.Helper()
	h.run(h.st.deliver(&actorpb.Deliver{FromUser: from, OriginSeq: 1, Message: &wire.Message{
		MessageId: id, Sender: from, Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: from},
		Type: 1, Content: []byte(id), Mentioned: mentioned,
	}}, t0))
}

func (h *harness) checkRecount() {
	h.t.Helper()
	want := recount(h.st.user, h.logged)
	for k, cs := range h.st.convs {
		r := want[k]
		if r == nil || r.GetUnread() != cs.GetUnread() || r.GetUnreadMentions() != cs.GetUnreadMentions() || r.GetReadSeq() != cs.GetReadSeq() ||
			r.GetPinned() != cs.GetPinned() || r.GetDeleted() != cs.GetDeleted() || fmt.Sprint(r.GetMarks()) != fmt.Sprint(cs.GetMarks()) {
			h.t.Fatalf("conversation %s: stored %v, recount from the log %v", k, cs, r)
		}
	}
}

func TestUnreadAndMarkRead(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	h.login(2, "pad", false, 0)
	h.incoming("alice", "a1", false)
	h.incoming("alice", "a2", true)
	h.incoming("carol", "c1", false)
	// Own messages never count.
	h.run(h.st.send(sk(1), 5, directSend("own", "alice", "mine"), t0))
	cs := h.st.convs["d:alice"]
	if cs.GetUnread() != 2 || cs.GetUnreadMentions() != 1 || cs.GetLastMessage().GetSender() != "bob" {
		t.Fatalf("alice conversation %v, want 2 unread, 1 mention, last message bob's", cs)
	}
	h.checkRecount()

	// Login list: conversations with unread, newest first.
	list := h.st.conversationList(false)
	if len(list.GetConversations()) != 2 || list.GetConversations()[0].GetConversation().GetId() != "alice" {
		t.Fatalf("conversation list %v", list)
	}

	// Mark alice read from the phone: a ReadEvent reaches both devices.
	effs := h.run(h.st.markRead(sk(1), 9, &wire.MarkRead{Conversation: convAlice}, nil, t0))
	for _, sid := range []uint64{1, 2} {
		var read *wire.ReadEvent
		for _, f := range framesTo(effs, sid) {
			for _, e := range f.GetPush().GetEntries() {
				if e.GetRead() != nil {
					read = e.GetRead()
				}
			}
		}
		if read == nil || read.GetUnread() != 0 || read.GetConversation().GetId() != "alice" {
			t.Fatalf("device %d got ReadEvent %v", sid, read)
		}
	}
	if cs.GetUnread() != 0 || cs.GetUnreadMentions() != 0 || len(h.st.conversationList(false).GetConversations()) != 1 {
		t.Fatalf("after mark read: %v", cs)
	}
	h.checkRecount()
	// Marking again changes nothing and logs nothing.
	if r := appends(h.st.markRead(sk(1), 10, &wire.MarkRead{Conversation: convAlice}, nil, t0)); len(r) != 0 {
		t.Fatal("a repeated mark-read was logged")
	}
}

func TestPartialMarkReadAndRecall(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	h.incoming("alice", "a1", false)
	h.incoming("alice", "a2", false)
	h.incoming("alice", "a3", true)
	upTo := h.log.byKey["m:a1"].GetSeq()
	mr := &wire.MarkRead{Conversation: convAlice, UpToSeq: upTo}
	if !h.st.needsLater(mr) {
		t.Fatal("a partial mark must ask for the later entries")
	}
	var later []*wire.Entry
	for _, e := range h.logged {
		if e.GetSeq() > upTo {
			later = append(later, e)
		}
	}
	h.run(h.st.markRead(sk(1), 1, mr, later, t0))
	cs := h.st.convs["d:alice"]
	if cs.GetUnread() != 2 || cs.GetUnreadMentions() != 1 || cs.GetReadSeq() != upTo {
		t.Fatalf("after partial mark: %v", cs)
	}
	h.checkRecount()
	// alice recalls a3 (unread, mentioning): both counts drop.
	h.run(h.st.recallDelivered(&actorpb.RecallDeliver{FromUser: "alice", MessageId: "a3", By: "alice", OriginSeq: 7, Conversation: convAlice}, t0))
	if cs.GetUnread() != 1 || cs.GetUnreadMentions() != 0 || !cs.GetLastMessage().GetRecalled() {
		t.Fatalf("after recall of an unread message: %v", cs)
	}
	h.checkRecount()
}

func TestConversationOps(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	h.login(2, "pad", false, 0)
	h.incoming("alice", "a1", false)
	h.incoming("carol", "c1", false)
	op := func(c *wire.Conversation, o wire.ConversationOp_Op, mark string) []effect {
		return h.run(h.st.conversationOp(sk(1), 3, &wire.ConversationOp{Conversation: c, Op: o, Mark: mark}, t0))
	}
	effs := op(convAlice, wire.ConversationOp_PIN, "")
	if f := framesTo(effs, 2); len(f) != 1 || f[0].GetPush().GetEntries()[0].GetConversationOp().GetOp() != wire.ConversationOp_PIN {
		t.Fatalf("the other device got %v, want the PIN op", f)
	}
	op(convAlice, wire.ConversationOp_MUTE, "")
	op(convAlice, wire.ConversationOp_MARK, "work")
	op(convAlice, wire.ConversationOp_MARK, "later")
	op(convAlice, wire.ConversationOp_UNMARK, "work")
	h.incoming("carol", "c2", false) // carol is newer, alice pinned: alice first
	list := h.st.conversationList(true)
	if len(list.GetConversations()) != 2 || list.GetConversations()[0].GetConversation().GetId() != "alice" {
		t.Fatalf("pinned conversation not first: %v", list)
	}
	a := list.GetConversations()[0]
	if !a.GetPinned() || !a.GetMuted() || fmt.Sprint(a.GetMarks()) != "[later]" {
		t.Fatalf("alice state %v", a)
	}
	h.checkRecount()

	// Delete: gone from the list, read; back with the next message.
	op(convCarol, wire.ConversationOp_DELETE, "")
	if l := h.st.conversationList(true); len(l.GetConversations()) != 1 {
		t.Fatalf("deleted conversation still listed: %v", l)
	}
	h.incoming("carol", "c3", false)
	if cs := h.st.convs["d:carol"]; cs.GetDeleted() || cs.GetUnread() != 1 {
		t.Fatalf("after a new message: %v", cs)
	}
	// Clear history: read, and the cleared position set.
	op(convCarol, wire.ConversationOp_CLEAR_HISTORY, "")
	if cs := h.st.convs["d:carol"]; cs.GetUnread() != 0 || cs.GetClearedSeq() == 0 {
		t.Fatalf("after clear: %v", cs)
	}
	h.checkRecount()
	// Bad input.
	for name, o := range map[string]*wire.ConversationOp{
		"no conversation": {Op: wire.ConversationOp_PIN},
		"no mark":         {Conversation: convAlice, Op: wire.ConversationOp_MARK},
		"unknown op":      {Conversation: convAlice, Op: 99},
	} {
		effs := h.st.conversationOp(sk(1), 4, o, t0)
		if f := framesTo(effs, 1); len(f) != 1 || f[0].GetError().GetName() != "INVALID_ARGUMENT" || len(appends(effs)) != 0 {
			t.Fatalf("%s: %v", name, f)
		}
	}
}
