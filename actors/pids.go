package actors

import (
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// namedPIDs hands out one shared PID per (address, ID) of the node-level
// actors the user and group actors write to — gateway actors, relays —
// of which a cluster has a handful: a push built a PID per frame (two
// per login, 200 bytes of garbage), and each new PID looked its process
// up in the registry again where a shared one keeps it. Past maxNamedPIDs
// distinct names it makes a PID per call. Safe for concurrent use.
type namedPIDs struct {
	m sync.Map // gwKey → *actor.PID
	n atomic.Int32
}

const maxNamedPIDs = 4096

func (p *namedPIDs) get(addr, id string) *actor.PID {
	k := gwKey{addr, id}
	if v, ok := p.m.Load(k); ok {
		return v.(*actor.PID)
	}
	pid := actor.NewPID(addr, id)
	if p.n.Load() >= maxNamedPIDs {
		return pid
	}
	v, loaded := p.m.LoadOrStore(gwKey{intern(addr), intern(id)}, pid)
	if !loaded {
		p.n.Add(1)
	}
	return v.(*actor.PID)
}
