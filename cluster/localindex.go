package cluster

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tandem-im/tandem/internal/hashmap"
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
// key of two strings and a PID (internal/hashmap; the rare key whose hash
// another key holds goes into a small map by key).
type localIndex struct {
	shards [pidShards]localShard
	n      atomic.Int64
	hash   func(idKey) uint64 // nil: hashOfKey (tests make keys clash)
}

type localShard struct {
	mu sync.RWMutex
	m  hashmap.Map[idKey, *actor.PID, activationKeyer] // by hashOfKey
}

// activationKeyer: an activation's PID names its key.
type activationKeyer struct{}

func (activationKeyer) Key(pid *actor.PID) idKey { return keyOfActivation(pid) }

func hashOfKey(k idKey) uint64 { return maphash.Comparable(pidSeed, k) }

func (x *localIndex) shard(k idKey) (*localShard, uint64) {
	var h uint64
	if x.hash != nil {
		h = x.hash(k)
	} else {
		h = hashOfKey(k)
	}
	return &x.shards[h%pidShards], h
}

func (x *localIndex) get(k idKey) (*actor.PID, bool) {
	s, h := x.shard(k)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m.Get(h, k)
}

func (x *localIndex) put(k idKey, pid *actor.PID) {
	s, h := x.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m.Put(h, k, pid) {
		x.n.Add(1)
	}
}

// del removes k if it is still pid's, and reports whether it did.
func (x *localIndex) del(k idKey, pid *actor.PID) bool {
	s, h := x.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.m.Delete(h, k, func(a *actor.PID) bool { return a.Id == pid.Id }) {
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
		out = slices.AppendSeq(out, s.m.Values())
		s.mu.RUnlock()
	}
	return out
}
