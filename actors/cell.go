package actors

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/ctxext"
)

// userCell is a user activation in one object: the user actor, its
// mailbox, and what protoactor keeps in an actor context and an actor
// process for every actor it spawns. The cell is the actor's
// actor.Context and its mailbox's invoker, and (as cellProcess) the
// process the node's registry holds for the activation's PID: two
// objects fewer per activated user (protoactor's context and process) for
// the collector to mark at every cycle (bench/README.md, "A user
// activation in one object").
//
// What a user actor needs of a context is a small part of protoactor's:
// messages and their senders, Send/Request/Respond, Stop and Poison,
// Watch, supervision by its parent (the node's placement actor), and the
// lifecycle messages Started, Stopping, Stopped and Restarting as
// protoactor delivers them. The rest of actor.Context (spawning children,
// stashing, receive timeouts, reentrancy, middleware, extensions) panics
// with "not supported on a user activation": the user actor uses none of
// it, and a panic reaches its supervisor like any other failure.
type userCell struct {
	a    userActor
	mb   leanMailbox
	self *actor.PID
	msg  any          // the message being processed, or its envelope
	life atomic.Int32 // cellAlive … cellStopped, and cellHasParent
}

// cellProcess is a cell as the registry's actor.Process (its Stop is the
// process's, not the context's).
type cellProcess userCell

const (
	cellAlive int32 = iota
	cellRestarting
	cellStopping
	cellStopped
	cellStateMask = 3

	// cellHasParent: the cell was spawned by an actor (the placement),
	// its parent and supervisor, kept in userCells.parent.
	cellHasParent = 4
)

// userCells is the user kind's spawner and what its cells share: the
// actor system, the parent that spawns them (the node's placement actor),
// and the rare per-cell parts (watchers, restart statistics) that would
// otherwise cost every cell a pointer.
type userCells struct {
	rt     *Runtime
	sys    atomic.Pointer[actor.ActorSystem]
	parent atomic.Pointer[actor.PID]

	mu       sync.Mutex
	watchers map[*userCell][]*actor.PID
	restarts map[*userCell]*actor.RestartStatistics
}

// props are the user kind's props: spawns with them, in the cluster or
// not, make cells (spawn). The producer only satisfies protoactor's
// props; spawn never calls it.
func (k *userCells) props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &userActor{rt: k.rt} }, actor.WithSpawnFunc(k.spawn))
}

// spawn is the user kind's actor.SpawnFunc: a cell registered under id,
// its Started posted. The user kind's props (Runtime.Kinds) carry it, and
// the cluster's placement uses it in place of protoactor's spawner. The
// cells of one runtime are spawned by one parent (the placement) or by
// the root.
func (k *userCells) spawn(sys *actor.ActorSystem, id string, _ *actor.Props, parent actor.SpawnerContext) (*actor.PID, error) {
	// sys and parent are the same at every spawn: stored once, not
	// rewritten under the readers of every cell's sends.
	if k.sys.Load() != sys {
		k.sys.Store(sys)
	}
	c := &userCell{a: userActor{rt: k.rt}}
	if p := parent.Self(); p != nil {
		if old := k.parent.Load(); old == nil || !old.Equal(p) {
			k.parent.Store(p)
		}
		c.life.Store(cellHasParent)
	}
	c.mb.RegisterHandlers(c, k.rt.dispatch) // before the PID can be found
	pid, absent := sys.ProcessRegistry.Add((*cellProcess)(c), id)
	if !absent {
		return pid, actor.ErrNameExists
	}
	c.self = pid
	c.mb.PostSystemMessage(&actor.Started{})
	return pid, nil
}

func (c *userCell) cells() *userCells       { return c.a.rt.cells }
func (c *userCell) sys() *actor.ActorSystem { return c.cells().sys.Load() }
func (c *userCell) state() int32            { return c.life.Load() & cellStateMask }

func (c *userCell) setState(s int32) {
	c.life.Store(c.life.Load()&^cellStateMask | s)
}

// sendSystem posts a system message to pid through the registry.
func (c *userCell) sendSystem(pid *actor.PID, msg any) {
	p, _ := c.sys().ProcessRegistry.Get(pid)
	p.SendSystemMessage(pid, msg)
}

// SendUserMessage implements actor.Process: into the mailbox, or to the
// dead letters once the cell has stopped (a PID that cached the cell
// still reaches it; protoactor's own process is dropped from the PID's
// cache instead, with the same outcome).
func (p *cellProcess) SendUserMessage(pid *actor.PID, msg any) {
	c := (*userCell)(p)
	if c.state() == cellStopped {
		c.sys().DeadLetter.SendUserMessage(pid, msg)
		return
	}
	c.mb.PostUserMessage(msg)
}

// SendSystemMessage implements actor.Process.
func (p *cellProcess) SendSystemMessage(_ *actor.PID, msg any) {
	(*userCell)(p).mb.PostSystemMessage(msg)
}

// Stop implements actor.Process: stop after the system messages before it.
func (p *cellProcess) Stop(_ *actor.PID) {
	(*userCell)(p).mb.PostSystemMessage(&actor.Stop{})
}

// InvokeUserMessage implements actor.MessageInvoker.
func (c *userCell) InvokeUserMessage(msg any) {
	if c.state() == cellStopped {
		return
	}
	c.msg = msg
	switch m := actor.UnwrapEnvelopeMessage(msg).(type) {
	case *actor.PoisonPill:
		c.Stop(c.self)
	case actor.AutoRespond:
		c.a.Receive(c)
		c.Respond(m.GetAutoResponse(c))
	default:
		c.a.Receive(c)
	}
	c.msg = nil
}

// InvokeSystemMessage implements actor.MessageInvoker (the mailbox itself
// handles SuspendMailbox and ResumeMailbox).
func (c *userCell) InvokeSystemMessage(msg any) {
	switch m := msg.(type) {
	case *actor.Started:
		c.InvokeUserMessage(m)
	case *actor.Watch:
		if c.state() >= cellStopping {
			c.sendSystem(m.Watcher, &actor.Terminated{Who: c.self})
			return
		}
		k := c.cells()
		k.mu.Lock()
		if k.watchers == nil {
			k.watchers = map[*userCell][]*actor.PID{}
		}
		k.watchers[c] = append(k.watchers[c], m.Watcher)
		k.mu.Unlock()
	case *actor.Unwatch:
		k := c.cells()
		k.mu.Lock()
		w := k.watchers[c]
		for i, p := range w {
			if p.Equal(m.Watcher) {
				w = append(w[:i], w[i+1:]...)
				break
			}
		}
		if len(w) == 0 {
			delete(k.watchers, c)
		} else {
			k.watchers[c] = w
		}
		k.mu.Unlock()
	case *actor.Stop:
		c.stop()
	case *actor.Terminated:
		c.InvokeUserMessage(m) // of an actor it watches: it has no children
	case *actor.Restart:
		c.restart()
	default:
		c.Logger().Error("user activation: unexpected system message", slog.Any("message", msg), slog.Any("self", c.self))
	}
}

// stop is protoactor's handleStop and finalizeStop for an actor with no
// children: Stopping, out of the registry, Stopped, Terminated to its
// watchers and its parent.
func (c *userCell) stop() {
	if c.state() >= cellStopping {
		return
	}
	c.setState(cellStopping)
	c.InvokeUserMessage(&actor.Stopping{})
	sys := c.sys()
	sys.ProcessRegistry.Remove(c.self)
	c.InvokeUserMessage(&actor.Stopped{})
	k := c.cells()
	k.mu.Lock()
	watchers := k.watchers[c]
	delete(k.watchers, c)
	delete(k.restarts, c)
	k.mu.Unlock()
	term := &actor.Terminated{Who: c.self}
	for _, w := range watchers {
		c.sendSystem(w, term)
	}
	if c.life.Load()&cellHasParent != 0 {
		c.sendSystem(k.parent.Load(), term)
	}
	c.setState(cellStopped)
}

// restart is protoactor's handleRestart for an actor with no children: a
// fresh user actor in the cell, the mailbox resumed, Started.
func (c *userCell) restart() {
	c.setState(cellRestarting)
	c.InvokeUserMessage(&actor.Restarting{})
	rt := c.a.rt
	c.a = userActor{rt: rt}
	c.setState(cellAlive)
	c.mb.PostSystemMessage(&actor.ResumeMailbox{})
	c.InvokeUserMessage(&actor.Started{})
}

// EscalateFailure implements actor.MessageInvoker: the mailbox is
// suspended and the parent decides (its supervisor strategy); a cell with
// no parent restarts, as protoactor's default strategy decides for a root
// actor.
func (c *userCell) EscalateFailure(reason, msg any) {
	c.Logger().Info("[ACTOR] Recovering", slog.Any("self", c.self), slog.Any("reason", reason))
	c.mb.PostSystemMessage(&actor.SuspendMailbox{})
	if c.life.Load()&cellHasParent == 0 {
		c.mb.PostSystemMessage(&actor.Restart{})
		return
	}
	k := c.cells()
	k.mu.Lock()
	if k.restarts == nil {
		k.restarts = map[*userCell]*actor.RestartStatistics{}
	}
	rs := k.restarts[c]
	if rs == nil {
		rs = actor.NewRestartStatistics()
		k.restarts[c] = rs
	}
	k.mu.Unlock()
	c.sendSystem(k.parent.Load(), &actor.Failure{Reason: reason, Who: c.self, RestartStats: rs, Message: msg})
}

// The actor.Context a user actor receives.

var _ actor.Context = (*userCell)(nil)

func (c *userCell) Parent() *actor.PID {
	if c.life.Load()&cellHasParent == 0 {
		return nil
	}
	return c.cells().parent.Load()
}

func (c *userCell) Self() *actor.PID                { return c.self }
func (c *userCell) Actor() actor.Actor              { return &c.a }
func (c *userCell) ActorSystem() *actor.ActorSystem { return c.sys() }
func (c *userCell) Logger() *slog.Logger            { return c.sys().Logger() }
func (c *userCell) ReceiveTimeout() time.Duration   { return 0 }
func (c *userCell) Children() []*actor.PID          { return nil }
func (c *userCell) Message() any                    { return actor.UnwrapEnvelopeMessage(c.msg) }
func (c *userCell) Sender() *actor.PID              { return actor.UnwrapEnvelopeSender(c.msg) }

func (c *userCell) MessageHeader() actor.ReadonlyMessageHeader {
	return actor.UnwrapEnvelopeHeader(c.msg)
}

func (c *userCell) Respond(response any) {
	if s := c.Sender(); s != nil {
		c.Send(s, response)
		return
	}
	c.sys().DeadLetter.SendUserMessage(nil, response)
}

func (c *userCell) Send(pid *actor.PID, msg any) { c.sys().Root.Send(pid, msg) }

func (c *userCell) Request(pid *actor.PID, msg any) {
	c.RequestWithCustomSender(pid, msg, c.self)
}

func (c *userCell) RequestWithCustomSender(pid *actor.PID, msg any, sender *actor.PID) {
	c.sys().Root.Send(pid, &actor.MessageEnvelope{Message: msg, Sender: sender})
}

func (c *userCell) RequestFuture(pid *actor.PID, msg any, timeout time.Duration) *actor.Future {
	return c.sys().Root.RequestFuture(pid, msg, timeout)
}

func (c *userCell) Forward(pid *actor.PID) {
	if _, ok := c.msg.(actor.SystemMessage); ok {
		c.Logger().Error("SystemMessage cannot be forwarded", slog.Any("message", c.msg))
		return
	}
	c.sys().Root.Send(pid, c.msg)
}

func (c *userCell) Watch(pid *actor.PID)   { c.sendSystem(pid, &actor.Watch{Watcher: c.self}) }
func (c *userCell) Unwatch(pid *actor.PID) { c.sendSystem(pid, &actor.Unwatch{Watcher: c.self}) }

// Stop stops pid, the cell itself included, after the system messages
// before it.
func (c *userCell) Stop(pid *actor.PID) {
	if pid == c.self || pid.Equal(c.self) {
		(*cellProcess)(c).Stop(pid)
		return
	}
	c.sys().Root.Stop(pid)
}

func (c *userCell) StopFuture(pid *actor.PID) *actor.Future   { return c.sys().Root.StopFuture(pid) }
func (c *userCell) Poison(pid *actor.PID)                     { c.sys().Root.Poison(pid) }
func (c *userCell) PoisonFuture(pid *actor.PID) *actor.Future { return c.sys().Root.PoisonFuture(pid) }

func (c *userCell) CancelReceiveTimeout() {}

func (c *userCell) SetReceiveTimeout(d time.Duration) {
	if d >= time.Millisecond {
		unsupported("SetReceiveTimeout")
	}
}

func (c *userCell) Stash()                                       { unsupported("Stash") }
func (c *userCell) ReenterAfter(*actor.Future, func(any, error)) { unsupported("ReenterAfter") }
func (c *userCell) Receive(*actor.MessageEnvelope)               { unsupported("Receive") }
func (c *userCell) Spawn(*actor.Props) *actor.PID                { unsupported("Spawn"); return nil }
func (c *userCell) SpawnPrefix(*actor.Props, string) *actor.PID {
	unsupported("SpawnPrefix")
	return nil
}
func (c *userCell) SpawnNamed(*actor.Props, string) (*actor.PID, error) {
	unsupported("SpawnNamed")
	return nil, nil
}
func (c *userCell) Get(ctxext.ContextExtensionID) ctxext.ContextExtension {
	unsupported("Get")
	return nil
}
func (c *userCell) Set(ctxext.ContextExtension) { unsupported("Set") }

func unsupported(what string) {
	panic(fmt.Sprintf("actors: %s is not supported on a user activation", what))
}
