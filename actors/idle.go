package actors

import (
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// idleClock passivates an actor once it has been idle (by its own test:
// no session, nothing in flight) for its timeout since its last message.
// Its check is scheduled on the runtime's idle wheel (idlewheel.go) once
// the actor is idle, so an online user's actor holds no timer;
// protoactor's receive timeout would keep a timer, and the context extras
// it lives in, for every activation.
type idleClock struct {
	after time.Duration // this activation's timeout
	last  int64         // when the last message other than idleCheck came, Unix ns
	armed bool          // an idleCheck is on the wheel
}

// idleCheck asks the actor whether it has been idle long enough to stop.
type idleCheck struct{}

// start begins the clock: timeout, ±25 % if jitter (so that users
// activated together do not all stop together).
func (c *idleClock) start(timeout time.Duration, jitter bool) {
	if jitter && timeout >= 4 {
		timeout += time.Duration(rand.Int64N(int64(timeout/2))) - timeout/4
	}
	c.after, c.last = timeout, time.Now().UnixNano()
}

// touch records a message; call it for every message but idleCheck.
func (c *idleClock) touch() { c.last = time.Now().UnixNano() }

func (c *idleClock) quiet() time.Duration { return time.Duration(time.Now().UnixNano() - c.last) }

// due handles an idleCheck: whether the actor, idle now, should stop.
func (c *idleClock) due(idle bool) bool {
	c.armed = false // the actor's one entry came: arm schedules the next if it is still idle
	return idle && c.quiet() >= c.after
}

// arm, after a message, schedules the idle check if the actor is idle and
// has none scheduled. A busy actor's entry stays on the wheel (a wheel
// entry cannot be cancelled cheaply): when it comes, due finds the actor
// busy, and arm schedules the next once it is idle again.
func (c *idleClock) arm(ctx actor.Context, w *idleWheel, idle bool) {
	if idle && !c.armed {
		c.armed = true
		w.add(time.Now().Add(c.after-c.quiet()), ctx.Self())
	}
}

// deadLinger is how long an activation that failed to start keeps
// answering before it stops. It refuses everything with the reason (a full
// disk's retry hint among them), and it must live a while to do so:
// protoactor drops, without a dead letter, every message that reaches a
// mailbox behind the stop, and a request the placement actor had already
// handed this PID to (typically the login that activated it) would wait
// its whole timeout for nothing. Requests that come later find the same
// refusal until it stops; after that they activate it again.
const deadLinger = time.Second

// deadStop ends a failed activation's linger.
type deadStop struct{}

// lingerDead stops a failed activation deadLinger from now.
func lingerDead(ctx actor.Context, root *actor.RootContext) {
	self := ctx.Self()
	time.AfterFunc(deadLinger, func() { root.Send(self, deadStop{}) })
}
