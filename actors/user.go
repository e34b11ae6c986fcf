package actors

import (
	"context"
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

// UserKind is the cluster kind of user actors.
const UserKind = "user"

// Messages the user actor sends itself (never cross a node).
type (
	appendDone  struct{ err error }
	catchupStep struct {
		key   sessionKey
		force bool // read even if appends are still in flight (waitCatchup's bound)
	}
	tickMsg struct{}
	willDue struct{ device, loginID string }
)

// userActor is the thin shell around userState: it decodes a message,
// calls the pure state, and performs the effects in order. Store reads
// happen here (catch-up pages, dedup lookups); store writes are pipelined
// (Append returns at once, completion arrives as appendDone), so the
// mailbox is never held while a commit is in flight.
type userActor struct {
	rt    *Runtime
	user  string
	st    *userState // &state once activated; nil before
	self  *actor.PID
	armed bool // a tick timer is pending
	dead  bool // activation failed or an append failed: refuse everything

	idle idleClock // passivation once userState.idle for the idle timeout

	// x holds what only a busy actor has; nil most of the time (aside,
	// tidy): a million idle users do not each carry its 72 bytes.
	x *userAside

	// state is the user's state, in the actor's own object: one object
	// fewer per activated user for the collector to mark.
	state userState
}

// userAside is the part of a user actor that is empty while it is idle.
type userAside struct {
	// Catch-up reads waiting for appends in flight to be durable (a
	// login's own device event, above all): started by appendDone
	// rather than read again and again until they are.
	waitingCatchup []waitingCatchup

	api     apiWaiters   // server API requests waiting for their answer (see apiAddr)
	history historyScans // history scans running off the mailbox, and those waiting
}

// aside returns the actor's busy part, making it if need be.
func (a *userActor) aside() *userAside {
	if a.x == nil {
		a.x = &userAside{}
	}
	return a.x
}

// tidy drops the busy part once nothing waits in it (API tokens come from
// a process-wide counter, apiTokens: none is reused when it is made again).
func (a *userActor) tidy() {
	if x := a.x; x != nil && len(x.waitingCatchup) == 0 && len(x.api.pids) == 0 && x.history.running == 0 && len(x.history.waiting) == 0 {
		a.x = nil
	}
}

func (a *userActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *cluster.ClusterInit:
		a.activate(ctx, m)
		return
	case *actor.Started, *actor.Stopping:
		return
	case *actor.Stopped, *actor.Restarting:
		// No activation here any more (a restarted instance never gets
		// ClusterInit): its sessions must not look online.
		if a.self != nil {
			a.rt.presence.clear(a.user, a.self)
		}
		if _, ok := m.(*actor.Stopped); ok {
			a.rt.metrics.activeUsers.Dec()
		}
		return
	}
	if a.dead || a.st == nil {
		if _, ok := ctx.Message().(deadStop); ok {
			ctx.Stop(ctx.Self())
			return
		}
		a.refuse(ctx)
		return
	}
	now := a.rt.now()
	blocked := a.rt.writeErr()
	a.st.readOnly = blocked != nil
	if blocked != nil && a.refuseWrite(ctx, blocked) {
		a.arm(ctx)
		return
	}
	switch m := ctx.Message().(type) {
	case *actorpb.LoginRequest:
		a.onLogin(ctx, m, now)
	case *actorpb.ClientFrame:
		a.onFrame(ctx, m, now)
	case *actorpb.SessionClosed:
		a.perform(ctx, a.st.closed(keyOf(m.GetSession()), m.GetLogout(), now))
		if ctx.Sender() != nil {
			ctx.Respond(&actorpb.Done{})
		}
	case *actorpb.Deliver:
		a.perform(ctx, a.st.deliver(m, now))
	case *actorpb.DeliverAck:
		a.perform(ctx, a.st.deliverAckAt(m, a.rt.now()))
	case *actorpb.InspectRequest:
		ctx.Respond(a.inspect())
	case *actorpb.ApiSend:
		a.perform(ctx, a.st.apiSend(a.aside().api.wait(ctx), m.GetSend(), m.GetIncludeSender(), now))
	case *actorpb.ApiDeliver:
		a.perform(ctx, a.st.apiDeliver(a.aside().api.wait(ctx), m.GetFromUser(), m.GetSend(), now))
	case *actorpb.ApiRecall:
		a.perform(ctx, a.st.apiRecall(a.aside().api.wait(ctx), m.GetRecall(), now))
	case *actorpb.ApiHistory:
		a.onHistory(ctx, apiKey(a.aside().api.wait(ctx)), 0, m.GetRequest())
	case *actorpb.PolicyChanged:
		a.perform(ctx, a.st.applyPolicy(policyFromProto(m), now))
	case *actorpb.AdminKick:
		kicked, effs := a.st.adminKick(m.GetDeviceId(), now)
		ctx.Respond(&actorpb.AdminKickResult{Kicked: kicked})
		a.perform(ctx, effs)
	case appendDone:
		if m.err != nil {
			a.log().Error("append failed; stopping the user actor", "err", m.err)
			a.rt.metrics.appendFailures.Inc()
		}
		var head *commit // the commit this completes
		if len(a.st.commits) > 0 {
			head = a.st.commits[0]
		}
		a.perform(ctx, a.st.appendDone(m.err, now))
		if m.err == nil {
			a.startWaitingCatchups(ctx, head)
		}
	case catchupStep:
		a.onCatchup(ctx, m.key, m.force)
	case readDone:
		m.apply(ctx, a)
	case redriveStep:
		// One page of the log after the fan-out mark per turn: the
		// mailbox is not held for the whole scan.
		entries, full, err := readRedrivePage(a.rt, a.user, a.st.out.scanned)
		if err != nil {
			a.log().Error("re-drive read failed; retrying", "err", err)
			retryRedrive(a.rt, a.self)
			break
		}
		a.perform(ctx, a.st.redrivePage(entries, full, now))
	case willDue:
		a.perform(ctx, a.st.willDue(m.device, m.loginID, now))
	case *actorpb.TransientDeliver:
		a.perform(ctx, a.st.transient(m))
	case *actorpb.RecallDeliver:
		a.perform(ctx, a.st.recallDelivered(m, now))
	case *actorpb.ReceiptDeliver:
		a.perform(ctx, a.st.receipt(m, now))
	case *actorpb.GroupEventDeliver:
		a.perform(ctx, a.st.groupEvent(m, now))
	case *actorpb.EditDeliver:
		a.perform(ctx, a.st.editDelivered(m, now))
	case tickMsg:
		a.armed = false
		a.perform(ctx, a.st.tick(now))
	case idleCheck:
		if a.idle.due(a.st.idle()) {
			a.rt.metrics.passivations.Inc()
			ctx.Poison(ctx.Self())
			return
		}
	default:
		a.log().Warn("user actor: unexpected message", "type", fmt.Sprintf("%T", m))
	}
	if _, ok := ctx.Message().(idleCheck); !ok {
		a.idle.touch()
	}
	a.arm(ctx)
}

const tickEvery = 500 * time.Millisecond

// arm starts the timers the state needs after a message: the tick, and
// the idle check once the user is idle.
func (a *userActor) arm(ctx actor.Context) {
	if a.dead {
		return
	}
	if a.st.needsTick() && !a.armed {
		a.armed = true
		self, root := ctx.Self(), a.rt.sys.Root
		time.AfterFunc(tickEvery, func() { root.Send(self, tickMsg{}) })
	}
	a.idle.arm(ctx, a.rt.idle, a.st.idle())
}

// log is the node's logger with this user's ID. Made per call, not kept:
// it is only for the rare lines a user actor writes, and a kept clone
// would cost every one of a million idle users its bytes.
func (a *userActor) log() *slog.Logger { return a.rt.log.With("user", a.user) }

func (a *userActor) activate(ctx actor.Context, init *cluster.ClusterInit) {
	a.user = init.Identity.GetIdentity()
	a.self = ctx.Self()
	a.rt.metrics.activeUsers.Inc()
	a.rt.metrics.activations.Inc()
	st, effs, err := a.load(init)
	if err != nil {
		a.log().Error("user actor activation failed", "err", err)
		a.dead = true
		lingerDead(ctx, a.rt.sys.Root)
		return
	}
	a.st = st
	a.idle.start(st.cfg.IdleTimeout, true)
	a.perform(ctx, effs)
	a.arm(ctx)
}

func (a *userActor) load(init *cluster.ClusterInit) (*userState, []effect, error) {
	ctx := a.rt.activate.Get()
	owner := init.Cluster.ActorSystem.Address() + "/" + init.Cluster.ActorSystem.ID
	epoch, last, err := a.rt.store.Activate(ctx, a.user, owner)
	if err != nil {
		return nil, nil, fmt.Errorf("activate %q: %w", a.user, err)
	}
	var (
		lastTime int64
		convs    []*actorpb.ConvState
		outbox   []*actorpb.OutboxItem
		mark     persistence.FanoutMark
	)
	// On the first activation ever (epoch 1, empty log) there is nothing
	// to read: every write to a user's data is fenced by an epoch
	// (persistence.Store), so no earlier actor wrote conversations, an
	// outbox or a fan-out mark. (A login storm of new users spent a fifth
	// of its CPU on these reads of nothing.)
	if epoch > 1 || last > 0 {
		if convs, outbox, mark, lastTime, err = a.loadStored(ctx, last); err != nil {
			return nil, nil, err
		}
	}
	st := initUserStateIn(&a.state, a.user, a.rt.env)
	fresh := time.Now() // after Activate: real time, as in message IDs (not the injectable clock)
	st.freshMS = fresh.UnixMilli()
	if d := a.rt.now().Sub(fresh); d > -time.Second && d < time.Second {
		// The actors' clock is the real one: entry times follow the
		// clocks message IDs are minted with (tests move it; then not).
		st.logNewestMS, st.logTimeKnown = lastTime, true
	}
	effs := st.activated(epoch, last, lastTime, outbox, a.rt.now(), convs...)
	effs = append(effs, st.fanoutMark(mark)...)
	return st, effs, nil
}

// loadStored reads what an earlier activation left: the newest entry's
// time (last > 0), the conversations, the outbox and the fan-out mark.
func (a *userActor) loadStored(ctx context.Context, last persistence.Seq) (convs []*actorpb.ConvState, outbox []*actorpb.OutboxItem, mark persistence.FanoutMark, lastTime int64, err error) {
	if last > 0 {
		es, err := a.rt.store.Read(ctx, a.user, last-1, 1)
		if err != nil {
			return nil, nil, mark, 0, fmt.Errorf("read last entry of %q: %w", a.user, err)
		}
		if len(es) == 1 {
			lastTime = es[0].TimeMS
		}
	}
	stored, err := a.rt.store.Convs(ctx, a.user)
	if err != nil {
		return nil, nil, mark, 0, fmt.Errorf("read conversations of %q: %w", a.user, err)
	}
	convs = make([]*actorpb.ConvState, 0, len(stored))
	for _, c := range stored {
		var cs actorpb.ConvState
		if err := proto.Unmarshal(c.Data, &cs); err != nil {
			return nil, nil, mark, 0, fmt.Errorf("decode conversation %q of %q: %w", c.Key, a.user, err)
		}
		convs = append(convs, &cs)
	}
	items, err := a.rt.store.Outbox(ctx, a.user)
	if err != nil {
		return nil, nil, mark, 0, fmt.Errorf("read outbox of %q: %w", a.user, err)
	}
	if outbox, err = storedItems(items, decodeOutboxItem); err != nil {
		return nil, nil, mark, 0, fmt.Errorf("outbox of %q: %w", a.user, err)
	}
	if mark, err = a.rt.store.FanoutMark(ctx, a.user); err != nil {
		return nil, nil, mark, 0, fmt.Errorf("read fan-out mark of %q: %w", a.user, err)
	}
	if len(outbox) > 0 || mark.Pending {
		a.log().Info("re-driving pending fan-outs", "items", len(outbox), "after_seq", mark.Done)
	}
	return convs, outbox, mark, lastTime, nil
}

// refuseWrite answers (or drops) a message that would write while the
// store refuses writes (err): UNAVAILABLE with the reason and a retry
// hint, the state untouched. Deliveries from other users' fan-outs are
// dropped: their senders re-drive them. It reports whether it handled
// the message.
func (a *userActor) refuseWrite(ctx actor.Context, err error) bool {
	switch m := ctx.Message().(type) {
	case *actorpb.ClientFrame:
		f := m.GetFrame()
		key := keyOf(m.GetSession())
		if !writesFrame(f) || a.st.sessions.get(key) == nil {
			return false
		}
		a.rt.metrics.storeRefusals.Inc()
		a.perform(ctx, []effect{a.st.reply(key, storeErrFrame(f.GetId(), err, ""))})
	case *actorpb.ApiSend, *actorpb.ApiDeliver, *actorpb.ApiRecall:
		a.rt.metrics.storeRefusals.Inc()
		ctx.Respond(&actorpb.ApiResult{Reply: storeErrFrame(0, err, "")})
	case *actorpb.Deliver, *actorpb.RecallDeliver, *actorpb.ReceiptDeliver, *actorpb.GroupEventDeliver, *actorpb.EditDeliver:
	default:
		return false
	}
	return true
}

// refuse answers requests an unusable activation cannot serve.
// While the store refuses writes (an activation writes the epoch) the
// reason and a retry hint go with the refusal.
func (a *userActor) refuse(ctx actor.Context) {
	unavailable := func() *wire.Frame {
		return storeErrFrame(0, a.rt.writeErr(), "user temporarily unavailable; retry")
	}
	switch m := ctx.Message().(type) {
	case *actorpb.LoginRequest:
		ctx.Respond(&actorpb.LoginResult{Reply: unavailable()})
	case *actorpb.ClientFrame:
		a.perform(ctx, []effect{lostSession(keyOf(m.GetSession()))})
	case *actorpb.AdminKick:
		ctx.Respond(&actorpb.AdminKickResult{})
	case *actorpb.ApiSend, *actorpb.ApiDeliver, *actorpb.ApiRecall, *actorpb.ApiHistory:
		ctx.Respond(&actorpb.ApiResult{Reply: unavailable()})
	case *actorpb.SessionClosed, *actorpb.InspectRequest:
		if ctx.Sender() != nil {
			ctx.Respond(&actorpb.Done{Error: wire.Err(wire.CodeUnavailable, "user temporarily unavailable")})
		}
	}
}

func (a *userActor) onLogin(ctx actor.Context, m *actorpb.LoginRequest, now time.Time) {
	var comp, first persistence.Seq
	if m.GetLogin().GetHasCursor() {
		var err error
		if first, err = a.firstSeq(); err != nil {
			a.log().Error("retention lookup failed", "err", err)
			ctx.Respond(&actorpb.LoginResult{Reply: wire.ErrFrame(0, wire.CodeUnavailable, "storage unavailable; retry")})
			return
		}
	}
	if a.st.needsCompensation(m.GetLogin(), first) {
		since := now.Add(-time.Duration(a.st.cfg.CompensationDays) * 24 * time.Hour)
		seq, err := a.firstSeqSince(since)
		if err != nil {
			a.log().Error("compensation window lookup failed", "err", err)
			ctx.Respond(&actorpb.LoginResult{Reply: wire.ErrFrame(0, wire.CodeUnavailable, "storage unavailable; retry")})
			return
		}
		comp = seq
	}
	a.st.policy = a.rt.policy.Load() // the server API may have changed it
	reply, effs := a.st.login(keyOf(m.GetSession()).interned(), m, now, comp, first)
	ok := reply.GetLoginOk() != nil
	ctx.Respond(&actorpb.LoginResult{Reply: reply, Ok: ok})
	if ok {
		a.rt.metrics.logins.Inc()
	} else {
		a.rt.metrics.loginConflicts.Inc()
	}
	a.perform(ctx, effs)
}

func (a *userActor) onFrame(ctx actor.Context, m *actorpb.ClientFrame, now time.Time) {
	key := keyOf(m.GetSession())
	f := m.GetFrame()
	if a.st.sessions.get(key) == nil {
		a.perform(ctx, []effect{lostSession(key)})
		return
	}
	switch b := f.GetBody().(type) {
	case *wire.Frame_Send:
		a.rt.metrics.sends.Inc()
		a.perform(ctx, a.st.send(key, f.GetId(), b.Send, now))
	case *wire.Frame_Sync:
		limit := int(b.Sync.GetLimit())
		if limit <= 0 || limit > pageLimit {
			limit = pageLimit
		}
		first, err := a.firstSeq()
		if err != nil {
			a.perform(ctx, []effect{a.st.replyErr(key, f.GetId(), wire.CodeUnavailable, "storage unavailable; retry")})
			return
		}
		if b.Sync.GetAfterSeq()+1 < uint64(first) {
			a.perform(ctx, []effect{a.st.replyErr(key, f.GetId(), wire.CodeCursorTooOld,
				fmt.Sprintf("entries up to seq %d were removed by retention: log in without a cursor", first-1))})
			return
		}
		entries, err := a.read(persistence.Seq(b.Sync.GetAfterSeq()), limit)
		if err != nil {
			a.log().Error("sync read failed", "err", err)
			a.perform(ctx, []effect{a.st.replyErr(key, f.GetId(), wire.CodeUnavailable, "storage unavailable; retry")})
			return
		}
		a.perform(ctx, a.st.syncPage(key, f.GetId(), entries, limit))
	case *wire.Frame_MarkRead:
		var later []*wire.Entry
		if a.st.needsLater(b.MarkRead) {
			var err error
			last := persistence.Seq(a.st.convs[convKey(b.MarkRead.GetConversation())].GetLastSeq())
			if later, err = a.readAll(persistence.Seq(b.MarkRead.GetUpToSeq()), last); err != nil {
				a.log().Error("mark-read recount failed", "err", err)
				a.perform(ctx, []effect{a.st.replyErr(key, f.GetId(), wire.CodeUnavailable, "storage unavailable; retry")})
				return
			}
		}
		a.perform(ctx, a.st.markRead(key, f.GetId(), b.MarkRead, later, now))
	case *wire.Frame_ConversationOp:
		a.perform(ctx, a.st.conversationOp(key, f.GetId(), b.ConversationOp, now))
	case *wire.Frame_ListConversations:
		a.perform(ctx, []effect{a.st.reply(key, &wire.Frame{Id: f.GetId(), Body: &wire.Frame_ConversationList{
			ConversationList: a.st.conversationList(b.ListConversations.GetAll())}})})
	case *wire.Frame_History:
		a.onHistory(ctx, key, f.GetId(), b.History)
	case *wire.Frame_Edit:
		a.perform(ctx, a.st.edit(key, f.GetId(), b.Edit, now))
	case *wire.Frame_Recall:
		a.perform(ctx, a.st.recall(key, f.GetId(), b.Recall, now))
	case *wire.Frame_SetWill:
		a.perform(ctx, a.st.setWill(key, f.GetId(), b.SetWill))
	case *wire.Frame_ListDevices:
		a.perform(ctx, a.st.listDevices(key, f.GetId()))
	case *wire.Frame_CursorAck:
		effs := a.st.cursorAck(key, b.CursorAck.GetSeq(), now)
		a.perform(ctx, append([]effect{a.st.reply(key, &wire.Frame{Id: f.GetId(), Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})}, effs...))
	default:
		a.perform(ctx, []effect{a.st.replyErr(key, f.GetId(), wire.CodeInvalidArgument,
			fmt.Sprintf("%s is not available on this server yet", frameName(f)))})
	}
}

func frameName(f *wire.Frame) string {
	if b := f.ProtoReflect().WhichOneof(f.ProtoReflect().Descriptor().Oneofs().ByName("body")); b != nil {
		return string(b.Name())
	}
	return "empty frame"
}

// onCatchup starts the read of a catching-up session's next page off the
// mailbox; the page comes back as catchupRead (catchup.go).
func (a *userActor) onCatchup(ctx actor.Context, key sessionKey, force bool) {
	sess := a.st.sessions.get(key)
	if sess == nil || sess.live {
		return
	}
	i := -1
	if a.x != nil {
		i = slices.IndexFunc(a.x.waitingCatchup, func(w waitingCatchup) bool { return w.key == key })
	}
	if !force && a.st.committed < a.st.lastSeq {
		// Appends in flight (the login's device event): read once they
		// are durable, so the device gets them in its catch-up. Bounded
		// by catchupCommitWait, as readCatchup's own wait.
		if i < 0 {
			x := a.aside()
			x.waitingCatchup = append(x.waitingCatchup, waitingCatchup{key: key, until: a.st.lastSeq})
			self, root := a.self, a.rt.sys.Root
			time.AfterFunc(catchupCommitWait, func() { root.Send(self, catchupStep{key: key, force: true}) })
		}
		return
	}
	if i >= 0 {
		a.x.waitingCatchup = slices.Delete(a.x.waitingCatchup, i, i+1)
		a.tidy()
	} else if force {
		return // started already by appendDone
	}
	a.readCatchup(key, sess.next-1)
}

// waitingCatchup is a catch-up read waiting until the actor's committed
// seq reaches until.
type waitingCatchup struct {
	key   sessionKey
	until persistence.Seq
}

// startWaitingCatchups starts the waiting catch-up reads whose appends
// are durable now. When what a session still needs is exactly the
// entries of the commit that just completed (head) — a login whose device
// was up to date needs only its own device event — they are its page,
// without a read.
func (a *userActor) startWaitingCatchups(ctx actor.Context, head *commit) {
	if a.x == nil || len(a.x.waitingCatchup) == 0 || a.dead {
		return
	}
	var ready []sessionKey
	x := a.x
	x.waitingCatchup = slices.DeleteFunc(x.waitingCatchup, func(w waitingCatchup) bool {
		if w.until <= a.st.committed {
			ready = append(ready, w.key)
			return true
		}
		return false
	})
	if len(x.waitingCatchup) == 0 {
		x.waitingCatchup = nil
		a.tidy()
	}
	for _, k := range ready {
		sess := a.st.sessions.get(k)
		if sess == nil || sess.live {
			continue
		}
		if head != nil && head.lastSeq == a.st.committed && entriesFrom(head.entries, sess.next, head.lastSeq) {
			catchupRead{key: k, after: sess.next - 1, readAt: a.st.committed, entries: head.entries}.apply(ctx, a)
			continue
		}
		a.readCatchup(k, sess.next-1)
	}
}

// entriesFrom reports whether entries are seqs first, first+1, … last.
func entriesFrom(entries []*wire.Entry, first, last persistence.Seq) bool {
	if len(entries) == 0 || persistence.Seq(len(entries)) != last-first+1 {
		return false
	}
	for i, e := range entries {
		if persistence.Seq(e.GetSeq()) != first+persistence.Seq(i) {
			return false
		}
	}
	return true
}

// onHistory answers a HistoryRequest: the conversation's messages, newest
// first, as they are now (recalled ones as tombstones, edited ones with
// their latest content), none from before a clear-history. The log is
// scanned off the mailbox (history.go); the page comes back as historyRead.
func (a *userActor) onHistory(ctx actor.Context, key sessionKey, reqID uint64, h *wire.HistoryRequest) {
	q, code, err := a.st.historyQuery(h)
	if err != nil {
		a.perform(ctx, []effect{a.st.replyErr(key, reqID, code, err.Error())})
		return
	}
	if q.empty() {
		a.perform(ctx, []effect{a.st.reply(key, historyFrame(reqID, nil, false))})
		return
	}
	a.scanHistory(ctx, key, reqID, q)
}

// firstSeq and firstSeqSince are the store's FirstSeq and FirstSeqSince,
// answered without a read while nothing was ever appended (last seq + 1).
func (a *userActor) firstSeq() (persistence.Seq, error) {
	if a.st.lastSeq == 0 {
		return 1, nil
	}
	rctx, cancel := context.WithTimeout(context.Background(), a.rt.cfg.RequestTimeout)
	defer cancel()
	return a.rt.store.FirstSeq(rctx, a.user)
}

func (a *userActor) firstSeqSince(t time.Time) (persistence.Seq, error) {
	if a.st.lastSeq == 0 {
		return 1, nil
	}
	rctx, cancel := context.WithTimeout(context.Background(), a.rt.cfg.RequestTimeout)
	defer cancel()
	return a.rt.store.FirstSeqSince(rctx, a.user, t)
}

// readAll returns the entries after seq after up to seq upTo (for
// recounts: upTo is the conversation's last message, so nothing after it
// is read).
func (a *userActor) readAll(after, upTo persistence.Seq) ([]*wire.Entry, error) {
	var out []*wire.Entry
	for after < upTo {
		page, err := a.read(after, int(min(upTo-after, pageLimit)))
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) == 0 {
			break
		}
		after = persistence.Seq(page[len(page)-1].GetSeq())
	}
	return out, nil
}

// read returns up to limit decoded entries after seq.
func (a *userActor) read(after persistence.Seq, limit int) ([]*wire.Entry, error) {
	return a.logRead().read(after, limit)
}

func decodeEntries(es []persistence.Entry) ([]*wire.Entry, error) {
	out := make([]*wire.Entry, len(es))
	for i, e := range es {
		var we wire.Entry
		if err := proto.Unmarshal(e.Data, &we); err != nil {
			return nil, fmt.Errorf("decode entry %d: %w", e.Seq, err)
		}
		out[i] = &we
	}
	return out, nil
}

func (a *userActor) inspect() *actorpb.InspectResult {
	r := &actorpb.InspectResult{
		LastSeq:       uint64(a.st.committed),
		Epoch:         uint64(a.st.epoch),
		PendingFanout: uint32(a.st.out.inFlight()),
	}
	for _, s := range a.st.sessions {
		r.Sessions = append(r.Sessions, s.info())
	}
	return r
}

// perform carries out effects in order.
func (a *userActor) perform(ctx actor.Context, effs []effect) {
	for _, e := range effs {
		switch e := e.(type) {
		case effAppend:
			appendAsync(a.rt, a.self, e.req)
		case effPush:
			if e.gw.addr == apiAddr {
				if a.x != nil { // nil: nobody waits
					a.x.api.answer(ctx, e.sids, &actorpb.ApiResult{Reply: e.frames[0]})
					a.tidy()
				}
				continue
			}
			ctx.Send(a.rt.pids.get(e.gw.addr, e.gw.id), &actorpb.SessionPush{SessionIds: e.sids, Frames: e.frames, UserId: a.user})
		case effKick:
			ctx.Send(a.rt.pids.get(e.key.addr, e.key.id), &actorpb.SessionKick{SessionId: e.key.sid, Kick: e.kick})
		case effDeliver:
			a.rt.courier.send(e.item.GetToUser(), itemMessage(e.item))
		case effRedrive:
			ctx.Send(a.self, redriveStep{})
		case effDeliverAck:
			if e.relay != "" {
				ctx.Send(a.rt.pids.get(e.relay, RelayActorName), e.ack) // the node's relay batches acks to the group
				continue
			}
			kind := e.kind
			if kind == "" {
				kind = UserKind
			}
			a.rt.courier.sendKind(kind, e.to, e.ack)
		case effCatchup:
			ctx.Send(a.self, catchupStep{key: e.key})
		case effWillTimer:
			self, root, msg := a.self, a.rt.sys.Root, willDue{device: e.device, loginID: e.loginID}
			time.AfterFunc(e.after, func() { root.Send(self, msg) })
		case effReceipt:
			a.rt.courier.send(e.to, e.msg) // the sender's actor is active or re-activates: receipts are for offline senders too
		case effTransient:
			// Only online users can see it, and they may be online through
			// any node: every node's presence actor hands it to the
			// recipient's activation if it has sessions there. An offline
			// recipient is not activated (activation is a store write).
			a.rt.relayTransient([]string{e.to}, e.msg, false)
		case effNotify:
			if a.rt.hooks != nil {
				e.ev.Node = a.rt.sys.Address()
				a.rt.hooks.Publish(e.ev)
			}
		case effPresence:
			a.rt.presence.set(a.user, a.st.epoch, a.self, e.devices)
		case effStop:
			a.dead = true
			a.log().Warn("user actor stopping", "reason", e.reason)
			ctx.Stop(a.self)
		}
	}
}

// storeReader implements logReader on the store; the Runtime's one
// (Runtime.reader) serves every user and group actor.
type storeReader struct{ store Store }

func (r storeReader) indexed(log, key string) (persistence.Seq, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRequestTimeout)
	defer cancel()
	return r.store.LookupDedup(ctx, log, key)
}

func (r storeReader) entryByKey(log, key string) (*wire.Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRequestTimeout)
	defer cancel()
	seq, ok, err := r.store.LookupDedup(ctx, log, key)
	if err != nil || !ok {
		return nil, err
	}
	es, err := r.store.Read(ctx, log, seq-1, 1)
	if err != nil {
		return nil, err
	}
	if len(es) == 0 || es[0].Seq != seq {
		return nil, fmt.Errorf("dedup key %q points at seq %d, which is not in the log", key, seq)
	}
	out, err := decodeEntries(es)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}
