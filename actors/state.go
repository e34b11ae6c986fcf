package actors

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// userState is one user's actor state. It is pure: its methods take the
// request and the time and return effects (appends, pushes, deliveries,
// kicks) that the shell (user.go) performs in order. The one read it needs
// from storage (dedup lookups) comes through logReader so tests can drive
// it without a store or an actor system.
//
// Not safe for concurrent use: only the actor's goroutine touches it.
type userState struct {
	user string
	*stateEnv
	policy *Policy // the kick policy in force; replaced, never changed in place

	epoch     persistence.Epoch
	lastSeq   persistence.Seq // last seq assigned; may run ahead of committed
	committed persistence.Seq // last seq known durable
	lastTime  int64           // entries' server time never goes backwards

	sessions sessionSet // in login order, oldest first
	logins   uint64     // login counter: orders sessions oldest to newest

	// Appends submitted to the store, oldest first. The store completes them
	// in this order; each completion pops the head.
	commits []*commit

	sending    map[string]*pendingSend // client message ID → in-flight send
	delivering map[string]bool         // message ID → in-flight or held delivery
	// held are deliveries waiting for the delivery commit in flight
	// (deliveriesInFlight > 0) to complete; then they are appended
	// together (deliver, takeHeld).
	held               []heldDelivery
	deliveriesInFlight int
	delivered          recentIndex // deliveries this activation committed, newest few
	sentAcks           recentAcks  // acks of the sends this activation committed, newest few
	// freshMS is set by the shell (real time in Unix ms, unlike the
	// injectable clock; 0: unset): messages whose IDs were minted after it
	// cannot have been delivered by an earlier activation (see
	// deliveredBefore).
	freshMS int64
	// logNewestMS, if logTimeKnown, is the newest entry time in the log
	// when this activation began; the shell sets it only when the actors'
	// clock is the real one (entry times then follow the clocks message
	// IDs are minted with). See deliveredBefore.
	logNewestMS int64
	changing    map[string]bool // message ID → recall or edit in flight

	out     outbox                        // fan-outs awaiting DeliverAck (outbox.go)
	cursors map[string]persistence.Seq    // device → cursor, not yet flushed
	wills   map[string]*pendingWill       // device → will waiting out its grace period
	convs   map[string]*actorpb.ConvState // conversation key → state (all of them, loaded at activation)

	logTimeKnown bool // logNewestMS is set (kept here with the other bool: the struct's size matters)
	failed       bool // an append failed: the actor is stopping
	// readOnly: the store refuses writes now (disk full, failed); set by
	// the shell before each message. Logins, logouts and ticks then write
	// nothing (their device events and cursor flushes are skipped or
	// wait), so a full store does not stop the actor and reads go on.
	readOnly bool
}

// logReader is the read the pure state needs: the entry indexed under a
// dedup key ("c:"+client message ID, "m:"+message ID), or nil.
//
// Reads name the log (a user, or a group's namespace) so one reader serves
// every actor: a reader per user would be a heap object per idle user.
type logReader interface {
	entryByKey(log, key string) (*wire.Entry, error)
	// indexed returns the value stored under a dedup key (a seq, or for
	// "v:" keys the sender's edit version).
	indexed(log, key string) (persistence.Seq, bool, error)
}

type sessionKey struct {
	addr string // gateway actor address
	id   string // gateway actor id
	sid  uint64
}

func keyOf(r *actorpb.SessionRef) sessionKey {
	return sessionKey{addr: r.GetGatewayAddress(), id: r.GetGatewayId(), sid: r.GetSessionId()}
}

type gwKey struct{ addr, id string }

func (k sessionKey) gw() gwKey { return gwKey{k.addr, k.id} }

type session struct {
	key    sessionKey
	order  uint64          // login order: smaller is older
	live   bool            // catch-up done: pushes flow
	class  classIndex      // beside live (see classIndex)
	next   persistence.Seq // while catching up: next seq to page
	cursor persistence.Seq
	will   *will // SetWill; nil if none

	// The device and, while this is the user's only session, the one-
	// element slices presence and the user's session set need, in the
	// session's own object: three fewer objects per online user for the
	// collector to mark. Never modified after login but by sessionSet.
	device wire.DeviceInfo
	alone  [1]*wire.DeviceInfo
	self   [1]*session
	// The text of device.LoginId: written once, at login, before the
	// string is made from it (one object fewer per online user; last, so
	// the collector's scan of a session stops before it).
	loginID [ulid.EncodedSize]byte
}

// info is the session's device.
func (s *session) info() *wire.DeviceInfo { return &s.device }

type waiter struct {
	key   sessionKey
	reqID uint64
}

type pendingSend struct {
	ack     *wire.SendAck
	waiters []waiter
}

// commit is what to do when one submitted append becomes durable.
type commit struct {
	lastSeq     persistence.Seq // 0: no entries
	entries     []*wire.Entry
	skip        *sessionKey // the sending session: it gets the ack, not the entry
	sendKey     string      // client message ID whose waiters get the ack
	sender      string      // a group's send: the member who sent it
	deliverKeys []string    // message IDs delivered into this log, one per entry from lastSeq back
	held        bool        // the append of held deliveries (takeHeld)
	fanout      []*actorpb.OutboxItem
	bulk        *bulkFanout // a group message's fan-out (bulk.go)
	logged      bool        // fanout is a log entry's (no stored items: outbox.go)
	deliverAcks []effDeliverAck
	after       []effect // replies to send once durable
	recallKey   string   // message ID whose recall (or edit) this commits
}

// Effects, performed by the shell in order.
type (
	effect interface{ isEffect() }

	// effAppend submits req; its commit record is already queued.
	effAppend struct{ req persistence.AppendRequest }
	// effPush sends frames, in order, to sessions of one gateway.
	effPush struct {
		gw     gwKey
		sids   []uint64
		frames []*wire.Frame
	}
	// effKick sends a Kick frame to a session, then closes it.
	effKick struct {
		key  sessionKey
		kick *wire.Kick
	}
	effDeliver    struct{ item *actorpb.OutboxItem }
	effDeliverAck struct {
		to    string
		kind  string // "" = UserKind; GroupKind for a group's fan-out
		relay string // a node's relay handed it (a group's batch): ack the relay (relay.go)
		ack   *actorpb.DeliverAck
	}
	// effCatchup asks the shell to read the next catch-up page.
	effCatchup struct{ key sessionKey }
	// effStop stops the actor (after the effects before it).
	effStop struct{ reason string }
	// effNotify publishes a session event to the app backend.
	effNotify struct{ ev Event }
	// effPresence publishes the user's live sessions (none: offline).
	effPresence struct{ devices []*wire.DeviceInfo }
)

func (effAppend) isEffect()     {}
func (effPush) isEffect()       {}
func (effKick) isEffect()       {}
func (effDeliver) isEffect()    {}
func (effDeliverAck) isEffect() {}
func (effCatchup) isEffect()    {}
func (effStop) isEffect()       {}
func (effNotify) isEffect()     {}
func (effPresence) isEffect()   {}

// stateEnv is what the states of a node's users share: set once, never
// changed through a state. One pointer in each state, where the three
// were 32 bytes of each of a million idle users' states.
type stateEnv struct {
	cfg   *Config // defaults applied (Config.withDefaults)
	rd    logReader
	newID func() string
}

// newUserState returns the state of user's actor over a new environment;
// cfg has its defaults applied (Config.withDefaults) and is shared, not
// copied.
func newUserState(user string, cfg *Config, rd logReader, newID func() string) *userState {
	return newUserStateIn(user, &stateEnv{cfg: cfg, rd: rd, newID: newID})
}

// newUserStateIn returns the state of user's actor in env, shared.
func newUserStateIn(user string, env *stateEnv) *userState {
	return initUserStateIn(new(userState), user, env)
}

// initUserStateIn makes *st the new state of user's actor in env, shared,
// and returns st.
func initUserStateIn(st *userState, user string, env *stateEnv) *userState {
	*st = userState{
		user:     user,
		stateEnv: env,
		policy:   &env.cfg.Policy,
		out:      newOutbox(),
	}
	return st
}

// setIn sets m[k] = v, making the map first if it is nil. A user's state
// makes its maps on first use: most of a million idle users never fill
// most of them, and an empty map still costs its header.
func setIn[K comparable, V any](m *map[K]V, k K, v V) {
	if *m == nil {
		*m = make(map[K]V)
	}
	(*m)[k] = v
}

// deleteIn deletes m[k] and drops the map once it is empty: a Go map
// keeps the storage it grew to, and the maps of things in flight (sends,
// deliveries, fan-outs) are empty between bursts for most of a million
// users — ~1 KB each of empty maps otherwise.
func deleteIn[K comparable, V any](m *map[K]V, k K) {
	delete(*m, k)
	if len(*m) == 0 {
		*m = nil
	}
}

// activated sets what Store.Activate returned, the stored cursors and the
// pending outbox items, and returns the deliveries to re-drive (the outbox
// rule: a fan-out acked to the sender but not confirmed is sent again).
// The shell then passes the stored fan-out mark to fanoutMark.
func (s *userState) activated(epoch persistence.Epoch, last persistence.Seq, lastTime int64, outbox []*actorpb.OutboxItem, now time.Time, convs ...*actorpb.ConvState) []effect {
	s.epoch, s.lastSeq, s.committed, s.lastTime = epoch, last, last, lastTime
	for _, cs := range convs {
		setIn(&s.convs, convKey(cs.GetConversation()), cs)
	}
	return s.out.sent(outbox, false, now)
}

// fanoutMark sets the stored fan-out mark; a pending one starts the
// re-drive of this user's messages after it (redrivePage, page by page).
func (s *userState) fanoutMark(m persistence.FanoutMark) []effect {
	return s.out.activated(m, s.lastSeq)
}

// redrivePage re-drives the fan-outs of one page of the log read after the
// re-drive position (full: the page had the limit's worth).
func (s *userState) redrivePage(entries []*wire.Entry, full bool, now time.Time) []effect {
	return s.out.redriveEntries(entries, full, func(e *wire.Entry) ([]*actorpb.OutboxItem, *bulkFanout) { return s.fanoutOf(e), nil }, now)
}

// fanoutOf returns the deliveries of an entry of this user's log: a
// one-to-one message this user sent to somebody else.
func (s *userState) fanoutOf(e *wire.Entry) []*actorpb.OutboxItem {
	m := e.GetMessage()
	conv := m.GetConversation()
	if m == nil || m.GetSender() != s.user || conv.GetType() != wire.Conversation_DIRECT || conv.GetId() == s.user {
		return nil
	}
	return []*actorpb.OutboxItem{s.directDelivery(m, persistence.Seq(e.GetSeq()))}
}

// directDelivery is the delivery of this user's message m (entry seq) to
// its peer: the peer's copy, conversation from the peer's side.
func (s *userState) directDelivery(m *wire.Message, seq persistence.Seq) *actorpb.OutboxItem {
	peer := m.GetConversation().GetId()
	theirs := proto.Clone(m).(*wire.Message)
	theirs.Conversation = &wire.Conversation{Type: wire.Conversation_DIRECT, Id: s.user}
	theirs.Mentioned = mentionedIn(m.GetMentionAll(), m.GetMentionList(), peer)
	return &actorpb.OutboxItem{ToUser: peer, Deliver: &actorpb.Deliver{FromUser: s.user, Message: theirs, OriginSeq: uint64(seq)}}
}

func (s *userState) reply(key sessionKey, f *wire.Frame) effect {
	return effPush{gw: key.gw(), sids: []uint64{key.sid}, frames: []*wire.Frame{f}}
}

func (s *userState) replyErr(key sessionKey, id uint64, code wire.Code, msg string) effect {
	return s.reply(key, wire.ErrFrame(id, code, msg))
}

// lostSession answers a frame from a session this activation does not know
// (the actor was re-activated since it logged in): the device must log in
// again.
func lostSession(key sessionKey) effect {
	return effKick{key: key, kick: &wire.Kick{
		Reason:       wire.Kick_REASON_UNSPECIFIED,
		CloseCode:    wire.CloseSessionLost,
		MayReconnect: true,
	}}
}

// ---------------------------------------------------------------- login

// login registers a session and answers LoginOk. compFrom is the first seq
// of the offline-compensation window; the shell computes it only when
// needsCompensation says so.
//
// first is the oldest seq still retained: a cursor older than it gets
// cursor_too_old and the compensation window.
func (s *userState) login(key sessionKey, req *actorpb.LoginRequest, now time.Time, compFrom, first persistence.Seq) (*wire.Frame, []effect) {
	l := req.GetLogin()
	class, _ := PlatformClass(l.GetPlatform())
	live := make([]liveLogin, 0, len(s.sessions))
	for _, old := range s.sessions {
		k := old.key
		if k == key {
			continue // a repeated Login of the same connection; the gateway refuses it first
		}
		live = append(live, liveLogin{key: k, device: old.info().GetDeviceId(), class: old.class.class(), tag: old.info().GetTag(), order: old.order})
	}
	d := decideLogin(*s.policy, live, newLogin{
		device: l.GetDeviceId(), class: class, tag: l.GetTag(), noKick: l.GetNoKick(), reconnect: l.GetReconnect(),
	})
	if d.conflict {
		why := "another session holds this device's slot and this login may not kick it (no_kick)"
		if l.GetReconnect() {
			why = "this device's slot was taken by a newer login; an automatic reconnect never kicks: ask the user, then log in without reconnect"
		}
		return wire.ErrFrame(0, wire.CodeLoginConflict, why), nil
	}
	wasOnline := len(s.sessions) > 0
	var newInfo *wire.DeviceInfo // the kicker, for the kicked devices' webhooks: made only if one is kicked
	if len(d.kick) > 0 {
		newInfo = &wire.DeviceInfo{DeviceId: l.GetDeviceId(), Platform: l.GetPlatform(), Tag: l.GetTag(), LoginExt: l.GetLoginExt(), AppVersion: l.GetAppVersion()}
	}
	// Sized for a login that kicks no one: the append, two notifications,
	// presence and the catch-up (grown one step at a time, the slice cost
	// three allocations per login).
	effs := make([]effect, 0, 5)
	events := make([]*wire.Entry, 0, 1+len(d.kick))
	for _, k := range d.kick {
		if !s.readOnly { // no seq is taken for an event that is not written
			events = append(events, s.deviceEvent(wire.DeviceEvent_KICKED, s.sessions.get(k).info(), now))
		}
		effs = append(effs, s.notify(EventDeviceKicked, s.sessions.get(k).info(), newInfo, wire.Kick_LOGIN_CONFLICT.String(), now))
	}
	for _, k := range d.replace {
		effs = append(effs, s.notify(EventDeviceLogout, s.sessions.get(k).info(), nil, "replaced", now))
	}
	for _, k := range append(d.replace, d.kick...) {
		effs = append(effs, effKick{key: k, kick: &wire.Kick{
			Reason:            wire.Kick_LOGIN_CONFLICT,
			NewDevicePlatform: l.GetPlatform(),
			NewDeviceLoginExt: l.GetLoginExt(),
			CloseCode:         wire.CloseLoginConflict,
		}})
		s.flushCursor(s.sessions.get(k))
		s.sessions.del(k)
	}
	s.logins++
	s.resumed(l.GetDeviceId())
	sess := &session{
		key:   key,
		class: indexOf(class),
		order: s.logins,
		device: wire.DeviceInfo{
			DeviceId:   l.GetDeviceId(),
			Platform:   intern(l.GetPlatform()),
			Tag:        intern(l.GetTag()),
			SinceMs:    now.UnixMilli(),
			LoginExt:   l.GetLoginExt(),
			AppVersion: intern(l.GetAppVersion()),
		},
	}
	sess.device.LoginId = newLoginIDIn(&sess.loginID)
	sess.alone[0] = sess.info()
	ok := &wire.LoginOk{
		LoginId:          sess.info().LoginId,
		LastSeq:          uint64(s.committed),
		ServerTimeMs:     now.UnixMilli(),
		HeartbeatSeconds: int32(s.cfg.HeartbeatTimeout / time.Second / 2),
	}
	if s.needsCompensation(l, first) {
		sess.next = compFrom
		ok.CompensationFromSeq = uint64(compFrom)
		ok.CursorTooOld = cursorTooOld(l, first) && persistence.Seq(l.GetCursor()) <= s.committed
		ok.CursorAhead = cursorAhead(l, s.committed)
	} else {
		sess.next = persistence.Seq(l.GetCursor()) + 1
		sess.cursor = persistence.Seq(l.GetCursor())
	}
	s.sessions.put(sess)

	if !s.readOnly {
		rec := mustMarshal(&actorpb.DeviceRecord{Info: sess.info(), Cursor: uint64(sess.cursor), LastSeenMs: now.UnixMilli()})
		events = append(events, s.deviceEvent(wire.DeviceEvent_LOGGED_IN, sess.info(), now))
		effs = append(effs, s.appendEntries(events, persistence.AppendRequest{
			Devices: []persistence.Device{{DeviceID: sess.info().DeviceId, Data: rec, Cursor: sess.cursor}},
		}))
	}
	effs = append(effs, s.notify(EventDeviceLogin, sess.info(), nil, "", now))
	if !wasOnline {
		effs = append(effs, s.notify(EventUserOnline, sess.info(), nil, "", now))
	}
	effs = append(effs, s.presence(), effCatchup{key: key})
	return &wire.Frame{Body: &wire.Frame_LoginOk{LoginOk: ok}}, effs
}

// needsCompensation: a device without a cursor (new, reinstalled), or with
// a cursor beyond the log (not this user's, or a wiped device), gets the
// compensation window instead of a catch-up from its cursor.
func (s *userState) needsCompensation(l *wire.Login, first persistence.Seq) bool {
	return !l.GetHasCursor() || persistence.Seq(l.GetCursor()) > s.committed || cursorTooOld(l, first)
}

// cursorAhead: the device has seqs the log does not (the store lost data
// or was restored from a backup). Never accepted silently: the device is
// told to drop what it has above LoginOk.last_seq and gets the
// compensation window.
func cursorAhead(l *wire.Login, committed persistence.Seq) bool {
	return l.GetHasCursor() && persistence.Seq(l.GetCursor()) > committed
}

// cursorTooOld: entries right after the cursor were removed by retention.
func cursorTooOld(l *wire.Login, first persistence.Seq) bool {
	return l.GetHasCursor() && persistence.Seq(l.GetCursor())+1 < first
}

// catchupPage is catchupPageAt for entries read in this turn.
func (s *userState) catchupPage(key sessionKey, entries []*wire.Entry, limit int) []effect {
	return s.catchupPageAt(key, entries, limit, s.committed)
}

// catchupPageAt sends the login catch-up's entries read after
// sess.next-1 (up to limit of them, as pages of at most pageLimit, in one
// push) and either asks for the next read or switches the session to live
// pushes. readAt is the committed seq when the read began: every entry up
// to it was in the store for the read. An entry committed since (it was
// not pushed: the session is not live) may be missing from a short read,
// so then the catch-up reads on; entries committed after the session
// turns live are pushed. Any entry both paged and pushed arrives twice and
// the device drops the copy by seq; none falls between the two.
func (s *userState) catchupPageAt(key sessionKey, entries []*wire.Entry, limit int, readAt persistence.Seq) []effect {
	sess := s.sessions.get(key)
	if sess == nil || sess.live {
		return nil
	}
	if n := len(entries); n > 0 {
		sess.next = persistence.Seq(entries[n-1].GetSeq()) + 1
	}
	more := len(entries) >= limit || s.committed > max(sess.next-1, readAt)
	var frames []*wire.Frame
	for first := true; first || len(entries) > 0; first = false {
		n := min(len(entries), pageLimit)
		frames = append(frames, &wire.Frame{Body: &wire.Frame_SyncPage{SyncPage: &wire.SyncPage{
			Entries: entries[:n:n], HasMore: more || n < len(entries), LastSeq: uint64(s.committed),
		}}})
		entries = entries[n:]
	}
	if more {
		return []effect{effPush{gw: key.gw(), sids: []uint64{key.sid}, frames: frames}, effCatchup{key: key}}
	}
	sess.live = true
	// Then the conversations with unread messages (SPEC: "on login the
	// device gets every conversation with unread > 0 and its last message"),
	// in the same push: one message to the gateway per login, not two.
	frames = append(frames, &wire.Frame{Body: &wire.Frame_ConversationList{ConversationList: s.conversationList(false)}})
	return []effect{effPush{gw: key.gw(), sids: []uint64{key.sid}, frames: frames}}
}

// syncPage answers a SyncRequest (gap pull) with entries the shell read.
func (s *userState) syncPage(key sessionKey, reqID uint64, entries []*wire.Entry, limit int) []effect {
	return []effect{s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_SyncPage{SyncPage: &wire.SyncPage{
		Entries: entries, HasMore: len(entries) >= limit, LastSeq: uint64(s.committed),
	}}})}
}

// listDevices answers ListDevices: the user's live sessions, oldest first.
func (s *userState) listDevices(key sessionKey, reqID uint64) []effect {
	list := &wire.DeviceList{Devices: s.presence().(effPresence).devices}
	return []effect{s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_DeviceList{DeviceList: list}})}
}

// closed forgets a session that ended. A logout is a device event worth
// showing the user's other devices; a drop is not (presence covers it).
func (s *userState) closed(key sessionKey, logout bool, now time.Time) []effect {
	sess := s.sessions.get(key)
	if sess == nil {
		return nil
	}
	s.flushCursor(sess)
	s.sessions.del(key)
	reason := "dropped"
	effs := s.dropWill(sess, logout, now)
	if logout {
		reason = "logout"
	}
	if logout && !s.readOnly {
		effs = append(effs, s.appendEntries([]*wire.Entry{s.deviceEvent(wire.DeviceEvent_LOGGED_OUT, sess.info(), now)}, persistence.AppendRequest{}))
	}
	effs = append(effs, s.notify(EventDeviceLogout, sess.info(), nil, reason, now))
	if len(s.sessions) == 0 {
		effs = append(effs, s.notify(EventUserOffline, sess.info(), nil, reason, now))
	}
	return append(effs, s.presence())
}

// applyPolicy switches to policy p and kicks (reason POLICY) the sessions
// the new policy no longer allows, oldest first.
func (s *userState) applyPolicy(p Policy, now time.Time) []effect {
	p = p.withDefaults()
	s.policy = &p
	live := make([]liveLogin, 0, len(s.sessions))
	for _, sess := range s.sessions {
		k := sess.key
		live = append(live, liveLogin{key: k, device: sess.info().GetDeviceId(), class: sess.class.class(), tag: sess.info().GetTag(), order: sess.order})
	}
	keys := enforce(*s.policy, live)
	if len(keys) == 0 {
		return nil
	}
	var events []*wire.Entry
	var effs []effect
	for _, k := range keys {
		sess := s.sessions.get(k)
		events = append(events, s.deviceEvent(wire.DeviceEvent_KICKED, sess.info(), now))
		effs = append(effs, effKick{key: k, kick: &wire.Kick{Reason: wire.Kick_POLICY, CloseCode: wire.CloseKickedByPolicy}},
			s.notify(EventDeviceKicked, sess.info(), nil, wire.Kick_POLICY.String(), now))
		s.flushCursor(sess)
		s.sessions.del(k)
	}
	effs = append(effs, s.appendEntries(events, persistence.AppendRequest{}))
	return append(effs, s.presence())
}

// adminKick ends the sessions of device (every session if device is ""),
// forced offline through the server API.
func (s *userState) adminKick(device string, now time.Time) ([]*wire.DeviceInfo, []effect) {
	var keys []sessionKey
	for _, sess := range s.sessions {
		k := sess.key
		if device == "" || sess.info().GetDeviceId() == device {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	slices.SortFunc(keys, func(a, b sessionKey) int { return cmpUint(s.sessions.get(a).order, s.sessions.get(b).order) })
	var kicked []*wire.DeviceInfo
	var events []*wire.Entry
	var effs []effect
	for _, k := range keys {
		sess := s.sessions.get(k)
		kicked = append(kicked, sess.info())
		events = append(events, s.deviceEvent(wire.DeviceEvent_KICKED, sess.info(), now))
		effs = append(effs, effKick{key: k, kick: &wire.Kick{Reason: wire.Kick_ADMIN, CloseCode: wire.CloseKickedByAdmin}},
			s.notify(EventDeviceKicked, sess.info(), nil, wire.Kick_ADMIN.String(), now))
		s.flushCursor(sess)
		s.sessions.del(k)
	}
	effs = append(effs, s.appendEntries(events, persistence.AppendRequest{}))
	if len(s.sessions) == 0 {
		effs = append(effs, s.notify(EventUserOffline, kicked[len(kicked)-1], nil, wire.Kick_ADMIN.String(), now))
	}
	return kicked, append(effs, s.presence())
}

// notify builds a session event about one device for the app backend; nil
// (an effect the shell skips) when nobody publishes them: an event per
// login and two per first device were allocated for nothing.
func (s *userState) notify(t EventType, dev, by *wire.DeviceInfo, reason string, now time.Time) effect {
	if s.cfg.noEvents {
		return nil
	}
	return effNotify{ev: Event{Type: t, UserID: s.user, Device: dev, KickedBy: by, Reason: reason, AtMS: now.UnixMilli()}}
}

// presence publishes the live sessions, oldest login first.
func (s *userState) presence() effect {
	if len(s.sessions) == 1 {
		return effPresence{devices: s.sessions[0].alone[:]}
	}
	devs := make([]*wire.DeviceInfo, len(s.sessions))
	for i, sess := range s.sessions {
		devs[i] = sess.info()
	}
	return effPresence{devices: devs}
}

// deviceEvent builds a log entry (seq assigned) for a device change.
func (s *userState) deviceEvent(kind wire.DeviceEvent_Kind, info *wire.DeviceInfo, now time.Time) *wire.Entry {
	t := s.nextTime(now)
	s.lastSeq++
	return &wire.Entry{Seq: uint64(s.lastSeq), ServerTimeMs: t, Kind: &wire.Entry_Device{Device: &wire.DeviceEvent{Kind: kind, Device: info}}}
}

// appendEntries submits entries (seqs already assigned, consecutive) with
// req's side effects; on commit they are pushed to the live sessions.
func (s *userState) appendEntries(entries []*wire.Entry, req persistence.AppendRequest) effect {
	for _, e := range entries {
		req.Entries = append(req.Entries, persistence.Entry{Seq: persistence.Seq(e.GetSeq()), TimeMS: e.GetServerTimeMs(), Data: mustMarshal(e)})
	}
	c := &commit{entries: entries}
	if n := len(entries); n > 0 {
		c.lastSeq = persistence.Seq(entries[n-1].GetSeq())
	}
	return s.submit(req, c)
}

func (s *userState) cursorAck(key sessionKey, seq uint64, now time.Time) []effect {
	sess := s.sessions.get(key)
	if sess == nil {
		return nil
	}
	c := min(persistence.Seq(seq), s.committed)
	if c <= sess.cursor {
		return nil
	}
	sess.cursor = c
	setIn(&s.cursors, sess.info().GetDeviceId(), c)
	return s.receiptsDelivered(c, now)
}

func (s *userState) flushCursor(sess *session) {
	if sess.cursor > 0 {
		setIn(&s.cursors, sess.info().GetDeviceId(), sess.cursor)
	}
}

// ---------------------------------------------------------------- send

// validateSend checks a Send against the rules; the error is for the
// client.
func validateSend(m *wire.Send) (wire.Code, error) {
	if err := checkID("client_message_id", m.GetClientMessageId()); err != nil {
		return wire.CodeInvalidArgument, err
	}
	conv := m.GetConversation()
	switch conv.GetType() {
	case wire.Conversation_DIRECT:
		if err := checkID("conversation id", conv.GetId()); err != nil {
			return wire.CodeInvalidArgument, err
		}
	case wire.Conversation_GROUP:
		return wire.CodeInvalidArgument, fmt.Errorf("group messages go through the group (a device's Send or POST /v1/messages); a will cannot address a group")
	default:
		return wire.CodeInvalidArgument, fmt.Errorf("conversation type must be DIRECT or GROUP")
	}
	if t := m.GetType(); t <= 0 || (t > int32(wire.MessageType_LOCATION) && t < 1000) {
		return wire.CodeInvalidArgument, fmt.Errorf("message type %d: use 1-6 (built-in) or >= 1000 (custom)", t)
	}
	if len(m.GetMentionList()) > maxMentions {
		return wire.CodeInvalidArgument, fmt.Errorf("mention_list has %d entries, at most %d", len(m.GetMentionList()), maxMentions)
	}
	for _, u := range m.GetMentionList() {
		if err := checkID("mention_list entry", u); err != nil {
			return wire.CodeInvalidArgument, err
		}
	}
	if len(m.GetAttributes()) > maxAttributes {
		return wire.CodeInvalidArgument, fmt.Errorf("%d attributes, at most %d", len(m.GetAttributes()), maxAttributes)
	}
	for k := range m.GetAttributes() {
		if k == "" {
			return wire.CodeInvalidArgument, fmt.Errorf("attribute with an empty key")
		}
	}
	return 0, nil
}

const (
	maxMentions   = 500
	maxAttributes = 64
)

// messageOf builds the stored message of a Send: reader is whose copy it is
// (for the mentioned flag; "" for none).
func messageOf(m *wire.Send, id, sender, device string, conv *wire.Conversation, reader string, t int64) *wire.Message {
	return &wire.Message{
		MessageId:       id,
		ClientMessageId: m.GetClientMessageId(),
		Sender:          sender,
		SenderDevice:    device,
		Conversation:    conv,
		Type:            m.GetType(),
		Content:         m.GetContent(),
		Attributes:      m.GetAttributes(),
		MentionList:     m.GetMentionList(),
		MentionAll:      m.GetMentionAll(),
		Mentioned:       reader != "" && mentions(m, reader),
		Options:         m.GetOptions(),
		ServerTimeMs:    t,
	}
}

func mentions(m *wire.Send, reader string) bool {
	if m.GetMentionAll() {
		return true
	}
	for _, u := range m.GetMentionList() {
		if u == reader {
			return true
		}
	}
	return false
}

// send handles a one-to-one Send from a session: de-duplicate on the client
// message ID, else assign message ID and seq, append to this log (the
// entry is the pending fan-out: outbox.go), and on commit ack, carbon,
// deliver.
func (s *userState) send(key sessionKey, reqID uint64, m *wire.Send, now time.Time) []effect {
	sess := s.sessions.get(key)
	if sess == nil {
		return []effect{lostSession(key)}
	}
	return s.sendFrom(key, sess.info().GetDeviceId(), &key, true, reqID, m, now)
}

// sendFrom sends m for the requester key (a device session, or the server
// API), as device, pushing carbons to every live session but skip.
func (s *userState) sendFrom(key sessionKey, device string, skip *sessionKey, ownDevices bool, reqID uint64, m *wire.Send, now time.Time) []effect {
	if code, err := validateSend(m); err != nil {
		return []effect{s.replyErr(key, reqID, code, err.Error())}
	}
	if m.GetOptions().GetTransient() {
		return s.sendTransient(device, key, skip, ownDevices, reqID, m, now)
	}
	cmid := m.GetClientMessageId()
	if p := s.sending[cmid]; p != nil {
		p.waiters = append(p.waiters, waiter{key, reqID})
		return nil
	}
	if a := s.sentAcks.get(cmid); a != nil {
		dup := proto.CloneOf(a)
		dup.Duplicate = true
		return []effect{s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_SendAck{SendAck: dup}})}
	}
	if !m.GetFirstAttempt() {
		// A resend may name a send an earlier activation stored, or one
		// this one has forgotten: ask the store's dedup index.
		prior, err := s.rd.entryByKey(s.user, "c:"+cmid)
		if err != nil {
			return []effect{s.replyErr(key, reqID, wire.CodeUnavailable, "storage unavailable; retry")}
		}
		if prior != nil {
			pm := prior.GetMessage()
			return []effect{s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{
				MessageId: pm.GetMessageId(), Seq: prior.GetSeq(), ServerTimeMs: pm.GetServerTimeMs(), Duplicate: true,
			}}})}
		}
	}

	peer := m.GetConversation().GetId()
	t := s.nextTime(now)
	msg := messageOf(m, s.newID(), s.user, device, &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer}, s.user, t)
	s.lastSeq++
	seq := s.lastSeq
	entry := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Message{Message: msg}}

	req := persistence.AppendRequest{
		Entries: []persistence.Entry{{Seq: seq, TimeMS: t, Data: mustMarshal(entry)}},
		Dedup:   []persistence.DedupKey{{Key: "c:" + cmid, Seq: seq}, {Key: "m:" + msg.MessageId, Seq: seq}},
		Convs:   []persistence.Conv{s.noteMessage(entry)},
	}
	c := &commit{lastSeq: seq, entries: []*wire.Entry{entry}, skip: skip, sendKey: cmid}
	if peer != s.user { // a note to self has no other party
		s.out.put(&req, c, seq, []*actorpb.OutboxItem{s.directDelivery(msg, seq)}, true)
	}
	setIn(&s.sending, cmid, &pendingSend{
		ack:     &wire.SendAck{MessageId: msg.MessageId, Seq: uint64(seq), ServerTimeMs: t},
		waiters: []waiter{{key, reqID}},
	})
	return []effect{s.submit(req, c)}
}

func (s *userState) nextTime(now time.Time) int64 {
	t := max(now.UnixMilli(), s.lastTime)
	s.lastTime = t
	return t
}

// submit queues req with its commit record; the caller returns the effect.
func (s *userState) submit(req persistence.AppendRequest, c *commit) effect {
	req.User, req.Epoch = s.user, s.epoch
	s.commits = append(s.commits, c)
	return effAppend{req: req}
}

// ---------------------------------------------------------------- deliver

// deliver appends a message another user sent to this user, once per
// message ID, and answers DeliverAck when it is durable.
//
// Deliveries that arrive while an earlier one is being committed wait and
// go into the store together, in one append, when it completes
// (takeHeld): under a burst — a big group's messages, a busy peer — a
// member writes its conversation state once and pushes one frame per
// batch instead of per message, and the store takes one append for many
// entries. An idle member's delivery is appended at once, so a single
// message waits for nothing.
func (s *userState) deliver(d *actorpb.Deliver, now time.Time) []effect {
	m := d.GetMessage()
	id := m.GetMessageId()
	if id == "" || !ValidID(d.GetFromUser()) {
		return nil // malformed: nothing to ack, nothing to store
	}
	if s.delivering[id] {
		return nil // in flight or held: its commit answers
	}
	ackTo, ackKind, relay := d.GetFromUser(), "", ""
	if g := d.GetViaGroup(); g != "" {
		ackTo, ackKind, relay = g, GroupKind, d.GetRelayAddress()
	}
	if seq, ok := s.delivered.get(id); ok {
		// A repeat of a recent delivery (the sender's outbox re-sent it
		// before our ack arrived): answered without a store read, so
		// repeats cost little when deliveries lag.
		return []effect{effDeliverAck{to: ackTo, kind: ackKind, relay: relay, ack: &actorpb.DeliverAck{
			ToUser: s.user, MessageId: id, OriginSeq: d.GetOriginSeq(), Seq: uint64(seq),
		}}}
	}
	prior, err := s.deliveredBefore(id)
	if err != nil {
		return nil // the sender's outbox re-drives it
	}
	if prior != nil {
		return []effect{effDeliverAck{to: ackTo, kind: ackKind, relay: relay, ack: &actorpb.DeliverAck{
			ToUser: s.user, MessageId: id, OriginSeq: d.GetOriginSeq(), Seq: prior.GetSeq(),
		}}}
	}
	setIn(&s.delivering, id, true)
	if s.held == nil {
		s.held = getHeld()
	}
	s.held = append(s.held, heldDelivery{d: d, ackTo: ackTo, ackKind: ackKind, relay: relay})
	if s.deliveriesInFlight > 0 && len(s.held) < maxHeldDeliveries {
		return nil // appended with the others when the commit ahead completes
	}
	return []effect{s.takeHeld(now)}
}

// heldDelivery is a delivery waiting for the delivery commit ahead of it.
type heldDelivery struct {
	d                     *actorpb.Deliver
	ackTo, ackKind, relay string
}

// maxHeldDeliveries bounds one coalesced append (and what a member holds
// in memory beyond its mailbox).
const maxHeldDeliveries = 256

// takeHeld appends every held delivery in one append: one entry and dedup
// key each, the conversation states they change once each.
func (s *userState) takeHeld(now time.Time) effect {
	held := s.held
	s.held = nil
	var req persistence.AppendRequest
	c := &commit{deliverKeys: make([]string, 0, len(held)), deliverAcks: make([]effDeliverAck, 0, len(held)), entries: make([]*wire.Entry, 0, len(held))}
	req.Entries = make([]persistence.Entry, 0, len(held))
	req.Dedup = make([]persistence.DedupKey, 0, len(held))
	var convs []*actorpb.ConvState // changed, each once, in first-change order
	for _, h := range held {
		m := h.d.GetMessage()
		id := m.GetMessageId()
		t := s.nextTime(now)
		s.lastSeq++
		seq := s.lastSeq
		entry := &wire.Entry{Seq: uint64(seq), ServerTimeMs: t, Kind: &wire.Entry_Message{Message: m}}
		req.Entries = append(req.Entries, persistence.Entry{Seq: seq, TimeMS: t, Data: messageEntryBytes(entry, h.d.GetMessageWire())})
		req.Dedup = append(req.Dedup, persistence.DedupKey{Key: "m:" + id, Seq: seq})
		if cs := s.noteDeliveredState(entry, h.d.GetOriginSeq()); !slices.Contains(convs, cs) {
			convs = append(convs, cs)
		}
		c.entries = append(c.entries, entry)
		c.deliverKeys = append(c.deliverKeys, id)
		c.deliverAcks = append(c.deliverAcks, effDeliverAck{to: h.ackTo, kind: h.ackKind, relay: h.relay, ack: &actorpb.DeliverAck{
			ToUser: s.user, MessageId: id, OriginSeq: h.d.GetOriginSeq(), Seq: uint64(seq),
		}})
	}
	putHeld(held)
	req.Convs = make([]persistence.Conv, len(convs))
	for i, cs := range convs {
		req.Convs[i] = convRecord(cs)
	}
	c.lastSeq, c.held = s.lastSeq, true
	s.deliveriesInFlight++
	return s.submit(req, c)
}

// messageEntryBytes marshals a message entry; with msgWire (the entry's
// message, marshalled once by the relay for every member it delivers to)
// it writes the entry's fields around those bytes instead.
func messageEntryBytes(e *wire.Entry, msgWire []byte) []byte {
	if len(msgWire) == 0 {
		return mustMarshal(e)
	}
	b := make([]byte, 0, len(msgWire)+24)
	b = protowire.AppendTag(b, 1, protowire.VarintType) // seq
	b = protowire.AppendVarint(b, e.GetSeq())
	b = protowire.AppendTag(b, 2, protowire.VarintType) // server_time_ms
	b = protowire.AppendVarint(b, uint64(e.GetServerTimeMs()))
	b = protowire.AppendTag(b, 10, protowire.BytesType) // message
	return protowire.AppendBytes(b, msgWire)
}

// heldPool recycles the slices deliveries are held in: a member holds one
// only while deliveries wait, so an idle member keeps none.
var heldPool = sync.Pool{New: func() any { s := make([]heldDelivery, 0, 32); return &s }}

func getHeld() []heldDelivery { return (*heldPool.Get().(*[]heldDelivery))[:0] }

func putHeld(h []heldDelivery) {
	if cap(h) > 4*maxHeldDeliveries {
		return
	}
	clear(h)
	h = h[:0]
	heldPool.Put(&h)
}

// deliverAck records that a fan-out is durable on the other side; the
// fan-out mark moves (or the outbox item is deleted) with a later flush.
func (s *userState) deliverAck(a *actorpb.DeliverAck) []effect {
	return s.deliverAckAt(a, time.Time{})
}

// deliverAckAt is deliverAck that also learns how long fan-outs take to be
// confirmed (a zero now learns nothing), which spaces the re-sends.
func (s *userState) deliverAckAt(a *actorpb.DeliverAck, now time.Time) []effect {
	if s.out.ack(a, now) && s.out.doneCount() >= flushBatch {
		return []effect{s.flush()}
	}
	return nil
}

const flushBatch = 128

// ---------------------------------------------------------------- commits

// appendDone completes the oldest submitted append.
func (s *userState) appendDone(err error, now time.Time) []effect {
	if len(s.commits) == 0 {
		return nil
	}
	c := s.commits[0]
	s.commits[0] = nil
	s.commits = s.commits[1:]
	if len(s.commits) == 0 {
		// An empty slice of the old array keeps the array: an idle user
		// would hold it (a heap object per user) until its next append.
		s.commits = nil
	}
	if err != nil {
		return s.fail(c, err)
	}
	if c.lastSeq > s.committed {
		s.committed = c.lastSeq
	}
	var effs []effect
	if c.sendKey != "" {
		if p := s.sending[c.sendKey]; p != nil {
			s.sentAcks.add(c.sendKey, p.ack)
			for i, w := range p.waiters {
				ack := proto.Clone(p.ack).(*wire.SendAck)
				ack.Duplicate = i > 0
				effs = append(effs, s.reply(w.key, &wire.Frame{Id: w.reqID, Body: &wire.Frame_SendAck{SendAck: ack}}))
			}
			deleteIn(&s.sending, c.sendKey)
		}
	}
	if len(c.entries) > 0 {
		effs = append(effs, s.pushLive(c.entries, c.skip)...)
	}
	effs = append(effs, s.out.sent(c.fanout, c.logged, now)...)
	if len(c.deliverKeys) > 0 {
		first := c.lastSeq - persistence.Seq(len(c.deliverKeys)) + 1
		for i, id := range c.deliverKeys {
			deleteIn(&s.delivering, id)
			s.delivered.add(id, first+persistence.Seq(i))
		}
	}
	if c.recallKey != "" {
		deleteIn(&s.changing, c.recallKey)
	}
	effs = append(effs, c.after...)
	for _, a := range c.deliverAcks {
		effs = append(effs, a)
	}
	if c.held {
		s.deliveriesInFlight--
	}
	if s.deliveriesInFlight == 0 && len(s.held) > 0 {
		effs = append(effs, s.takeHeld(now))
	}
	return effs
}

// fail handles a failed append: nothing after it can be acked (its seqs
// are not durable and the store refuses later ones), so every waiting
// request is told to retry, every session is sent to log in again, and the
// actor stops. The next activation starts from what is durable.
func (s *userState) fail(first *commit, err error) []effect {
	s.failed = true
	var effs []effect
	for _, p := range s.sending {
		for _, w := range p.waiters {
			effs = append(effs, s.reply(w.key, storeErrFrame(w.reqID, err, "message not stored; retry")))
		}
	}
	for _, sess := range s.sessions {
		k := sess.key
		effs = append(effs, lostSession(k))
	}
	s.sending = nil
	s.sessions = nil
	s.commits = nil
	s.held = nil // not acked: their senders re-drive them
	return append(effs, s.presence(), effStop{reason: err.Error()})
}

// pushLive pushes entries to every live session but skip, grouped by
// gateway.
func (s *userState) pushLive(entries []*wire.Entry, skip *sessionKey) []effect {
	var effs []effect
	var f *wire.Frame
	for _, sess := range s.sessions {
		k := sess.key
		if !sess.live || (skip != nil && k == *skip) {
			continue
		}
		if f == nil {
			f = &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: entries}}}
		}
		g := k.gw()
		i := slices.IndexFunc(effs, func(e effect) bool { return e.(effPush).gw == g })
		if i < 0 {
			effs = append(effs, effPush{gw: g, sids: []uint64{k.sid}, frames: []*wire.Frame{f}})
			continue
		}
		p := effs[i].(effPush)
		p.sids = append(p.sids, k.sid)
		effs[i] = p
	}
	return effs
}

// ---------------------------------------------------------------- timers

// tick re-drives unconfirmed fan-outs (with back-off) and flushes cursors,
// outbox deletions and the fan-out mark.
func (s *userState) tick(now time.Time) []effect {
	effs := s.out.tick(now)
	if !s.readOnly && (s.out.needsFlush(s.lastSeq) || len(s.cursors) > 0) {
		effs = append(effs, s.flush())
	}
	return effs
}

func redriveDelay(attempts int) time.Duration {
	d := time.Second << min(attempts-1, 5) // 1 s … 32 s
	return d
}

// ackLatency is a moving average of how long first sends of fan-outs took
// to be confirmed. Re-sends wait for several times that (at least the
// fixed back-off): when recipients lag — a busy cluster, a slow store —
// their queues still hold the first copies, and re-sending everything
// every second would only multiply the work that makes them lag. A
// recipient that is gone sends no confirmations, so the average keeps the
// value it had while things were healthy, and re-sends come early.
type ackLatency struct{ avg time.Duration }

func (l *ackLatency) observe(d time.Duration) {
	if d < 0 {
		return
	}
	if l.avg == 0 {
		l.avg = d
		return
	}
	l.avg += (d - l.avg) / 8
}

// maxFirstRedrive caps how long a first re-send may wait, however slow
// confirmations have been.
const maxFirstRedrive = 30 * time.Second

func (l *ackLatency) redriveDelay(attempts int) time.Duration {
	base := redriveDelay(1)
	if adaptive := min(4*l.avg, maxFirstRedrive); adaptive > base {
		base = adaptive
	}
	return min(base<<min(attempts-1, 5), 2*maxFirstRedrive)
}

// flush writes pending cursors, outbox deletions and the fan-out mark in
// one append.
func (s *userState) flush() effect {
	var req persistence.AppendRequest
	s.out.flush(&req, s.lastSeq)
	for dev, c := range s.cursors {
		req.Devices = append(req.Devices, persistence.Device{DeviceID: dev, Cursor: c})
	}
	s.cursors = nil
	return s.submit(req, &commit{})
}

// needsTick reports whether the shell should arm the timer.
func (s *userState) needsTick() bool {
	return s.out.busy() || s.out.needsFlush(s.lastSeq) || len(s.cursors) > 0
}

// idle reports whether the actor may passivate: no session, nothing in
// flight, nothing to re-drive or flush.
func (s *userState) idle() bool {
	return len(s.sessions) == 0 && len(s.commits) == 0 && len(s.wills) == 0 && !s.needsTick()
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err)) // only invalid UTF-8 in a string field can fail
	}
	return b
}

// recent remembers the values of the last keys added, up to a size: a
// bounded, in-memory index. It allocates on first use (a pointer until
// then: most idle users never send or receive in an activation). Only the
// actor's goroutine touches it.
type recent[V any] struct{ r *recentRing[V] }

type recentRing[V any] struct {
	vals map[string]V
	ring []string // keys in insertion order, a ring once full
	next int      // where the next key goes once full
}

func (rr *recent[V]) get(key string) (V, bool) {
	if rr.r == nil {
		var zero V
		return zero, false
	}
	v, ok := rr.r.vals[key]
	return v, ok
}

// add sets key's value, evicting the oldest key if size keys are kept
// already; it returns the evicted key ("" if none).
func (rr *recent[V]) add(key string, v V, size int) (evicted string) {
	if rr.r == nil {
		// Not sized for size keys: most users send or receive a few
		// messages an activation, and a map made for 256 keys is ~10 KB
		// to allocate and clear (a steady chat of 100,000 users spent
		// 15 % of its CPU doing that). It grows as keys come.
		rr.r = &recentRing[V]{vals: make(map[string]V)}
	}
	r := rr.r
	if _, ok := r.vals[key]; ok {
		r.vals[key] = v
		return ""
	}
	if len(r.ring) < size {
		r.ring = append(r.ring, key)
	} else {
		evicted = r.ring[r.next]
		delete(r.vals, evicted)
		r.ring[r.next] = key
		r.next = (r.next + 1) % size
	}
	r.vals[key] = v
	return evicted
}

// recentIndex remembers the last recentSize keys added, with their seqs:
// a bounded, in-memory front for the store's dedup index.
type recentIndex struct {
	recent[persistence.Seq]
	// forgottenMS is the newest ULID time among the keys evicted (keys
	// that are not ULIDs — group events — are not messages and do not
	// count).
	forgottenMS int64
}

// recentSize bounds recentIndex: enough for the deliveries a sender has in
// flight to one recipient (its send window) and a little more.
const recentSize = 64

func (r *recentIndex) add(key string, seq persistence.Seq) {
	if old := r.recent.add(key, seq, recentSize); old != "" {
		if ms, ok := ulidMS(old); ok {
			r.forgottenMS = max(r.forgottenMS, ms)
		}
	}
}

// clockSkew bounds how far the clocks of two nodes may disagree: message
// IDs are ULIDs minted with the sender's node's clock.
const clockSkew = 5 * time.Second

// deliveredBefore returns the entry under which message id is already in
// this log, or nil. It reads the store's dedup index unless the answer is
// known without it: a message minted (by its ID's time) more than
// clockSkew after this activation began cannot have been delivered by an
// earlier activation — the epoch fence stopped those before this one
// started — nor by this one if it is newer than every delivery the
// bounded index has forgotten.
//
// Also known without it: a message minted more than clockSkew after the
// newest entry the log held at activation. Had an earlier activation
// delivered it, its entry would be in the log with a time no earlier than
// the message's minting less clockSkew (entry times never run behind the
// appending node's clock, which is within clockSkew of the minting one's).
// That spares the read for every message a just-activated recipient gets,
// not only for those minted 5 s after it began.
func (s *userState) deliveredBefore(id string) (*wire.Entry, error) {
	if ms, ok := ulidMS(id); ok && ms > s.delivered.forgottenMS {
		skew := clockSkew.Milliseconds()
		if s.freshMS != 0 && ms >= s.freshMS+skew {
			return nil, nil
		}
		if s.logTimeKnown && ms > s.logNewestMS+skew {
			return nil, nil
		}
	}
	return s.rd.entryByKey(s.user, "m:"+id)
}

// ulidMS returns the time of a ULID message ID in Unix milliseconds.
func ulidMS(id string) (int64, bool) {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return 0, false
	}
	return int64(u.Time()), true
}

// recentAcks remembers the acks of the last recentAckSize sends, by client
// message ID: a resend soon after its ack was lost is answered without a
// store read.
type recentAcks struct{ recent[*wire.SendAck] }

const recentAckSize = 256

func (r *recentAcks) get(cmid string) *wire.SendAck { a, _ := r.recent.get(cmid); return a }

func (r *recentAcks) add(cmid string, a *wire.SendAck) { r.recent.add(cmid, a, recentAckSize) }

// sessionSet is a user's live sessions in login order, oldest first. A
// user has a handful (one per device), so a slice: a map's first bucket
// alone costs more than a few sessions' pointers.
type sessionSet []*session

func (ss sessionSet) get(k sessionKey) *session {
	for _, s := range ss {
		if s.key == k {
			return s
		}
	}
	return nil
}

// put adds sess, or replaces the session with its key in place. A lone
// session is held in its own self array (a second one's append copies it
// out, its capacity being one), so the set never holds on to a session
// it no longer has.
func (ss *sessionSet) put(sess *session) {
	for i, s := range *ss {
		if s.key == sess.key {
			if len(*ss) == 1 {
				*ss = nil // s's own array: sess takes its place below
				break
			}
			(*ss)[i] = sess
			return
		}
	}
	if len(*ss) == 0 {
		sess.self[0] = sess
		*ss = sess.self[:]
		return
	}
	*ss = append(*ss, sess)
}

func (ss *sessionSet) del(k sessionKey) {
	if *ss = slices.DeleteFunc(*ss, func(s *session) bool { return s.key == k }); len(*ss) == 0 {
		*ss = nil // not the deleted one's array
	}
}
