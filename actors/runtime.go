package actors

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	tcluster "github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/internal/deadline"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// Store is what the actors need from persistence (persistence.Store
// satisfies it).
type Store interface {
	Activate(ctx context.Context, user, owner string) (persistence.Epoch, persistence.Seq, error)
	Append(req persistence.AppendRequest, done func(error))
	Read(ctx context.Context, user string, after persistence.Seq, limit int) ([]persistence.Entry, error)
	FirstSeqSince(ctx context.Context, user string, t time.Time) (persistence.Seq, error)
	FirstSeq(ctx context.Context, user string) (persistence.Seq, error)
	LookupDedup(ctx context.Context, user, key string) (persistence.Seq, bool, error)
	Outbox(ctx context.Context, user string) ([]persistence.OutboxItem, error)
	FanoutMark(ctx context.Context, user string) (persistence.FanoutMark, error)
	OutboxUsers(ctx context.Context, after string, limit int) ([]string, error)
	Convs(ctx context.Context, user string) ([]persistence.Conv, error)
}

// SessionTable is the node's gateway as the actors see it (gateway.Server
// satisfies it). Both methods must not block.
type SessionTable interface {
	Deliver(sessionID uint64, frames []*wire.Frame) bool
	Kick(sessionID uint64, k *wire.Kick) bool
}

// GatewayActorName is the name of the per-node gateway actor: user actors
// anywhere in the cluster push to address/"gateway".
const GatewayActorName = "gateway"

// Runtime holds what every actor of this node shares: configuration, the
// store, the courier, the gateway actor, the presence table and actor.
// Build it with NewRuntime, pass Kinds to the cluster, then Start it with
// the started cluster. Its exported methods may be called concurrently;
// the blocking ones (a ctx first) are for non-actor callers only.
type Runtime struct {
	cfg      Config
	store    Store
	reader   logReader // storeReader{store}: one for every actor
	env      *stateEnv // every user state's shared part (over cfg and reader)
	pids     namedPIDs // gateway actors' and relays' PIDs, one each (pids.go)
	gate     writeGate // store, if it refuses writes ahead (storefull.go); nil: no
	log      *slog.Logger
	metrics  *metrics
	hooks    Publisher // nil: no webhooks
	presence *presence
	policy   atomic.Pointer[Policy] // current kick policy (the server API may change it)
	dispatch *workerDispatcher      // runs the mailboxes of this runtime's actors (dispatcher.go)
	cells    *userCells             // the user kind's spawner (cell.go)
	activate deadline.Shared        // the contexts of activations' store calls: one per second, not a timer each
	idle     *idleWheel             // idle actors' passivation checks (idlewheel.go)

	// Set by Start, then read-only.
	sys      *actor.ActorSystem
	cl       *cluster.Cluster
	members  Membership // nil: this node only
	courier  *courier
	gateway  *actor.PID
	presPID  *actor.PID // this node's presence actor
	relayPID *actor.PID // this node's relay actor (relay.go)
	unwatch  func()     // ends the topology subscription (failover.go)
	homes    sessionHomes
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// NewRuntime returns a runtime; hooks and reg may be nil (no webhooks, no
// metrics registered).
func NewRuntime(cfg Config, store Store, hooks Publisher, reg prometheus.Registerer, log *slog.Logger) *Runtime {
	r := &Runtime{cfg: cfg.withDefaults(), store: store, reader: storeReader{store}, log: log, metrics: newMetrics(reg), hooks: hooks, presence: newPresence(),
		dispatch: newWorkerDispatcher(mailboxThroughput, workerIdle)}
	r.cells = &userCells{rt: r}
	r.activate.Timeout = r.cfg.RequestTimeout
	r.env = &stateEnv{cfg: &r.cfg, rd: r.reader, newID: NewMessageID}
	r.idle = newIdleWheel(r.cfg.IdleTimeout)
	r.cfg.noEvents = hooks == nil
	p := r.cfg.Policy
	r.policy.Store(&p)
	r.gate, _ = store.(writeGate)
	if reg != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tandem_online_users", Help: "Users with at least one live session whose actor is on this node.",
		}, func() float64 { return float64(r.presence.count()) }))
	}
	return r
}

func (r *Runtime) now() time.Time { return r.cfg.Now() }

// KickPolicy returns the current kick policy: mode and per-class limits.
func (r *Runtime) KickPolicy() (string, map[string]int) {
	p := r.policy.Load()
	limits := make(map[string]int, len(p.Limits))
	for c, n := range p.Limits {
		limits[string(c)] = n
	}
	return string(p.Mode), limits
}

// SetKickPolicy replaces the kick policy on every member of the cluster
// until each one restarts (the --kick-policy/--class-limits flags set it at
// start; a node that joins later starts with its flags). Every online
// user's actor applies it at once: sessions the new policy no longer
// allows are kicked (reason POLICY), oldest first. Limits not named keep
// their defaults. An invalid policy is refused with a wire error; a member
// that does not answer in time gives ErrUnavailable (the members that did
// answer have applied it; repeating the call is harmless).
func (r *Runtime) SetKickPolicy(ctx context.Context, mode string, limits map[string]int) (*wire.Error, error) {
	p := Policy{Mode: PolicyMode(mode), Limits: map[Class]int{}}
	for c, n := range limits {
		p.Limits[Class(c)] = n
	}
	if err := p.Validate(); err != nil {
		return wire.Err(wire.CodeInvalidArgument, err.Error()), nil
	}
	p = p.withDefaults()
	answers, err := r.askAll(ctx, policyToProto(p), func() any { return &actorpb.Done{Error: r.applyPolicy(p)} })
	if err != nil {
		return nil, fmt.Errorf("kick policy: %w", err)
	}
	for _, a := range answers {
		d, ok := a.(*actorpb.Done)
		if !ok {
			return nil, fmt.Errorf("kick policy: unexpected answer %T", a)
		}
		if d.GetError() != nil {
			return d.GetError(), nil
		}
	}
	return nil, nil
}

// SendAs sends a message as user for the server API and returns the
// answer (SendAck or Error). With includeSender the message goes through
// the sender's log (the sender's devices get it; acked once durable there,
// delivered to the peer by the outbox); without, it is stored straight
// into the peer's log and the sender's devices never see it.
func (r *Runtime) SendAs(ctx context.Context, from string, m *wire.Send, includeSender bool) (*wire.Frame, error) {
	if m.GetConversation().GetType() == wire.Conversation_GROUP {
		// Through the group's actor, the ordering point, as a member.
		g := m.GetConversation().GetId()
		if !ValidID(g) || !ValidID(from) {
			return wire.ErrFrame(0, wire.CodeInvalidArgument, "from and the group ID must be 1-64 bytes of [A-Za-z0-9_.@:-]"), nil
		}
		timeout := r.cfg.RequestTimeout
		if d, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(d))
		}
		res, err := r.cl.Request(g, GroupKind, &actorpb.ApiSend{Send: m, FromUser: from}, cluster.WithTimeout(timeout))
		if err != nil {
			return nil, fmt.Errorf("send to group %q: %w", g, err)
		}
		ar, ok := res.(*actorpb.ApiResult)
		if !ok {
			return nil, fmt.Errorf("send to group %q: unexpected answer %T", g, res)
		}
		return ar.GetReply(), nil
	}
	if m.GetConversation().GetType() == wire.Conversation_DIRECT && !includeSender && !m.GetOptions().GetTransient() {
		return r.apiCall(ctx, m.GetConversation().GetId(), &actorpb.ApiDeliver{FromUser: from, Send: m})
	}
	return r.apiCall(ctx, from, &actorpb.ApiSend{Send: m, IncludeSender: includeSender})
}

// GroupOp runs op ("create", "add", "remove", "dismiss") on group for the
// server API and returns the group's name and members after it.
func (r *Runtime) GroupOp(ctx context.Context, group, op, by, name string, members []string) (string, []string, *wire.Error, error) {
	ops := map[string]actorpb.GroupCommand_Op{"create": actorpb.GroupCommand_CREATE, "add": actorpb.GroupCommand_ADD,
		"remove": actorpb.GroupCommand_REMOVE, "dismiss": actorpb.GroupCommand_DISMISS}
	o, ok := ops[op]
	if !ok {
		return "", nil, wire.Err(wire.CodeInvalidArgument, "unknown group operation"), nil
	}
	st, werr, err := r.Group(ctx, group, &actorpb.GroupCommand{Op: o, By: by, Name: name, Members: members})
	return st.GetName(), st.GetMembers(), werr, err
}

// Group runs a membership command on group (create, add, remove,
// dismiss) and returns the group's state after it.
func (r *Runtime) Group(ctx context.Context, group string, c *actorpb.GroupCommand) (*actorpb.GroupState, *wire.Error, error) {
	if !ValidID(group) {
		return nil, wire.Err(wire.CodeInvalidArgument, "group ID must be 1-64 bytes of [A-Za-z0-9_.@:-]"), nil
	}
	timeout := r.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	res, err := r.cl.Request(group, GroupKind, c, cluster.WithTimeout(timeout))
	if err != nil {
		return nil, nil, fmt.Errorf("group %q: %w", group, err)
	}
	gr, ok := res.(*actorpb.GroupResult)
	if !ok {
		return nil, nil, fmt.Errorf("group %q: unexpected answer %T", group, res)
	}
	return gr.GetState(), gr.GetError(), nil
}

// History reads user's history of a conversation for the server API
// (answer: HistoryPage or Error).
func (r *Runtime) History(ctx context.Context, user string, h *wire.HistoryRequest) (*wire.Frame, error) {
	return r.apiCall(ctx, user, &actorpb.ApiHistory{Request: h})
}

// RecallAs recalls a message of user for the server API (no time limit).
func (r *Runtime) RecallAs(ctx context.Context, user string, rc *wire.Recall) (*wire.Frame, error) {
	return r.apiCall(ctx, user, &actorpb.ApiRecall{Recall: rc})
}

func (r *Runtime) apiCall(ctx context.Context, user string, msg any) (*wire.Frame, error) {
	if !ValidID(user) {
		return wire.ErrFrame(0, wire.CodeInvalidArgument, "user ID must be 1-64 bytes of [A-Za-z0-9_.@:-]"), nil
	}
	timeout := r.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	res, err := r.cl.Request(user, UserKind, msg, cluster.WithTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("request to %q: %w", user, err)
	}
	ar, ok := res.(*actorpb.ApiResult)
	if !ok {
		return nil, fmt.Errorf("request to %q: unexpected answer %T", user, res)
	}
	return ar.GetReply(), nil
}

func policyFromProto(m *actorpb.PolicyChanged) Policy {
	p := Policy{Mode: PolicyMode(m.GetMode()), Limits: map[Class]int{}}
	for c, n := range m.GetLimits() {
		p.Limits[Class(c)] = int(n)
	}
	return p.withDefaults()
}

// Kick forces the user's sessions of device (all if device is "") offline
// with kick reason ADMIN and returns the sessions it ended. The user's
// actor decides, wherever it lives; a user offline everywhere in the
// cluster is not activated. A member that does not answer the presence
// question gives ErrUnavailable.
func (r *Runtime) Kick(ctx context.Context, user, device string) ([]*wire.DeviceInfo, error) {
	ds, err := r.Devices(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("kick %q: %w", user, err)
	}
	if len(ds) == 0 {
		return nil, nil
	}
	timeout := r.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	res, err := r.cl.Request(user, UserKind, &actorpb.AdminKick{DeviceId: device}, cluster.WithTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("kick %q: %w", user, err)
	}
	kr, ok := res.(*actorpb.AdminKickResult)
	if !ok {
		return nil, fmt.Errorf("kick %q: unexpected answer %T", user, res)
	}
	return kr.GetKicked(), nil
}

const (
	mailboxThroughput = 300 // messages a mailbox runs before it yields: protoactor's default
	workerIdle        = 10 * time.Second
)

// props are the props of the actors this runtime spawns: their mailboxes
// (leanMailbox: no queue while empty) run on the runtime's worker pool.
func (r *Runtime) props(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer, actor.WithDispatcher(r.dispatch), actor.WithMailbox(newLeanMailbox))
}

// Kinds returns the cluster kinds this package implements.
func (r *Runtime) Kinds() []*cluster.Kind {
	if r.cfg.NoActivations {
		return nil
	}
	groups := r.props(func() actor.Actor { return &groupActor{rt: r} })
	return []*cluster.Kind{tcluster.NewKindSpawnedBy(UserKind, r.cells.props(), r.cells.spawn), tcluster.NewKind(GroupKind, groups)}
}

// Start spawns the node's gateway actor over sessions and its presence
// actor, and starts the courier; members lists the cluster for
// cluster-wide questions (nil: this node is the whole cluster). Stop
// undoes it.
func (r *Runtime) Start(cl *cluster.Cluster, sessions SessionTable, members Membership) error {
	r.cl, r.sys, r.members = cl, cl.ActorSystem, members
	r.courier = newCourier(cl, r.log, r.metrics)
	pid, err := r.sys.Root.SpawnNamed(r.props(func() actor.Actor {
		return &gatewayActor{sessions: sessions, rt: r}
	}), GatewayActorName)
	if err != nil {
		r.courier.stop()
		return fmt.Errorf("spawn the gateway actor: %w", err)
	}
	r.gateway = pid
	pres, err := r.sys.Root.SpawnNamed(r.props(func() actor.Actor {
		return &presenceActor{rt: r}
	}), PresenceActorName)
	if err != nil {
		r.courier.stop()
		_ = r.sys.Root.StopFuture(r.gateway).Wait() // only a timeout can fail; nothing to do about it
		return fmt.Errorf("spawn the presence actor: %w", err)
	}
	r.presPID = pres
	relay, err := r.sys.Root.SpawnNamed(r.props(func() actor.Actor { return &relayActor{rt: r} }), RelayActorName)
	if err != nil {
		r.courier.stop()
		for _, pid := range []*actor.PID{r.gateway, r.presPID} {
			_ = r.sys.Root.StopFuture(pid).Wait() // only a timeout can fail; nothing to do about it
		}
		return fmt.Errorf("spawn the relay actor: %w", err)
	}
	r.relayPID = relay
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	if !r.cfg.NoActivations {
		r.wg.Go(func() { r.redriveOutboxes(ctx, false) })
	}
	r.unwatch = r.watchTopology(ctx)
	r.wg.Go(func() { r.idle.run(ctx, r.sys.Root) })
	return nil
}

// redriveOutboxes activates every user with pending fan-outs, so messages
// acked before a crash reach their recipients even if the sender never
// comes back (activation re-drives the outbox). With ownedOnly it
// activates only the identities this node owns now (after a member left:
// every survivor scans, each activates its share).
func (r *Runtime) redriveOutboxes(ctx context.Context, ownedOnly bool) {
	owner, _ := r.cl.Config.IdentityLookup.(interface {
		Owner(identity, kind string) string
	})
	self := r.sys.Address()
	after, n := "", 0
	for ctx.Err() == nil {
		users, err := r.store.OutboxUsers(ctx, after, 256)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("listing users with pending fan-outs", "err", err)
			}
			return
		}
		if len(users) == 0 {
			break
		}
		for _, u := range users {
			if ctx.Err() != nil {
				return
			}
			kind, id := UserKind, u
			if g, ok := strings.CutPrefix(u, groupNS); ok {
				kind, id = GroupKind, g
			}
			if ownedOnly && owner != nil && owner.Owner(id, kind) != self {
				continue
			}
			if r.cl.Get(id, kind) == nil {
				r.log.Warn("could not activate an owner of pending fan-outs", "kind", kind, "identity", id)
			}
			n++
		}
		after = users[len(users)-1]
	}
	if n > 0 {
		r.log.Info("activated users with pending fan-outs", "users", n)
	}
}

// Stop stops the courier, the presence actor and the gateway actor.
func (r *Runtime) Stop() {
	if r.unwatch != nil {
		r.unwatch()
	}
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
	if r.courier != nil {
		r.courier.stop()
	}
	for _, pid := range []*actor.PID{r.relayPID, r.presPID, r.gateway} {
		if pid != nil {
			_ = r.sys.Root.StopFuture(pid).Wait() // only a timeout can fail; nothing to do about it
		}
	}
}

// gatewayActor hands user actors' pushes and kicks to the node's gateway.
// Sessions the gateway no longer knows are reported back to their user.
type gatewayActor struct {
	sessions SessionTable
	rt       *Runtime
}

func (g *gatewayActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actorpb.SessionPush:
		for _, sid := range m.GetSessionIds() {
			if !g.sessions.Deliver(sid, m.GetFrames()) && m.GetUserId() != "" {
				g.rt.courier.send(m.GetUserId(), &actorpb.SessionClosed{Session: &actorpb.SessionRef{
					GatewayAddress: ctx.Self().Address, GatewayId: ctx.Self().Id, SessionId: sid,
				}})
			}
		}
	case *actorpb.SessionKick:
		g.sessions.Kick(m.GetSessionId(), m.GetKick())
	}
}

// courier sends messages to user actors by identity from a small worker
// pool, so no actor blocks on a PID lookup or activation. A PID this
// node has cached is sent to at once; the others are resolved by up to
// courierLookups goroutines at a time, so that a slow owner (a lookup
// waits for the owner's placement actor, across the network for a
// remote user, whose PID is cached only briefly) holds up only its own
// messages, not every delivery of the node. It is lossy by design when
// its queue is full: everything it carries is re-driven (the outbox) or
// re-derivable.
type courier struct {
	cl      *cluster.Cluster
	log     *slog.Logger
	metrics *metrics
	q       chan courierMsg
	wg      sync.WaitGroup
	once    sync.Once

	// cached answers from the lookup's PID cache without waiting (nil:
	// every message is resolved on a lookup goroutine).
	cached    func(identity, kind string) (*actor.PID, bool)
	lookups   chan struct{} // a slot per lookup goroutine running
	resolving sync.WaitGroup

	// Senders hold mu for reading; stop holds it to close q, so that a
	// late send (a session closing while the node stops) is dropped, not
	// a send on a closed channel.
	mu     sync.RWMutex
	closed bool
}

type courierMsg struct {
	identity string
	kind     string
	msg      any
}

const (
	courierWorkers = 8
	courierQueue   = 65536
	// courierLookups bounds the lookups in flight. Eight workers each
	// waiting for a lookup were the cluster's delivery ceiling: 8 ÷ the
	// lookup's round trip (a few ms, seconds under overload).
	courierLookups = 256
)

func newCourier(cl *cluster.Cluster, log *slog.Logger, m *metrics) *courier {
	c := &courier{cl: cl, log: log, metrics: m, q: make(chan courierMsg, courierQueue), lookups: make(chan struct{}, courierLookups)}
	if cl != nil {
		if l, ok := cl.Config.IdentityLookup.(interface {
			Cached(identity, kind string) (*actor.PID, bool)
		}); ok {
			c.cached = l.Cached
		}
	}
	for range courierWorkers {
		c.wg.Go(c.work)
	}
	return c
}

func (c *courier) send(identity string, msg any) { c.sendKind(UserKind, identity, msg) }

func (c *courier) sendKind(kind, identity string, msg any) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		c.metrics.courierDrops.Inc()
		return
	}
	select {
	case c.q <- courierMsg{identity: identity, kind: kind, msg: msg}:
	default:
		c.metrics.courierDrops.Inc()
	}
}

func (c *courier) work() {
	for m := range c.q {
		if c.cached != nil {
			if pid, ok := c.cached(m.identity, m.kind); ok {
				c.cl.ActorSystem.Root.Send(pid, m.msg)
				continue
			}
		}
		c.lookups <- struct{}{} // waits while courierLookups run: the queue fills, then drops
		c.resolving.Go(func() {
			defer func() { <-c.lookups }()
			c.deliver(m)
		})
	}
}

// deliver resolves m's identity (activating it if need be) and sends.
func (c *courier) deliver(m courierMsg) {
	pid := c.cl.Get(m.identity, m.kind)
	if pid == nil {
		c.metrics.courierDrops.Inc()
		c.log.Warn("courier: no activation", "kind", m.kind, "identity", m.identity)
		return
	}
	c.cl.ActorSystem.Root.Send(pid, m.msg)
}

func (c *courier) stop() {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		close(c.q)
		c.mu.Unlock()
	})
	c.wg.Wait()
	c.resolving.Wait()
}

type metrics struct {
	activations, logins, loginConflicts, sends, appendFailures, courierDrops prometheus.Counter
	presenceFailures, storeRefusals                                          prometheus.Counter
	activeUsers                                                              prometheus.Gauge
	passivations                                                             prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		activations:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_user_activations_total", Help: "User actor activations on this node."}),
		logins:         prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_logins_total", Help: "Accepted device logins."}),
		loginConflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_login_conflicts_total", Help: "Logins refused with LOGIN_CONFLICT (no_kick or automatic reconnect)."}),
		sends:          prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_sends_total", Help: "Send frames received by user actors."}),
		appendFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_append_failures_total", Help: "Failed log appends (fenced or storage errors); each stops its actor."}),
		courierDrops:   prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_courier_drops_total", Help: "Actor-to-actor messages dropped (queue full or no activation); re-driven by the outbox."}),
		presenceFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_presence_unavailable_total",
			Help: "Cluster-wide questions (online status, devices, force offline, kick policy) refused because a member did not answer in time."}),
		storeRefusals: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_store_write_refusals_total",
			Help: "Client and API writes answered UNAVAILABLE without writing because the store refused writes (disk full, or failed)."}),
		activeUsers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_active_users", Help: "User actors active on this node."}),
		passivations: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_user_passivations_total",
			Help: "User actors stopped after their idle timeout (no session, nothing in flight)."}),
	}
	if reg != nil {
		reg.MustRegister(m.activations, m.logins, m.loginConflicts, m.sends, m.appendFailures, m.courierDrops, m.presenceFailures, m.storeRefusals, m.activeUsers, m.passivations)
	}
	return m
}

// UserCounts is what this node's user actors have done so far.
type UserCounts struct {
	Active       int64  // user actors active now
	Passivations uint64 // stopped after their idle timeout
}

// UserCounts reads the node's user-actor metrics (load tools watch
// passivation waves with it).
func (rt *Runtime) UserCounts() UserCounts {
	read := func(c prometheus.Metric) float64 {
		var m dto.Metric
		if err := c.Write(&m); err != nil {
			return 0
		}
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	m := rt.metrics
	return UserCounts{Active: int64(read(m.activeUsers)), Passivations: uint64(read(m.passivations))}
}
