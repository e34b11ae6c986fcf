package actors

import (
	"testing"
	"time"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

func setWill(h *harness, sid uint64, peer string, grace int32) []effect {
	return h.st.setWill(sk(sid), 50, &wire.SetWill{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
		Message:      &wire.Send{Type: int32(wire.MessageType_TEXT), Content: []byte("gone"), MentionList: []string{peer}},
		GraceSeconds: grace,
	})
}

func transients(effs []effect) (toPeer []*actorpb.TransientDeliver, pushed []*wire.Message) {
	for _, e := range effs {
		switch e := e.(type) {
		case effTransient:
			toPeer = append(toPeer, e.msg)
		case effPush:
			for _, f := range e.frames {
				pushed = append(pushed, f.GetPush().GetTransient()...)
			}
		}
	}
	return toPeer, pushed
}

func TestWillFiresOnDropNotOnLogout(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	h.login(2, "laptop", false, 0)
	if f := framesTo(setWill(h, 1, "bob", 0), 1); len(f) != 1 || f[0].GetOk() == nil || f[0].GetId() != 50 {
		t.Fatalf("SetWill answered %v", f)
	}
	setWill(h, 1, "bob", 0) // the last one set wins: still one will
	peer, pushed := transients(h.st.closed(sk(1), false, t0))
	if len(peer) != 1 || peer[0].GetFromUser() != "alice" {
		t.Fatalf("drop delivered %v to the peer, want one will", peer)
	}
	m := peer[0].GetMessage()
	if !m.GetWill() || m.GetConversation().GetId() != "alice" || !m.GetMentioned() || string(m.GetContent()) != "gone" || m.GetMessageId() == "" || m.GetSenderDevice() != "phone" {
		t.Fatalf("will as bob sees it: %v", m)
	}
	if len(pushed) != 1 || pushed[0].GetConversation().GetId() != "bob" {
		t.Fatalf("alice's other device got %v, want the will (conversation bob)", pushed)
	}
	if len(appends(h.st.closed(sk(2), false, t0))) != 0 {
		t.Fatal("a will must never be stored")
	}

	// Logout discards it.
	h.login(3, "phone", false, 0)
	setWill(h, 3, "bob", 0)
	if peer, _ := transients(h.st.closed(sk(3), true, t0)); len(peer) != 0 {
		t.Fatalf("logout fired the will: %v", peer)
	}
	// Clearing it: an empty conversation.
	h.login(4, "phone", false, 0)
	setWill(h, 4, "bob", 0)
	h.st.setWill(sk(4), 51, &wire.SetWill{})
	if peer, _ := transients(h.st.closed(sk(4), false, t0)); len(peer) != 0 {
		t.Fatalf("a cleared will fired: %v", peer)
	}
}

func TestWillGracePeriod(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	setWill(h, 1, "bob", 30)
	loginID := h.st.sessions.get(sk(1)).info().GetLoginId()
	effs := h.st.closed(sk(1), false, t0)
	var timer *effWillTimer
	for _, e := range effs {
		if w, ok := e.(effWillTimer); ok {
			timer = &w
		}
	}
	if peer, _ := transients(effs); len(peer) != 0 || timer == nil || timer.after != 30*time.Second || timer.loginID != loginID {
		t.Fatalf("drop with grace: fired %v, timer %+v", peer, timer)
	}
	if h.st.idle() {
		t.Fatal("an actor with a pending will must not passivate")
	}
	// The device is back within the grace period: nothing fires.
	h.login(2, "phone", false, 0)
	if effs := h.st.willDue("phone", loginID, t0.Add(30*time.Second)); len(effs) != 0 {
		t.Fatalf("will fired although the device resumed: %v", effs)
	}

	// Not back: it fires when due.
	setWill(h, 2, "bob", 30)
	id2 := h.st.sessions.get(sk(2)).info().GetLoginId()
	h.st.closed(sk(2), false, t0)
	if peer, _ := transients(h.st.willDue("phone", id2, t0.Add(30*time.Second))); len(peer) != 1 {
		t.Fatalf("will not fired after the grace period: %v", peer)
	}
	if effs := h.st.willDue("phone", id2, t0.Add(31*time.Second)); len(effs) != 0 {
		t.Fatal("a will fired twice")
	}
}

func TestWillValidation(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", false, 0)
	for name, w := range map[string]*wire.SetWill{
		"bad peer":   {Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "b b"}, Message: &wire.Send{Type: 1}},
		"bad type":   {Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Message: &wire.Send{Type: 0}},
		"long grace": {Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Message: &wire.Send{Type: 1}, GraceSeconds: 301},
	} {
		f := framesTo(h.st.setWill(sk(1), 9, w), 1)
		if len(f) != 1 || f[0].GetError().GetName() != "INVALID_ARGUMENT" {
			t.Fatalf("%s: %v", name, f)
		}
	}
	if h.st.sessions.get(sk(1)).will != nil {
		t.Fatal("a refused will was kept")
	}
}

func TestTransientFromPeerPushedLiveOnly(t *testing.T) {
	h := newHarness(t, "bob")
	h.login(1, "phone", false, 0)
	// A second session still catching up does not get it.
	h.st.login(sk(2), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "web", Platform: "web"}}, t0, 1, 1)
	effs := h.st.transient(&actorpb.TransientDeliver{FromUser: "alice", Message: &wire.Message{MessageId: "w", Will: true}})
	if len(framesTo(effs, 1)) != 1 || len(framesTo(effs, 2)) != 0 || len(appends(effs)) != 0 {
		t.Fatalf("transient effects %v", effs)
	}
}
