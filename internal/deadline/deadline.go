// Package deadline hands out contexts with a deadline shared by many
// calls, where each call would otherwise make (and stop) a timer of its
// own: a context.WithTimeout per call costs a timer in the runtime's heap,
// a context and a cancel closure, and an activation storm makes tens of
// thousands a second (3–8 % of its CPU, measured in bench/README.md).
//
// A Shared context ends no sooner than Timeout after it is handed out and
// at most Timeout plus Slack after: one context serves every call for
// about Slack. Its own timer cancels it at the deadline; nothing else
// does, so a caller must not rely on a cancel of its own (there is none).
package deadline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Shared hands out contexts that end between Timeout and Timeout+Slack
// after Get. The zero Slack is one second. Safe for concurrent use.
type Shared struct {
	Timeout time.Duration
	Slack   time.Duration

	cur atomic.Pointer[shared]
	mu  sync.Mutex // making the next one
}

type shared struct {
	ctx   context.Context
	until time.Time
}

// DefaultSlack is the Slack of a Shared whose Slack is zero.
const DefaultSlack = time.Second

// Get returns a context whose deadline is at least Timeout from now.
func (d *Shared) Get() context.Context {
	now := time.Now()
	if c := d.cur.Load(); c != nil && c.until.Sub(now) >= d.Timeout {
		return c.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.cur.Load(); c != nil && c.until.Sub(now) >= d.Timeout {
		return c.ctx
	}
	slack := d.Slack
	if slack <= 0 {
		slack = DefaultSlack
	}
	until := now.Add(d.Timeout + slack)
	ctx, cancel := context.WithDeadline(context.Background(), until)
	_ = cancel // called by the context's own timer at the deadline
	d.cur.Store(&shared{ctx: ctx, until: until})
	return ctx
}

// SlackOf is the slack Set uses for a timeout: a tenth of it, at least a
// millisecond and at most DefaultSlack.
func SlackOf(timeout time.Duration) time.Duration {
	return min(max(timeout/10, time.Millisecond), DefaultSlack)
}

// Set keeps a Shared per timeout for callers whose timeouts vary among a
// few configured values (a request option); past maxTimeouts distinct
// ones, Get makes a context of its own per call. A timeout that is not a
// whole number of milliseconds — the rest of a caller's deadline,
// time.Until(d), almost always — gets a context of its own too: such
// values would each take a slot for good. Safe for concurrent use.
type Set struct {
	mu sync.Mutex
	m  atomic.Pointer[map[time.Duration]*Shared]
}

// maxTimeouts bounds the Shared kept by a Set.
const maxTimeouts = 16

// Get returns a context ending between timeout and timeout+SlackOf(timeout)
// from now, and its cancel function (a no-op for a shared one: call it
// anyway when done).
func (s *Set) Get(timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 || timeout%time.Millisecond != 0 {
		return context.WithTimeout(context.Background(), timeout)
	}
	if m := s.m.Load(); m != nil {
		if d, ok := (*m)[timeout]; ok {
			return d.Get(), func() {}
		}
	}
	s.mu.Lock()
	old := s.m.Load()
	var d *Shared
	if old != nil {
		d = (*old)[timeout]
	}
	if d == nil && (old == nil || len(*old) < maxTimeouts) {
		m := make(map[time.Duration]*Shared, 1+lenOf(old))
		if old != nil {
			for k, v := range *old {
				m[k] = v
			}
		}
		d = &Shared{Timeout: timeout, Slack: SlackOf(timeout)}
		m[timeout] = d
		s.m.Store(&m)
	}
	s.mu.Unlock()
	if d == nil {
		return context.WithTimeout(context.Background(), timeout)
	}
	return d.Get(), func() {}
}

func lenOf(m *map[time.Duration]*Shared) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
