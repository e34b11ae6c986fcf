package actors

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// MaxWillGrace bounds SetWill.grace_seconds.
const MaxWillGrace = 300 * time.Second

// will is a session's last word: delivered to the conversation when the
// session ends without a logout (heartbeat timeout, broken connection),
// never stored. With a grace period it fires only if the same device has
// not logged in again by then, so a blip does not announce "went offline".
type will struct {
	msg   *wire.Message // from the sender's side; id and time set when it fires
	grace time.Duration
}

// pendingWill waits out its grace period.
type pendingWill struct {
	will    will
	loginID string // the ended session's login: a later login cancels it
}

// effWillTimer asks the shell to call willDue(device, loginID) after d.
type effWillTimer struct {
	device, loginID string
	after           time.Duration
}

// effTransient sends a never-stored notice to another user's actor.
type effTransient struct {
	to  string
	msg *actorpb.TransientDeliver
}

func (effWillTimer) isEffect() {}
func (effTransient) isEffect() {}

// setWill answers SetWill: the last one set wins; an empty conversation
// clears it.
func (s *userState) setWill(key sessionKey, reqID uint64, w *wire.SetWill) []effect {
	sess := s.sessions.get(key)
	if sess == nil {
		return []effect{lostSession(key)}
	}
	ok := s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	if w.GetConversation() == nil || w.GetConversation().GetId() == "" {
		sess.will = nil
		return []effect{ok}
	}
	m := proto.Clone(w.GetMessage()).(*wire.Send)
	if m == nil {
		m = &wire.Send{}
	}
	m.Conversation = w.GetConversation()
	if m.GetClientMessageId() == "" {
		m.ClientMessageId = "will"
	}
	if code, err := validateSend(m); err != nil {
		return []effect{s.replyErr(key, reqID, code, "will: "+err.Error())}
	}
	grace := time.Duration(w.GetGraceSeconds()) * time.Second
	if grace < 0 || grace > MaxWillGrace {
		return []effect{s.replyErr(key, reqID, wire.CodeInvalidArgument, fmt.Sprintf("will: grace_seconds must be 0-%d", int(MaxWillGrace/time.Second)))}
	}
	sess.will = &will{grace: grace, msg: &wire.Message{
		ClientMessageId: m.GetClientMessageId(),
		Sender:          s.user,
		SenderDevice:    sess.info().GetDeviceId(),
		Conversation:    m.GetConversation(),
		Type:            m.GetType(),
		Content:         m.GetContent(),
		Attributes:      m.GetAttributes(),
		MentionList:     m.GetMentionList(),
		MentionAll:      m.GetMentionAll(),
		Options:         m.GetOptions(),
		Will:            true,
	}}
	return []effect{ok}
}

// dropWill handles the will of a session that ended: a logout discards it;
// a drop fires it now, or after its grace period.
func (s *userState) dropWill(sess *session, logout bool, now time.Time) []effect {
	w := sess.will
	sess.will = nil
	if w == nil || logout {
		return nil
	}
	if w.grace == 0 {
		return s.fireWill(*w, now)
	}
	dev := sess.info().GetDeviceId()
	setIn(&s.wills, dev, &pendingWill{will: *w, loginID: sess.info().GetLoginId()})
	return []effect{effWillTimer{device: dev, loginID: sess.info().GetLoginId(), after: w.grace}}
}

// resumed cancels a pending will: the device is back.
func (s *userState) resumed(device string) { delete(s.wills, device) }

// willDue fires a pending will whose grace period passed, unless the
// device came back (or set off another drop) meanwhile.
func (s *userState) willDue(device, loginID string, now time.Time) []effect {
	p := s.wills[device]
	if p == nil || p.loginID != loginID {
		return nil
	}
	delete(s.wills, device)
	return s.fireWill(p.will, now)
}

// fireWill delivers a will: to the peer's online devices, and to this
// user's own online devices. Never stored, never retried.
func (s *userState) fireWill(w will, now time.Time) []effect {
	mine := proto.Clone(w.msg).(*wire.Message)
	mine.MessageId = s.newID()
	mine.ServerTimeMs = now.UnixMilli()
	mine.Mentioned = false
	var effs []effect
	if f := s.pushTransient(mine); f != nil {
		effs = append(effs, f...)
	}
	peer := mine.GetConversation().GetId()
	if peer != s.user {
		theirs := proto.Clone(mine).(*wire.Message)
		theirs.Conversation = &wire.Conversation{Type: wire.Conversation_DIRECT, Id: s.user}
		theirs.Mentioned = theirs.GetMentionAll() || contains(theirs.GetMentionList(), peer)
		effs = append(effs, effTransient{to: peer, msg: &actorpb.TransientDeliver{FromUser: s.user, Message: theirs}})
	}
	return effs
}

// sendTransient handles a transient Send (typing, status...): pushed to the
// online devices of the conversation — the peer's and this user's other
// ones — now, and nowhere else: no seq, no store, no retry, no dedup.
func (s *userState) sendTransient(device string, key sessionKey, skip *sessionKey, ownDevices bool, reqID uint64, m *wire.Send, now time.Time) []effect {
	peer := m.GetConversation().GetId()
	t := now.UnixMilli()
	mine := messageOf(m, s.newID(), s.user, device, &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer}, s.user, t)
	effs := []effect{s.reply(key, &wire.Frame{Id: reqID, Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{MessageId: mine.MessageId, ServerTimeMs: t}}})}
	if ownDevices {
		effs = append(effs, s.pushTransientExcept(mine, skip)...)
	}
	if peer != s.user {
		theirs := proto.Clone(mine).(*wire.Message)
		theirs.Conversation = &wire.Conversation{Type: wire.Conversation_DIRECT, Id: s.user}
		theirs.Mentioned = mentions(m, peer)
		effs = append(effs, effTransient{to: peer, msg: &actorpb.TransientDeliver{FromUser: s.user, Message: theirs}})
	}
	return effs
}

// transient pushes a never-stored message from another user to this
// user's live devices.
func (s *userState) transient(t *actorpb.TransientDeliver) []effect {
	if t.GetMessage() == nil || !ValidID(t.GetFromUser()) {
		return nil
	}
	return s.pushTransient(t.GetMessage())
}

func (s *userState) pushTransient(m *wire.Message) []effect { return s.pushTransientExcept(m, nil) }

// pushTransientExcept pushes m to every live session but skip.
func (s *userState) pushTransientExcept(m *wire.Message, skip *sessionKey) []effect {
	byGW := map[gwKey][]uint64{}
	var order []gwKey
	for _, sess := range s.sessions {
		k := sess.key
		if !sess.live || (skip != nil && k == *skip) {
			continue
		}
		g := k.gw()
		if _, ok := byGW[g]; !ok {
			order = append(order, g)
		}
		byGW[g] = append(byGW[g], k.sid)
	}
	f := &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{m}}}}
	var effs []effect
	for _, g := range order {
		effs = append(effs, effPush{gw: g, sids: byGW[g], frames: []*wire.Frame{f}})
	}
	return effs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
