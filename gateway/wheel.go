package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// wheel is a hashed timing wheel that expires items that have been
// silent for longer than one timeout shared by all of them: the heartbeat
// timer of every logged-in session of a node (DESIGN.md §7), instead of a
// timer per connection.
//
// Time is counted in ticks from the start of run. The wheel keeps a coarse
// clock, the tick it last reached, which touch records as an item's last
// activity: the hot path is one atomic load and one atomic store, with no
// lock and no allocation. Touching does not move an item. Each item sits
// in the slot of the tick at which it would expire if it had been silent
// since its last recorded activity; when the wheel reaches that slot it
// checks the item's last activity again and either expires the item or
// moves it to the slot of its new expiry tick. An item is so looked at
// about once per timeout, however busy it is.
//
// An item last active during tick L expires when the wheel reaches tick
// L+ttl, ttl = ceil(timeout/tick)+2: one tick because activity during tick
// L may have come at its very end, and one of margin for a clock that was
// late (the goroutine running the wheel was not scheduled on time), so an
// item is never expired before timeout of silence (unless the clock was
// a whole tick late). It is expired at the latest ttl ticks (timeout plus
// at most 3 ticks) after its last activity, plus the wheel goroutine's
// own delay.
//
// Every expiry tick is less than one turn ahead (the wheel has more than
// ttl slots), so a slot holds only items due at the tick it is reached:
// there are no rounds to count. Slot i holds items in a slice, and each
// item knows its slot and index (wheelEntry), so remove is a swap with the
// slot's last item: O(1).
//
// add, remove and touch are safe for concurrent use; advance and run are
// called from one goroutine at a time.
type wheel[T wheelItem] struct {
	// Set by newWheel, then read-only.
	tick time.Duration
	ttl  int64 // ticks from an item's last activity to its expiry
	mask int64 // len(slots)-1; len(slots) is a power of two above ttl

	// clock is the tick advance last reached: what touch records.
	clock atomic.Int64

	mu    sync.Mutex
	slots [][]T
	cur   int64 // the last tick whose slot was processed
	n     int   // items on the wheel
	spare []T   // an emptied slot's array, for the next empty slot put fills

	// Only the goroutine calling advance.
	expired []T
}

// wheelItem is what a wheel holds: a pointer to something with a
// wheelEntry in it.
type wheelItem interface {
	wheelEntry() *wheelEntry
}

// wheelEntry is an item's state on a wheel. The zero value is off the
// wheel.
type wheelEntry struct {
	// last is the wheel tick of the item's last activity. Any goroutine.
	last atomic.Int64

	// Guarded by the wheel's mu.
	slot int32 // 1 + the slot's index; 0: not on the wheel
	idx  int32 // index in the slot
}

// newWheel returns a wheel expiring items silent for longer than timeout,
// checked every tick. tick must be positive and at most timeout.
func newWheel[T wheelItem](timeout, tick time.Duration) *wheel[T] {
	ttl := int64((timeout+tick-1)/tick) + 2
	n := int64(1)
	for n <= ttl {
		n <<= 1
	}
	return &wheel[T]{tick: tick, ttl: ttl, mask: n - 1, slots: make([][]T, n)}
}

// touch records activity of the item with entry e (on the wheel or not,
// yet). Cheap: the read path calls it for every frame.
func (w *wheel[T]) touch(e *wheelEntry) {
	e.last.Store(w.clock.Load())
}

// add puts x on the wheel, active now. x must not be on the wheel.
func (w *wheel[T]) add(x T) {
	e := x.wheelEntry()
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clock.Load()
	e.last.Store(now)
	w.put(x, e, now+w.ttl)
	w.n++
}

// remove takes x off the wheel, if it is on it.
func (w *wheel[T]) remove(x T) {
	e := x.wheelEntry()
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.slot == 0 {
		return
	}
	s := &w.slots[e.slot-1]
	last := len(*s) - 1
	if int(e.idx) != last {
		moved := (*s)[last]
		(*s)[e.idx] = moved
		moved.wheelEntry().idx = e.idx
	}
	var zero T
	(*s)[last] = zero // let it be collected
	*s = (*s)[:last]
	e.slot, e.idx = 0, 0
	w.n--
}

// len is the number of items on the wheel.
func (w *wheel[T]) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// put appends x to the slot of tick due. w.mu must be held.
func (w *wheel[T]) put(x T, e *wheelEntry, due int64) {
	i := due & w.mask
	s := w.slots[i]
	if cap(s) == 0 {
		s, w.spare = w.spare, nil
	}
	e.slot, e.idx = int32(i)+1, int32(len(s))
	w.slots[i] = append(s, x)
}

// advance moves the wheel to tick now (later ticks than the last one; an
// earlier or equal now does nothing) and returns the items it expired,
// taken off the wheel. The slice is valid until the next call. Slots of
// ticks skipped since the last call are processed too (each slot once,
// however many ticks were missed), against now.
func (w *wheel[T]) advance(now int64) []T {
	clear(w.expired)
	w.expired = w.expired[:0]
	w.mu.Lock()
	defer w.mu.Unlock()
	if now <= w.cur {
		return nil
	}
	w.clock.Store(now)
	from := max(w.cur+1, now-w.mask)
	w.cur = now
	for t := from; t <= now; t++ {
		i := t & w.mask
		list := w.slots[i]
		if len(list) == 0 {
			continue
		}
		// Items that stay go to other slots, or back to this one if
		// processed out of turn: not into the array being read. The
		// emptied array goes to the next empty slot that gets items, so
		// that arrays follow the items instead of idling in empty slots.
		w.slots[i] = nil
		for _, x := range list {
			e := x.wheelEntry()
			if due := e.last.Load() + w.ttl; due > now {
				w.put(x, e, due)
				continue
			}
			e.slot, e.idx = 0, 0
			w.n--
			w.expired = append(w.expired, x)
		}
		clear(list)
		if cap(list) > 64 && cap(list) > 4*len(list) {
			continue // the slot shrank: let a burst's array go
		}
		if cap(list) > cap(w.spare) {
			w.spare = list[:0]
		}
	}
	return w.expired
}

// run advances the wheel every tick until ctx is done, passing each item
// it expires to expire, without holding the wheel's lock: expire may
// call add and remove.
func (w *wheel[T]) run(ctx context.Context, expire func(T)) {
	start := time.Now()
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, x := range w.advance(int64(time.Since(start) / w.tick)) {
			expire(x)
		}
	}
}
