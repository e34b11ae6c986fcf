package actors

import (
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

// Requests from the server API reach the pure state with a pseudo session
// key on the gateway address apiAddr: replies "pushed" to it go back to the
// waiting HTTP request (the shell routes them), so the API shares every
// rule of the device path (validation, dedup, ack only once durable).
const apiAddr = "\x00api"

func apiKey(token uint64) sessionKey { return sessionKey{addr: apiAddr, sid: token} }

// apiSendAddr is the pseudo gateway address of server-API sends to a
// group's actor: their replies (SendAck or Error) go back as ApiResult,
// while apiAddr replies of the group actor answer membership commands.
const apiSendAddr = "\x00apisend"

// apiWaiters are the server API requests an actor holds until their answer
// (the futures of blocking cluster requests). Only the actor's goroutine
// touches it.
type apiWaiters struct {
	pids map[uint64]*actor.PID
}

// apiTokens numbers the API requests of every actor of the process: a
// token is never reused, not even by an actor whose waiters were dropped
// while idle (userActor.tidy) and made again, so an answer the state
// still owes an old token cannot reach a newer request.
var apiTokens atomic.Uint64

// wait registers the requester of the current message and returns its token.
func (w *apiWaiters) wait(ctx actor.Context) uint64 {
	if w.pids == nil {
		w.pids = map[uint64]*actor.PID{}
	}
	t := apiTokens.Add(1)
	w.pids[t] = ctx.Sender()
	return t
}

// answer sends each waiting token in tokens its answer, once.
func (w *apiWaiters) answer(ctx actor.Context, tokens []uint64, msg proto.Message) {
	for _, t := range tokens {
		if pid := w.pids[t]; pid != nil {
			delete(w.pids, t)
			ctx.Send(pid, msg)
		}
	}
}

// appendAsync submits req to the store; its completion comes back to self
// as appendDone.
func appendAsync(rt *Runtime, self *actor.PID, req persistence.AppendRequest) {
	root := rt.sys.Root
	rt.store.Append(req, func(err error) { root.Send(self, appendDone{err: err}) })
}

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
	prior, err := s.rd.entryByKey(s.user, dk)
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
	setIn(&s.sending, dk, &pendingSend{ack: &wire.SendAck{MessageId: msg.MessageId, ServerTimeMs: t}, waiters: []waiter{{key, 0}}})
	return []effect{s.submit(persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(entry)}},
		Dedup:   []persistence.DedupKey{{Key: dk, Seq: seq}, {Key: "m:" + msg.MessageId, Seq: seq}},
		Convs:   []persistence.Conv{s.noteIncoming(entry)},
	}, &commit{lastSeq: seq, entries: []*wire.Entry{entry}, sendKey: dk})}
}
