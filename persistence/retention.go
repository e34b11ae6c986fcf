package persistence

import (
	"math"
	"time"
)

// Retention (BadgerOptions.Retention) in the badger store:
//
//   - Correctness is the readers' time filter: an entry with TimeMS below
//     cutoffMS is not returned, whatever badger still holds.
//   - Space is the TTL: log keys expire retention+ttlMargin after their
//     own TimeMS, dedup keys that long after their append (expiresAt).
//     Expired keys vanish from reads at once and from the files when
//     compaction reaches them.
//   - Seqs: lastSeq reads the high-water mark H as well as the last log
//     key, so a log whose keys have all expired still continues at its
//     last seq + 1.

// ceilMS returns the smallest whole millisecond not before t: for integer
// milliseconds ms, ms >= t ⇔ ms >= ceilMS(t).
func ceilMS(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// cutoffMS returns the oldest entry time readers return now: entries with
// TimeMS < cutoffMS have aged out. math.MinInt64 without retention.
func (b *Local) cutoffMS() int64 {
	if b.retention <= 0 {
		return math.MinInt64
	}
	return ceilMS(b.now().Add(-b.retention))
}

// expiresAt returns the badger expiry (Unix seconds, rounded up) of a key
// kept until keep after timeMS. The result is never 0, which badger reads
// as "never expires": a time long past gives 1.
func expiresAt(timeMS int64, keep time.Duration) uint64 {
	keepMS := keep.Milliseconds()
	if timeMS > math.MaxInt64-keepMS {
		return math.MaxUint64
	}
	ms := timeMS + keepMS
	if ms <= 0 {
		return 1
	}
	sec := uint64(ms / 1000)
	if ms%1000 != 0 {
		sec++
	}
	return sec
}
