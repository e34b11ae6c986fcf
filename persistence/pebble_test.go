package persistence_test

import (
	"sync"
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

// pebbleHarness is harness for pebble: every store in its own
// t.TempDir, reopened in the same directory with the same options.
func pebbleHarness(opts persistence.PebbleOptions) storetest.Harness {
	type opened struct {
		dir  string
		opts persistence.PebbleOptions
	}
	var mu sync.Mutex
	stores := make(map[persistence.Store]opened)
	open := func(t *testing.T, dir string, opts persistence.PebbleOptions) persistence.Store {
		b := openPebble(t, dir, opts)
		mu.Lock()
		stores[b] = opened{dir, opts}
		mu.Unlock()
		return b
	}
	return storetest.Harness{
		Open: func(t *testing.T) persistence.Store { return open(t, t.TempDir(), opts) },
		Reopen: func(t *testing.T, old persistence.Store) persistence.Store {
			mu.Lock()
			o, ok := stores[old]
			mu.Unlock()
			if !ok {
				t.Fatal("Reopen of a store this harness did not open")
			}
			return open(t, o.dir, o.opts)
		},
		OpenWithRetention: func(t *testing.T, retention time.Duration, now func() time.Time) persistence.Store {
			o := opts
			o.Retention, o.Now = retention, now
			return open(t, t.TempDir(), o)
		},
	}
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
