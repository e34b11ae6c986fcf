package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/eventstream"
)

var (
	// ErrTimeout is returned when a lookup or request did not succeed
	// before its deadline. The last underlying failure is wrapped too.
	ErrTimeout = errors.New("cluster: timed out")
	// ErrStopped is returned after the member has stopped.
	ErrStopped = errors.New("cluster: member stopped")

	errRefused = errors.New("cluster: activation refused")
	errNoOwner = errors.New("cluster: no member supports the kind")
)

// LookupConfig configures a Lookup. The zero value means defaults.
type LookupConfig struct {
	// AttemptTimeout bounds one activation request to the owner; the
	// caller's deadline bounds all of them. Default 1 s.
	AttemptTimeout time.Duration
	// ProbeTimeout bounds the owner's question to the other members
	// before it activates; a silent member makes it refuse (callers
	// retry). Default 500 ms; keep it below AttemptTimeout.
	ProbeTimeout time.Duration
	Logger       *slog.Logger
}

// Lookup is a protoactor IdentityLookup: rendezvous hashing over the
// members that support a kind, with the owner's placement actor
// activating identities after checking ownership and probing the other
// members (see placement.go). It replaces disthash.
type Lookup struct {
	cfg LookupConfig
	log *slog.Logger

	// Set by Setup, then read-only.
	c         *pcluster.Cluster
	self      string
	placement *actor.PID
	replies   *replies   // answers to requests to this node's activations (reply.go)
	local     localIndex // this node's live activations (the placement actor's index)
	sub       *eventstream.Subscription
	ready     chan struct{} // closed once a topology includes this node

	// Swapped whole by the topology handler; read by anyone.
	cur atomic.Pointer[topology]

	readyOnce    sync.Once
	closed       atomic.Bool
	forwarded    atomic.Uint64 // requests the placement actor handed over (requestLocal)
	shutdownOnce sync.Once
}

// topology pairs a view with a channel closed when it is replaced, so a
// waiting lookup retries as soon as members change.
type topology struct {
	v       *view
	changed chan struct{}
	pids    pidCache // what Get found under v
}

var _ pcluster.IdentityLookup = (*Lookup)(nil)

// NewLookup returns a Lookup to pass to protoactor's cluster.Configure.
func NewLookup(cfg LookupConfig) *Lookup {
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = time.Second
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Lookup{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}
	l.cur.Store(&topology{v: newView("", 0, nil), changed: make(chan struct{})})
	return l
}

// Setup is called by protoactor when the member starts, after remoting
// and before the cluster provider. It panics if the placement actor
// cannot be spawned (protoactor's StartMember reports errors by panicking).
func (l *Lookup) Setup(c *pcluster.Cluster, _ []string, isClient bool) {
	if isClient {
		panic("cluster: client members are not supported")
	}
	l.c = c
	l.self = c.ActorSystem.Address()
	l.cur.Store(&topology{v: newView(l.self, 0, nil), changed: make(chan struct{})})
	props := actor.PropsFromProducer(func() actor.Actor {
		return &placementActor{l: l, st: newPlacementState(&l.local)}
	})
	pid, err := c.ActorSystem.Root.SpawnNamed(props, placementName)
	if err != nil {
		panic(fmt.Errorf("cluster: spawn placement actor: %w", err))
	}
	l.placement = pid
	if l.replies, err = startReplies(c.ActorSystem); err != nil {
		panic(fmt.Errorf("cluster: %w", err))
	}
	l.sub = c.ActorSystem.EventStream.Subscribe(func(evt any) {
		switch e := evt.(type) {
		case *pcluster.ClusterTopology:
			l.onTopology(e)
		}
	})
}

// onTopology installs a new view and wakes waiting lookups. It runs on the
// goroutine that called UpdateClusterTopology. After a change that only
// removed members the new view keeps the cached PIDs on the members that
// remain: under rendezvous hashing a member's leaving moves only the
// identities it owned, so every other owner, and its activation, is
// unchanged, and the users of the survivors are not held up by a lookup
// each after a node loss (the reconnect wave measured every user's next
// frame waiting up to ~2 s). Any other change starts with an empty cache:
// a joiner takes over identities whose cached PIDs point at activations
// their new owner will not hand out.
func (l *Lookup) onTopology(t *pcluster.ClusterTopology) {
	v := newView(l.self, t.TopologyHash, t.Members)
	next := &topology{v: v, changed: make(chan struct{})}
	if len(t.GetJoined()) == 0 && len(t.GetLeft()) > 0 {
		// An entry cached into the old view meanwhile may be missed: a
		// cache miss, nothing more.
		next.pids.keepFrom(&l.cur.Load().pids, v.has)
	}
	old := l.cur.Swap(next)
	close(old.changed)

	if v.has(l.self) {
		l.readyOnce.Do(func() { close(l.ready) })
	}
	l.log.Debug("placement topology", "topology_hash", t.TopologyHash,
		"members", len(t.Members), "joined", len(t.Joined), "left", len(t.Left))
}

func (l *Lookup) view() *view { return l.cur.Load().v }

// Ready is closed once this node has seen a topology that includes itself.
func (l *Lookup) Ready() <-chan struct{} { return l.ready }

// Owner returns the remote address of the member that owns identity of
// kind under this node's current view, or "".
func (l *Lookup) Owner(identity, kind string) string { return l.view().owner(kind, identity) }

// Members returns the remote addresses of the members in this node's
// current view (this node included once it has joined), sorted. The
// slice is the caller's.
func (l *Lookup) Members() []string {
	ms := l.view().members()
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.Address())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Get returns the PID of the activation of ci, activating it on its owner
// if needed. It blocks up to the cluster's request timeout and returns nil
// if that passes. Prefer GetContext, which takes the caller's deadline.
func (l *Lookup) Get(ci *pcluster.ClusterIdentity) *actor.PID {
	if l.c == nil || ci == nil {
		return nil
	}
	// The cache first (pidcache.go): every frame from a device and every
	// courier message looks its actor up, and asking the placement actor
	// each time (a request and a timer) cost about a tenth of a busy
	// node's CPU.
	if pid, ok := l.cachedGet(l.cur.Load(), ci); ok {
		return pid
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.c.Config.RequestTimeoutTime)
	defer cancel()
	pid, err := l.resolve(ctx, ci)
	if err != nil {
		l.log.Debug("lookup failed", "identity", ci.GetIdentity(), "kind", ci.GetKind(), "err", err)
		return nil
	}
	return pid
}

// GetContext is Get bounded by ctx. A refusal (the asked node is not the
// owner in its own view, or could not rule out an activation elsewhere)
// and an unanswered request are retried with a short back-off, or at once
// when this node's topology changes, until ctx is done.
func (l *Lookup) GetContext(ctx context.Context, ci *pcluster.ClusterIdentity) (*actor.PID, error) {
	if ci == nil {
		return nil, errors.New("cluster: lookup of a nil identity")
	}
	if l.c == nil || l.closed.Load() {
		return nil, ErrStopped
	}
	var last error
	for attempt := 0; ; attempt++ {
		t := l.cur.Load()
		pid, err := l.ask(ctx, t.v, ci)
		if err == nil {
			return pid, nil
		}
		last = err
		if l.closed.Load() {
			return nil, ErrStopped
		}
		timer := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("%w: lookup %s after %d attempts: %w (%w)", ErrTimeout, ci.AsKey(), attempt+1, last, ctx.Err())
		case <-t.changed:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// ask sends one activation request to the owner under v.
func (l *Lookup) ask(ctx context.Context, v *view, ci *pcluster.ClusterIdentity) (*actor.PID, error) {
	owner := v.owner(ci.Kind, ci.Identity)
	if owner == "" {
		return nil, fmt.Errorf("%w: %q", errNoOwner, ci.Kind)
	}
	timeout := l.cfg.AttemptTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	req := &pcluster.ActivationRequest{ClusterIdentity: ci, TopologyHash: v.hash}
	res, err := l.c.ActorSystem.Root.RequestFuture(placementPID(owner), req, timeout).Result()
	if err != nil {
		return nil, fmt.Errorf("activation request to %s: %w", owner, err)
	}
	resp, ok := res.(*pcluster.ActivationResponse)
	switch {
	case !ok:
		return nil, fmt.Errorf("activation request to %s: unexpected answer %T", owner, res)
	case resp.Failed || resp.Pid == nil:
		return nil, fmt.Errorf("%w by %s", errRefused, owner)
	}
	return resp.Pid, nil
}

// backoff is the pause before retry attempt+1: 2 ms doubling to 100 ms,
// with jitter so racing callers spread out.
func backoff(attempt int) time.Duration {
	d := 2 * time.Millisecond << min(attempt, 6)
	d = min(d, 100*time.Millisecond)
	return d/2 + rand.N(d/2+1)
}

// RemovePid drops pid from the PID cache and, if it is a live activation
// on this node, stops it; the placement index forgets it when it has
// terminated (so no second activation can start while it runs).
func (l *Lookup) RemovePid(ci *pcluster.ClusterIdentity, pid *actor.PID) {
	if ci == nil || pid == nil || l.c == nil {
		return
	}
	l.cur.Load().forget(ci, pid)
	if pid.Address == l.self && !l.closed.Load() {
		l.c.ActorSystem.Root.Send(l.placement, &removeActivation{ci: ci, pid: pid})
	}
}

// drainTimeout bounds how long Shutdown waits for the local activations
// to stop (protoactor's PoisonFuture of a parent waited 10 s for its
// children).
const drainTimeout = 10 * time.Second

// Shutdown stops every local activation and then the placement actor,
// and waits for them. Safe to call more than once (protoactor does).
func (l *Lookup) Shutdown() {
	l.shutdownOnce.Do(func() {
		l.closed.Store(true)
		if l.c == nil {
			return
		}
		l.c.ActorSystem.EventStream.Unsubscribe(l.sub)
		// The activations are not the placement actor's protoactor
		// children (placementActor): it stops them itself, then itself.
		// (Not if it is gone already — an actor system shut down first —:
		// nothing would answer.)
		if _, alive := l.c.ActorSystem.ProcessRegistry.GetLocal(l.placement.Id); alive {
			drained := make(chan struct{})
			l.c.ActorSystem.Root.Send(l.placement, &drainActivations{done: drained})
			select {
			case <-drained:
			case <-time.After(drainTimeout):
				l.log.Warn("local activations did not all stop", "waited", drainTimeout)
			}
		}
		if err := l.c.ActorSystem.Root.PoisonFuture(l.placement).Wait(); err != nil {
			l.log.Warn("placement actor did not stop", "err", err)
		}
	})
}
