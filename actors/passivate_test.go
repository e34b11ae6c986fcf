package actors

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// watcher reports when the actor it watches has stopped.
type watcher struct {
	who  *actor.PID
	done chan time.Time
}

func (w *watcher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.Watch(w.who)
	case *actor.Terminated:
		if m.Who.Equal(w.who) {
			w.done <- time.Now()
		}
	}
}

// A user actor passivates once it has had no session and nothing in
// flight for its idle timeout (±25 %), counted from its last message; a
// session keeps it however long it is silent.
func TestUserActorPassivatesWhenIdle(t *testing.T) {
	const idle = 400 * time.Millisecond
	h := startUserHarnessWith(t, "pat", Config{RequestTimeout: 5 * time.Second, IdleTimeout: idle})
	stopped := make(chan time.Time, 1)
	h.rt.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &watcher{who: h.user, done: stopped} }))

	sid := h.login(&wire.Login{DeviceId: "phone", Platform: "android"})
	// Logged in: silent for 3× the timeout, still there.
	select {
	case at := <-stopped:
		t.Fatalf("passivated at %v with a session logged in", at)
	case <-time.After(3 * idle):
	}
	if _, err := h.rt.sys.Root.RequestFuture(h.user, &actorpb.InspectRequest{}, 5*time.Second).Result(); err != nil {
		t.Fatalf("inspect a logged-in user: %v", err)
	}

	// Logged out, but a message every idle/4 for 3× the timeout: each
	// one moves the idle clock, so it stays.
	h.rt.sys.Root.Send(h.user, &actorpb.SessionClosed{Session: h.session(sid), Logout: true})
	for end := time.Now().Add(3 * idle); time.Now().Before(end); time.Sleep(idle / 4) {
		if _, err := h.rt.sys.Root.RequestFuture(h.user, &actorpb.InspectRequest{}, 5*time.Second).Result(); err != nil {
			t.Fatalf("inspect while busy: %v", err)
		}
	}
	select {
	case at := <-stopped:
		t.Fatalf("passivated at %v although messages kept coming", at)
	default:
	}

	// Then silence: it stops no sooner than 0.75× the timeout after the
	// last message, and soon after 1.25×.
	last := time.Now()
	if _, err := h.rt.sys.Root.RequestFuture(h.user, &actorpb.InspectRequest{}, 5*time.Second).Result(); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	select {
	case at := <-stopped:
		if d := at.Sub(last); d < idle*3/4 {
			t.Fatalf("passivated %v after the last message; idle timeout %v (−25 %%)", d, idle)
		}
	case <-time.After(10 * idle):
		t.Fatalf("still active %v after the last message; idle timeout %v", 10*idle, idle)
	}
}

// An activation that cannot start (here: its store is closed) answers
// what reaches it with a refusal for deadLinger, then stops. protoactor
// drops what reaches a mailbox behind a stop without a dead letter, so a
// request handed this PID just before the failure (the login that
// activated it) must find it still answering, not wait out its timeout.
func TestFailedActivationRefusesThenStops(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	b, err := persistence.OpenBadger(t.TempDir(), persistence.BadgerOptions{NoSync: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	rt := NewRuntime(Config{RequestTimeout: 5 * time.Second}, b, nil, nil, log)
	rt.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return log }))
	t.Cleanup(rt.sys.Shutdown)
	pid := rt.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &userActor{rt: rt} }))
	stopped := make(chan time.Time, 1)
	rt.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &watcher{who: pid, done: stopped} }))
	failed := time.Now()
	rt.sys.Root.Send(pid, &pcluster.ClusterInit{
		Identity: &pcluster.ClusterIdentity{Identity: "quinn", Kind: UserKind},
		Cluster:  &pcluster.Cluster{ActorSystem: rt.sys},
	})
	login := func() (any, error) {
		return rt.sys.Root.RequestFuture(pid, &actorpb.LoginRequest{
			Session: &actorpb.SessionRef{SessionId: 1}, UserId: "quinn",
			Login: &wire.Login{DeviceId: "phone", Platform: "android"},
		}, time.Second).Result()
	}
	// Well after the activation failed, and more than once: refused.
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		res, err := login()
		r, _ := res.(*actorpb.LoginResult)
		if err != nil || r.GetOk() || wire.Code(r.GetReply().GetError().GetCode()) != wire.CodeUnavailable {
			t.Fatalf("login %s after the failed activation: %v, %v; want a LoginResult refusing with UNAVAILABLE",
				time.Since(failed).Round(time.Millisecond), res, err)
		}
	}
	select {
	case at := <-stopped:
		if d := at.Sub(failed); d < deadLinger {
			t.Fatalf("the failed activation stopped after %s, before its linger of %s", d, deadLinger)
		}
	case <-time.After(deadLinger + 2*time.Second):
		t.Fatalf("the failed activation had not stopped %s after it failed", deadLinger+2*time.Second)
	}
	if _, err := login(); !errors.Is(err, actor.ErrDeadLetter) {
		t.Fatalf("login after the failed activation stopped: %v, want a dead letter (the caller's lookup activates it again)", err)
	}
}
