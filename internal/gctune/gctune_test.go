package gctune

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	for _, c := range []struct {
		live, min  uint64
		base, want int
	}{
		{live: 64 << 20, min: 256 << 20, base: 100, want: 300},  // goal 64 × 4 = 256
		{live: 128 << 20, min: 256 << 20, base: 100, want: 100}, // 128 × 2 = 256 already
		{live: 512 << 20, min: 256 << 20, base: 100, want: 100},
		{live: 1 << 20, min: 256 << 20, base: 100, want: maxPercent},
		{live: 0, min: 256 << 20, base: 100, want: maxPercent},
		{live: 200 << 20, min: 256 << 20, base: 150, want: 150}, // never below the base
	} {
		if got := PercentFor(c.live, c.min, c.base); got != c.want {
			t.Errorf("PercentFor(%d MiB, %d MiB, %d) = %d, want %d", c.live>>20, c.min>>20, c.base, got, c.want)
		}
	}
}

// TestTunerRaisesAndRestores: with a small live heap the tuner raises
// GOGC after a collection, and Stop puts the base back.
func TestTunerRaisesAndRestores(t *testing.T) {
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)
	tu := Start(1 << 30)
	if tu == nil {
		t.Fatal("Start returned nil with GOGC=100")
	}
	deadline := time.Now().Add(5 * time.Second)
	for tu.Percent() <= 100 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if tu.Percent() <= 100 {
		t.Fatalf("GOGC still %d after collections with a small heap", tu.Percent())
	}
	now := debug.SetGCPercent(-1)
	debug.SetGCPercent(now)
	if now != tu.Percent() {
		t.Fatalf("GOGC in force %d, tuner says %d", now, tu.Percent())
	}
	tu.Stop()
	now = debug.SetGCPercent(100)
	if now != 100 {
		t.Fatalf("GOGC after Stop = %d, want the base 100", now)
	}
	if Start(0) != nil {
		t.Fatal("Start(0) tunes")
	}
}
