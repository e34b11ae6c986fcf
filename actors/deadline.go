package actors

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// storeDeadline hands out the contexts of the store calls an actor makes
// while it activates: each ends no sooner than timeout after it is handed
// out, and at most a second later. One context serves every activation
// for about a second, where each one made (and stopped) a timer of its
// own: an activation storm made and stopped tens of thousands of timers a
// second, 3–4 % of its CPU.
type storeDeadline struct {
	timeout time.Duration
	cur     atomic.Pointer[deadlineCtx]
	mu      sync.Mutex // making the next one
}

type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc // called by its own timer at the deadline
	until  time.Time
}

// deadlineSlack is how much longer than the timeout a context may run.
const deadlineSlack = time.Second

func (d *storeDeadline) get() context.Context {
	now := time.Now()
	if c := d.cur.Load(); c != nil && c.until.Sub(now) >= d.timeout {
		return c.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.cur.Load(); c != nil && c.until.Sub(now) >= d.timeout {
		return c.ctx
	}
	until := now.Add(d.timeout + deadlineSlack)
	ctx, cancel := context.WithDeadline(context.Background(), until)
	d.cur.Store(&deadlineCtx{ctx: ctx, cancel: cancel, until: until})
	return ctx
}
