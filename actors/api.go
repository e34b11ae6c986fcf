package actors

import (
	"time"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

// Requests from the server API reach the pure state with a pseudo session
// key on the gateway address apiAddr: replies "pushed" to it go back to the
// waiting HTTP request (the shell routes them), so the API shares every
// rule of the device path (validation, dedup, ack only once durable).
const apiAddr = "\x00api"

func apiKey(token uint64) sessionKey { return sessionKey{addr: apiAddr, sid: token} }

// apiSend sends m as this user for the server API. Stored messages go into
// this user's log (the user's devices get them: include_sender); a
// transient one reaches the user's own devices only with includeSender.
func (s *userState) apiSend(token uint64, m *wire.Send, includeSender bool, now time.Time) []effect {
	return s.sendFrom(apiKey(token), "", nil, includeSender, 0, m, now)
}

// apiRecall recalls a message of this user for the server API (no time
// limit applies).
func (s *userState) apiRecall(token uint64, r *wire.Recall, now time.Time) []effect {
	key := apiKey(token)
	id := r.GetMessageId()
	if s.changing[id] {
		return []effect{s.replyErr(key, 0, wire.CodeUnavailable, "a change to this message is in progress; retry")}
	}
	orig, errs := s.ownMessage(key, 0, r.GetConversation(), id)
	if errs != nil {
		return errs
	}
	ok := s.reply(key, &wire.Frame{Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	if orig.GetMessage().GetRecalled() {
		return []effect{ok}
	}
	return []effect{s.applyRecall(orig, "", now, ok)}
}

// apiDeliver stores a message from another user straight into this log,
// for the server API without include_sender (the sender's devices never
// see it). De-duplicated on (from, client message ID); acked once durable
// here.
func (s *userState) apiDeliver(token uint64, from string, m *wire.Send, now time.Time) []effect {
	key := apiKey(token)
	if code, err := validateSend(m); err != nil {
		return []effect{s.replyErr(key, 0, code, err.Error())}
	}
	if err := checkID("from", from); err != nil {
		return []effect{s.replyErr(key, 0, wire.CodeInvalidArgument, err.Error())}
	}
	dk := "a:" + from + "/" + m.GetClientMessageId() // "/" is not in any ID: no clash with a client's key
	if p := s.sending[dk]; p != nil {
		p.waiters = append(p.waiters, waiter{key, 0})
		return nil
	}
	prior, err := s.rd.entryByKey(dk)
	if err != nil {
		return []effect{s.replyErr(key, 0, wire.CodeUnavailable, "storage unavailable; retry")}
	}
	if pm := prior.GetMessage(); pm != nil {
		return []effect{s.reply(key, &wire.Frame{Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{
			MessageId: pm.GetMessageId(), ServerTimeMs: pm.GetServerTimeMs(), Duplicate: true,
		}}})}
	}
	t := s.nextTime(now)
	msg := messageOf(m, s.newID(), from, "", &wire.Conversation{Type: wire.Conversation_DIRECT, Id: from}, s.user, t)
	s.lastSeq++
	seq := s.lastSeq
	entry := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Message{Message: msg}}
	s.sending[dk] = &pendingSend{ack: &wire.SendAck{MessageId: msg.MessageId, ServerTimeMs: t}, waiters: []waiter{{key, 0}}}
	return []effect{s.submit(persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(entry)}},
		Dedup:   []persistence.DedupKey{{Key: dk, Seq: seq}, {Key: "m:" + msg.MessageId, Seq: seq}},
		Convs:   []persistence.Conv{s.noteIncoming(entry)},
	}, &commit{lastSeq: seq, entries: []*wire.Entry{entry}, sendKey: dk})}
}
