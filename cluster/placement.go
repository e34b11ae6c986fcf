package cluster

import (
	"fmt"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
)

// The activation protocol (pure part; placement_actor.go performs it).
//
// A node activates an identity only when, under its current view, it is
// the identity's owner and every other member supporting the kind has
// answered a probe with "no activation here". A probed node answers
// "refused" when the prober is not in its own view, or when it is itself
// in the middle of activating the identity. Rendezvous ranking is the same
// on every node, so once two nodes see each other only the higher-ranked
// one can believe it owns the identity. Together this means two nodes can
// both activate an identity only if one has dropped the other from its
// view (a partition or a false failure detection) — the store's epoch fence
// covers that case.
//
// An activation whose node is no longer the owner (a member joined) keeps
// serving: the new owner's probe finds it and hands its PID out, until it
// passivates; then the new owner activates a fresh one.

// pendingActivation is an activation waiting for its probe round.
type pendingActivation struct {
	ci      *pcluster.ClusterIdentity
	hash    uint64       // topology hash of the view the round was sent under
	waiters []*actor.PID // requesters to answer when the round completes
	left    int          // probe answers still expected
	found   *actor.PID   // an activation another node already has
	unsure  bool         // a probe timed out or was refused
}

// verdict is what the placement actor must do next.
type verdict int

const (
	verdictWait   verdict = iota // nothing yet: a probe round is running
	verdictReply                 // answer waiters with pid
	verdictRefuse                // answer waiters with Failed: retry later
	verdictProbe                 // probe targets, then call probed per answer
	verdictSpawn                 // activate here, call spawned, answer waiters
)

type decision struct {
	verdict verdict
	pid     *actor.PID   // verdictReply
	targets []string     // verdictProbe
	waiters []*actor.PID // verdictReply, verdictRefuse, verdictSpawn
}

// placementState is the placement actor's bookkeeping. Not safe for
// concurrent use: only the placement actor touches it.
type placementState struct {
	// active holds the live activations by kind and identity, the keys
	// being substrings of the PIDs' own names (keyOfActivation): no
	// reverse index and no copy of the identity per activation, of which
	// a node holds a million. Shared with the Lookup, which reads it.
	active  *localIndex
	pending map[string]*pendingActivation // by ClusterIdentity.AsKey()
}

// newPlacementState returns a state over the index active (nil: an index
// of its own).
func newPlacementState(active *localIndex) placementState {
	if active == nil {
		active = new(localIndex)
	}
	return placementState{
		active:  active,
		pending: map[string]*pendingActivation{},
	}
}

// activeAt returns the live activation of ci, if any.
func (s *placementState) activeAt(ci *pcluster.ClusterIdentity) (*actor.PID, bool) {
	return s.active.get(idKey{ci.Kind, ci.Identity})
}

// activate handles an activation request from sender under view v.
func (s *placementState) activate(v *view, ci *pcluster.ClusterIdentity, sender *actor.PID) decision {
	if pid, ok := s.activeAt(ci); ok {
		// Served even if no longer ours: the old activation keeps serving.
		return decision{verdict: verdictReply, pid: pid, waiters: []*actor.PID{sender}}
	}
	if v.owner(ci.Kind, ci.Identity) != v.self {
		return decision{verdict: verdictRefuse, waiters: []*actor.PID{sender}}
	}
	key := ci.AsKey()
	if p, ok := s.pending[key]; ok {
		p.waiters = append(p.waiters, sender)
		return decision{verdict: verdictWait}
	}
	targets := v.others(ci.Kind)
	if len(targets) == 0 {
		return decision{verdict: verdictSpawn, waiters: []*actor.PID{sender}}
	}
	s.pending[key] = &pendingActivation{
		ci: ci, hash: v.hash, waiters: []*actor.PID{sender}, left: len(targets),
	}
	return decision{verdict: verdictProbe, targets: targets}
}

// probed records one probe answer (res nil or err non-nil: no answer) for
// the round of key, now under view v.
func (s *placementState) probed(v *view, key string, res *pcluster.ActivationResponse, err error) decision {
	p, ok := s.pending[key]
	if !ok {
		return decision{verdict: verdictWait}
	}
	p.left--
	switch {
	case err != nil, res == nil, res.Failed:
		p.unsure = true
	case res.Pid != nil:
		p.found = res.Pid
	}
	if p.left > 0 {
		return decision{verdict: verdictWait}
	}
	switch {
	case p.found != nil:
		delete(s.pending, key)
		return decision{verdict: verdictReply, pid: p.found, waiters: p.waiters}
	case p.unsure, v.owner(p.ci.Kind, p.ci.Identity) != v.self:
		delete(s.pending, key)
		return decision{verdict: verdictRefuse, waiters: p.waiters}
	case v.hash != p.hash:
		// Members changed during the round: ask the current set again.
		targets := v.others(p.ci.Kind)
		if len(targets) > 0 {
			p.hash, p.left, p.unsure = v.hash, len(targets), false
			return decision{verdict: verdictProbe, targets: targets}
		}
	}
	delete(s.pending, key)
	return decision{verdict: verdictSpawn, waiters: p.waiters}
}

// probe answers another node's probe (from is its remote address): does
// this node have, or is it creating, an activation of ci?
func (s *placementState) probe(v *view, ci *pcluster.ClusterIdentity, from string) *pcluster.ActivationResponse {
	switch {
	case ci == nil || !v.has(from):
		return &pcluster.ActivationResponse{Failed: true, TopologyHash: v.hash}
	}
	if pid, ok := s.activeAt(ci); ok {
		return &pcluster.ActivationResponse{Pid: pid, TopologyHash: v.hash}
	}
	if _, ok := s.pending[ci.AsKey()]; ok {
		return &pcluster.ActivationResponse{Failed: true, TopologyHash: v.hash}
	}
	return &pcluster.ActivationResponse{TopologyHash: v.hash}
}

// keyOfActivation is the kind and identity of the activation pid,
// substrings of its name: spawn names it "act/kind/identity$n"
// (activationPrefix), the key being the part between the prefix and the
// last '$', split at its first '/'.
func keyOfActivation(pid *actor.PID) idKey {
	id := strings.TrimPrefix(pid.Id, activationPrefix)
	if i := strings.LastIndexByte(id, '$'); i >= 0 {
		id = id[:i]
	}
	kind, identity, _ := strings.Cut(id, "/")
	return idKey{kind, identity}
}

// spawned records a new local activation of ci, named as spawn names it,
// and returns its key: strings cut from the PID's name.
func (s *placementState) spawned(ci *pcluster.ClusterIdentity, pid *actor.PID) idKey {
	k := keyOfActivation(pid)
	if k != (idKey{ci.Kind, ci.Identity}) {
		panic(fmt.Sprintf("cluster: activation %s of %s is not named by its identity", pid.Id, ci.AsKey()))
	}
	s.active.put(k, pid)
	return k
}

// terminated forgets the activation pid, if it is one, in O(1), and
// returns its identity.
func (s *placementState) terminated(pid *actor.PID) (*pcluster.ClusterIdentity, bool) {
	k := keyOfActivation(pid)
	if !s.active.del(k, pid) {
		return nil, false
	}
	return pcluster.NewClusterIdentity(k.identity, k.kind), true
}

// holds reports whether pid is the live activation of ci here.
func (s *placementState) holds(ci *pcluster.ClusterIdentity, pid *actor.PID) bool {
	a, ok := s.activeAt(ci)
	return ok && a.Id == pid.Id
}
