package actors

import (
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// Conversation state: per conversation of this user, the read position,
// unread and unread-mention counts, the last message, pin/mute/marks,
// deleted and cleared. It changes only with entries of this user's log and
// is written in the same append as those entries, so it is always what a
// replay of the log (recount) gives.

func convKey(c *wire.Conversation) string {
	if c.GetType() == wire.Conversation_GROUP {
		return "g:" + c.GetId()
	}
	return "d:" + c.GetId()
}

// conv returns the state of c, creating it.
func (s *userState) conv(c *wire.Conversation) *actorpb.ConvState {
	k := convKey(c)
	cs := s.convs[k]
	if cs == nil {
		cs = &actorpb.ConvState{Conversation: &wire.Conversation{Type: c.GetType(), Id: c.GetId()}}
		setIn(&s.convs, k, cs)
	}
	return cs
}

func convRecord(cs *actorpb.ConvState) persistence.Conv {
	return persistence.Conv{Key: convKey(cs.GetConversation()), Data: mustMarshal(cs)}
}

// noteMessage updates the conversation of a message entry just appended to
// this log and returns the record to write with it.
func (s *userState) noteMessage(e *wire.Entry) persistence.Conv {
	return convRecord(s.noteMessageState(e))
}

func (s *userState) noteMessageState(e *wire.Entry) *actorpb.ConvState {
	m := e.GetMessage()
	cs := s.conv(m.GetConversation())
	cs.LastMessage, cs.LastSeq, cs.Deleted = m, e.GetSeq(), false
	if m.GetSender() != s.user && !m.GetRecalled() {
		cs.Unread++
		if m.GetMentioned() {
			cs.UnreadMentions++
		}
	}
	return cs
}

// noteIncoming is noteMessage for a message delivered from the peer: it
// also remembers a requested receipt.
func (s *userState) noteIncoming(e *wire.Entry) persistence.Conv {
	return s.noteDelivered(e, 0)
}

// noteDelivered is noteIncoming for a message whose seq in the sender's
// log is known (originSeq), so a receipt can name it.
func (s *userState) noteDelivered(e *wire.Entry, originSeq uint64) persistence.Conv {
	return convRecord(s.noteDeliveredState(e, originSeq))
}

// noteDeliveredState is noteDelivered that returns the changed state, for
// callers that write one record after several messages.
func (s *userState) noteDeliveredState(e *wire.Entry, originSeq uint64) *actorpb.ConvState {
	cs := s.noteMessageState(e)
	if e.GetMessage().GetOptions().GetReceiptRequested() {
		wantReceipt(cs, e, originSeq)
	}
	return cs
}

// noteChanged updates the conversation of a message that was recalled or
// edited in this log (changed is the rewritten entry) and returns the
// record to write, or nil if nothing changed.
func (s *userState) noteChanged(before, changed *wire.Entry) *persistence.Conv {
	m := changed.GetMessage()
	cs := s.convs[convKey(m.GetConversation())]
	if cs == nil {
		return nil
	}
	if cs.GetLastMessage().GetMessageId() == m.GetMessageId() {
		cs.LastMessage = m
	}
	if m.GetRecalled() && !before.GetMessage().GetRecalled() && m.GetSender() != s.user && changed.GetSeq() > cs.GetReadSeq() {
		cs.Unread = decr(cs.Unread)
		if before.GetMessage().GetMentioned() {
			cs.UnreadMentions = decr(cs.UnreadMentions)
		}
	}
	r := convRecord(cs)
	return &r
}

func decr(n uint32) uint32 {
	if n == 0 {
		return 0
	}
	return n - 1
}

// unreadAfter counts others' live messages of conversation k in entries
// with seq > after.
func (s *userState) unreadAfter(k string, after uint64, entries []*wire.Entry) (unread, mentions uint32) {
	for _, e := range entries {
		m := e.GetMessage()
		if m == nil || e.GetSeq() <= after || convKey(m.GetConversation()) != k || m.GetSender() == s.user || m.GetRecalled() {
			continue
		}
		unread++
		if m.GetMentioned() {
			mentions++
		}
	}
	return unread, mentions
}

// markRead handles MarkRead: the read position moves forward (to up_to_seq,
// or to the conversation's last message when 0), a ReadEvent is logged (so
// every device of the user clears the count), and the counts are what is
// left after the position. later holds this log's entries after up_to_seq
// when the mark is partial (the shell reads them); nil otherwise.
func (s *userState) markRead(key sessionKey, reqID uint64, mr *wire.MarkRead, later []*wire.Entry, now time.Time) []effect {
	if s.sessions.get(key) == nil {
		return []effect{lostSession(key)}
	}
	c := mr.GetConversation()
	if code, err := checkConversation(c); err != nil {
		return []effect{s.replyErr(key, reqID, code, err.Error())}
	}
	ok := s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	cs := s.convs[convKey(c)]
	if cs == nil {
		return []effect{ok} // nothing to read
	}
	upTo := mr.GetUpToSeq()
	if upTo == 0 || upTo >= cs.GetLastSeq() {
		upTo = max(cs.GetLastSeq(), cs.GetReadSeq())
		cs.Unread, cs.UnreadMentions = 0, 0
	} else if upTo > cs.GetReadSeq() {
		cs.Unread, cs.UnreadMentions = s.unreadAfter(convKey(c), upTo, later)
	}
	if upTo <= cs.GetReadSeq() {
		return []effect{ok} // not forward: nothing changes
	}
	cs.ReadSeq = upTo
	receipts := s.receiptRead(cs, now)
	return append(s.appendConvEntry(cs, &wire.Entry{Kind: &wire.Entry_Read{Read: &wire.ReadEvent{
		Conversation: cs.GetConversation(), UpToSeq: upTo, Unread: cs.GetUnread(),
	}}}, now, ok), receipts...)
}

// needsLater reports whether a MarkRead is partial, so the shell must read
// the entries after up_to_seq for markRead.
func (s *userState) needsLater(mr *wire.MarkRead) bool {
	cs := s.convs[convKey(mr.GetConversation())]
	return cs != nil && mr.GetUpToSeq() != 0 && mr.GetUpToSeq() < cs.GetLastSeq() && mr.GetUpToSeq() > cs.GetReadSeq()
}

// conversationOp handles pin/unpin, mute/unmute, mark/unmark, delete and
// clear history: the state changes and the op is logged for the user's
// other devices.
func (s *userState) conversationOp(key sessionKey, reqID uint64, op *wire.ConversationOp, now time.Time) []effect {
	if s.sessions.get(key) == nil {
		return []effect{lostSession(key)}
	}
	if code, err := checkConversation(op.GetConversation()); err != nil {
		return []effect{s.replyErr(key, reqID, code, err.Error())}
	}
	cs := s.conv(op.GetConversation())
	switch op.GetOp() {
	case wire.ConversationOp_PIN, wire.ConversationOp_UNPIN:
		cs.Pinned = op.GetOp() == wire.ConversationOp_PIN
	case wire.ConversationOp_MUTE, wire.ConversationOp_UNMUTE:
		cs.Muted = op.GetOp() == wire.ConversationOp_MUTE
	case wire.ConversationOp_MARK, wire.ConversationOp_UNMARK:
		mark := op.GetMark()
		if mark == "" || len(mark) > 64 {
			return []effect{s.replyErr(key, reqID, wire.CodeInvalidArgument, "mark must be 1-64 bytes")}
		}
		i := slices.Index(cs.Marks, mark)
		if op.GetOp() == wire.ConversationOp_MARK && i < 0 {
			if len(cs.Marks) >= 16 {
				return []effect{s.replyErr(key, reqID, wire.CodeInvalidArgument, "at most 16 marks per conversation")}
			}
			cs.Marks = append(cs.Marks, mark)
		} else if op.GetOp() == wire.ConversationOp_UNMARK && i >= 0 {
			cs.Marks = slices.Delete(cs.Marks, i, i+1)
		}
	case wire.ConversationOp_DELETE, wire.ConversationOp_CLEAR_HISTORY:
		// Both read everything so far; delete also hides the conversation
		// until a new message arrives; clear hides its history up to here.
		cs.Unread, cs.UnreadMentions = 0, 0
		cs.ReadSeq = uint64(s.lastSeq) + 1 // the op's own seq
		if op.GetOp() == wire.ConversationOp_DELETE {
			cs.Deleted = true
		} else {
			cs.ClearedSeq = uint64(s.lastSeq) + 1
		}
	default:
		return []effect{s.replyErr(key, reqID, wire.CodeInvalidArgument, fmt.Sprintf("unknown conversation op %d", op.GetOp()))}
	}
	ok := s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	receipts := s.receiptRead(cs, now) // delete and clear read everything
	logged := proto.Clone(op).(*wire.ConversationOp)
	return append(s.appendConvEntry(cs, &wire.Entry{Kind: &wire.Entry_ConversationOp{ConversationOp: logged}}, now, ok), receipts...)
}

// appendConvEntry logs e (seq and time assigned here) with cs's record and
// sends after once durable.
func (s *userState) appendConvEntry(cs *actorpb.ConvState, e *wire.Entry, now time.Time, after ...effect) []effect {
	e.ServerTimeMs = s.nextTime(now)
	s.lastSeq++
	e.Seq = uint64(s.lastSeq)
	return []effect{s.submit(persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: s.lastSeq, TimeMS: e.GetServerTimeMs(), Data: mustMarshal(e)}},
		Convs:   []persistence.Conv{convRecord(cs)},
	}, &commit{lastSeq: s.lastSeq, entries: []*wire.Entry{e}, after: after})}
}

func checkConversation(c *wire.Conversation) (wire.Code, error) {
	switch c.GetType() {
	case wire.Conversation_DIRECT, wire.Conversation_GROUP:
		return 0, checkID("conversation id", c.GetId())
	}
	return wire.CodeInvalidArgument, fmt.Errorf("conversation type must be DIRECT or GROUP")
}

// conversationList returns the conversations to show: with unread > 0, or
// all that are not deleted; pinned first, then newest message first.
func (s *userState) conversationList(all bool) *wire.ConversationList {
	var out []*actorpb.ConvState
	for _, cs := range s.convs {
		if cs.GetDeleted() || (!all && cs.GetUnread() == 0) {
			continue
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b *actorpb.ConvState) int {
		if a.GetPinned() != b.GetPinned() {
			if a.GetPinned() {
				return -1
			}
			return 1
		}
		return cmpUint(b.GetLastSeq(), a.GetLastSeq())
	})
	list := &wire.ConversationList{}
	for _, cs := range out {
		list.Conversations = append(list.Conversations, &wire.ConversationState{
			Conversation: cs.GetConversation(), Unread: cs.GetUnread(), UnreadMentions: cs.GetUnreadMentions(),
			LastMessage: cs.GetLastMessage(), Pinned: cs.GetPinned(), Muted: cs.GetMuted(), Marks: cs.GetMarks(),
			ReadSeq: cs.GetReadSeq(),
		})
	}
	return list
}

// recount rebuilds every conversation's read position and counts from the
// log alone (the stored states must equal it).
func recount(user string, log []*wire.Entry) map[string]*actorpb.ConvState {
	st := &userState{user: user, convs: map[string]*actorpb.ConvState{}}
	var msgs []*wire.Entry
	for _, e := range log {
		switch k := e.GetKind().(type) {
		case *wire.Entry_Message:
			cs := st.conv(k.Message.GetConversation())
			cs.LastMessage, cs.LastSeq, cs.Deleted = k.Message, e.GetSeq(), false
			msgs = append(msgs, e)
		case *wire.Entry_Read:
			cs := st.conv(k.Read.GetConversation())
			cs.ReadSeq = max(cs.ReadSeq, k.Read.GetUpToSeq())
		case *wire.Entry_ConversationOp:
			cs := st.conv(k.ConversationOp.GetConversation())
			switch k.ConversationOp.GetOp() {
			case wire.ConversationOp_PIN, wire.ConversationOp_UNPIN:
				cs.Pinned = k.ConversationOp.GetOp() == wire.ConversationOp_PIN
			case wire.ConversationOp_MUTE, wire.ConversationOp_UNMUTE:
				cs.Muted = k.ConversationOp.GetOp() == wire.ConversationOp_MUTE
			case wire.ConversationOp_MARK:
				if !slices.Contains(cs.Marks, k.ConversationOp.GetMark()) {
					cs.Marks = append(cs.Marks, k.ConversationOp.GetMark())
				}
			case wire.ConversationOp_UNMARK:
				if i := slices.Index(cs.Marks, k.ConversationOp.GetMark()); i >= 0 {
					cs.Marks = slices.Delete(cs.Marks, i, i+1)
				}
			case wire.ConversationOp_DELETE:
				cs.ReadSeq, cs.Deleted = e.GetSeq(), true
			case wire.ConversationOp_CLEAR_HISTORY:
				cs.ReadSeq, cs.ClearedSeq = e.GetSeq(), e.GetSeq()
			}
		}
	}
	for k, cs := range st.convs {
		cs.Unread, cs.UnreadMentions = st.unreadAfter(k, cs.ReadSeq, msgs)
	}
	return st.convs
}
