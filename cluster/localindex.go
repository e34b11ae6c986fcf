package cluster

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// localIndex holds this node's live activations by identity. The placement
// actor alone writes it (placementState); anyone reads it: Get and Cached
// answer a local identity from it, so a local activation is not also kept
// in the topology's PID cache (pidcache.go), which holds remote PIDs only.
// A node of a million activations kept each twice, the cache's entry
// (~90 bytes) and the insert into a million-entry map on every
// activation's path being the copy.
//
// Keys are substrings of the PIDs' own names (keyOfActivation): no copy of
// an identity per activation.
type localIndex struct {
	shards [pidShards]localShard
	n      atomic.Int64
}

type localShard struct {
	mu sync.RWMutex
	m  map[idKey]*actor.PID
}

func (x *localIndex) shard(k idKey) *localShard {
	return &x.shards[hashIdentity(k.identity)%pidShards]
}

func (x *localIndex) get(k idKey) (*actor.PID, bool) {
	s := x.shard(k)
	s.mu.RLock()
	pid, ok := s.m[k]
	s.mu.RUnlock()
	return pid, ok
}

func (x *localIndex) put(k idKey, pid *actor.PID) {
	s := x.shard(k)
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[idKey]*actor.PID)
	}
	if _, had := s.m[k]; !had {
		x.n.Add(1)
	}
	s.m[k] = pid
	s.mu.Unlock()
}

// del removes k if it is still pid's, and reports whether it did.
func (x *localIndex) del(k idKey, pid *actor.PID) bool {
	s := x.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.m[k]; !ok || a.Id != pid.Id {
		return false
	}
	delete(s.m, k)
	x.n.Add(-1)
	return true
}

func (x *localIndex) len() int { return int(x.n.Load()) }

// pids returns every activation in the index (a copy).
func (x *localIndex) pids() []*actor.PID {
	out := make([]*actor.PID, 0, x.len())
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		for _, pid := range s.m {
			out = append(out, pid)
		}
		s.mu.RUnlock()
	}
	return out
}

// keyOfActivation is the key of the activation pid: spawn names it
// "kind/identity$n" under the placement actor, so its Id is
// "tandem-placement/kind/identity$n"; the kind and identity are
// substrings of it.
func keyOfActivation(pid *actor.PID) idKey {
	key := activationKey(pid)
	kind, identity, _ := strings.Cut(key, "/")
	return idKey{kind, identity}
}
