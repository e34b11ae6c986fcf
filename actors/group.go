package actors

import (
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// GroupKind is the cluster kind of group actors (DESIGN.md §4): a group
// holds its membership and is the ordering point of its messages. A
// message is appended once to the group's own log — the entry is the
// pending fan-out, no per-member record (outbox.go) — then delivered into
// every member's sync log (idempotent by message ID); membership changes
// are GroupEvent entries in every affected member's log. The group's data lives in the store under the namespace
// groupNS + group ID, which no user ID can take.
const GroupKind = "group"

const (
	groupNS      = "#g:" // "#" is outside the ID alphabet; valid PostgreSQL text (no NUL)
	maxGroupSize = MaxGroupSize
	// maxEventMembers bounds the member list a GroupEvent carries.
	maxEventMembers = 100
	groupStateKey   = "state"
)

// MaxGroupSize is the most members a group may have.
const MaxGroupSize = 10000

func groupUser(id string) string { return groupNS + id }

// effGroupTransient pushes a never-stored group message to the online
// members among to, wherever they are online; each member's copy gets
// its own mentioned flag from the message's mention list.
type effGroupTransient struct {
	to  []string
	msg *actorpb.TransientDeliver
}

func (effGroupTransient) isEffect() {}

// groupState is a group actor's state. Pure except for the dedup reads
// through rd; only the actor's goroutine touches it.
type groupState struct {
	id    string
	log   string // the group's log in the store (groupUser(id))
	rd    logReader
	newID func() string

	epoch              persistence.Epoch
	lastSeq, committed persistence.Seq
	lastTime           int64
	st                 *actorpb.GroupState // nil: no such group
	pos                map[string]int32    // member → index in st's members, for bulkOf
	posOf              *actorpb.GroupState // the state pos was built from

	commits []*commit
	sending map[string]*pendingSend // "from/cmid" → in flight
	// awaiting holds sends durable in the group's log whose ack waits for
	// the message's seq in the sender's own log: the sender's member
	// actor reports it in its DeliverAck. Keyed by message ID.
	awaiting map[string]*groupAck
	out      outbox // fan-outs awaiting DeliverAck (outbox.go)
}

// groupAck is a send waiting for the sender's DeliverAck. redeliver is
// set for a repeat of a send whose fan-out is no longer tracked (the ack
// of the original was lost): the shell re-sends it until answered.
type groupAck struct {
	sender    string
	ack       *wire.SendAck
	waiters   []waiter
	redeliver *actorpb.OutboxItem
	sentAt    time.Time
}

func (g *groupState) isMember(u string) bool {
	return g.st != nil && !g.st.GetDismissed() && slices.Contains(g.st.GetMembers(), u)
}

func (g *groupState) submit(req persistence.AppendRequest, c *commit) effect {
	req.User, req.Epoch = groupUser(g.id), g.epoch
	g.commits = append(g.commits, c)
	return effAppend{req: req}
}

func (g *groupState) reply(key sessionKey, f *wire.Frame) effect {
	return effPush{gw: key.gw(), sids: []uint64{key.sid}, frames: []*wire.Frame{f}}
}

func (g *groupState) nextTime(now time.Time) int64 {
	t := max(now.UnixMilli(), g.lastTime)
	g.lastTime = t
	return t
}

// send handles a group Send from a member's device: only members may send;
// de-duplicated on (sender, client message ID); acked once the message is
// durable in the group's log and in the sender's own log, with its seq
// there (wire.SendAck.seq): the sender's member actor appends it like
// every member's (the fan-out) and its DeliverAck, carrying that seq,
// releases the ack. Exactly one ack per request (repeats while in flight
// wait for the same one, marked duplicate).
func (g *groupState) send(key sessionKey, reqID uint64, from, device string, m *wire.Send, now time.Time) []effect {
	if code, err := validateGroupSend(m); err != nil {
		return []effect{g.reply(key, wire.ErrFrame(reqID, code, err.Error()))}
	}
	if !g.isMember(from) {
		return []effect{g.reply(key, wire.ErrFrame(reqID, wire.CodeNotGroupMember, "only members may send to this group"))}
	}
	if m.GetOptions().GetTransient() {
		// Online members only, now; never stored or retried.
		t := now.UnixMilli()
		msg := messageOf(m, g.newID(), from, device, &wire.Conversation{Type: wire.Conversation_GROUP, Id: g.id}, "", t)
		// Each member's mentioned flag is set where it is delivered.
		return []effect{
			g.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{MessageId: msg.MessageId, ServerTimeMs: t}}}),
			effGroupTransient{to: slices.Clone(g.st.GetMembers()), msg: &actorpb.TransientDeliver{FromUser: from, Message: msg}},
		}
	}
	dk := "c:" + from + "/" + m.GetClientMessageId()
	if p := g.sending[dk]; p != nil {
		p.waiters = append(p.waiters, waiter{key, reqID})
		return nil
	}
	prior, err := g.rd.entryByKey(g.log, dk)
	if err != nil {
		return []effect{g.reply(key, wire.ErrFrame(reqID, wire.CodeUnavailable, "storage unavailable; retry"))}
	}
	if pm := prior.GetMessage(); pm != nil {
		return g.repeat(key, reqID, from, prior, now)
	}
	t := g.nextTime(now)
	conv := &wire.Conversation{Type: wire.Conversation_GROUP, Id: g.id}
	msg := messageOf(m, g.newID(), from, device, conv, "", t)
	g.lastSeq++
	seq := g.lastSeq
	entry := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Message{Message: msg}}
	req := persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(entry)}},
		Dedup:   []persistence.DedupKey{{Key: dk, Seq: seq}, {Key: "m:" + msg.MessageId, Seq: seq}},
	}
	c := &commit{lastSeq: seq, sendKey: dk}
	g.out.putBulk(&req, c, g.bulkOf(msg, seq))
	setIn(&g.sending, dk, &pendingSend{ack: &wire.SendAck{MessageId: msg.MessageId, ServerTimeMs: t}, waiters: []waiter{{key, reqID}}})
	c.sender = from
	return []effect{g.submit(req, c)}
}

// bulkOf returns the deliveries of the group's message m (entry seq) to
// every member (the sender included: its own log gets the message through
// the group) as one bulk fan-out.
func (g *groupState) bulkOf(m *wire.Message, seq persistence.Seq) *bulkFanout {
	if g.posOf != g.st {
		// The index of the members the bulks share: rebuilt when the
		// state is replaced (commands replace it, never change it).
		g.pos = make(map[string]int32, len(g.st.GetMembers()))
		for i, u := range g.st.GetMembers() {
			g.pos[u] = int32(i)
		}
		g.posOf = g.st
	}
	plain := m
	if m.GetMentioned() {
		plain = proto.Clone(m).(*wire.Message)
		plain.Mentioned = false
	}
	return &bulkFanout{seq: seq, id: m.GetMessageId(), group: g.id, msg: plain, members: g.st.GetMembers(), pos: g.pos}
}

// fanoutOf returns the deliveries of an entry of the group's log that the
// activation re-drives: a message goes to the current members (a member
// removed since does not get it; one added since does — only on this
// crash path, see ADR 0005).
func (g *groupState) fanoutOf(e *wire.Entry) ([]*actorpb.OutboxItem, *bulkFanout) {
	m := e.GetMessage()
	if m == nil || g.st == nil {
		return nil, nil
	}
	return nil, g.bulkOf(m, persistence.Seq(e.GetSeq()))
}

// repeat answers a repeated send of a message already in the group's log:
// the ack needs the message's seq in the sender's log, which the sender's
// actor tells in answer to a Deliver (idempotent: a repeat is answered
// with the seq it has).
func (g *groupState) repeat(key sessionKey, reqID uint64, from string, prior *wire.Entry, now time.Time) []effect {
	pm := prior.GetMessage()
	w := waiter{key, reqID}
	if p := g.awaiting[pm.GetMessageId()]; p != nil {
		p.waiters = append(p.waiters, w)
		return nil
	}
	item := &actorpb.OutboxItem{ToUser: from, Deliver: &actorpb.Deliver{FromUser: from, Message: proto.Clone(pm).(*wire.Message),
		OriginSeq: prior.GetSeq(), ViaGroup: g.id}}
	item.Deliver.Message.Mentioned = false // the sender's own copy
	g.awaiting[pm.GetMessageId()] = &groupAck{
		sender:  from,
		ack:     &wire.SendAck{MessageId: pm.GetMessageId(), ServerTimeMs: pm.GetServerTimeMs(), Duplicate: true},
		waiters: []waiter{w}, redeliver: item, sentAt: now,
	}
	return []effect{effDeliver{item: item}}
}

// senderAck releases the ack a send waits for once the sender's actor
// confirmed the message in its log at seq.
func (g *groupState) senderAck(a *actorpb.DeliverAck) []effect {
	p := g.awaiting[a.GetMessageId()]
	if p == nil || p.sender != a.GetToUser() {
		return nil
	}
	delete(g.awaiting, a.GetMessageId())
	effs := make([]effect, 0, len(p.waiters))
	for i, w := range p.waiters {
		ack := proto.Clone(p.ack).(*wire.SendAck)
		ack.Seq = a.GetSeq()
		ack.Duplicate = ack.Duplicate || i > 0
		effs = append(effs, g.reply(w.key, &wire.Frame{Id: w.reqID, Body: &wire.Frame_SendAck{SendAck: ack}}))
	}
	return effs
}

// recall handles a member's Recall of a group message: only its sender;
// the content is erased from the group's log and every member's copy
// (RecallDeliver through the outbox, idempotent at each member).
func (g *groupState) recall(key sessionKey, reqID uint64, from string, r *wire.Recall, window time.Duration, now time.Time) []effect {
	id := r.GetMessageId()
	fail := func(code wire.Code, msg string) []effect {
		return []effect{g.reply(key, wire.ErrFrame(reqID, code, msg))}
	}
	if id == "" {
		return fail(wire.CodeInvalidArgument, "message_id is required")
	}
	orig, err := g.rd.entryByKey(g.log, "m:"+id)
	if err != nil {
		return fail(wire.CodeUnavailable, "storage unavailable; retry")
	}
	m := orig.GetMessage()
	if m == nil {
		return fail(wire.CodeNotFound, "no such message in this group")
	}
	if m.GetSender() != from {
		return fail(wire.CodeForbidden, "only the sender may recall a message")
	}
	ok := g.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	if m.GetRecalled() {
		return []effect{ok}
	}
	if window > 0 && now.Sub(time.UnixMilli(m.GetServerTimeMs())) > window {
		return fail(wire.CodeRecallWindowPassed, fmt.Sprintf("messages can be recalled for %s after sending", window))
	}
	erased := proto.Clone(orig).(*wire.Entry)
	em := erased.GetMessage()
	em.Content, em.Attributes, em.MentionList, em.MentionAll, em.Recalled = nil, nil, nil, false, true
	t := g.nextTime(now)
	g.lastSeq++
	seq := g.lastSeq
	conv := &wire.Conversation{Type: wire.Conversation_GROUP, Id: g.id}
	ev := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Recall{Recall: &wire.RecallEvent{Conversation: conv, MessageId: id, By: from}}}
	req := persistence.AppendRequest{
		Entries:  []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(ev)}},
		Rewrites: []persistence.Entry{{Seq: persistence.Seq(erased.GetSeq()), TimeMS: erased.GetServerTimeMs(), Data: mustMarshal(erased)}},
	}
	c := &commit{lastSeq: seq, after: []effect{ok}}
	for _, member := range g.st.GetMembers() {
		item := &actorpb.OutboxItem{ToUser: member, Recall: &actorpb.RecallDeliver{
			FromUser: from, MessageId: id, Conversation: conv, By: from, OriginSeq: uint64(seq), ViaGroup: g.id}}
		req.OutboxPut = append(req.OutboxPut, outboxPut(item))
		c.fanout = append(c.fanout, item)
	}
	return []effect{g.submit(req, c)}
}

// edit handles a member's Edit of a group message: only its sender; the
// new content replaces the old in the group's log and every member's copy
// (EditDeliver through the outbox; a member never applies an older edit
// over a newer one).
func (g *groupState) edit(key sessionKey, reqID uint64, from string, ed *wire.Edit, now time.Time) []effect {
	id := ed.GetMessageId()
	fail := func(code wire.Code, msg string) []effect {
		return []effect{g.reply(key, wire.ErrFrame(reqID, code, msg))}
	}
	if t := ed.GetType(); t < 0 || (t > int32(wire.MessageType_LOCATION) && t < 1000) {
		return fail(wire.CodeInvalidArgument, fmt.Sprintf("message type %d: use 1-6, >= 1000, or 0 to keep it", t))
	}
	orig, err := g.rd.entryByKey(g.log, "m:"+id)
	if err != nil {
		return fail(wire.CodeUnavailable, "storage unavailable; retry")
	}
	m := orig.GetMessage()
	switch {
	case m == nil:
		return fail(wire.CodeNotFound, "no such message in this group")
	case m.GetSender() != from:
		return fail(wire.CodeForbidden, "only the sender may edit a message")
	case m.GetRecalled():
		return fail(wire.CodeForbidden, "the message was recalled")
	}
	updated := proto.Clone(orig).(*wire.Entry)
	applyEdit(updated.GetMessage(), ed.GetType(), ed.GetContent(), ed.GetAttributes())
	t := g.nextTime(now)
	g.lastSeq++
	seq := g.lastSeq
	ev := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Edit{Edit: &wire.EditEvent{Message: updated.GetMessage()}}}
	req := persistence.AppendRequest{
		Entries:  []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(ev)}},
		Rewrites: []persistence.Entry{{Seq: persistence.Seq(updated.GetSeq()), TimeMS: updated.GetServerTimeMs(), Data: mustMarshal(updated)}},
	}
	c := &commit{lastSeq: seq, after: []effect{g.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})}}
	for _, member := range g.st.GetMembers() {
		cp := proto.Clone(updated.GetMessage()).(*wire.Message)
		cp.Mentioned = member != from && (cp.GetMentionAll() || contains(cp.GetMentionList(), member))
		item := &actorpb.OutboxItem{ToUser: member, Edit: &actorpb.EditDeliver{FromUser: from, Message: cp, OriginSeq: uint64(seq), ViaGroup: g.id}}
		req.OutboxPut = append(req.OutboxPut, outboxPut(item))
		c.fanout = append(c.fanout, item)
	}
	return []effect{g.submit(req, c)}
}

func validateGroupSend(m *wire.Send) (wire.Code, error) {
	if m.GetOptions().GetReceiptRequested() {
		return wire.CodeInvalidArgument, fmt.Errorf("receipts are one-to-one only")
	}
	cp := proto.Clone(m).(*wire.Send)
	cp.Conversation = &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "group"} // the other rules are the same
	return validateSend(cp)
}

// command handles create, add, remove and dismiss from the server API.
func (g *groupState) command(token uint64, c *actorpb.GroupCommand, now time.Time) []effect {
	key := apiKey(token)
	fail := func(code wire.Code, msg string) []effect {
		return []effect{g.reply(key, wire.ErrFrame(0, code, msg))}
	}
	for _, u := range c.GetMembers() {
		if !ValidID(u) {
			return fail(wire.CodeInvalidArgument, fmt.Sprintf("member %q is not a valid user ID", truncate(u, 40)))
		}
	}
	var kind wire.GroupEvent_Kind
	var notify []string // members whose logs get the event
	next := proto.Clone(g.st).(*actorpb.GroupState)
	switch c.GetOp() {
	case actorpb.GroupCommand_CREATE:
		if g.st != nil && !g.st.GetDismissed() {
			return fail(wire.CodeInvalidArgument, "the group exists")
		}
		members := dedupStrings(c.GetMembers())
		if len(members) == 0 || len(members) > maxGroupSize {
			return fail(wire.CodeInvalidArgument, fmt.Sprintf("a group has 1-%d members", maxGroupSize))
		}
		next = &actorpb.GroupState{Name: c.GetName(), Members: members, Owner: c.GetBy()}
		kind, notify = wire.GroupEvent_CREATED, members
	case actorpb.GroupCommand_ADD, actorpb.GroupCommand_REMOVE, actorpb.GroupCommand_DISMISS:
		if g.st == nil || g.st.GetDismissed() {
			return fail(wire.CodeNotFound, "no such group")
		}
		switch c.GetOp() {
		case actorpb.GroupCommand_ADD:
			added := slices.DeleteFunc(dedupStrings(c.GetMembers()), func(u string) bool { return slices.Contains(g.st.GetMembers(), u) })
			if len(added) == 0 {
				return []effect{g.reply(key, &wire.Frame{Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})}
			}
			if len(g.st.GetMembers())+len(added) > maxGroupSize {
				return fail(wire.CodeInvalidArgument, fmt.Sprintf("a group has at most %d members", maxGroupSize))
			}
			next.Members = append(next.Members, added...)
			kind, notify = wire.GroupEvent_JOINED, next.Members
			c = &actorpb.GroupCommand{Op: c.GetOp(), By: c.GetBy(), Members: added}
		case actorpb.GroupCommand_REMOVE:
			next.Members = slices.DeleteFunc(next.Members, func(u string) bool { return slices.Contains(c.GetMembers(), u) })
			if len(next.Members) == len(g.st.GetMembers()) {
				return fail(wire.CodeNotFound, "not a member")
			}
			kind, notify = wire.GroupEvent_REMOVED, g.st.GetMembers() // the removed ones learn it too
		default:
			next.Dismissed = true
			kind, notify = wire.GroupEvent_DISMISSED, g.st.GetMembers()
		}
	default:
		return fail(wire.CodeInvalidArgument, "unknown group command")
	}
	g.st = next
	t := g.nextTime(now)
	g.lastSeq++
	seq := g.lastSeq
	ev := &wire.GroupEvent{GroupId: g.id, Kind: kind, By: c.GetBy(), Name: next.GetName()}
	if len(c.GetMembers()) <= maxEventMembers {
		// The event goes into every member's log: a long list would make
		// a big group's fan-out quadratic. Longer lists are left out.
		ev.Members = c.GetMembers()
	}
	entry := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Group{Group: ev}}
	req := persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(entry)}},
		Convs:   []persistence.Conv{{Key: groupStateKey, Data: mustMarshal(next)}},
	}
	cm := &commit{lastSeq: seq, after: []effect{g.reply(key, &wire.Frame{Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})}}
	for _, u := range notify {
		item := &actorpb.OutboxItem{ToUser: u, GroupEvent: &actorpb.GroupEventDeliver{GroupId: g.id, Event: ev, OriginSeq: uint64(seq)}}
		req.OutboxPut = append(req.OutboxPut, outboxPut(item))
		cm.fanout = append(cm.fanout, item)
	}
	return []effect{g.submit(req, cm)}
}

func dedupStrings(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// appendDone completes the oldest append: acks, then the fan-out.
func (g *groupState) appendDone(err error, now time.Time) []effect {
	if len(g.commits) == 0 {
		return nil
	}
	c := g.commits[0]
	g.commits[0] = nil
	g.commits = g.commits[1:]
	if len(g.commits) == 0 {
		g.commits = nil // as userState.appendDone: an idle group keeps no array
	}
	if err != nil {
		// Nothing after a failed append is durable: senders retry (their
		// client message IDs de-duplicate), API callers get UNAVAILABLE
		// from the stop, and the next activation starts from the store.
		var effs []effect
		for _, p := range g.sending {
			for _, w := range p.waiters {
				effs = append(effs, g.reply(w.key, storeErrFrame(w.reqID, err, "message not stored; retry")))
			}
		}
		for _, p := range g.awaiting {
			for _, w := range p.waiters {
				effs = append(effs, g.reply(w.key, wire.ErrFrame(w.reqID, wire.CodeUnavailable, "group restarting; retry with the same client_message_id")))
			}
		}
		g.sending, g.awaiting, g.commits = map[string]*pendingSend{}, map[string]*groupAck{}, nil
		return append(effs, effStop{reason: err.Error()})
	}
	g.committed = max(g.committed, c.lastSeq)
	var effs []effect
	if p := g.sending[c.sendKey]; c.sendKey != "" && p != nil {
		// Durable here; the ack waits for the seq in the sender's log.
		g.awaiting[p.ack.GetMessageId()] = &groupAck{sender: c.sender, ack: p.ack, waiters: p.waiters, sentAt: now}
		delete(g.sending, c.sendKey)
	}
	effs = append(effs, c.after...)
	effs = append(effs, g.out.sent(c.fanout, c.logged, now)...)
	return append(effs, g.out.sentBulk(c.bulk, now)...)
}

func (g *groupState) deliverAck(a *actorpb.DeliverAck, now time.Time) []effect {
	effs := g.senderAck(a)
	if g.out.ack(a, now) && g.out.doneCount() >= flushBatch {
		return append(effs, g.flush())
	}
	return effs
}

// flush writes outbox deletions and the fan-out mark.
func (g *groupState) flush() effect {
	var req persistence.AppendRequest
	g.out.flush(&req, g.lastSeq)
	return g.submit(req, &commit{})
}

// redrivePage re-drives the fan-outs of one page of the group's log read
// after the re-drive position (full: the page had the limit's worth).
func (g *groupState) redrivePage(entries []*wire.Entry, full bool, now time.Time) []effect {
	return g.out.redriveEntries(entries, full, g.fanoutOf, now)
}

func (g *groupState) tick(now time.Time) []effect {
	effs := g.out.tick(now)
	for _, p := range g.awaiting {
		if p.redeliver != nil && now.Sub(p.sentAt) >= redriveDelay(1) {
			p.sentAt = now
			effs = append(effs, effDeliver{item: p.redeliver})
		}
	}
	if g.out.needsFlush(g.lastSeq) {
		effs = append(effs, g.flush())
	}
	return effs
}

// needsTick reports whether the shell should arm the timer.
func (g *groupState) needsTick() bool {
	return g.out.busy() || g.out.needsFlush(g.lastSeq) || len(g.awaiting) > 0
}

func (g *groupState) idle() bool {
	return len(g.commits) == 0 && !g.needsTick()
}

// groupActor is the shell of groupState.
type groupActor struct {
	rt    *Runtime
	id    string
	log   *slog.Logger
	g     *groupState
	self  *actor.PID
	armed bool
	dead  bool
	idle  idleClock  // passivation once groupState.idle for the idle timeout
	api   apiWaiters // membership commands (GroupResult)
	sends apiWaiters // server-API sends (ApiResult)
}

func (a *groupActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *cluster.ClusterInit:
		a.activate(ctx, m.Identity.GetIdentity())
		return
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
		return
	}
	if a.dead || a.g == nil {
		switch ctx.Message().(type) {
		case deadStop:
			ctx.Stop(ctx.Self())
		case *actorpb.GroupCommand:
			ctx.Respond(&actorpb.GroupResult{Error: wire.Err(wire.CodeUnavailable, "group temporarily unavailable; retry")})
		case *actorpb.ApiSend:
			ctx.Respond(&actorpb.ApiResult{Reply: wire.ErrFrame(0, wire.CodeUnavailable, "group temporarily unavailable; retry")})
		}
		return
	}
	now := a.rt.now()
	if err := a.rt.writeErr(); err != nil && a.refuseWrite(ctx, err) {
		a.arm(ctx)
		return
	}
	switch m := ctx.Message().(type) {
	case *actorpb.ClientFrame:
		key := keyOf(m.GetSession())
		switch b := m.GetFrame().GetBody().(type) {
		case *wire.Frame_Send:
			a.perform(ctx, a.g.send(key, m.GetFrame().GetId(), m.GetUserId(), "", b.Send, now))
		case *wire.Frame_Recall:
			a.perform(ctx, a.g.recall(key, m.GetFrame().GetId(), m.GetUserId(), b.Recall, a.rt.cfg.RecallWindow, now))
		case *wire.Frame_Edit:
			a.perform(ctx, a.g.edit(key, m.GetFrame().GetId(), m.GetUserId(), b.Edit, now))
		}
	case *actorpb.GroupCommand:
		a.perform(ctx, a.g.command(a.api.wait(ctx), m, now))
	case *actorpb.ApiSend:
		// The server API sends as a member (include_sender is moot: the
		// sender is a member and gets the message through the fan-out).
		key := sessionKey{addr: apiSendAddr, sid: a.sends.wait(ctx)}
		a.perform(ctx, a.g.send(key, 0, m.GetFromUser(), "", m.GetSend(), now))
	case *actorpb.DeliverAck:
		a.perform(ctx, a.g.deliverAck(m, now))
	case *actorpb.DeliverBatchAck:
		var effs []effect
		for i, u := range m.GetMembers() {
			if i < len(m.GetSeqs()) {
				effs = append(effs, a.g.deliverAck(&actorpb.DeliverAck{ToUser: u, MessageId: m.GetMessageId(), OriginSeq: m.GetOriginSeq(), Seq: m.GetSeqs()[i]}, now)...)
			}
		}
		a.perform(ctx, effs)
	case redriveStep:
		entries, full, err := readRedrivePage(a.rt, groupUser(a.id), a.g.out.scanned)
		if err != nil {
			a.log.Error("re-drive read failed; retrying", "err", err)
			retryRedrive(a.rt, a.self)
			break
		}
		a.perform(ctx, a.g.redrivePage(entries, full, now))
	case appendDone:
		if m.err != nil {
			a.log.Error("group append failed; stopping", "err", m.err)
		}
		a.perform(ctx, a.g.appendDone(m.err, now))
	case tickMsg:
		a.armed = false
		a.perform(ctx, a.g.tick(now))
	case idleCheck:
		if a.idle.due(a.g.idle()) {
			ctx.Poison(ctx.Self())
			return
		}
	}
	if _, ok := ctx.Message().(idleCheck); !ok {
		a.idle.touch()
	}
	a.arm(ctx)
}

// refuseWrite answers a request that would write while the store refuses
// writes (err): UNAVAILABLE with the reason and a retry hint, the group's
// state untouched. It reports whether it handled the message.
func (a *groupActor) refuseWrite(ctx actor.Context, err error) bool {
	switch m := ctx.Message().(type) {
	case *actorpb.ClientFrame:
		f := m.GetFrame()
		if !writesFrame(f) {
			return false
		}
		a.rt.metrics.storeRefusals.Inc()
		a.perform(ctx, []effect{a.g.reply(keyOf(m.GetSession()), storeErrFrame(f.GetId(), err, ""))})
	case *actorpb.GroupCommand:
		a.rt.metrics.storeRefusals.Inc()
		ctx.Respond(&actorpb.GroupResult{Error: storeErr(err, "")})
	case *actorpb.ApiSend:
		a.rt.metrics.storeRefusals.Inc()
		ctx.Respond(&actorpb.ApiResult{Reply: storeErrFrame(0, err, "")})
	default:
		return false
	}
	return true
}

// arm starts the timers the state needs after a message: the tick, and
// the idle check once the group is idle.
func (a *groupActor) arm(ctx actor.Context) {
	if a.dead {
		return
	}
	if a.g.needsTick() && !a.armed {
		a.armed = true
		self, root := ctx.Self(), a.rt.sys.Root
		time.AfterFunc(tickEvery, func() { root.Send(self, tickMsg{}) })
	}
	a.idle.arm(ctx, a.rt.idle, a.g.idle())
}

func (a *groupActor) activate(ctx actor.Context, id string) {
	a.id, a.self = id, ctx.Self()
	a.log = a.rt.log.With("group", id)
	rctx := a.rt.activate.Get()
	ns := groupUser(id)
	owner := a.rt.sys.Address() + "/" + a.rt.sys.ID
	epoch, last, err := a.rt.store.Activate(rctx, ns, owner)
	if err == nil {
		a.g = &groupState{id: id, log: ns, rd: a.rt.reader, newID: NewMessageID, epoch: epoch, lastSeq: last, committed: last,
			sending: map[string]*pendingSend{}, awaiting: map[string]*groupAck{}, out: newOutbox()}
		var convs []persistence.Conv
		if convs, err = a.rt.store.Convs(rctx, ns); err == nil {
			for _, c := range convs {
				if c.Key == groupStateKey {
					var st actorpb.GroupState
					if err = proto.Unmarshal(c.Data, &st); err == nil {
						a.g.st = &st
					}
				}
			}
		}
	}
	var stored []persistence.OutboxItem
	var mark persistence.FanoutMark
	if err == nil {
		stored, err = a.rt.store.Outbox(rctx, ns)
	}
	if err == nil {
		mark, err = a.rt.store.FanoutMark(rctx, ns)
	}
	var items []*actorpb.OutboxItem
	if err == nil {
		items, err = storedItems(stored, decodeOutboxItem)
	}
	if err != nil {
		a.log.Error("group activation failed", "err", err)
		a.dead = true
		lingerDead(ctx, a.rt.sys.Root)
		return
	}
	effs := a.g.out.sent(items, false, a.rt.now())
	effs = append(effs, a.g.out.activated(mark, last)...)
	if len(items) > 0 || mark.Pending {
		a.log.Info("re-driving pending group fan-outs", "items", len(items), "after_seq", mark.Done)
	}
	a.idle.start(a.rt.cfg.IdleTimeout, false)
	a.perform(ctx, effs)
	a.arm(ctx)
}

func (a *groupActor) perform(ctx actor.Context, effs []effect) {
	var batched []*actorpb.OutboxItem // the group's message deliveries: one batch per node (relay.go)
	defer func() {
		for _, it := range a.rt.sendGroupDeliveries(ctx, a.id, batched) {
			a.rt.courier.send(it.GetToUser(), itemMessage(it))
		}
	}()
	for _, e := range effs {
		switch e := e.(type) {
		case effAppend:
			appendAsync(a.rt, a.self, e.req)
		case effPush:
			if e.gw.addr == apiSendAddr {
				a.sends.answer(ctx, e.sids, &actorpb.ApiResult{Reply: e.frames[0]})
				continue
			}
			if e.gw.addr == apiAddr {
				res := &actorpb.GroupResult{State: a.g.st}
				if er := e.frames[0].GetError(); er != nil {
					res = &actorpb.GroupResult{Error: er}
				}
				a.api.answer(ctx, e.sids, res)
				continue
			}
			ctx.Send(a.rt.pids.get(e.gw.addr, e.gw.id), &actorpb.SessionPush{SessionIds: e.sids, Frames: e.frames})
		case effDeliverBulk:
			a.rt.sendBulk(ctx, e.b, e.idx)
		case effDeliver:
			if e.item.GetDeliver() != nil {
				batched = append(batched, e.item)
				continue
			}
			a.rt.courier.send(e.item.GetToUser(), itemMessage(e.item))
		case effRedrive:
			ctx.Send(a.self, redriveStep{})
		case effGroupTransient:
			a.rt.relayTransient(e.to, e.msg, true) // online members only, through whichever node they are on
		case effStop:
			a.dead = true
			var waiting []uint64
			for t := range a.api.pids {
				waiting = append(waiting, t)
			}
			a.api.answer(ctx, waiting, &actorpb.GroupResult{Error: wire.Err(wire.CodeUnavailable, "group restarting; retry")})
			var sends []uint64
			for t := range a.sends.pids {
				sends = append(sends, t)
			}
			a.sends.answer(ctx, sends, &actorpb.ApiResult{Reply: wire.ErrFrame(0, wire.CodeUnavailable, "group restarting; retry with the same client_message_id")})
			ctx.Stop(a.self)
		}
	}
}

// groupEventID names a membership event for dedup and acks.
func groupEventID(e *actorpb.GroupEventDeliver) string {
	return fmt.Sprintf("ge:%s/%d", e.GetGroupId(), e.GetOriginSeq())
}

// groupEvent logs a membership change in this member's log, once.
func (s *userState) groupEvent(e *actorpb.GroupEventDeliver, now time.Time) []effect {
	id := groupEventID(e)
	if !ValidID(e.GetGroupId()) || e.GetEvent() == nil || s.delivering[id] {
		return nil
	}
	ack := func(seq uint64) effDeliverAck {
		return effDeliverAck{to: e.GetGroupId(), kind: GroupKind, ack: &actorpb.DeliverAck{ToUser: s.user, MessageId: id, OriginSeq: e.GetOriginSeq(), Seq: seq}}
	}
	if seq, ok := s.delivered.get(id); ok {
		return []effect{ack(uint64(seq))} // a repeat of a recent one: no store read
	}
	seq, found, err := s.rd.indexed(s.user, id)
	if err != nil {
		return nil // re-driven
	}
	if found {
		return []effect{ack(uint64(seq))}
	}
	t := s.nextTime(now)
	s.lastSeq++
	entry := &wire.Entry{Seq: uint64(s.lastSeq), ServerTimeMs: t, Kind: &wire.Entry_Group{Group: e.GetEvent()}}
	setIn(&s.delivering, id, true)
	return []effect{s.submit(persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: s.lastSeq, TimeMS: t, Data: mustMarshal(entry)}},
		Dedup:   []persistence.DedupKey{{Key: id, Seq: s.lastSeq}},
	}, &commit{lastSeq: s.lastSeq, entries: []*wire.Entry{entry}, deliverKeys: []string{id}, deliverAcks: []effDeliverAck{ack(uint64(s.lastSeq))}})}
}
