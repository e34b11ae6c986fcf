package actors

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// An entry comes out at its tick, not before; one for a time already past
// comes out at the next tick; each comes out once.
func TestIdleWheelDue(t *testing.T) {
	w := newIdleWheel(160 * time.Millisecond) // tick 10 ms
	if w.tick != 10*time.Millisecond {
		t.Fatalf("tick %v, want 10ms", w.tick)
	}
	base := time.Unix(0, w.next*int64(w.tick)) // the first tick not sent yet
	a, b, c := actor.NewPID("n", "a"), actor.NewPID("n", "b"), actor.NewPID("n", "c")
	w.add(base.Add(25*time.Millisecond), a) // tick +3 (rounded up)
	w.add(base.Add(30*time.Millisecond), b) // tick +3
	w.add(base.Add(-time.Hour), c)          // past: the first tick not sent
	if got := w.due(base.Add(-time.Nanosecond)); len(got) != 0 {
		t.Fatalf("before any entry's tick: %v", got)
	}
	if got := w.due(base); len(got) != 1 || got[0] != c {
		t.Fatalf("at the first tick: %v, want the past entry only", got)
	}
	if got := w.due(base.Add(29 * time.Millisecond)); len(got) != 0 {
		t.Fatalf("before +3 ticks: %v", got)
	}
	if got := w.due(base.Add(35 * time.Millisecond)); len(got) != 2 {
		t.Fatalf("at +3 ticks: %v, want a and b", got)
	}
	if got, n := w.due(base.Add(time.Hour)), w.pending(); len(got) != 0 || n != 0 {
		t.Fatalf("later: %v, %d pending; every entry comes out once", got, n)
	}
	if w := newIdleWheel(2 * time.Minute); w.tick != time.Second {
		t.Fatalf("tick for 2 min: %v, want 1s", w.tick)
	}
	if w := newIdleWheel(time.Microsecond); w.tick != time.Millisecond {
		t.Fatalf("tick for 1 µs: %v, want 1ms", w.tick)
	}
}

// run sends each due actor one idleCheck, within a tick of its time, and
// stops with its context.
func TestIdleWheelRunSends(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	got := make(chan time.Time, 10)
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(idleCheck); ok {
			got <- time.Now()
		}
	}))
	w := newIdleWheel(320 * time.Millisecond) // tick 20 ms
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx, sys.Root); close(done) }()
	start := time.Now()
	w.add(start.Add(100*time.Millisecond), pid)
	select {
	case at := <-got:
		if d := at.Sub(start); d < 100*time.Millisecond || d > 2*time.Second {
			t.Fatalf("idleCheck %v after scheduling it 100 ms ahead", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no idleCheck")
	}
	select {
	case <-got:
		t.Fatal("a second idleCheck for one entry")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop with its context")
	}
}

// pending is the number of entries not sent yet.
func (w *idleWheel) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, b := range w.buckets {
		n += len(b)
	}
	return n
}
