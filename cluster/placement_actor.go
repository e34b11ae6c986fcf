package cluster

import (
	"fmt"
	"runtime"
	"sync"
	"weak"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
)

const (
	// placementName is the name of the placement actor on every member.
	placementName = "tandem-placement"
	// activationPrefix starts the process name of every activation,
	// "act/kind/identity$n": short, for a million of them are kept (the
	// placement's own name as the prefix made each name a 48-byte string,
	// not 24). Only this member reads it (activationKey); to others a PID
	// is opaque.
	activationPrefix = "act/"
	// probeRequestID marks an ActivationRequest as a probe ("do you have
	// it?") rather than a request to activate.
	probeRequestID = "tandem-probe"
)

func placementPID(addr string) *actor.PID { return actor.NewPID(addr, placementName) }

// NewKind returns a cluster kind of actors made by props. Build kinds
// with it, not with protoactor's cluster.NewKind: the placement actor
// spawns every activation with these props as they are, with protoactor's
// default spawner (props must not set a spawner or spawn middleware of
// their own: they would not run), and sends it
// *cluster.ClusterInit first, so an activation costs no props clone and
// no context extension, and its messages pass no receive middleware (a
// million idle users pay for what each activation keeps). protoactor's
// kinds expect their identity as a context extension and panic without it.
func NewKind(kind string, props *actor.Props) *pcluster.Kind {
	return &pcluster.Kind{Kind: kind, Props: props}
}

// NewKindSpawnedBy is NewKind for a kind whose activations spawn makes
// (the same function its props carry with actor.WithSpawnFunc, for spawns
// outside the cluster): the placement calls it where it would call
// protoactor's default spawner, with itself as the parent.
func NewKindSpawnedBy(kind string, props *actor.Props, spawn actor.SpawnFunc) *pcluster.Kind {
	key := weak.Make(props)
	spawners.Store(key, spawn)
	// Forgotten with the props: spawn may hold a whole node runtime.
	runtime.AddCleanup(props, func(k weak.Pointer[actor.Props]) { spawners.Delete(k) }, key)
	return NewKind(kind, props)
}

// spawners: the spawn function of each kind's props built with
// NewKindSpawnedBy, by a weak pointer to the props (a few per process:
// one user kind per node runtime, more in tests).
var spawners sync.Map // weak.Pointer[actor.Props] → actor.SpawnFunc

// spawnerOf is the spawn function for activations made with props.
func spawnerOf(props *actor.Props) actor.SpawnFunc {
	if f, ok := spawners.Load(weak.Make(props)); ok {
		return f.(actor.SpawnFunc)
	}
	return actor.DefaultSpawner
}

// removeActivation asks the placement actor to stop a local activation
// (Lookup.RemovePid). Local only.
type removeActivation struct {
	ci  *pcluster.ClusterIdentity
	pid *actor.PID
}

// placementActor owns this node's activations: it is their parent, so it
// sees every termination (and every failure, as their supervisor). They
// are not in its protoactor child set: a set of a million PIDs (a map and
// a slice) cost each activation ~70 bytes and, while the collector marked,
// the growth of a million-pointer slice and map on this one actor's path;
// its own index (placementState.active) already knows them. So it stops
// them itself when it stops (drain). It never blocks: probes complete
// through ReenterAfter while it keeps serving other requests.
type placementActor struct {
	l  *Lookup
	st placementState
	// forwards: the message of each waiter that came as an
	// activateAndRequest, to hand the activation once it is known.
	forwards map[waiterKey]any
	// drained is closed once every activation has stopped after a
	// drainActivations; nil until then. No activation starts after it.
	drained chan struct{}
	// spawners: each kind's spawn function (spawnerOf), looked up once.
	spawners map[*actor.Props]actor.SpawnFunc
}

// drainActivations asks the placement actor to stop every local
// activation and refuse new ones; done is closed once all have stopped.
// Local only (Lookup.Shutdown).
type drainActivations struct{ done chan struct{} }

// waiterKey names a waiting requester: a future's PID ID, or the reply
// PID's ID and RequestId (reply.go), which every local request shares.
type waiterKey struct {
	id  string
	rid uint32
}

func keyOfWaiter(pid *actor.PID) waiterKey { return waiterKey{pid.Id, pid.RequestId} }

func (p *placementActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *pcluster.ActivationRequest:
		if ctx.Sender() == nil {
			return // nobody to answer
		}
		v := p.l.view()
		if msg.RequestId == probeRequestID {
			ctx.Respond(p.st.probe(v, msg.ClusterIdentity, ctx.Sender().Address))
			return
		}
		if msg.ClusterIdentity == nil {
			ctx.Respond(&pcluster.ActivationResponse{Failed: true, TopologyHash: v.hash})
			return
		}
		p.perform(ctx, v, msg.ClusterIdentity, p.st.activate(v, msg.ClusterIdentity, ctx.Sender()))
	case *activateAndRequest:
		if ctx.Sender() == nil {
			return
		}
		if p.forwards == nil {
			p.forwards = map[waiterKey]any{}
		}
		p.forwards[keyOfWaiter(ctx.Sender())] = msg.message
		v := p.l.view()
		p.perform(ctx, v, msg.ci, p.st.activate(v, msg.ci, ctx.Sender()))
	case *actor.Terminated:
		if ci, ok := p.st.terminated(msg.Who); ok {
			p.l.cur.Load().forget(ci, msg.Who)
			if k, ok := p.l.c.TryGetClusterKind(ci.Kind); ok {
				k.Dec()
			}
		}
		p.checkDrained()
	case *removeActivation:
		if p.st.holds(msg.ci, msg.pid) {
			ctx.Poison(msg.pid) // forgotten on Terminated, never before
		}
	case *drainActivations: // Lookup.Shutdown sends one, once
		p.drained = msg.done
		p.stopAll(ctx)
		p.checkDrained()
	case *actor.Restarting:
		// protoactor stops a restarting actor's children first; these are
		// not in its child set, and the new instance starts with an empty
		// index: stop them, so none outlives what indexes it.
		p.stopAll(ctx)
	}
}

// stopAll stops every local activation at once, as protoactor stops an
// actor's children (their mailboxes' user messages are not processed).
func (p *placementActor) stopAll(ctx actor.Context) {
	for _, pid := range p.st.active.pids() {
		ctx.Stop(pid)
	}
}

// checkDrained closes drained once a drain has begun and no activation is
// left.
func (p *placementActor) checkDrained() {
	if p.drained != nil && p.st.active.len() == 0 {
		select {
		case <-p.drained:
		default:
			close(p.drained)
		}
	}
}

// perform carries out a decision about ci taken under view v.
func (p *placementActor) perform(ctx actor.Context, v *view, ci *pcluster.ClusterIdentity, d decision) {
	switch d.verdict {
	case verdictWait:
	case verdictReply:
		p.answer(ctx, v, ci, d.waiters, d.pid)
	case verdictRefuse:
		p.answer(ctx, v, ci, d.waiters, nil)
	case verdictProbe:
		p.probe(ctx, ci, d.targets, v.hash)
	case verdictSpawn:
		if p.drained != nil { // stopping: the requesters retry elsewhere or time out
			p.answer(ctx, v, ci, d.waiters, nil)
			return
		}
		pid, err := p.spawn(ctx, ci)
		if err != nil {
			p.l.log.Error("activation failed", "identity", ci.Identity, "kind", ci.Kind, "err", err)
		}
		p.answer(ctx, v, ci, d.waiters, pid)
	}
}

// probe asks every target whether it already has ci; each answer comes
// back through p.st.probed on this actor.
func (p *placementActor) probe(ctx actor.Context, ci *pcluster.ClusterIdentity, targets []string, hash uint64) {
	key := ci.AsKey()
	for _, addr := range targets {
		req := &pcluster.ActivationRequest{ClusterIdentity: ci, RequestId: probeRequestID, TopologyHash: hash}
		f := ctx.RequestFuture(placementPID(addr), req, p.l.cfg.ProbeTimeout)
		ctx.ReenterAfter(f, func(res any, err error) {
			resp, _ := res.(*pcluster.ActivationResponse)
			v := p.l.view()
			p.perform(ctx, v, ci, p.st.probed(v, key, resp, err))
		})
	}
}

func (p *placementActor) spawn(ctx actor.Context, ci *pcluster.ClusterIdentity) (*actor.PID, error) {
	k, ok := p.l.c.TryGetClusterKind(ci.Kind)
	if !ok {
		return nil, fmt.Errorf("cluster: kind %q is not registered on this member", ci.Kind)
	}
	name := activationPrefix + ci.Kind + "/" + ci.Identity + ctx.ActorSystem().ProcessRegistry.NextId()
	// The kind's own props, shared by every activation (see NewKind); the
	// identity travels in ClusterInit, the first message in the mailbox:
	// no one can send the new actor anything before answer hands out pid.
	// Spawned as ctx.SpawnNamed spawns a child (this actor its parent and
	// supervisor) but kept out of protoactor's child set (see
	// placementActor), and named apart from its own name.
	spawn, ok := p.spawners[k.Props]
	if !ok {
		if p.spawners == nil {
			p.spawners = map[*actor.Props]actor.SpawnFunc{}
		}
		spawn = spawnerOf(k.Props)
		p.spawners[k.Props] = spawn
	}
	pid, err := spawn(ctx.ActorSystem(), name, k.Props, ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: spawn %s: %w", name, err)
	}
	id := p.st.spawned(ci, pid)
	// The actor gets its identity as a part of its name, not the caller's
	// string: it keeps the identity as long as it lives, and the name is
	// kept anyway — one string per activation, not two.
	named := &pcluster.ClusterIdentity{Kind: ci.Kind, Identity: id.identity}
	ctx.Send(pid, &pcluster.ClusterInit{Identity: named, Cluster: p.l.c})
	k.Inc()
	return pid, nil
}

// answer sends every waiter an ActivationResponse: the PID, or Failed when
// pid is nil (decided under view v). A waiter that came with a message
// (activateAndRequest) gets it handed to pid as its request instead, and
// the PID goes into the node's cache, as its lookup would have put it.
func (p *placementActor) answer(ctx actor.Context, v *view, ci *pcluster.ClusterIdentity, waiters []*actor.PID, pid *actor.PID) {
	cached := false
	for _, w := range waiters {
		msg, fwd := p.forwards[keyOfWaiter(w)]
		if !fwd || w.Address != ctx.Self().Address {
			ctx.Send(w, &pcluster.ActivationResponse{Pid: pid, Failed: pid == nil, TopologyHash: v.hash})
			continue
		}
		delete(p.forwards, keyOfWaiter(w))
		if pid == nil {
			ctx.Send(w, &pcluster.ActivationResponse{Failed: true, TopologyHash: v.hash})
			continue
		}
		if t := p.l.cur.Load(); !cached && t.v == v {
			p.l.cachePut(t, ci, pid)
			cached = true
		}
		ctx.RequestWithCustomSender(pid, msg, w)
	}
}
