package persistence_test

import (
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/storetest"
)

// openPebble opens a pebble store in dir and closes it when the test ends.
func openPebble(t testing.TB, dir string, opts persistence.PebbleOptions) *persistence.Local {
	t.Helper()
	b, err := persistence.OpenPebble(dir, opts, testLogger())
	if err != nil {
		t.Fatalf("OpenPebble: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// pebbleHarness is harness for pebble.
func pebbleHarness(opts persistence.PebbleOptions) storetest.Harness {
	return localHarness(opts, openPebble, func(o persistence.PebbleOptions, r time.Duration, now func() time.Time) persistence.PebbleOptions {
		o.Retention, o.Now = r, now
		return o
	})
}

func TestPebbleConformance(t *testing.T) {
	storetest.Run(t, pebbleHarness(persistence.PebbleOptions{}))
}

// TestPebbleConformanceTight: as TestBadgerConformanceTight.
func TestPebbleConformanceTight(t *testing.T) {
	if testing.Short() {
		t.Skip("second conformance run")
	}
	storetest.Run(t, pebbleHarness(persistence.PebbleOptions{
		MaxBatchEntries: 64,
		MaxBatchBytes:   16 << 10,
		MaxCachedUsers:  1,
	}))
}
