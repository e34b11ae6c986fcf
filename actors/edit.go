package actors

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// edit handles an Edit from one of the sender's devices: the message's
// entry in this log is rewritten with the new content (edited = true), an
// EditEvent is logged and pushed, and the other party gets the edit
// through the outbox.
func (s *userState) edit(key sessionKey, reqID uint64, ed *wire.Edit, now time.Time) []effect {
	if s.sessions.get(key) == nil {
		return []effect{lostSession(key)}
	}
	id := ed.GetMessageId()
	if s.changing[id] {
		return []effect{s.replyErr(key, reqID, wire.CodeUnavailable, "a change to this message is in progress; retry")}
	}
	if t := ed.GetType(); t < 0 || (t > int32(wire.MessageType_LOCATION) && t < 1000) {
		return []effect{s.replyErr(key, reqID, wire.CodeInvalidArgument, fmt.Sprintf("message type %d: use 1-6 (built-in) or >= 1000 (custom), or 0 to keep it", t))}
	}
	if len(ed.GetAttributes()) > maxAttributes {
		return []effect{s.replyErr(key, reqID, wire.CodeInvalidArgument, fmt.Sprintf("%d attributes, at most %d", len(ed.GetAttributes()), maxAttributes))}
	}
	orig, errs := s.ownMessage(key, reqID, ed.GetConversation(), id)
	if errs != nil {
		return errs
	}
	if orig.GetMessage().GetRecalled() {
		return []effect{s.replyErr(key, reqID, wire.CodeForbidden, "the message was recalled")}
	}
	updated := proto.Clone(orig).(*wire.Entry)
	m := updated.GetMessage()
	applyEdit(m, ed.GetType(), ed.GetContent(), ed.GetAttributes())

	t := s.nextTime(now)
	s.lastSeq++
	seq := s.lastSeq
	ev := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Edit{Edit: &wire.EditEvent{Message: m}}}
	req := persistence.AppendRequest{
		Entries:  []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(ev)}},
		Rewrites: []persistence.Entry{{Seq: persistence.Seq(updated.GetSeq()), TimeMS: updated.GetServerTimeMs(), Data: mustMarshal(updated)}},
	}
	if cr := s.noteChanged(orig, updated); cr != nil {
		req.Convs = []persistence.Conv{*cr}
	}
	ok := s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	c := &commit{lastSeq: seq, entries: []*wire.Entry{ev}, recallKey: id, after: []effect{ok}}
	if peer := m.GetConversation().GetId(); peer != s.user {
		theirs := proto.Clone(m).(*wire.Message)
		theirs.Conversation = &wire.Conversation{Type: wire.Conversation_DIRECT, Id: s.user}
		theirs.Mentioned = theirs.GetMentionAll() || contains(theirs.GetMentionList(), peer)
		item := &actorpb.OutboxItem{ToUser: peer, Edit: &actorpb.EditDeliver{FromUser: s.user, Message: theirs, OriginSeq: uint64(seq)}}
		req.OutboxPut = []persistence.OutboxItem{outboxPut(item)}
		c.fanout = []*actorpb.OutboxItem{item}
	}
	setIn(&s.changing, id, true)
	return []effect{s.submit(req, c)}
}

// applyEdit puts new content into m: type 0 and empty attributes keep the
// old ones.
func applyEdit(m *wire.Message, typ int32, content []byte, attrs map[string]string) {
	if typ != 0 {
		m.Type = typ
	}
	m.Content = content
	if len(attrs) > 0 {
		m.Attributes = attrs
	}
	m.Edited = true
}

// editDelivered applies a sender's edit to this user's copy, once, and
// never an older edit over a newer one (the sender's event seq orders
// them).
func (s *userState) editDelivered(e *actorpb.EditDeliver, now time.Time) []effect {
	nm := e.GetMessage()
	id := nm.GetMessageId()
	if id == "" || !ValidID(e.GetFromUser()) || s.changing[id] || s.delivering[id] {
		// (a change of a message whose delivery is not durable yet waits
		// for its sender's re-drive: the copy to change is not in the log)
		return nil
	}
	ackTo, ackKind := e.GetFromUser(), ""
	if g := e.GetViaGroup(); g != "" {
		ackTo, ackKind = g, GroupKind
	}
	ack := func(seq uint64) effect {
		return effDeliverAck{to: ackTo, kind: ackKind, ack: &actorpb.DeliverAck{ToUser: s.user, MessageId: id, OriginSeq: e.GetOriginSeq(), Seq: seq}}
	}
	applied, found, err := s.rd.indexed(s.user, "v:"+id)
	if err != nil {
		return nil // re-driven
	}
	if found && uint64(applied) >= e.GetOriginSeq() {
		return []effect{ack(0)} // this edit, or a newer one, is already in
	}
	orig, err := s.rd.entryByKey(s.user, "m:"+id)
	if err != nil {
		return nil
	}
	if om := orig.GetMessage(); (orig != nil && om == nil) || (om != nil && (om.GetRecalled() || om.GetSender() != e.GetFromUser())) {
		return []effect{ack(0)} // recalled (maybe before it arrived), or not theirs: nothing to edit
	}
	t := s.nextTime(now)
	s.lastSeq++
	seq := s.lastSeq
	ev := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Edit{Edit: &wire.EditEvent{Message: nm}}}
	req := persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(ev)}},
		Dedup:   []persistence.DedupKey{{Key: "v:" + id, Seq: persistence.Seq(e.GetOriginSeq())}},
	}
	if orig.GetMessage() != nil {
		updated := proto.Clone(orig).(*wire.Entry)
		um := updated.GetMessage()
		applyEdit(um, nm.GetType(), nm.GetContent(), nm.GetAttributes())
		req.Rewrites = []persistence.Entry{{Seq: persistence.Seq(updated.GetSeq()), TimeMS: updated.GetServerTimeMs(), Data: mustMarshal(updated)}}
		if cr := s.noteChanged(orig, updated); cr != nil {
			req.Convs = []persistence.Conv{*cr}
		}
	} else if orig == nil {
		// Edited before the message arrived: the EditEvent carries it whole,
		// and the late copy (old content) is never stored.
		req.Dedup = append(req.Dedup, persistence.DedupKey{Key: "m:" + id, Seq: seq})
		s.delivered.add(id, seq) // deliveredBefore must see it too (no store read for fresh IDs)
	}
	setIn(&s.changing, id, true)
	return []effect{s.submit(req, &commit{lastSeq: seq, entries: []*wire.Entry{ev}, recallKey: id, deliverAcks: []effDeliverAck{ack(uint64(seq)).(effDeliverAck)}})}
}
