package actors

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// probe records what an activation would receive.
type probe struct{ got chan any }

func (p *probe) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actorpb.TransientDeliver, *actorpb.PolicyChanged:
		p.got <- ctx.Message()
	}
}

// localRuntime is a runtime on a bare actor system (no cluster): enough
// for the presence table, the relay and the policy broadcast.
func localRuntime(t *testing.T, members Membership) *Runtime {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	rt := NewRuntime(Config{RequestTimeout: time.Second}, nil, nil, nil, log)
	rt.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return log }))
	rt.members = members
	t.Cleanup(rt.sys.Shutdown)
	return rt
}

func spawnProbe(t *testing.T, rt *Runtime) (*actor.PID, chan any) {
	t.Helper()
	got := make(chan any, 16)
	return rt.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &probe{got: got} })), got
}

func recv(t *testing.T, ch chan any) any {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
		return nil
	}
}

func nothing(t *testing.T, ch chan any) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("received %v, want nothing", m)
	case <-time.After(100 * time.Millisecond):
	}
}

func dev(id string) *wire.DeviceInfo { return &wire.DeviceInfo{DeviceId: id, Platform: "ios"} }

// The table answers the same whatever users' hashes: each user its own
// (the seeded hash), every user the same, and users in pairs.
func TestPresenceTable(t *testing.T) {
	for name, hash := range map[string]func(string) uint64{
		"seeded":    nil,
		"all alike": func(string) uint64 { return 7 },
		"in pairs":  func(u string) uint64 { return uint64(len(u) / 2) },
	} {
		t.Run(name, func(t *testing.T) {
			p := newPresence()
			p.hash = hash
			checkPresenceTable(t, p)
		})
	}
}

func checkPresenceTable(t *testing.T, p *presence) {
	t.Helper()
	a1, a2 := actor.NewPID("n1", "a1"), actor.NewPID("n1", "a2")
	p.set("alice", 3, a1, []*wire.DeviceInfo{dev("phone"), dev("laptop")})
	if e, ok := p.get("alice"); !ok || e.epoch != 3 || len(e.devices) != 2 {
		t.Fatalf("alice: %+v %v", e, ok)
	}
	// A stale activation's "offline" must not remove a newer one's entry.
	p.set("alice", 4, a2, []*wire.DeviceInfo{dev("phone")})
	p.clear("alice", a1)
	p.set("alice", 3, a1, nil)
	if e, ok := p.get("alice"); !ok || !e.pid.Equal(a2) {
		t.Fatalf("alice after a stale clear: %+v %v", e, ok)
	}
	p.set("bob", 1, a1, []*wire.DeviceInfo{dev("web")})
	got := p.query([]string{"bob", "carol", "alice"})
	if len(got) != 2 || got[0].GetUserId() != "bob" || got[1].GetUserId() != "alice" || got[1].GetEpoch() != 4 {
		t.Fatalf("query: %v", got)
	}
	if p.count() != 2 {
		t.Fatalf("count %d", p.count())
	}
	// Bob set again while alice holds the slot bob's hash may share, then
	// alice gone: bob is found once, with his latest entry, wherever he is.
	p.set("bob", 2, a1, []*wire.DeviceInfo{dev("web")})
	p.set("alice", 4, a2, nil)
	if _, ok := p.get("alice"); ok || p.count() != 1 {
		t.Fatal("alice still online")
	}
	p.set("bob", 3, a1, []*wire.DeviceInfo{dev("web")})
	p.set("carol", 1, a2, []*wire.DeviceInfo{dev("tab")})
	seen := map[string]persistence.Epoch{}
	p.each(func(user string, e presenceEntry) {
		if _, twice := seen[user]; twice || e.user != user {
			t.Fatalf("each: %s twice or named %q", user, e.user)
		}
		seen[user] = e.epoch
	})
	if len(seen) != 2 || seen["bob"] != 3 || seen["carol"] != 1 || p.count() != 2 {
		t.Fatalf("each: %v, count %d", seen, p.count())
	}
	p.clear("bob", nil)
	p.clear("carol", a1) // not carol's activation
	if _, ok := p.get("bob"); ok {
		t.Fatal("bob still online after a clear of any activation")
	}
	if e, ok := p.get("carol"); !ok || e.epoch != 1 || p.count() != 1 {
		t.Fatalf("carol after another activation's clear: %+v %v, count %d", e, ok, p.count())
	}
}

func TestMergePresenceHigherEpochWins(t *testing.T) {
	best := map[string]*actorpb.UserPresence{}
	mergePresence(best, &actorpb.PresenceResult{Users: []*actorpb.UserPresence{
		{UserId: "alice", Epoch: 7, Devices: []*wire.DeviceInfo{dev("new")}},
		{UserId: "bob", Epoch: 1, Devices: []*wire.DeviceInfo{dev("b")}},
	}})
	mergePresence(best, &actorpb.PresenceResult{Users: []*actorpb.UserPresence{
		{UserId: "alice", Epoch: 6, Devices: []*wire.DeviceInfo{dev("old")}},
		{UserId: "carol", Epoch: 2, Devices: []*wire.DeviceInfo{dev("c")}},
	}})
	if len(best) != 3 || best["alice"].GetDevices()[0].GetDeviceId() != "new" {
		t.Fatalf("merged %v", best)
	}
	// The order of the answers does not matter.
	best = map[string]*actorpb.UserPresence{}
	mergePresence(best, &actorpb.PresenceResult{Users: []*actorpb.UserPresence{{UserId: "alice", Epoch: 6, Devices: []*wire.DeviceInfo{dev("old")}}}})
	mergePresence(best, &actorpb.PresenceResult{Users: []*actorpb.UserPresence{{UserId: "alice", Epoch: 7, Devices: []*wire.DeviceInfo{dev("new")}}}})
	if best["alice"].GetDevices()[0].GetDeviceId() != "new" {
		t.Fatalf("merged %v", best)
	}
}

func TestDeliverTransientOnlyToLocalOnlineRecipients(t *testing.T) {
	rt := localRuntime(t, nil)
	pa, ga := spawnProbe(t, rt)
	pb, gb := spawnProbe(t, rt)
	rt.presence.set("a", 1, pa, []*wire.DeviceInfo{dev("x")})
	rt.presence.set("b", 1, pb, []*wire.DeviceInfo{dev("y")})
	msg := &wire.Message{MessageId: "T1", Sender: "a", MentionList: []string{"b", "a"},
		Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}}

	// A group's transient: each copy carries its own mentioned flag, never
	// for the sender; "c" is offline here and nothing is activated.
	rt.relayTransient([]string{"a", "b", "c"}, &actorpb.TransientDeliver{FromUser: "a", Message: msg}, true)
	if m := recv(t, ga).(*actorpb.TransientDeliver).GetMessage(); m.GetMessageId() != "T1" || m.GetMentioned() {
		t.Fatalf("sender's copy %v", m)
	}
	if m := recv(t, gb).(*actorpb.TransientDeliver).GetMessage(); m.GetMessageId() != "T1" || !m.GetMentioned() {
		t.Fatalf("mentioned member's copy %v", m)
	}
	if msg.GetMentioned() {
		t.Fatal("the relayed message was modified")
	}

	// A one-to-one transient is delivered as built.
	rt.relayTransient([]string{"b"}, &actorpb.TransientDeliver{FromUser: "a", Message: &wire.Message{MessageId: "T2", Mentioned: true}}, false)
	if m := recv(t, gb).(*actorpb.TransientDeliver).GetMessage(); m.GetMessageId() != "T2" || !m.GetMentioned() {
		t.Fatalf("direct copy %v", m)
	}
	nothing(t, ga)

	// Offline: nothing delivered.
	rt.presence.set("b", 1, pb, nil)
	rt.relayTransient([]string{"b"}, &actorpb.TransientDeliver{FromUser: "a", Message: &wire.Message{MessageId: "T3"}}, false)
	nothing(t, gb)
}

func TestApplyPolicyReachesLocalOnlineActivations(t *testing.T) {
	rt := localRuntime(t, nil)
	pa, ga := spawnProbe(t, rt)
	rt.presence.set("a", 1, pa, []*wire.DeviceInfo{dev("x")})
	if werr, err := rt.SetKickPolicy(context.Background(), "single", nil); werr != nil || err != nil {
		t.Fatalf("SetKickPolicy: %v %v", werr, err)
	}
	if m := recv(t, ga).(*actorpb.PolicyChanged); m.GetMode() != "single" {
		t.Fatalf("activation got %v", m)
	}
	if mode, _ := rt.KickPolicy(); mode != "single" {
		t.Fatalf("node policy %q", mode)
	}
	werr, err := rt.SetKickPolicy(context.Background(), "per_class", map[string]int{"mobile": 0})
	if err != nil || werr.GetName() != "INVALID_ARGUMENT" {
		t.Fatalf("invalid policy: %v %v", werr, err)
	}
	if mode, _ := rt.KickPolicy(); mode != "single" {
		t.Fatalf("an invalid policy changed the node's: %q", mode)
	}
	nothing(t, ga)
}

type fixedMembers []string

func (f fixedMembers) Members() []string { return slices.Clone(f) }

func TestClusterQuestionFailsWhenAMemberIsSilent(t *testing.T) {
	rt := localRuntime(t, nil)
	pa, _ := spawnProbe(t, rt)
	rt.presence.set("a", 1, pa, []*wire.DeviceInfo{dev("x")})
	if st, err := rt.OnlineStatus(context.Background(), []string{"a", "b"}); err != nil || len(st) != 1 || len(st["a"]) != 1 {
		t.Fatalf("one node: %v %v", st, err)
	}
	// A member nobody can reach: no silent "offline".
	rt.members = fixedMembers{rt.sys.Address(), "127.0.0.1:1"}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if st, err := rt.OnlineStatus(ctx, []string{"b"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("with a silent member: %v %v, want ErrUnavailable", st, err)
	}
	if _, err := rt.Devices(ctx, "a"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("devices with a silent member: %v", err)
	}
}
