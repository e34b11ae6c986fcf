package persistence

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// The filter never says no for a user it was given, whatever it grew
// to; for others it says no most of the time (each yes is a read).
func TestUserFilterNoFalseNo(t *testing.T) {
	f := newUserFilter(0)
	const n = 300_000
	for i := range n {
		f.add(fmt.Sprint("user-", i))
	}
	if len(f.parts) < 3 {
		t.Fatalf("%d parts after %d users from %d: it did not grow", len(f.parts), n, bloomMinUsers)
	}
	for i := range n {
		if !f.mayHave(fmt.Sprint("user-", i)) {
			t.Fatalf("user-%d: added, but the filter says no", i)
		}
	}
	yes := 0
	for i := range n {
		if f.mayHave(fmt.Sprint("other-", i)) {
			yes++
		}
	}
	if rate := float64(yes) / n; rate > 0.05 {
		t.Fatalf("%.1f %% of users never added may be there, want at most 5 %%", 100*rate)
	}
}

// An opened store lists its activated users into the filter, and adds
// each activation as it stages it: after a reopen an activated user is
// found (its epoch goes on), a new one is not read for.
func TestUserFilterAcrossReopen(t *testing.T) {
	for _, engine := range []string{"badger", "pebble"} {
		t.Run(engine, func(t *testing.T) {
			dir := t.TempDir()
			open := func() *Local {
				var b *Local
				var err error
				if engine == "badger" {
					b, err = OpenBadger(dir, BadgerOptions{NoSync: true}, slog.New(slog.DiscardHandler))
				} else {
					b, err = OpenPebble(dir, PebbleOptions{NoSync: true}, slog.New(slog.DiscardHandler))
				}
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b := open()
			for i := range 1000 {
				if e, _, err := b.Activate(ctx, fmt.Sprint("u", i), "node-a"); err != nil || e != 1 {
					t.Fatalf("first Activate of u%d: epoch %d, %v", i, e, err)
				}
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			b = open()
			defer b.Close()
			if b.known == nil {
				t.Fatal("no filter after open")
			}
			no := 0
			for i := range 1000 {
				if !b.known.mayHave(fmt.Sprint("u", i)) {
					t.Fatalf("u%d is activated but the reopened store's filter says no", i)
				}
				if !b.known.mayHave(fmt.Sprint("new-", i)) {
					no++
				}
			}
			if no < 950 {
				t.Fatalf("the filter says no for %d of 1000 new users, want nearly all", no)
			}
			for i := range 1000 {
				if e, _, err := b.Activate(ctx, fmt.Sprint("u", i), "node-b"); err != nil || e != 2 {
					t.Fatalf("Activate of u%d after the reopen: epoch %d, %v; want 2", i, e, err)
				}
			}
			if e, _, err := b.Activate(ctx, "new-0", "node-b"); err != nil || e != 1 {
				t.Fatalf("first Activate of new-0: epoch %d, %v", e, err)
			}
		})
	}
}
