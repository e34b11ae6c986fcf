package actors

import (
	"context"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// idleWheel sends idleCheck to idle actors once their idle timeout may
// have passed: one goroutine and a bucket of PIDs per tick, where a timer
// per idle actor cost a runtime timer, a *time.Timer and a closure each —
// three heap objects the collector marks for every one of a million users
// activated without logging in (a storm of deliveries to offline users).
//
// An actor has at most one entry (idleClock.armed) and entries are not
// cancelled: an actor that became busy meanwhile gets its idleCheck, finds
// itself busy and does nothing (idleClock.due), as it did when a stopped
// timer fired anyway. A check comes at most one tick late.
//
// Not the gateway's heartbeat wheel (gateway/wheel.go): that one expires
// items sharing one timeout and keeps its bookkeeping inside each item;
// an actor's timeout has its own jitter, and the wheel only needs to send
// a message, so a PID per entry is all it keeps.
type idleWheel struct {
	tick time.Duration

	mu      sync.Mutex
	next    int64                  // the first tick whose bucket is not sent yet
	buckets map[int64][]*actor.PID // tick number → actors due then
}

// newIdleWheel returns a wheel whose tick suits idle timeouts of timeout:
// a sixteenth of it, between 1 ms and 1 s.
func newIdleWheel(timeout time.Duration) *idleWheel {
	tick := min(max(timeout/16, time.Millisecond), time.Second)
	return &idleWheel{tick: tick, next: time.Now().UnixNano() / int64(tick), buckets: map[int64][]*actor.PID{}}
}

// add schedules an idleCheck to pid at or after at (the next tick if at
// has passed).
func (w *idleWheel) add(at time.Time, pid *actor.PID) {
	k := (at.UnixNano() + int64(w.tick) - 1) / int64(w.tick)
	w.mu.Lock()
	k = max(k, w.next)
	w.buckets[k] = append(w.buckets[k], pid)
	w.mu.Unlock()
}

// due removes and returns the actors whose ticks have come by now.
func (w *idleWheel) due(now time.Time) []*actor.PID {
	k := now.UnixNano() / int64(w.tick)
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*actor.PID
	for ; w.next <= k; w.next++ {
		if b, ok := w.buckets[w.next]; ok {
			if out == nil {
				out = b
			} else {
				out = append(out, b...)
			}
			delete(w.buckets, w.next)
		}
	}
	return out
}

// run sends the due checks every tick until ctx ends.
func (w *idleWheel) run(ctx context.Context, root *actor.RootContext) {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, pid := range w.due(now) {
				root.Send(pid, idleCheck{})
			}
		}
	}
}
