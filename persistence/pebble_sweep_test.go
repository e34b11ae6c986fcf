package persistence

import (
	"sync/atomic"
	"testing"
	"time"
)

// pebbleKeys lists every key in a pebble store, by tag.
func pebbleKeys(t *testing.T, b *Local) map[byte]int {
	t.Helper()
	v := b.kv.view()
	defer v.close()
	it := v.iter(nil, false)
	defer it.close()
	out := map[byte]int{}
	for it.first(); it.valid(); it.next() {
		out[it.key()[0]]++
	}
	if err := it.error(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPebbleRetentionSweep: the sweep deletes the log keys that have aged
// out and the dedup keys an hour past them, keeps the high-water mark, and
// changes no answer of the Store: reads, FirstSeq, the last seq after a
// reopen (seqs go on), dedup lookups of keys still inside their margin.
func TestPebbleRetentionSweep(t *testing.T) {
	dir := t.TempDir()
	var clock atomic.Int64
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	opts := PebbleOptions{Retention: 24 * time.Hour, Now: now}
	b, err := OpenPebble(dir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ep, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	// Seqs 1-10 at t0, 11-20 twelve hours later.
	for seq := Seq(1); seq <= 20; seq++ {
		at := t0
		if seq > 10 {
			at = t0.Add(12 * time.Hour)
		}
		clock.Store(at.UnixNano())
		err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: ep,
			Entries: []Entry{{Seq: seq, TimeMS: at.UnixMilli(), Data: []byte{byte(seq)}}},
			Dedup:   []DedupKey{{Key: string(rune('a' + seq)), Seq: seq}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, err := b.sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep inside the window: %d users, %v", n, err)
	}
	if k := pebbleKeys(t, b); k[tagLog] != 20 || k[tagDedup] != 20 || k[tagHWM] != 1 {
		t.Fatalf("inside the window the sweep deleted something: %v", k)
	}

	// 24 h 30 min after t0: 1-10 aged out, their dedup keys within the margin.
	clock.Store(t0.Add(24*time.Hour + 30*time.Minute).UnixNano())
	if _, err := b.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if k := pebbleKeys(t, b); k[tagLog] != 10 || k[tagDedup] != 20 || k[tagHWM] != 1 {
		t.Fatalf("after 24.5 h: %v, want 10 log keys, 20 dedup keys, the mark", k)
	}
	if seq, ok, err := b.LookupDedup(ctx, "u", string(rune('a'+3))); err != nil || !ok || seq != 3 {
		t.Fatalf("dedup key of an aged-out entry within the margin: %d %v %v", seq, ok, err)
	}
	// Past the margin: the dedup keys of 1-10 go too.
	clock.Store(t0.Add(25*time.Hour + time.Minute).UnixNano())
	if _, err := b.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if k := pebbleKeys(t, b); k[tagLog] != 10 || k[tagDedup] != 10 {
		t.Fatalf("after 25 h: %v, want 10 log and 10 dedup keys", k)
	}
	es, err := b.Read(ctx, "u", 0, 100)
	if err != nil || len(es) != 10 || es[0].Seq != 11 {
		t.Fatalf("read after the sweep: %d entries from %v, %v", len(es), es, err)
	}
	// Everything aged out: no log key left, the mark keeps the seq.
	clock.Store(t0.Add(40 * time.Hour).UnixNano())
	if _, err := b.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if k := pebbleKeys(t, b); k[tagLog] != 0 || k[tagHWM] != 1 {
		t.Fatalf("after 40 h: %v, want no log key and the mark", k)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenPebble(dir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, last, err := b.Activate(ctx, "u", "o"); err != nil || last != 20 {
		t.Fatalf("last seq after every entry was swept and a reopen: %d, %v; want 20", last, err)
	}
	if first, err := b.FirstSeq(ctx, "u"); err != nil || first != 21 {
		t.Fatalf("FirstSeq = %d, %v; want 21", first, err)
	}
}
