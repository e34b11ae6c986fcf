package cluster

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
)

// pidCache remembers the remote PIDs Get found, so that the hot paths
// (every device frame, every courier message) do not ask the owner's
// placement actor each time. One cache belongs to one topology and is
// dropped with it. A remote PID is used for remoteTTL after the lookup,
// because a member learns nothing when a peer's activation stops — a send
// to it is lost until the entry expires, which the senders' retries
// (devices, the outbox) absorb. Local activations are answered from the
// placement's own index instead (localindex.go), and only while still
// registered (a passivated activation's PID is not handed out again).
type pidCache struct {
	// A plain map per shard, not a sync.Map: a sync.Map boxes every key
	// and value and adds trie nodes, ≈ 0.25 KiB per identity, and a node
	// caches one for every user online on it. Shards keep the read locks
	// apart.
	shards [pidShards]pidShard
	n      atomic.Int64
}

const pidShards = 64

type pidShard struct {
	mu sync.RWMutex
	m  map[idKey]cachedPID
}

var pidSeed = maphash.MakeSeed()

func (c *pidCache) shard(k idKey) *pidShard {
	return &c.shards[maphash.String(pidSeed, k.identity)%pidShards]
}

func (c *pidCache) load(k idKey) (cachedPID, bool) {
	s := c.shard(k)
	s.mu.RLock()
	v, ok := s.m[k]
	s.mu.RUnlock()
	return v, ok
}

// store sets k to v and reports whether k is new.
func (c *pidCache) store(k idKey, v cachedPID) bool {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[idKey]cachedPID)
	}
	_, had := s.m[k]
	s.m[k] = v
	return !had
}

// deleteIf deletes k if its entry is still for pid, and reports whether it did.
func (c *pidCache) deleteIf(k idKey, pid *actor.PID) bool {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[k]; !ok || !v.pid.Equal(pid) {
		return false
	}
	delete(s.m, k)
	return true
}

func (c *pidCache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.m = nil
		s.mu.Unlock()
	}
	c.n.Store(0)
}

// keepFrom fills c, not yet in use by anyone, with the entries of old whose
// PID lives on a member keep accepts. Shards line up: the same identity
// hashes to the same shard in both.
func (c *pidCache) keepFrom(old *pidCache, keep func(addr string) bool) {
	var n int64
	for i := range old.shards {
		from, to := &old.shards[i], &c.shards[i]
		from.mu.RLock()
		for k, v := range from.m {
			if !keep(v.pid.Address) {
				continue
			}
			if to.m == nil {
				to.m = make(map[idKey]cachedPID, len(from.m))
			}
			to.m[k] = v
			n++
		}
		from.mu.RUnlock()
	}
	c.n.Store(n)
}

type idKey struct{ kind, identity string }

type cachedPID struct {
	pid   *actor.PID
	until int64 // unix nanoseconds after which it is not used
}

const (
	remoteTTL = 2 * time.Second
	// maxCachedPIDs bounds the cache; past it the cache starts over.
	maxCachedPIDs = 1 << 20
)

// Cached returns the PID of identity of kind if this node's cache holds
// one that may still be used, without asking anyone: callers that must
// not wait (the courier) resolve the others elsewhere.
func (l *Lookup) Cached(identity, kind string) (*actor.PID, bool) {
	if l.c == nil {
		return nil, false
	}
	return l.cachedKey(l.cur.Load(), idKey{kind, identity})
}

// Home returns the remote address of the member whose activation of
// identity this node knows — itself if this node is the view's only
// member or has the activation (no check that it still runs: the answer
// is where it lives, not a PID to send to), else a cached remote PID's —
// without asking anyone; ok is false if it knows of none.
func (l *Lookup) Home(identity, kind string) (addr string, ok bool) {
	if l.c == nil {
		return "", false
	}
	t := l.cur.Load()
	if ms := t.v.members(); len(ms) == 1 && t.v.self == l.self && t.v.has(l.self) {
		return l.self, true
	}
	k := idKey{kind, identity}
	if _, ok := l.local.get(k); ok {
		return l.self, true
	}
	if c, ok := t.pids.load(k); ok && time.Now().UnixNano() < c.until {
		return c.pid.Address, true
	}
	return "", false
}

// cachedGet returns the cached PID of ci if it may still be used.
func (l *Lookup) cachedGet(t *topology, ci *pcluster.ClusterIdentity) (*actor.PID, bool) {
	return l.cachedKey(t, idKey{ci.Kind, ci.Identity})
}

func (l *Lookup) cachedKey(t *topology, k idKey) (*actor.PID, bool) {
	if pid, ok := l.local.get(k); ok {
		if _, ok := l.c.ActorSystem.ProcessRegistry.GetLocal(pid.Id); ok {
			return pid, true
		}
	}
	c, ok := t.pids.load(k)
	if !ok {
		return nil, false
	}
	if c.pid.Address != l.self && time.Now().UnixNano() < c.until {
		return c.pid, true
	}
	if t.pids.deleteIf(k, c.pid) {
		t.pids.n.Add(-1)
	}
	return nil, false
}

// cachePut remembers pid for ci in t's cache if it is remote (a local one
// is in the placement's index already).
func (l *Lookup) cachePut(t *topology, ci *pcluster.ClusterIdentity, pid *actor.PID) {
	if pid.Address == l.self {
		return
	}
	c := cachedPID{pid: pid, until: time.Now().Add(remoteTTL).UnixNano()}
	if t.pids.n.Load() >= maxCachedPIDs {
		t.pids.clear()
	}
	if t.pids.store(idKey{ci.Kind, ci.Identity}, c) {
		t.pids.n.Add(1)
	}
}

// forget drops ci's entry if it is pid (its activation is stopping).
func (t *topology) forget(ci *pcluster.ClusterIdentity, pid *actor.PID) {
	if t.pids.deleteIf(idKey{ci.Kind, ci.Identity}, pid) {
		t.pids.n.Add(-1)
	}
}
