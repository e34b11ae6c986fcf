package main

import (
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	// Every value lies in its bucket, buckets are contiguous and a bucket
	// spans at most 1/subN of its values.
	prevHigh := int64(-1)
	for i := 0; i < 40*subN; i++ {
		high := int64(bucketHigh(i))
		low := prevHigh + 1
		if high < low {
			t.Fatalf("bucket %d: high %d below low %d", i, high, low)
		}
		if got := bucketOf(uint64(low)); got != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", low, got, i)
		}
		if got := bucketOf(uint64(high)); got != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", high, got, i)
		}
		if low >= 2*subN && float64(high-low+1) > float64(low)/subN {
			t.Fatalf("bucket %d [%d, %d] wider than 1/%d", i, low, high, subN)
		}
		prevHigh = high
	}
}

func TestQuantiles(t *testing.T) {
	var a, b hist
	for v := 1; v <= 1000; v++ {
		h := &a
		if v%2 == 0 {
			h = &b
		}
		h.record(time.Duration(v) * time.Microsecond)
	}
	a.merge(&b)
	if a.n != 1000 || a.min != int64(time.Microsecond) || a.max != int64(time.Millisecond) {
		t.Fatalf("merged n %d min %d max %d", a.n, a.min, a.max)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.9, 900 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := a.quantile(c.q)
		if got < c.want || float64(got-c.want) > float64(c.want)/subN {
			t.Errorf("quantile(%v) = %v, want %v (+1/%d)", c.q, got, c.want, subN)
		}
	}
	if m := a.mean(); m < 500*time.Microsecond || m > 501*time.Microsecond {
		t.Errorf("mean %v, want 500.5µs", m)
	}
	var empty hist
	if empty.quantile(0.99) != 0 || empty.mean() != 0 {
		t.Error("empty histogram: want zeros")
	}
}
