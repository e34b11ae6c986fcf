package actors

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// originSeq is the seq of the entry in this user's log an outbox item
// fans out (the message, or the recall/edit event).
func originSeq(it *actorpb.OutboxItem) persistence.Seq {
	switch {
	case it.GetGroupEvent() != nil:
		return persistence.Seq(it.GetGroupEvent().GetOriginSeq())
	case it.GetRecall() != nil:
		return persistence.Seq(it.GetRecall().GetOriginSeq())
	case it.GetEdit() != nil:
		return persistence.Seq(it.GetEdit().GetOriginSeq())
	}
	return persistence.Seq(it.GetDeliver().GetOriginSeq())
}

// outboxRef names an outbox item in the store and in the actor: the
// originating entry's seq (0 when the sender's log has no entry for it),
// the recipient and the message.
func outboxRef(it *actorpb.OutboxItem) persistence.OutboxRef {
	return persistence.OutboxRef{Seq: originSeq(it), Key: it.GetToUser() + "/" + itemMessageID(it)}
}

func outboxPut(it *actorpb.OutboxItem) persistence.OutboxItem {
	r := outboxRef(it)
	return persistence.OutboxItem{Seq: r.Seq, Key: r.Key, Data: mustMarshal(it)}
}

// itemMessageID is the message an outbox item is about.
func itemMessageID(it *actorpb.OutboxItem) string {
	switch {
	case it.GetGroupEvent() != nil:
		return groupEventID(it.GetGroupEvent())
	case it.GetRecall() != nil:
		return it.GetRecall().GetMessageId()
	case it.GetEdit() != nil:
		return it.GetEdit().GetMessage().GetMessageId()
	}
	return it.GetDeliver().GetMessage().GetMessageId()
}

// itemMessage is what the courier carries for an outbox item.
func itemMessage(it *actorpb.OutboxItem) proto.Message {
	switch {
	case it.GetGroupEvent() != nil:
		return it.GetGroupEvent()
	case it.GetRecall() != nil:
		return it.GetRecall()
	case it.GetEdit() != nil:
		return it.GetEdit()
	}
	return it.GetDeliver()
}

// ownMessage finds a message of this user's log by ID for a recall or edit
// request and checks that this user sent it.
func (s *userState) ownMessage(key sessionKey, reqID uint64, conv *wire.Conversation, id string) (*wire.Entry, []effect) {
	if id == "" {
		return nil, []effect{s.replyErr(key, reqID, wire.CodeInvalidArgument, "message_id is required")}
	}
	e, err := s.rd.entryByKey(s.user, "m:"+id)
	if err != nil {
		return nil, []effect{s.replyErr(key, reqID, wire.CodeUnavailable, "storage unavailable; retry")}
	}
	m := e.GetMessage()
	if m == nil || (conv != nil && conv.GetId() != "" && !proto.Equal(conv, m.GetConversation())) {
		return nil, []effect{s.replyErr(key, reqID, wire.CodeNotFound, fmt.Sprintf("no message %s in this conversation", truncate(id, 40)))}
	}
	if m.GetConversation().GetType() == wire.Conversation_GROUP {
		// Group recalls go to the group actor (the frontend routes them);
		// group edits are not available yet.
		return nil, []effect{s.replyErr(key, reqID, wire.CodeInvalidArgument, "group messages are recalled and edited through the group")}
	}
	if m.GetSender() != s.user {
		return nil, []effect{s.replyErr(key, reqID, wire.CodeForbidden, "only the sender may change a message")}
	}
	return e, nil
}

// recall handles a Recall from one of the sender's devices: the message's
// content is erased from this log (the entry stays, recalled = true), a
// RecallEvent is logged and pushed, and the other party gets the recall
// through the outbox.
func (s *userState) recall(key sessionKey, reqID uint64, r *wire.Recall, now time.Time) []effect {
	if s.sessions.get(key) == nil {
		return []effect{lostSession(key)}
	}
	ok := s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	id := r.GetMessageId()
	if s.changing[id] {
		return []effect{s.replyErr(key, reqID, wire.CodeUnavailable, "a change to this message is in progress; retry")}
	}
	orig, errs := s.ownMessage(key, reqID, r.GetConversation(), id)
	if errs != nil {
		return errs
	}
	m := orig.GetMessage()
	if m.GetRecalled() {
		return []effect{ok} // already recalled: nothing more to do
	}
	if w := s.cfg.RecallWindow; w > 0 && now.Sub(time.UnixMilli(m.GetServerTimeMs())) > w {
		return []effect{s.replyErr(key, reqID, wire.CodeRecallWindowPassed, fmt.Sprintf("messages can be recalled for %s after sending", w))}
	}
	return []effect{s.applyRecall(orig, s.user, now, ok)}
}

// applyRecall erases orig's content, logs the RecallEvent, and (for the
// sender's log) fans the recall out to the other party.
func (s *userState) applyRecall(orig *wire.Entry, by string, now time.Time, after ...effect) effect {
	m := orig.GetMessage()
	erased := proto.Clone(orig).(*wire.Entry)
	em := erased.GetMessage()
	em.Content, em.Attributes, em.MentionList, em.MentionAll, em.Recalled = nil, nil, nil, false, true
	t := s.nextTime(now)
	s.lastSeq++
	ev := &wire.Entry{Seq: uint64(s.lastSeq), ServerTimeMs: t, Kind: &wire.Entry_Recall{Recall: &wire.RecallEvent{
		Conversation: m.GetConversation(), MessageId: m.GetMessageId(), By: by,
	}}}
	req := persistence.AppendRequest{
		Entries:  []persistence.Entry{{Seq: s.lastSeq, TimeMS: t, Data: mustMarshal(ev)}},
		Rewrites: []persistence.Entry{{Seq: persistence.Seq(erased.GetSeq()), TimeMS: erased.GetServerTimeMs(), Data: mustMarshal(erased)}},
	}
	if cr := s.noteChanged(orig, erased); cr != nil {
		req.Convs = []persistence.Conv{*cr}
	}
	c := &commit{lastSeq: s.lastSeq, entries: []*wire.Entry{ev}, recallKey: m.GetMessageId(), after: after}
	if peer := m.GetConversation().GetId(); m.GetSender() == s.user && peer != s.user {
		item := &actorpb.OutboxItem{ToUser: peer, Recall: &actorpb.RecallDeliver{
			FromUser: s.user, MessageId: m.GetMessageId(), By: by, OriginSeq: uint64(s.lastSeq),
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: s.user},
		}}
		req.OutboxPut = []persistence.OutboxItem{outboxPut(item)}
		c.fanout = []*actorpb.OutboxItem{item}
	}
	setIn(&s.changing, m.GetMessageId(), true)
	return s.submit(req, c)
}

// recallDelivered applies a sender's recall to this user's copy. If the
// copy has not arrived yet, the message ID is indexed to the RecallEvent,
// so the late copy is acknowledged and never stored as a live message.
func (s *userState) recallDelivered(r *actorpb.RecallDeliver, now time.Time) []effect {
	id := r.GetMessageId()
	if id == "" || !ValidID(r.GetFromUser()) || s.changing[id] || s.delivering[id] {
		// (a change of a message whose delivery is not durable yet waits
		// for its sender's re-drive: the copy to change is not in the log)
		return nil
	}
	ackTo, ackKind := r.GetFromUser(), ""
	if g := r.GetViaGroup(); g != "" {
		ackTo, ackKind = g, GroupKind
	}
	ack := func(seq uint64) effDeliverAck {
		return effDeliverAck{to: ackTo, kind: ackKind, ack: &actorpb.DeliverAck{ToUser: s.user, MessageId: id, OriginSeq: r.GetOriginSeq(), Seq: seq}}
	}
	done, err := s.rd.entryByKey(s.user, "r:"+id)
	if err != nil {
		return nil // re-driven
	}
	if done != nil {
		return []effect{ack(done.GetSeq())}
	}
	orig, err := s.rd.entryByKey(s.user, "m:"+id)
	if err != nil {
		return nil
	}
	t := s.nextTime(now)
	s.lastSeq++
	seq := s.lastSeq
	ev := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Recall{Recall: &wire.RecallEvent{
		Conversation: r.GetConversation(), MessageId: id, By: r.GetBy(),
	}}}
	req := persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(ev)}},
		Dedup:   []persistence.DedupKey{{Key: "r:" + id, Seq: seq}},
	}
	if m := orig.GetMessage(); m != nil && m.GetSender() == r.GetFromUser() {
		erased := proto.Clone(orig).(*wire.Entry)
		em := erased.GetMessage()
		em.Content, em.Attributes, em.MentionList, em.MentionAll, em.Mentioned, em.Recalled = nil, nil, nil, false, false, true
		req.Rewrites = []persistence.Entry{{Seq: persistence.Seq(erased.GetSeq()), TimeMS: erased.GetServerTimeMs(), Data: mustMarshal(erased)}}
		if cr := s.noteChanged(orig, erased); cr != nil {
			req.Convs = []persistence.Conv{*cr}
		}
	} else if orig == nil {
		// Recalled before it arrived: its Deliver will find this index.
		req.Dedup = append(req.Dedup, persistence.DedupKey{Key: "m:" + id, Seq: seq})
		s.delivered.add(id, seq) // deliveredBefore must see it too (no store read for fresh IDs)
	}
	setIn(&s.changing, id, true)
	return []effect{s.submit(req, &commit{lastSeq: seq, entries: []*wire.Entry{ev}, recallKey: id, deliverAcks: []effDeliverAck{ack(uint64(seq))}})}
}
