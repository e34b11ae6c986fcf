package actors

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

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
