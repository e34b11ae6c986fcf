package main

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 2^subBits linear buckets, so a bucket spans at most 1/128 (0.8 %) of
// its values.
const (
	subBits = 7
	subN    = 1 << subBits
)

// hist is a log-linear (HDR-like) histogram of durations in nanoseconds:
// values below 2·subN have a bucket each; above, a value v with bit length
// L falls in bucket e·subN + v>>e, e = L-subBits-1. Memory grows with the
// largest value (about 2 KiB per power of two), not with the count. Not
// safe for concurrent use.
type hist struct {
	counts   []uint64
	n        uint64
	sum      float64 // nanoseconds
	min, max int64
}

func bucketOf(v uint64) int {
	e := max(bits.Len64(v)-subBits-1, 0)
	return e*subN + int(v>>e)
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < 2*subN {
		return uint64(i)
	}
	e := i/subN - 1
	m := uint64(i - e*subN) // in [subN, 2·subN)
	return (m+1)<<e - 1
}

func (h *hist) record(d time.Duration) {
	v := max(int64(d), 0)
	i := bucketOf(uint64(v))
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.n++
	h.sum += float64(v)
}

func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]uint64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// quantile is the value at or below which a fraction q of the recorded
// values lie: the top of the bucket holding that rank (the exact maximum
// for q = 1). Zero when empty.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(int64(bucketHigh(i)), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}
