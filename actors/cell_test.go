package actors

import (
	"errors"
	"testing"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/tandem-im/tandem/proto/actorpb"
)

// TestHotObjectSizes: a session and a user's cell stay in size classes a
// login's short-lived objects hardly use (288 bytes; in the 256-byte class
// a session shared its spans with them, and with separate objects for its
// login ID the collector marked a million online users slower:
// bench/README.md), and a cell stays at 512 bytes at most: Go's collector
// marks objects of up to 512 bytes span by span (the "green tea" marker);
// a 576-byte cell, one object fewer per user, made the million's marks
// longer (bench/README.md, "A user activation in one object"). A field
// added must keep them there.
func TestHotObjectSizes(t *testing.T) {
	if n := unsafe.Sizeof(session{}); n > 288 {
		t.Errorf("session is %d bytes, more than its 288-byte class", n)
	}
	if n := unsafe.Sizeof(userCell{}); n > 512 {
		t.Errorf("userCell is %d bytes, more than 512 (the largest class the collector marks span by span)", n)
	}
}

// TestClassIndex: every class a platform maps to survives its one-byte
// form, and "" (no class) is index 0.
func TestClassIndex(t *testing.T) {
	if indexOf("") != 0 || classIndex(0).class() != "" {
		t.Fatal(`"" is not index 0`)
	}
	for p, c := range platformClass {
		if got := indexOf(c).class(); got != c {
			t.Errorf("platform %s: class %q comes back as %q", p, c, got)
		}
	}
}

// panicReply is a message whose auto-response panics: a failure on the
// cell's own mailbox goroutine, as a panic in the user actor would be.
type panicReply struct{}

func (panicReply) GetAutoResponse(actor.Context) any { panic("panicReply") }

// cellParent spawns a user cell as its child and reports its failures.
type cellParent struct {
	props    *actor.Props
	child    chan *actor.PID
	failures chan *actor.PID
}

func (p *cellParent) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); ok {
		pid, err := ctx.SpawnNamed(p.props, "cell")
		if err != nil {
			panic(err)
		}
		p.child <- pid
	}
}

// TestUserCellLifecycle: a user cell is a protoactor actor to everyone
// else. Its Started comes first; a watcher learns of its stop; a PID that
// cached it sends to the dead letters once it has stopped (a request gets
// DeadLetterResponse, as from any stopped actor) and the registry no
// longer holds it; a failure goes to its parent, whose supervisor restarts
// it: a fresh user actor in the same cell, still registered.
func TestUserCellLifecycle(t *testing.T) {
	h := startUserHarnessWith(t, "cella", Config{RequestTimeout: 5 * time.Second})
	sys := h.rt.sys
	cellOf := func(pid *actor.PID) *userCell {
		p, ok := sys.ProcessRegistry.GetLocal(pid.Id)
		if !ok {
			return nil
		}
		return (*userCell)(p.(*cellProcess))
	}
	if c := cellOf(h.user); c == nil || c.Parent() != nil {
		t.Fatalf("the harness's user is not a root cell: %v", c)
	}
	if _, err := sys.Root.RequestFuture(h.user, &actorpb.InspectRequest{}, 5*time.Second).Result(); err != nil {
		t.Fatalf("inspect the cell: %v", err)
	}

	// Failure and restart, under a parent.
	failures := make(chan *actor.PID, 4)
	strategy := actor.NewOneForOneStrategy(10, time.Minute, func(any) actor.Directive { return actor.RestartDirective })
	parent := &cellParent{props: h.rt.cells.props(), child: make(chan *actor.PID, 1)}
	ppid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return parent },
		actor.WithSupervisor(supervisorFunc(func(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, msg any) {
			failures <- child
			strategy.HandleFailure(sys, sup, child, rs, reason, msg)
		}))))
	child := <-parent.child
	c := cellOf(child)
	if c == nil || !c.Parent().Equal(ppid) {
		t.Fatalf("the child cell's parent is not the actor that spawned it")
	}
	sys.Root.Send(child, &pcluster.ClusterInit{
		Identity: &pcluster.ClusterIdentity{Identity: "cellb", Kind: UserKind},
		Cluster:  &pcluster.Cluster{ActorSystem: sys},
	})
	if _, err := sys.Root.RequestFuture(child, &actorpb.InspectRequest{}, 5*time.Second).Result(); err != nil {
		t.Fatalf("inspect the child cell: %v", err)
	}
	sys.Root.Send(child, panicReply{})
	select {
	case who := <-failures:
		if !who.Equal(child) {
			t.Fatalf("failure of %v, want the child cell %v", who, child)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the parent's supervisor never saw the child cell's failure")
	}
	// Restarted: the same cell, registered, a fresh user actor that was
	// never given its identity (it refuses, as a restarted user must).
	if _, err := sys.Root.RequestFuture(child, &actorpb.InspectRequest{}, 5*time.Second).Result(); err != nil {
		t.Fatalf("the restarted cell does not answer: %v", err)
	}
	if again := cellOf(child); again != c || c.a.user != "" || c.a.st != nil || c.state() != cellAlive {
		t.Fatalf("after the restart: cell %p (was %p), user %q, state %v, life %d", again, c, c.a.user, c.a.st != nil, c.state())
	}

	// Stop: the watcher learns of it, the registry forgets it, and the
	// PID that reached it before now reaches the dead letters.
	stopped := make(chan time.Time, 1)
	sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &watcher{who: h.user, done: stopped} }))
	if _, err := sys.Root.RequestFuture(h.user, &actorpb.InspectRequest{}, 5*time.Second).Result(); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	cached := cellOf(h.user)
	sys.Root.Poison(h.user)
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher never got Terminated for the poisoned cell")
	}
	if cellOf(h.user) != nil {
		t.Fatal("a stopped cell is still in the registry")
	}
	if cached.state() != cellStopped {
		t.Fatalf("a stopped cell's state is %d", cached.state())
	}
	res, err := sys.Root.RequestFuture(h.user, &actorpb.InspectRequest{}, 5*time.Second).Result()
	if err != nil {
		if !errors.Is(err, actor.ErrDeadLetter) {
			t.Fatalf("a request to the stopped cell: %v, want a dead letter", err)
		}
	} else if _, ok := res.(*actor.DeadLetterResponse); !ok {
		t.Fatalf("a request to the stopped cell answered %T", res)
	}
}

// supervisorFunc is an actor.SupervisorStrategy from a function.
type supervisorFunc func(*actor.ActorSystem, actor.Supervisor, *actor.PID, *actor.RestartStatistics, any, any)

func (f supervisorFunc) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, msg any) {
	f(sys, sup, child, rs, reason, msg)
}
