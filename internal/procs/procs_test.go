package procs

import (
	"runtime"
	"testing"
)

func TestAdd(t *testing.T) {
	t.Setenv("GOMAXPROCS", "") // Getenv "" counts as unset
	base := runtime.GOMAXPROCS(0)
	n, restore := Add(1)
	if n != base+1 || runtime.GOMAXPROCS(0) != base+1 {
		t.Fatalf("Add(1): %d, GOMAXPROCS %d, want %d", n, runtime.GOMAXPROCS(0), base+1)
	}
	restore()
	if runtime.GOMAXPROCS(0) != base {
		t.Fatalf("after restore: GOMAXPROCS %d, want %d", runtime.GOMAXPROCS(0), base)
	}
	if n, restore := Add(0); n != base || runtime.GOMAXPROCS(0) != base {
		t.Fatalf("Add(0) changed GOMAXPROCS to %d (%d)", runtime.GOMAXPROCS(0), n)
	} else {
		restore()
	}
	t.Setenv("GOMAXPROCS", "7") // the operator's value: not changed
	if n, restore := Add(2); n != base || runtime.GOMAXPROCS(0) != base {
		t.Fatalf("with GOMAXPROCS set, Add(2) changed it to %d (%d)", runtime.GOMAXPROCS(0), n)
	} else {
		restore()
	}
}

func TestForStore(t *testing.T) {
	for store, want := range map[string]int{"badger": 1, "pebble": 1, "postgres://h/db": 0, "": 0} {
		if got := ForStore(store); got != want {
			t.Errorf("ForStore(%q) = %d, want %d", store, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	if Resolve(-1, "pebble") != 1 || Resolve(-1, "") != 0 || Resolve(0, "pebble") != 0 || Resolve(2, "") != 2 {
		t.Fatal("Resolve: -1 is the store's default, any other setting itself")
	}
}
