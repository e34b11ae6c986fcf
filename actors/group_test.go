package actors

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

func newGroup(t *testing.T) *groupState {
	g := &groupState{id: "g", rd: &fakeLog{byKey: map[string]*wire.Entry{}}, newID: NewMessageID, epoch: 1,
		sending: map[string]*pendingSend{}, awaiting: map[string]*groupAck{}, out: newOutbox()}
	effs := g.command(1, &actorpb.GroupCommand{Op: actorpb.GroupCommand_CREATE, Name: "n", Members: []string{"a", "b", "c"}}, t0)
	if len(appends(effs)) != 1 {
		t.Fatalf("create: %v", effs)
	}
	g.appendDone(nil, t0)
	g.out = newOutbox() // the CREATED events are not what these tests look at
	return g
}

func TestGroupSendFanOut(t *testing.T) {
	g := newGroup(t)
	m := &wire.Send{ClientMessageId: "c1", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, Type: 1, MentionList: []string{"b"}}
	if f := framesTo(g.send(sk(9), 1, "mallory", "", m, t0), 9); len(f) != 1 || f[0].GetError().GetName() != "NOT_GROUP_MEMBER" {
		t.Fatalf("non-member: %v", f)
	}
	effs := g.send(sk(1), 2, "a", "phone", m, t0)
	r := appends(effs)
	if len(r) != 1 || len(r[0].Entries) != 1 || len(r[0].OutboxPut) != 0 || r[0].Fanout == nil || !r[0].Fanout.Pending {
		t.Fatalf("group send wrote %+v, want the message once, the fan-out mark pending and no per-member record", r)
	}
	if f := framesTo(effs, 1); len(f) != 0 {
		t.Fatal("acked before durable")
	}
	done := g.appendDone(nil, t0)
	if f := framesTo(done, 1); len(f) != 0 {
		t.Fatalf("acked %v before the sender's own log has the message", f)
	}
	d := delivers(done)
	if len(d) != 3 {
		t.Fatalf("fan-out to %d members, want 3", len(d))
	}
	for _, it := range d {
		dl := it.GetDeliver()
		if dl.GetViaGroup() != "g" || dl.GetMessage().GetConversation().GetId() != "g" ||
			dl.GetMessage().GetMentioned() != (it.GetToUser() == "b") {
			t.Fatalf("delivery %v", it)
		}
	}
	// Another member's confirmation does not ack the sender; the
	// sender's does, once, with the seq in the sender's log.
	id := d[0].GetDeliver().GetMessage().GetMessageId()
	origin := d[0].GetDeliver().GetOriginSeq()
	if f := framesTo(g.deliverAck(&actorpb.DeliverAck{ToUser: "b", MessageId: id, OriginSeq: origin, Seq: 7}, t0), 1); len(f) != 0 {
		t.Fatalf("acked on b's confirmation: %v", f)
	}
	ack := framesTo(g.deliverAck(&actorpb.DeliverAck{ToUser: "a", MessageId: id, OriginSeq: origin, Seq: 42}, t0), 1)
	if len(ack) != 1 || ack[0].GetId() != 2 || ack[0].GetSendAck().GetMessageId() != id || ack[0].GetSendAck().GetSeq() != 42 || ack[0].GetSendAck().GetDuplicate() {
		t.Fatalf("ack %v, want one with seq 42 (the sender's log)", ack)
	}
	if f := framesTo(g.deliverAck(&actorpb.DeliverAck{ToUser: "a", MessageId: id, OriginSeq: origin, Seq: 42}, t0), 1); len(f) != 0 {
		t.Fatalf("a repeated confirmation acked again: %v", f)
	}
	// Unconfirmed deliveries are re-driven; confirmed ones are not.
	if again := delivers(g.tick(t0.Add(2 * time.Second))); len(again) != 1 || again[0].GetToUser() != "c" {
		t.Fatalf("re-driven %v, want only c's", again)
	}
}

// TestGroupSendRepeat: a send repeated while in flight waits for the same
// ack; one repeated after the ack asks the sender's actor for the seq again
// (the Deliver is idempotent there) and re-asks until it answers.
func TestGroupSendRepeat(t *testing.T) {
	g := newGroup(t)
	m := &wire.Send{ClientMessageId: "c1", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, Type: 1}
	r := appends(g.send(sk(1), 2, "a", "phone", m, t0))
	if effs := g.send(sk(1), 3, "a", "phone", m, t0); len(effs) != 0 {
		t.Fatalf("a repeat in flight did %v", effs)
	}
	var stored wire.Entry
	if err := proto.Unmarshal(r[0].Entries[0].Data, &stored); err != nil {
		t.Fatal(err)
	}
	id := stored.GetMessage().GetMessageId()
	g.appendDone(nil, t0)
	g.rd.(*fakeLog).byKey["c:a/c1"] = &stored
	if effs := g.send(sk(1), 4, "a", "phone", m, t0); len(effs) != 0 {
		t.Fatalf("a repeat waiting for the sender's seq did %v", effs)
	}
	acks := framesTo(g.deliverAck(&actorpb.DeliverAck{ToUser: "a", MessageId: id, OriginSeq: stored.GetSeq(), Seq: 9}, t0), 1)
	if len(acks) != 3 {
		t.Fatalf("acks %v, want one per request", acks)
	}
	for i, f := range acks {
		if f.GetId() != uint64(i+2) || f.GetSendAck().GetSeq() != 9 || f.GetSendAck().GetDuplicate() != (i > 0) {
			t.Fatalf("ack %d: %v", i, f)
		}
	}

	// After the ack: the group asks the sender's actor again.
	effs := g.send(sk(1), 5, "a", "phone", m, t0)
	d := delivers(effs)
	if len(d) != 1 || d[0].GetToUser() != "a" || d[0].GetDeliver().GetMessage().GetMessageId() != id || len(framesTo(effs, 1)) != 0 {
		t.Fatalf("late repeat: %v", effs)
	}
	toA := 0
	for _, it := range delivers(g.tick(t0.Add(2 * time.Second))) { // b's and c's fan-out is re-driven too
		if it.GetToUser() == "a" {
			toA++
		}
	}
	if toA != 1 {
		t.Fatalf("the unanswered seq question went to a %d times, want 1", toA)
	}
	ack := framesTo(g.deliverAck(&actorpb.DeliverAck{ToUser: "a", MessageId: id, OriginSeq: stored.GetSeq(), Seq: 9}, t0), 1)
	if len(ack) != 1 || ack[0].GetId() != 5 || ack[0].GetSendAck().GetSeq() != 9 || !ack[0].GetSendAck().GetDuplicate() {
		t.Fatalf("late repeat ack %v", ack)
	}
}

func TestGroupMembership(t *testing.T) {
	g := newGroup(t)
	effs := g.command(2, &actorpb.GroupCommand{Op: actorpb.GroupCommand_ADD, Members: []string{"d", "a"}}, t0)
	r := appends(effs)
	if len(r) != 1 || len(r[0].OutboxPut) != 4 {
		t.Fatalf("add wrote %+v, want JOINED to all 4 members", r)
	}
	g.appendDone(nil, t0)
	if !g.isMember("d") || len(g.st.GetMembers()) != 4 {
		t.Fatalf("members %v", g.st.GetMembers())
	}
	effs = g.command(3, &actorpb.GroupCommand{Op: actorpb.GroupCommand_REMOVE, Members: []string{"b"}}, t0)
	if r := appends(effs); len(r[0].OutboxPut) != 4 {
		t.Fatalf("remove must tell the removed member too: %+v", r)
	}
	g.appendDone(nil, t0)
	if g.isMember("b") {
		t.Fatal("b still a member")
	}
	for name, c := range map[string]*actorpb.GroupCommand{
		"create twice":  {Op: actorpb.GroupCommand_CREATE, Members: []string{"a"}},
		"remove absent": {Op: actorpb.GroupCommand_REMOVE, Members: []string{"zz"}},
		"bad member":    {Op: actorpb.GroupCommand_ADD, Members: []string{"a b"}},
	} {
		f := framesTo(g.command(4, c, t0), 4)
		if len(f) != 1 || f[0].GetError() == nil {
			t.Fatalf("%s: %v", name, f)
		}
	}
	g.command(5, &actorpb.GroupCommand{Op: actorpb.GroupCommand_DISMISS}, t0)
	g.appendDone(nil, t0)
	if g.isMember("a") {
		t.Fatal("members of a dismissed group may still send")
	}
}

func TestGroupRecall(t *testing.T) {
	g := newGroup(t)
	m := &wire.Send{ClientMessageId: "c1", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, Type: 1, Content: []byte("oops")}
	effs := g.send(sk(1), 2, "a", "", m, t0)
	r := appends(effs)
	var stored wire.Entry
	if err := proto.Unmarshal(r[0].Entries[0].Data, &stored); err != nil {
		t.Fatal(err)
	}
	g.appendDone(nil, t0)
	g.rd.(*fakeLog).byKey["m:"+stored.GetMessage().GetMessageId()] = &stored
	id := stored.GetMessage().GetMessageId()
	if f := framesTo(g.recall(sk(2), 3, "b", &wire.Recall{MessageId: id}, 0, t0), 2); len(f) != 1 || f[0].GetError().GetName() != "FORBIDDEN" {
		t.Fatalf("recall by another member: %v", f)
	}
	effs = g.recall(sk(1), 4, "a", &wire.Recall{MessageId: id}, 0, t0)
	r = appends(effs)
	if len(r) != 1 || len(r[0].Rewrites) != 1 || len(r[0].OutboxPut) != 3 {
		t.Fatalf("group recall wrote %+v", r)
	}
	done := g.appendDone(nil, t0)
	if f := framesTo(done, 1); len(f) != 1 || f[0].GetOk() == nil {
		t.Fatalf("recaller got %v", f)
	}
	for _, it := range delivers(done) {
		if it.GetRecall().GetViaGroup() != "g" || it.GetRecall().GetMessageId() != id {
			t.Fatalf("recall fan-out %v", it)
		}
	}
}

func TestGroupTransient(t *testing.T) {
	g := newGroup(t)
	m := &wire.Send{ClientMessageId: "typing", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, Type: 1,
		Options: &wire.SendOptions{Transient: true}}
	effs := g.send(sk(1), 2, "a", "", m, t0)
	if len(appends(effs)) != 0 || g.out.inFlight() != 0 {
		t.Fatal("a transient group message was stored or queued for retry")
	}
	var sent []effGroupTransient
	for _, e := range effs {
		if gt, ok := e.(effGroupTransient); ok {
			sent = append(sent, gt)
		}
	}
	if len(sent) != 1 || len(sent[0].to) != 3 || framesTo(effs, 1)[0].GetSendAck().GetSeq() != 0 {
		t.Fatalf("transient %v, ack %v; want one relay to the 3 members", sent, framesTo(effs, 1))
	}
	if m := sent[0].msg; m.GetFromUser() != "a" || m.GetMessage().GetConversation().GetId() != "g" || m.GetMessage().GetMentioned() {
		t.Fatalf("relayed %v", m)
	}
}

func TestGroupEdit(t *testing.T) {
	g := newGroup(t)
	m := &wire.Send{ClientMessageId: "c1", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, Type: 1, Content: []byte("teh")}
	r := appends(g.send(sk(1), 2, "a", "", m, t0))
	var stored wire.Entry
	if err := proto.Unmarshal(r[0].Entries[0].Data, &stored); err != nil {
		t.Fatal(err)
	}
	g.appendDone(nil, t0)
	g.rd.(*fakeLog).byKey["m:"+stored.GetMessage().GetMessageId()] = &stored
	id := stored.GetMessage().GetMessageId()
	if f := framesTo(g.edit(sk(2), 3, "b", &wire.Edit{MessageId: id, Content: []byte("x")}, t0), 2); len(f) != 1 || f[0].GetError().GetName() != "FORBIDDEN" {
		t.Fatalf("edit by another member: %v", f)
	}
	effs := g.edit(sk(1), 4, "a", &wire.Edit{MessageId: id, Content: []byte("the")}, t0)
	if r := appends(effs); len(r) != 1 || len(r[0].Rewrites) != 1 || len(r[0].OutboxPut) != 3 {
		t.Fatalf("group edit wrote %+v", r)
	}
	done := g.appendDone(nil, t0)
	for _, it := range delivers(done) {
		if it.GetEdit().GetViaGroup() != "g" || string(it.GetEdit().GetMessage().GetContent()) != "the" || !it.GetEdit().GetMessage().GetEdited() {
			t.Fatalf("edit fan-out %v", it)
		}
	}
}

// TestGroupBulkFanout: a group message's fan-out is one record — members
// confirm it one by one (repeats, strangers and other messages' IDs are
// not taken), the members of the send are kept although the membership
// changes, the fan-out mark is cleared once all confirmed, and an
// activation re-drives it from the log.
func TestGroupBulkFanout(t *testing.T) {
	g := newGroup(t)
	m := &wire.Send{ClientMessageId: "c1", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, Type: 1}
	r := appends(g.send(sk(1), 2, "a", "phone", m, t0))
	d := delivers(g.appendDone(nil, t0))
	if len(d) != 3 || g.out.itemCount() != 0 || len(g.out.bulks) != 1 {
		t.Fatalf("fan-out: %d deliveries, %d items, %d bulk records; want 3, 0, 1", len(d), g.out.itemCount(), len(g.out.bulks))
	}
	id, origin := d[0].GetDeliver().GetMessage().GetMessageId(), d[0].GetDeliver().GetOriginSeq()
	ack := func(to, msgID string) bool {
		return g.out.ack(&actorpb.DeliverAck{ToUser: to, MessageId: msgID, OriginSeq: origin, Seq: 1}, t0.Add(10*time.Millisecond))
	}
	// c leaves after the send: the message still goes to the three.
	g.command(2, &actorpb.GroupCommand{Op: actorpb.GroupCommand_REMOVE, By: "a", Members: []string{"c"}}, t0)
	g.appendDone(nil, t0)
	if !ack("b", id) || ack("b", id) || ack("mallory", id) || ack("c", "another-message") {
		t.Fatal("b's confirmation must be taken once; a stranger's and another message's not")
	}
	if n := g.out.bulks[persistence.Seq(origin)].left; n != 2 {
		t.Fatalf("%d of the message's deliveries in flight, want 2", n)
	}
	var again []*actorpb.OutboxItem
	for _, it := range delivers(g.tick(t0.Add(3 * time.Second))) {
		if it.GetDeliver() != nil {
			again = append(again, it) // (not the REMOVED events')
		}
	}
	if len(again) != 2 || again[0].GetToUser() != "a" || again[1].GetToUser() != "c" {
		t.Fatalf("re-sent %v, want a's and c's", again)
	}
	if !ack("a", id) || !ack("c", id) {
		t.Fatal("confirmations of the re-sent deliveries not taken")
	}
	if len(g.out.bulks) != 0 {
		t.Fatalf("%d bulk records after every confirmation", len(g.out.bulks))
	}
	var cleared bool
	for _, a := range appends(g.tick(t0.Add(4 * time.Second))) {
		cleared = cleared || (a.Fanout != nil && !a.Fanout.Pending)
	}
	if !cleared {
		t.Fatal("the fan-out mark was not cleared once every member confirmed")
	}

	// A new activation with the mark pending re-drives the message from
	// its log entry to the members of now (a and b).
	g2 := newGroup(t)
	g2.st = g.st
	var entry wire.Entry
	if err := proto.Unmarshal(r[0].Entries[0].Data, &entry); err != nil {
		t.Fatal(err)
	}
	g2.out.activated(persistence.FanoutMark{Done: 0, Pending: true}, persistence.Seq(entry.GetSeq()))
	re := delivers(g2.redrivePage([]*wire.Entry{&entry}, false, t0))
	if len(re) != 2 || re[0].GetDeliver().GetMessage().GetMessageId() != id {
		t.Fatalf("activation re-drove %v, want the message to a and b", re)
	}
	if again := delivers(g2.redrivePage([]*wire.Entry{&entry}, false, t0)); len(again) != 0 {
		t.Fatalf("a second re-drive of the page sent %v again", again)
	}
}
