package cluster

import (
	"hash/maphash"
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
// Entries are keyed by a 64-bit hash of the kind and identity, the PID's
// own name (keyOfActivation) telling which identity an entry is: no copy
// of an identity per activation, and a slot of 16 bytes, not the 40 of a
// key of two strings and a PID. The rare key whose hash another key holds
// already goes into a small map by key (clash).
type localIndex struct {
	shards [pidShards]localShard
	n      atomic.Int64
	hash   func(idKey) uint64 // nil: hashOfKey (tests make keys clash)
}

type localShard struct {
	mu    sync.RWMutex
	m     map[uint64]*actor.PID // by hashOfKey
	clash map[idKey]*actor.PID  // keys whose hash m holds for another key
}

func hashOfKey(k idKey) uint64 { return maphash.Comparable(pidSeed, k) }

func (x *localIndex) shard(h uint64) *localShard { return &x.shards[h%pidShards] }

func (x *localIndex) hashOf(k idKey) uint64 {
	if x.hash != nil {
		return x.hash(k)
	}
	return hashOfKey(k)
}

func (x *localIndex) get(k idKey) (*actor.PID, bool) {
	h := x.hashOf(k)
	s := x.shard(h)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if pid, ok := s.m[h]; ok && keyOfActivation(pid) == k {
		return pid, true
	}
	pid, ok := s.clash[k]
	return pid, ok
}

func (x *localIndex) put(k idKey, pid *actor.PID) {
	h := x.hashOf(k)
	s := x.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[uint64]*actor.PID)
	}
	switch a, ok := s.m[h]; {
	case !ok:
		if _, had := s.clash[k]; had { // its slot was freed since: stays where it is
			s.clash[k] = pid
			return
		}
		s.m[h] = pid
	case keyOfActivation(a) == k:
		s.m[h] = pid
		return
	default:
		if _, had := s.clash[k]; !had {
			x.n.Add(1)
		}
		if s.clash == nil {
			s.clash = make(map[idKey]*actor.PID)
		}
		s.clash[k] = pid
		return
	}
	x.n.Add(1)
}

// del removes k if it is still pid's, and reports whether it did.
func (x *localIndex) del(k idKey, pid *actor.PID) bool {
	h := x.hashOf(k)
	s := x.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.m[h]; ok && a.Id == pid.Id {
		delete(s.m, h)
	} else if a, ok := s.clash[k]; ok && a.Id == pid.Id {
		delete(s.clash, k)
		if len(s.clash) == 0 {
			s.clash = nil
		}
	} else {
		return false
	}
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
		for _, pid := range s.clash {
			out = append(out, pid)
		}
		s.mu.RUnlock()
	}
	return out
}
