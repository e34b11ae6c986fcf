package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
)

// clock is a settable clock for stores opened with a retention.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

// newClock starts at the real time, in whole milliseconds.
func newClock() *clock {
	return &clock{now: time.UnixMilli(time.Now().UnixMilli())}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// set moves the clock to t; the suite only moves it forward.
func (c *clock) set(t *testing.T, to time.Time) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if to.Before(c.now) {
		t.Fatalf("clock moved back from %v to %v", c.now, to)
	}
	c.now = to
}

func openRetention(t *testing.T, h Harness, retention time.Duration) (persistence.Store, *clock) {
	t.Helper()
	if h.OpenWithRetention == nil {
		t.Skip("Harness.OpenWithRetention not set")
	}
	c := newClock()
	return h.OpenWithRetention(t, retention, c.Now), c
}

// timed returns n entries from seq first, all with time at.
func timed(user string, first persistence.Seq, n int, at time.Time) []persistence.Entry {
	out := entries(user, first, n)
	for i := range out {
		out[i].TimeMS = at.UnixMilli()
	}
	return out
}

// checkSeqs checks that Read(after, limit) returns exactly the entries
// want, each with the data the suite wrote for it and a time at or after
// minMS.
func checkSeqs(t *testing.T, s persistence.Store, user string, after persistence.Seq, limit int, minMS int64, want ...persistence.Seq) {
	t.Helper()
	got, err := s.Read(ctxT(t), user, after, limit)
	if err != nil {
		t.Fatalf("Read(%q, after %d, limit %d): %v", user, after, limit, err)
	}
	var seqs []persistence.Seq
	for _, e := range got {
		seqs = append(seqs, e.Seq)
		if !bytes.Equal(e.Data, data(user, e.Seq)) || e.TimeMS < minMS {
			t.Errorf("Read(%q): seq %d = {time %d, data %q}; want data %q, time >= %d",
				user, e.Seq, e.TimeMS, e.Data, data(user, e.Seq), minMS)
		}
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("Read(%q, after %d, limit %d) = seqs %v, want %v", user, after, limit, seqs, want)
	}
}

func checkFirstSeq(t *testing.T, s persistence.Store, user string, want persistence.Seq) {
	t.Helper()
	got, err := s.FirstSeq(ctxT(t), user)
	if err != nil || got != want {
		t.Fatalf("FirstSeq(%q) = %d, %v; want %d", user, got, err, want)
	}
}

func checkFirstSeqSince(t *testing.T, s persistence.Store, user string, since time.Time, want persistence.Seq) {
	t.Helper()
	got, err := s.FirstSeqSince(ctxT(t), user, since)
	if err != nil || got != want {
		t.Fatalf("FirstSeqSince(%q, %d ms) = %d, %v; want %d", user, since.UnixMilli(), got, err, want)
	}
}

// checkKept checks the side effects tagged tag other than the dedup key
// are stored, and that the dedup key, if still there, names seq.
func checkKept(t *testing.T, s persistence.Store, user, tag string, seq persistence.Seq) {
	t.Helper()
	ctx := ctxT(t)
	if got, found, err := s.LookupDedup(ctx, user, "dedup-"+tag); err != nil || (found && got != seq) {
		t.Errorf("LookupDedup(%q, %q) = %d, %v, %v; want seq %d or not found", user, "dedup-"+tag, got, found, err, seq)
	}
	checkOutbox(t, s, user, fmt.Sprintf("%d/out-%s:outbox %s", seq, tag, tag))
	checkDevices(t, s, user, fmt.Sprintf("dev-%s:device %s@%d", tag, tag, seq))
	checkConvs(t, s, user, fmt.Sprintf("conv-%s=conv %s", tag, tag))
}

// testFirstSeq: without retention FirstSeq is 1, or last + 1 = 1 for a
// log without entries.
func testFirstSeq(t *testing.T, h Harness) {
	s := h.Open(t)
	checkFirstSeq(t, s, "nobody", 1)
	e, _ := activate(t, s, "u")
	checkFirstSeq(t, s, "u", 1)
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 1, 3)})
	checkFirstSeq(t, s, "u", 1)
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 4, 2)})
	checkFirstSeq(t, s, "u", 1)
}

// testRetentionRead: entries age out of Read and FirstSeq as the clock
// moves, the boundary kept; once all have, FirstSeq is last + 1 and the
// log goes on at last + 1.
func testRetentionRead(t *testing.T, h Harness) {
	const day = 24 * time.Hour
	s, clk := openRetention(t, h, day)
	t0 := clk.Now()
	e, _ := activate(t, s, "u")
	checkFirstSeq(t, s, "u", 1)
	appendSync(t, s, withSideEffects(persistence.AppendRequest{User: "u", Epoch: e, Entries: timed("u", 1, 3, t0)}, "early", 1))
	clk.set(t, t0.Add(6*time.Hour))
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: timed("u", 4, 3, clk.Now())})
	clk.set(t, t0.Add(12*time.Hour))
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: timed("u", 7, 3, clk.Now())})
	// v's entries are newer than all of u's.
	ev, _ := activate(t, s, "v")
	appendSync(t, s, persistence.AppendRequest{User: "v", Epoch: ev, Entries: timed("v", 1, 2, clk.Now())})

	all := []persistence.Seq{1, 2, 3, 4, 5, 6, 7, 8, 9}
	checkSeqs(t, s, "u", 0, 100, 0, all...)
	checkFirstSeq(t, s, "u", 1)
	checkFirstSeqSince(t, s, "u", time.UnixMilli(0), 1)

	// Exactly retention old: kept.
	clk.set(t, t0.Add(day))
	checkSeqs(t, s, "u", 0, 100, 0, all...)
	checkFirstSeq(t, s, "u", 1)

	// One millisecond later seqs 1-3 are gone.
	clk.set(t, t0.Add(day+time.Millisecond))
	cut := t0.UnixMilli() + 1
	checkSeqs(t, s, "u", 0, 100, cut, 4, 5, 6, 7, 8, 9)
	checkSeqs(t, s, "u", 1, 2, cut, 4, 5)
	checkSeqs(t, s, "u", 3, 100, cut, 4, 5, 6, 7, 8, 9)
	checkSeqs(t, s, "u", 4, 2, cut, 5, 6)
	checkSeqs(t, s, "u", 9, 100, cut)
	checkFirstSeq(t, s, "u", 4)
	checkFirstSeqSince(t, s, "u", time.UnixMilli(0), 4)
	checkFirstSeqSince(t, s, "u", t0, 4)
	checkFirstSeqSince(t, s, "u", t0.Add(6*time.Hour), 4)
	checkFirstSeqSince(t, s, "u", t0.Add(6*time.Hour+time.Millisecond), 7)
	checkFirstSeqSince(t, s, "u", t0.Add(12*time.Hour+time.Millisecond), 10)
	checkKept(t, s, "u", "early", 1)

	clk.set(t, t0.Add(30*time.Hour+time.Millisecond))
	checkSeqs(t, s, "u", 0, 100, cut, 7, 8, 9)
	checkFirstSeq(t, s, "u", 7)
	checkFirstSeqSince(t, s, "u", t0, 7)

	// Everything aged out.
	clk.set(t, t0.Add(36*time.Hour+time.Millisecond))
	checkSeqs(t, s, "u", 0, 100, 0)
	checkSeqs(t, s, "v", 0, 100, 0)
	checkFirstSeq(t, s, "u", 10)
	checkFirstSeq(t, s, "v", 3)
	checkFirstSeqSince(t, s, "u", time.UnixMilli(0), 10)
	checkFirstSeqSince(t, s, "u", clk.Now(), 10)
	checkKept(t, s, "u", "early", 1)

	// The log goes on at 10, with the epoch it had: no seq is reused.
	for _, first := range []persistence.Seq{1, 4, 9} {
		err := s.AppendSync(ctxT(t), persistence.AppendRequest{User: "u", Epoch: e, Entries: timed("u", first, 1, clk.Now())})
		if !errors.Is(err, persistence.ErrSeqGap) {
			t.Fatalf("append of seq %d after seqs 1-9 aged out: err = %v, want ErrSeqGap", first, err)
		}
	}
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: timed("u", 10, 1, clk.Now())})
	checkSeqs(t, s, "u", 0, 100, 0, 10)
	checkSeqs(t, s, "u", 3, 100, 0, 10)
	checkFirstSeq(t, s, "u", 10)
	if _, last := activate(t, s, "u"); last != 10 {
		t.Fatalf("Activate after seqs 1-9 aged out and seq 10 appended = seq %d, want 10", last)
	}
	if _, last := activate(t, s, "v"); last != 2 {
		t.Fatalf("Activate of a user whose entries all aged out = seq %d, want 2", last)
	}
}

// testRetentionAgedAtAppend: entries already older than the window when
// appended are never returned, but count for the seq.
func testRetentionAgedAtAppend(t *testing.T, h Harness) {
	const day = 24 * time.Hour
	s, clk := openRetention(t, h, day)
	old := clk.Now().Add(-10 * day)
	e, _ := activate(t, s, "u")
	appendSync(t, s, withSideEffects(persistence.AppendRequest{User: "u", Epoch: e, Entries: timed("u", 1, 4, old)}, "old", 4))
	checkSeqs(t, s, "u", 0, 100, 0)
	checkFirstSeq(t, s, "u", 5)
	checkFirstSeqSince(t, s, "u", old, 5)
	checkKept(t, s, "u", "old", 4)
	if err := s.AppendSync(ctxT(t), persistence.AppendRequest{User: "u", Epoch: e, Entries: timed("u", 1, 1, clk.Now())}); !errors.Is(err, persistence.ErrSeqGap) {
		t.Fatalf("append of seq 1 after seqs 1-4 were appended aged out: err = %v, want ErrSeqGap", err)
	}
	e2, last := activate(t, s, "u")
	if last != 4 {
		t.Fatalf("Activate = seq %d, want 4", last)
	}
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e2, Entries: timed("u", 5, 1, clk.Now())})
	checkSeqs(t, s, "u", 0, 100, 0, 5)
	checkFirstSeq(t, s, "u", 5)
	// A rewrite of an aged-out entry is accepted and does not move the log.
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e2, Rewrites: timed("u", 2, 1, old)})
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e2, Entries: timed("u", 6, 1, clk.Now())})
	checkSeqs(t, s, "u", 0, 100, 0, 5, 6)
}

// testRetentionReopen: after a reopen, users whose entries have all aged
// out go on at last + 1, whether they are activated again or their old
// owner's epoch is still current.
func testRetentionReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("Harness.Reopen not set")
	}
	const day = 24 * time.Hour
	s, clk := openRetention(t, h, day)
	t0 := clk.Now()
	users := map[string]persistence.Seq{"lazy": 5, "active": 7, "old": 3, "fresh": 2}
	epochs := map[string]persistence.Epoch{}
	for u, n := range users {
		epochs[u], _ = activate(t, s, u)
		at := t0
		switch u {
		case "old":
			at = t0.Add(-30 * day) // aged out when appended
		case "fresh":
			continue // appended later
		}
		appendSync(t, s, withSideEffects(persistence.AppendRequest{User: u, Epoch: epochs[u], Entries: timed(u, 1, int(n), at)}, u, n))
	}
	clk.set(t, t0.Add(2*day))
	appendSync(t, s, withSideEffects(persistence.AppendRequest{User: "fresh", Epoch: epochs["fresh"], Entries: timed("fresh", 1, 2, clk.Now())}, "fresh", 2))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := h.Reopen(t, s)
	// Same clock and retention after the reopen.
	for u, n := range users {
		want := []persistence.Seq(nil)
		first := n + 1
		if u == "fresh" {
			want, first = []persistence.Seq{1, 2}, 1
		}
		checkSeqs(t, s2, u, 0, 100, 0, want...)
		checkFirstSeq(t, s2, u, first)
		checkFirstSeqSince(t, s2, u, time.UnixMilli(0), first)
		checkKept(t, s2, u, u, n)
	}
	// "lazy" goes on with its pre-reopen epoch: its appends are checked
	// against the stored last seq, aged-out entries included.
	if err := s2.AppendSync(ctxT(t), persistence.AppendRequest{User: "lazy", Epoch: epochs["lazy"], Entries: timed("lazy", 1, 1, clk.Now())}); !errors.Is(err, persistence.ErrSeqGap) {
		t.Fatalf("append of seq 1 after reopen, seqs 1-5 aged out: err = %v, want ErrSeqGap", err)
	}
	appendSync(t, s2, persistence.AppendRequest{User: "lazy", Epoch: epochs["lazy"], Entries: timed("lazy", 6, 1, clk.Now())})
	checkSeqs(t, s2, "lazy", 0, 100, 0, 6)
	for _, u := range []string{"active", "old", "fresh"} {
		e, last := activate(t, s2, u)
		if last != users[u] {
			t.Fatalf("Activate(%q) after reopen = seq %d, want %d", u, last, users[u])
		}
		next := users[u] + 1
		appendSync(t, s2, persistence.AppendRequest{User: u, Epoch: e, Entries: timed(u, next, 1, clk.Now())})
		if u == "fresh" {
			checkSeqs(t, s2, u, 0, 100, 0, 1, 2, 3)
		} else {
			checkSeqs(t, s2, u, 0, 100, 0, next)
			checkFirstSeq(t, s2, u, next)
		}
	}

	// And once more, with every user aged out again.
	clk.set(t, clk.Now().Add(2*day))
	if err := s2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s3 := h.Reopen(t, s2)
	for u, n := range users {
		last := n + 1
		checkSeqs(t, s3, u, 0, 100, 0)
		checkFirstSeq(t, s3, u, last+1)
		if _, got := activate(t, s3, u); got != last {
			t.Fatalf("Activate(%q) after the second reopen = seq %d, want %d", u, got, last)
		}
	}
}

// testRetentionFirstSeqSince checks Read, FirstSeq and FirstSeqSince
// against a linear scan of a log with irregular times while the clock
// moves across it.
func testRetentionFirstSeqSince(t *testing.T, h Harness) {
	const retention = 3 * 24 * time.Hour
	s, clk := openRetention(t, h, retention)
	t0 := clk.Now()
	e, _ := activate(t, s, "u")
	var all []persistence.Entry
	at := t0
	for i := 1; i <= 200; i++ {
		if i%3 == 0 || i%7 == 0 {
			at = at.Add(time.Duration(i%11) * 17 * time.Minute) // some steps 0
		}
		all = append(all, persistence.Entry{Seq: persistence.Seq(i), TimeMS: at.UnixMilli(), Data: data("u", persistence.Seq(i))})
	}
	for i := 0; i < len(all); i += 40 {
		appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: all[i : i+40]})
	}
	last := persistence.Seq(len(all))
	end := time.UnixMilli(all[len(all)-1].TimeMS)
	// firstAt is the first seq with TimeMS >= ms, by linear scan.
	firstAt := func(ms int64) persistence.Seq {
		for _, en := range all {
			if en.TimeMS >= ms {
				return en.Seq
			}
		}
		return last + 1
	}
	for now := t0; !now.After(end.Add(retention + time.Hour)); now = now.Add(7 * time.Hour) {
		clk.set(t, now)
		first := firstAt(now.Add(-retention).UnixMilli())
		checkFirstSeq(t, s, "u", first)
		var want []persistence.Seq
		for seq := first; seq <= last; seq++ {
			want = append(want, seq)
		}
		checkSeqs(t, s, "u", 0, 1000, now.Add(-retention).UnixMilli(), want...)
		if first > 1 {
			checkSeqs(t, s, "u", first-2, 3, 0, want[:min(3, len(want))]...)
		}
		for q := t0.Add(-time.Hour); !q.After(end.Add(time.Hour)); q = q.Add(5 * time.Hour) {
			checkFirstSeqSince(t, s, "u", q, max(first, firstAt(q.UnixMilli())))
		}
	}
}
