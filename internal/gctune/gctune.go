// Package gctune keeps the Go heap goal at or above a minimum while the
// live heap is small.
//
// The collector's goal is live heap × (1 + GOGC/100). A chat node's live
// heap is small next to what it allocates per second (per message: frames,
// protobufs, store batches), so at GOGC=100 it collects many times a
// second: measured with the socket benchmark on two cores (bench/README.md,
// "Issue 10: the pebble store"), the default GC cost about 15 % of the
// throughput. Tune raises GOGC after each collection so the next goal is
// at least MinHeap, and lets it fall back to the base value once the live
// heap alone reaches MinHeap/2 (then the goal is at least MinHeap anyway).
// It never lowers GOGC below the base, and a memory limit (GOMEMLIMIT)
// still bounds the heap whatever GOGC is.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// maxPercent caps the GOGC Tune sets (a live heap of a few MiB would
// otherwise ask for tens of thousands).
const maxPercent = 2000

// Tuner adjusts GOGC after every collection until Stop.
type Tuner struct {
	minHeap uint64
	base    int
	stopped atomic.Bool
	percent atomic.Int64 // the GOGC set last
	sample  []metrics.Sample
}

// Start tunes GOGC so the heap goal is at least minHeap bytes. base is
// the GOGC to keep once the live heap is large (the value in force: the
// GOGC environment variable or 100). minHeap 0 returns nil: nothing tuned.
func Start(minHeap uint64) *Tuner {
	if minHeap == 0 {
		return nil
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 { // GOGC=off: the operator decides
		return nil
	}
	t := &Tuner{minHeap: minHeap, base: base,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.percent.Store(int64(base))
	t.arm()
	return t
}

// Percent is the GOGC set after the latest collection.
func (t *Tuner) Percent() int { return int(t.percent.Load()) }

// Stop restores the base GOGC; no more tuning after it.
func (t *Tuner) Stop() {
	if t == nil || t.stopped.Swap(true) {
		return
	}
	debug.SetGCPercent(t.base)
}

// arm sets a finalizer on a fresh object: it runs after the next
// collection, tunes, and arms again.
func (t *Tuner) arm() {
	s := new([16]byte) // not tiny-allocated: has its own finalizer
	runtime.SetFinalizer(s, func(*[16]byte) {
		if t.stopped.Load() {
			return
		}
		t.tune()
		t.arm()
	})
}

func (t *Tuner) tune() {
	metrics.Read(t.sample)
	p := PercentFor(t.sample[0].Value.Uint64(), t.minHeap, t.base)
	if int64(p) != t.percent.Load() {
		t.percent.Store(int64(p))
		debug.SetGCPercent(p)
	}
}

// PercentFor is the GOGC that makes the goal for live bytes of live heap
// at least minHeap: never below base, at most maxPercent.
func PercentFor(live, minHeap uint64, base int) int {
	live = max(live, 1)
	if live >= minHeap {
		return base
	}
	p := (minHeap - live) * 100 / live
	return int(min(max(p, uint64(base)), maxPercent))
}
