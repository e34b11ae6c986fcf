package actors

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/internal/hashmap"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// Cluster-wide presence (ADR 0003). Every node keeps a table of the users
// whose activation lives on it and has live sessions, fed by those
// activations. A question about any user — online status, devices, force
// offline — asks every member's presence actor and merges the answers
// (the higher activation epoch wins if two nodes report a user); a member
// that does not answer in time fails the question with ErrUnavailable
// rather than letting its users look offline. Transient messages and kick
// policy changes are sent to every member's presence actor, which hands
// them to its own activations. Nothing here activates a user.

// PresenceActorName is the name of the per-node presence actor: other
// nodes ask address/"presence".
const PresenceActorName = "presence"

// ErrUnavailable means a member of the cluster did not answer a
// cluster-wide question in time: the answer would be incomplete, so none
// is given. Callers should report a temporary failure (UNAVAILABLE).
var ErrUnavailable = errors.New("actors: a cluster member did not answer")

// maxPresenceQuery bounds the user IDs of one PresenceQuery.
const maxPresenceQuery = 500

// Membership is the cluster's member list as the runtime needs it
// (cluster.Member satisfies it). Members must not block.
type Membership interface {
	// Members returns the actor remote addresses of the members.
	Members() []string
}

// presence is the node's table of online users whose activation is on
// this node: user → the activation and its live sessions, as last
// published by that activation (the only writer of its entry). Safe for
// concurrent use.
//
// Entries are keyed by a 64-bit hash of the user ID, the entry naming its
// user (internal/hashmap): a map keyed by the ID itself rehashed every
// key's bytes as it grew (a cache miss per user moved), 3 % of a
// million-login storm's CPU.
type presence struct {
	seed   maphash.Seed
	shards [64]presenceShard
	hash   func(string) uint64 // nil: maphash with seed (tests make users clash)
}

type presenceShard struct {
	mu sync.RWMutex
	m  hashmap.Map[string, presenceEntry, presenceKeyer] // by the user's hash
}

// presenceEntry is one online user. Read-only once stored.
type presenceEntry struct {
	user    string
	epoch   persistence.Epoch
	pid     *actor.PID         // the activation on this node
	devices []*wire.DeviceInfo // oldest login first; never empty
}

// presenceKeyer: an entry names its user.
type presenceKeyer struct{}

func (presenceKeyer) Key(e presenceEntry) string { return e.user }

func newPresence() *presence { return &presence{seed: maphash.MakeSeed()} }

func (p *presence) shard(user string) (*presenceShard, uint64) {
	var h uint64
	if p.hash != nil {
		h = p.hash(user)
	} else {
		h = maphash.String(p.seed, user)
	}
	return &p.shards[h%uint64(len(p.shards))], h
}

// set replaces the user's entry with the sessions of the activation pid;
// none means offline. devices must not be modified afterwards.
func (p *presence) set(user string, epoch persistence.Epoch, pid *actor.PID, devices []*wire.DeviceInfo) {
	if len(devices) == 0 {
		p.clear(user, pid)
		return
	}
	s, h := p.shard(user)
	s.mu.Lock()
	s.m.Put(h, user, presenceEntry{user: user, epoch: epoch, pid: pid, devices: devices})
	s.mu.Unlock()
}

// clear removes the user's entry if it is the activation pid's (any
// activation's if pid is nil).
func (p *presence) clear(user string, pid *actor.PID) {
	s, h := p.shard(user)
	s.mu.Lock()
	s.m.Delete(h, user, func(e presenceEntry) bool { return pid == nil || e.pid.Equal(pid) })
	s.mu.Unlock()
}

// get returns the user's entry. Its slices must not be modified.
func (p *presence) get(user string) (presenceEntry, bool) {
	s, h := p.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m.Get(h, user)
}

// query answers a PresenceQuery: the online ones among users.
func (p *presence) query(users []string) []*actorpb.UserPresence {
	var out []*actorpb.UserPresence
	for _, u := range users {
		if e, ok := p.get(u); ok {
			out = append(out, &actorpb.UserPresence{UserId: u, Epoch: uint64(e.epoch), Devices: e.devices})
		}
	}
	return out
}

// each calls f for every online user (f must not call back into p).
func (p *presence) each(f func(user string, e presenceEntry)) {
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.RLock()
		all := slices.AppendSeq(make([]presenceEntry, 0, s.m.Len()), s.m.Values())
		s.mu.RUnlock()
		for _, e := range all {
			f(e.user, e)
		}
	}
}

// count returns the number of online users.
func (p *presence) count() int {
	n := 0
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.RLock()
		n += s.m.Len()
		s.mu.RUnlock()
	}
	return n
}

// presenceActor answers for this node's activations: presence queries
// from any node, transient messages to hand to local activations, kick
// policy changes. It never blocks: the table is read directly, and it
// only sends.
type presenceActor struct{ rt *Runtime }

func (p *presenceActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actorpb.PresenceQuery:
		ctx.Respond(&actorpb.PresenceResult{Users: p.rt.presence.query(m.GetUserIds())})
	case *actorpb.TransientRelay:
		p.rt.deliverTransient(m)
	case *actorpb.PolicyChanged:
		werr := p.rt.applyPolicy(policyFromProto(m))
		if ctx.Sender() != nil {
			ctx.Respond(&actorpb.Done{Error: werr})
		}
	}
}

// members returns the actor addresses of the cluster's members, this
// node's included.
func (r *Runtime) memberAddrs() []string {
	self := r.sys.Address()
	if r.members == nil {
		return []string{self}
	}
	addrs := r.members.Members()
	if !slices.Contains(addrs, self) {
		addrs = append(addrs, self)
	}
	return addrs
}

// askAll sends msg to the presence actor of every member in parallel and
// returns their answers; this node answers through local without a
// message. It fails with ErrUnavailable if any member does not answer
// before the request timeout or ctx's deadline. Only for non-actor
// callers: it blocks.
func (r *Runtime) askAll(ctx context.Context, msg proto.Message, local func() any) ([]any, error) {
	timeout := r.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, context.DeadlineExceeded)
	}
	self := r.sys.Address()
	addrs := r.memberAddrs()
	answers := make([]any, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		if addr == self {
			answers[i] = local()
			continue
		}
		wg.Go(func() {
			res, err := r.sys.Root.RequestFuture(actor.NewPID(addr, PresenceActorName), msg, timeout).Result()
			if err != nil {
				errs[i] = fmt.Errorf("%w: node %s: %w", ErrUnavailable, addr, err)
				return
			}
			answers[i] = res
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		r.metrics.presenceFailures.Inc()
		return nil, err
	}
	return answers, nil
}

// OnlineStatus returns the live sessions of each of users that is online
// anywhere in the cluster (offline users are absent), oldest login first,
// without activating anybody. It fails with ErrUnavailable when a member
// does not answer in time.
func (r *Runtime) OnlineStatus(ctx context.Context, users []string) (map[string][]*wire.DeviceInfo, error) {
	best := map[string]*actorpb.UserPresence{}
	for chunk := range slices.Chunk(dedupStrings(users), maxPresenceQuery) {
		answers, err := r.askAll(ctx, &actorpb.PresenceQuery{UserIds: chunk}, func() any {
			return &actorpb.PresenceResult{Users: r.presence.query(chunk)}
		})
		if err != nil {
			return nil, fmt.Errorf("online status: %w", err)
		}
		for _, a := range answers {
			res, ok := a.(*actorpb.PresenceResult)
			if !ok {
				return nil, fmt.Errorf("online status: unexpected answer %T", a)
			}
			mergePresence(best, res)
		}
	}
	out := make(map[string][]*wire.DeviceInfo, len(best))
	for u, up := range best {
		out[u] = up.GetDevices()
	}
	return out, nil
}

// mergePresence adds one node's answer to best: a user reported by two
// nodes (an activation that moved, or a partition) is taken from the
// activation with the higher epoch, the newer one.
func mergePresence(best map[string]*actorpb.UserPresence, res *actorpb.PresenceResult) {
	for _, up := range res.GetUsers() {
		if cur := best[up.GetUserId()]; cur == nil || up.GetEpoch() > cur.GetEpoch() {
			best[up.GetUserId()] = up
		}
	}
}

// Devices returns the live sessions of user anywhere in the cluster (nil:
// offline), without activating the user's actor.
func (r *Runtime) Devices(ctx context.Context, user string) ([]*wire.DeviceInfo, error) {
	st, err := r.OnlineStatus(ctx, []string{user})
	if err != nil {
		return nil, err
	}
	return st[user], nil
}

// relayTransient hands a never-stored message for to to every member's
// presence actor, which pushes it to those of them online there (see
// deliverTransient). It never blocks and activates nobody; called from
// actors.
func (r *Runtime) relayTransient(to []string, d *actorpb.TransientDeliver, perRecipient bool) {
	if len(to) == 0 {
		return
	}
	m := &actorpb.TransientRelay{ToUsers: to, Deliver: d, MentionPerRecipient: perRecipient}
	self := r.sys.Address()
	for _, addr := range r.memberAddrs() {
		if addr == self {
			r.deliverTransient(m)
			continue
		}
		r.sys.Root.Send(actor.NewPID(addr, PresenceActorName), m)
	}
}

// deliverTransient sends the relayed message to the local activations of
// its recipients that have live sessions. The message is shared between
// recipients unless a group's mention flag differs.
func (r *Runtime) deliverTransient(m *actorpb.TransientRelay) {
	d := m.GetDeliver()
	msg := d.GetMessage()
	if msg == nil || !ValidID(d.GetFromUser()) {
		return
	}
	for _, u := range m.GetToUsers() {
		e, ok := r.presence.get(u)
		if !ok {
			continue
		}
		out := d
		if m.GetMentionPerRecipient() {
			mentioned := u != d.GetFromUser() && (msg.GetMentionAll() || contains(msg.GetMentionList(), u))
			if mentioned != msg.GetMentioned() {
				cp := proto.Clone(msg).(*wire.Message)
				cp.Mentioned = mentioned
				out = &actorpb.TransientDeliver{FromUser: d.GetFromUser(), Message: cp}
			}
		}
		r.sys.Root.Send(e.pid, out)
	}
}

// applyPolicy makes p this node's kick policy and passes it to every local
// activation with live sessions (sessions it no longer allows are
// kicked). An invalid p is refused.
func (r *Runtime) applyPolicy(p Policy) *wire.Error {
	if err := p.Validate(); err != nil {
		return wire.Err(wire.CodeInvalidArgument, err.Error())
	}
	p = p.withDefaults()
	r.policy.Store(&p)
	msg := policyToProto(p)
	n := 0
	r.presence.each(func(_ string, e presenceEntry) {
		r.sys.Root.Send(e.pid, msg)
		n++
	})
	r.log.Info("kick policy changed", "policy", p.String(), "online_users", n)
	return nil
}

func policyToProto(p Policy) *actorpb.PolicyChanged {
	msg := &actorpb.PolicyChanged{Mode: string(p.Mode), Limits: map[string]int32{}}
	for c, n := range p.Limits {
		msg.Limits[string(c)] = int32(n)
	}
	return msg
}
