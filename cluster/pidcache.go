package cluster

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
)

// pidCache remembers the PIDs Get found, so that the hot paths (every
// device frame, every courier message) do not ask the owner's placement
// actor each time. One cache belongs to one topology and is dropped with
// it. A local PID is used only while it is still registered (a passivated
// activation's PID is not handed out again); a remote one for remoteTTL
// after the lookup, because a member learns nothing when a peer's
// activation stops — a send to it is lost until the entry expires, which
// the senders' retries (devices, the outbox) absorb.
type pidCache struct {
	m sync.Map // idKey → cachedPID
	n atomic.Int64
}

type idKey struct{ kind, identity string }

type cachedPID struct {
	pid   *actor.PID
	until int64 // remote only: unix nanoseconds after which it is not used
}

const (
	remoteTTL = 2 * time.Second
	// maxCachedPIDs bounds the cache; past it the cache starts over.
	maxCachedPIDs = 1 << 20
)

// cachedGet returns the cached PID of ci if it may still be used.
func (l *Lookup) cachedGet(t *topology, ci *pcluster.ClusterIdentity) (*actor.PID, bool) {
	k := idKey{ci.Kind, ci.Identity}
	v, ok := t.pids.m.Load(k)
	if !ok {
		return nil, false
	}
	c := v.(cachedPID)
	if c.pid.Address == l.self {
		if _, ok := l.c.ActorSystem.ProcessRegistry.GetLocal(c.pid.Id); ok {
			return c.pid, true
		}
	} else if time.Now().UnixNano() < c.until {
		return c.pid, true
	}
	if t.pids.m.CompareAndDelete(k, v) {
		t.pids.n.Add(-1)
	}
	return nil, false
}

// cachePut remembers pid for ci in t's cache.
func (l *Lookup) cachePut(t *topology, ci *pcluster.ClusterIdentity, pid *actor.PID) {
	c := cachedPID{pid: pid}
	if pid.Address != l.self {
		c.until = time.Now().Add(remoteTTL).UnixNano()
	}
	if t.pids.n.Load() >= maxCachedPIDs {
		t.pids.m.Clear()
		t.pids.n.Store(0)
	}
	if _, loaded := t.pids.m.Swap(idKey{ci.Kind, ci.Identity}, c); !loaded {
		t.pids.n.Add(1)
	}
}

// forget drops ci's entry if it is pid (its activation is stopping).
func (t *topology) forget(ci *pcluster.ClusterIdentity, pid *actor.PID) {
	k := idKey{ci.Kind, ci.Identity}
	v, ok := t.pids.m.Load(k)
	if ok && v.(cachedPID).pid.Equal(pid) && t.pids.m.CompareAndDelete(k, v) {
		t.pids.n.Add(-1)
	}
}
