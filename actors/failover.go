package actors

import (
	"context"
	"sync"

	"github.com/asynkron/protoactor-go/cluster"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// What a node does when another member leaves or dies (DESIGN.md §6):
//
//   - Sessions of this node's gateway whose user actor lived on the lost
//     member are kicked with CloseSessionLost (4017, may_reconnect): the
//     activation that knew them is gone, and the next one, elsewhere,
//     would never push to them. The client logs in again at once
//     (invisibly, with its cursor), which activates the user on a
//     survivor; the store's epoch fence makes that activation the only
//     writer. Sessions that send a frame first are answered the same way
//     by the new activation (it does not know them).
//   - Users and groups with pending fan-outs that this node now owns are
//     activated, so messages the lost member acked reach their
//     recipients even if their senders never come back (the outbox rule
//     across node loss, as redriveOutboxes does after a restart).

// sessionHomes remembers, for every logged-in session of this node's
// gateway, the address of the node whose actor accepted its login. Safe
// for concurrent use.
type sessionHomes struct {
	mu sync.Mutex
	m  map[uint64]string // session ID → actor address
}

// set records that sid's actor lives at addr. A session whose actor lives
// on this node (self) is not kept: were this node lost, its gateway's
// sessions would go with it, so only other members' addresses are ever
// orphaned — and a single node kept an entry per session for nothing (a
// million-entry map under one lock on every login's path).
func (h *sessionHomes) set(sid uint64, addr, self string) {
	h.mu.Lock()
	switch {
	case addr == self:
		delete(h.m, sid) // homed elsewhere before, here now
	case h.m == nil:
		h.m = map[uint64]string{sid: addr}
	default:
		h.m[sid] = addr
	}
	h.mu.Unlock()
}

func (h *sessionHomes) drop(sid uint64) {
	h.mu.Lock()
	delete(h.m, sid)
	h.mu.Unlock()
}

// orphaned removes and returns the sessions whose actor lived at one of
// addrs.
func (h *sessionHomes) orphaned(addrs map[string]bool) []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []uint64
	for sid, a := range h.m {
		if addrs[a] {
			out = append(out, sid)
			delete(h.m, sid)
		}
	}
	return out
}

// watchTopology subscribes to the cluster's topology events; the returned
// function unsubscribes. Handlers run on the publisher's goroutine, so
// they only record what left and signal the failover goroutine.
func (r *Runtime) watchTopology(ctx context.Context) func() {
	left := make(chan map[string]bool, 64)
	sub := r.sys.EventStream.Subscribe(func(evt any) {
		t, ok := evt.(*cluster.ClusterTopology)
		if !ok || len(t.GetLeft()) == 0 {
			return
		}
		addrs := map[string]bool{}
		for _, m := range t.GetLeft() {
			addrs[m.Address()] = true
		}
		select {
		case left <- addrs:
		default: // a burst of changes: the outbox scan below covers it; sessions are caught by their next frame
			r.log.Warn("topology changes arrive faster than they are handled")
		}
	})
	r.wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case addrs := <-left:
				r.memberLeft(ctx, addrs)
			}
		}
	})
	return func() { r.sys.EventStream.Unsubscribe(sub) }
}

// memberLeft handles members (by actor address) that left the topology.
func (r *Runtime) memberLeft(ctx context.Context, addrs map[string]bool) {
	orphans := r.homes.orphaned(addrs)
	for _, sid := range orphans {
		r.sys.Root.Send(r.gateway, &actorpb.SessionKick{SessionId: sid, Kick: &wire.Kick{
			Reason:       wire.Kick_REASON_UNSPECIFIED,
			CloseCode:    wire.CloseSessionLost,
			MayReconnect: true,
		}})
	}
	r.log.Info("cluster members left", "members", len(addrs), "sessions_reattached", len(orphans))
	if !r.cfg.NoActivations { // it owns nobody's fan-out
		r.redriveOutboxes(ctx, true)
	}
}
