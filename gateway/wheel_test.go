package gateway

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// item is a wheel test item.
type item struct {
	id int
	e  wheelEntry
}

func (x *item) wheelEntry() *wheelEntry { return &x.e }

func newItems(n int) []*item {
	items := make([]*item, n)
	for i := range items {
		items[i] = &item{id: i}
	}
	return items
}

// checkWheel checks that every item knows its place and the count is right.
func checkWheel(t *testing.T, w *wheel[*item]) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for i, s := range w.slots {
		for j, x := range s {
			if int(x.e.slot) != i+1 || int(x.e.idx) != j {
				t.Fatalf("item %d at slot %d index %d thinks it is at slot %d index %d", x.id, i, j, x.e.slot-1, x.e.idx)
			}
		}
		n += len(s)
	}
	if n != w.n {
		t.Fatalf("%d items in the slots, count says %d", n, w.n)
	}
}

func ids(xs []*item) []int {
	out := make([]int, 0, len(xs))
	for _, x := range xs {
		out = append(out, x.id)
	}
	slices.Sort(out)
	return out
}

func TestWheelShape(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		timeout, tick time.Duration
		ttl           int64
		slots         int
	}{
		{time.Second, time.Second, 3, 4},
		{time.Second, 300 * time.Millisecond, 6, 8},
		{time.Second, 125 * time.Millisecond, 10, 16},
		{60 * time.Second, 60 * time.Second / heartbeatTicks, heartbeatTicks + 2, 64},
		{time.Second, time.Millisecond, 1002, 1024},
	} {
		w := newWheel[*item](tc.timeout, tc.tick)
		if w.ttl != tc.ttl || len(w.slots) != tc.slots {
			t.Errorf("timeout %v tick %v: ttl %d, %d slots; want %d, %d", tc.timeout, tc.tick, w.ttl, len(w.slots), tc.ttl, tc.slots)
		}
		// Never early: activity at the very end of tick L (L+1 ticks),
		// seen by a clock one tick late, is timeout old at tick L+ttl.
		if got := time.Duration(w.ttl-2) * tc.tick; got < tc.timeout {
			t.Errorf("timeout %v tick %v: ttl %d allows expiry after %v", tc.timeout, tc.tick, w.ttl, got)
		}
	}
}

// A silent item expires exactly ttl ticks after it was added, an active
// one ttl ticks after its last touch, whatever tick it was added at.
func TestWheelExpiresSilentItems(t *testing.T) {
	t.Parallel()
	w := newWheel[*item](time.Second, 250*time.Millisecond) // ttl 6
	items := newItems(3)
	silent, active, late := items[0], items[1], items[2]
	w.add(silent)
	w.add(active)
	var lateAt int64 = 3
	lastTouch := int64(0)
	expiredAt := map[int]int64{}
	for now := int64(1); now <= 40; now++ {
		if now == lateAt+1 {
			// The wheel has reached lateAt: add records that tick.
			w.add(late)
		}
		for _, x := range w.advance(now) {
			if _, dup := expiredAt[x.id]; dup {
				t.Fatalf("item %d expired twice", x.id)
			}
			expiredAt[x.id] = now
		}
		if now <= 20 && now%5 == 0 {
			w.touch(&active.e)
			lastTouch = now
		}
		checkWheel(t, w)
	}
	want := map[int]int64{silent.id: w.ttl, late.id: lateAt + w.ttl, active.id: lastTouch + w.ttl}
	for id, at := range want {
		if expiredAt[id] != at {
			t.Errorf("item %d expired at tick %d, want %d", id, expiredAt[id], at)
		}
	}
	if w.len() != 0 {
		t.Fatalf("%d items left", w.len())
	}
}

func TestWheelRemove(t *testing.T) {
	t.Parallel()
	w := newWheel[*item](time.Second, time.Second) // ttl 3, 4 slots
	items := newItems(6)
	for _, x := range items {
		w.add(x) // all in one slot
	}
	w.remove(items[1]) // from the middle
	checkWheel(t, w)
	w.remove(items[5]) // the last one
	checkWheel(t, w)
	w.remove(items[5]) // again: nothing
	w.remove(&item{id: 99})
	checkWheel(t, w)
	if w.len() != 4 {
		t.Fatalf("len %d, want 4", w.len())
	}
	if got := ids(w.advance(3)); !slices.Equal(got, []int{0, 2, 3, 4}) {
		t.Fatalf("expired %v, want [0 2 3 4]", got)
	}
	// Expired items are off the wheel: removing them is a no-op, and they
	// may come back.
	w.remove(items[0])
	w.add(items[0])
	checkWheel(t, w)
	if got := ids(w.advance(5)); len(got) != 0 {
		t.Fatalf("expired %v before its time", got)
	}
	if got := ids(w.advance(6)); !slices.Equal(got, []int{0}) {
		t.Fatalf("expired %v, want [0]", got)
	}
}

// A wheel goroutine that falls behind processes every slot it skipped
// against the current tick: nothing is lost, nothing expires early.
func TestWheelCatchUp(t *testing.T) {
	t.Parallel()
	w := newWheel[*item](time.Second, 100*time.Millisecond) // ttl 12, 16 slots
	items := newItems(8)
	for i, x := range items {
		w.advance(int64(i + 1))
		w.add(x) // item i due at tick i+1+ttl: 13…20
	}
	if got := w.advance(5); got != nil {
		t.Fatalf("advance to an old tick expired %v", ids(got))
	}
	w.touch(&items[0].e) // active at tick 8: due at 20
	// Tick 8 → 17 in one step.
	if got := ids(w.advance(17)); !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Fatalf("expired %v, want [1 2 3 4]", got)
	}
	checkWheel(t, w)
	// Far more than a turn later: everything left expires at once.
	if got := ids(w.advance(100)); !slices.Equal(got, []int{0, 5, 6, 7}) {
		t.Fatalf("expired %v, want [0 5 6 7]", got)
	}
	checkWheel(t, w)
}

// The wheel against a model of what it must do, under random operations.
func TestWheelModel(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tick := range []time.Duration{time.Second, 300 * time.Millisecond, 40 * time.Millisecond} {
		w := newWheel[*item](time.Second, tick)
		items := newItems(64)
		on := map[int]bool{}
		last := map[int]int64{}
		now := int64(0)
		for step := range 20000 {
			x := items[rng.IntN(len(items))]
			switch op := rng.IntN(10); {
			case op < 3:
				if !on[x.id] {
					w.add(x)
					on[x.id], last[x.id] = true, now
				}
			case op < 4:
				w.remove(x)
				delete(on, x.id)
			case op < 8:
				w.touch(&x.e)
				last[x.id] = now
			default:
				jump := int64(1)
				if rng.IntN(8) == 0 {
					jump += rng.Int64N(2 * int64(len(w.slots)))
				}
				now += jump
				var want []int
				for id := range on {
					if last[id]+w.ttl <= now {
						want = append(want, id)
						delete(on, id)
					}
				}
				slices.Sort(want)
				if got := ids(w.advance(now)); !slices.Equal(got, want) {
					t.Fatalf("tick %v step %d: advance(%d) expired %v, want %v", tick, step, now, got, want)
				}
			}
			if w.len() != len(on) {
				t.Fatalf("tick %v step %d: len %d, want %d", tick, step, w.len(), len(on))
			}
		}
		checkWheel(t, w)
	}
}

// run in fake time: silent items expire between timeout and timeout plus
// three ticks of silence, busy ones stay, removed ones never expire, and
// run returns when its context is done.
func TestWheelRun(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const timeout, tick = time.Second, 125 * time.Millisecond
		w := newWheel[*item](timeout, tick)
		items := newItems(3)
		silent, busy, removed := items[0], items[1], items[2]
		start := time.Now()

		var mu sync.Mutex
		expired := map[int]time.Duration{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run(ctx, func(x *item) {
				mu.Lock()
				defer mu.Unlock()
				if _, dup := expired[x.id]; dup {
					t.Errorf("item %d expired twice", x.id)
				}
				expired[x.id] = time.Since(start)
			})
		}()
		for _, x := range items {
			w.add(x)
		}
		var lastBusy time.Duration
		touched := make(chan struct{})
		go func() {
			defer close(touched)
			for range 15 {
				time.Sleep(200 * time.Millisecond)
				w.touch(&busy.e)
				lastBusy = time.Since(start)
			}
		}()
		time.Sleep(500 * time.Millisecond)
		w.remove(removed)

		time.Sleep(10 * time.Second)
		cancel()
		<-done
		<-touched

		mu.Lock()
		defer mu.Unlock()
		for _, c := range []struct {
			x      *item
			active time.Duration
		}{{silent, 0}, {busy, lastBusy}} {
			at, ok := expired[c.x.id]
			if !ok {
				t.Errorf("item %d never expired", c.x.id)
				continue
			}
			if silence := at - c.active; silence <= timeout || silence > timeout+3*tick {
				t.Errorf("item %d expired after %v of silence, want (%v, %v]", c.x.id, silence, timeout, timeout+3*tick)
			}
		}
		if at, ok := expired[removed.id]; ok {
			t.Errorf("removed item expired at %v", at)
		}
	})
}

func BenchmarkWheel(b *testing.B) {
	const n = 100_000
	// n sessions spread evenly over the slots, as logins over time do.
	setup := func() (*wheel[*item], []*item, int64) {
		w := newWheel[*item](DefaultHeartbeatTimeout, DefaultHeartbeatTimeout/heartbeatTicks)
		items := newItems(n)
		now := int64(0)
		for i, x := range items {
			if i%(n/int(w.ttl)) == 0 {
				now++
				w.advance(now)
			}
			w.add(x)
		}
		return w, items, now
	}
	// What the read path pays per frame.
	b.Run("touch", func(b *testing.B) {
		w, items, _ := setup()
		b.ReportAllocs()
		for b.Loop() {
			for _, x := range items {
				w.touch(&x.e)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/session")
	})
	// A turn of the wheel (ttl ticks) with every session active: before
	// each tick, the sessions due in it are touched; the wheel looks at
	// them and moves each to the slot of its new expiry. An op touches and
	// moves all n sessions once.
	b.Run("turn", func(b *testing.B) {
		w, _, now := setup()
		b.ReportAllocs()
		for b.Loop() {
			for range w.ttl {
				now++
				for _, x := range w.slots[now&w.mask] {
					w.touch(&x.e)
				}
				if exp := w.advance(now); len(exp) != 0 {
					b.Fatalf("%d sessions expired", len(exp))
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/session")
	})
	// A login and a logout among n sessions.
	b.Run("add+remove", func(b *testing.B) {
		w, _, _ := setup()
		x := &item{id: n}
		b.ReportAllocs()
		for b.Loop() {
			w.add(x)
			w.remove(x)
		}
	})
}
