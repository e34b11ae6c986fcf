package postgres_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/postgres"
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.UnixMilli(time.Now().UnixMilli())} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// rowCount counts user's rows in table behind the store's back.
func rowCount(t *testing.T, c *pgx.Conn, table, user string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(t.Context(), "SELECT count(*) FROM "+table+" WHERE user_id = $1", user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func timedEntries(first persistence.Seq, n int, at time.Time) []persistence.Entry {
	out := make([]persistence.Entry, n)
	for i := range out {
		s := first + persistence.Seq(i)
		out[i] = persistence.Entry{Seq: s, TimeMS: at.UnixMilli(), Data: []byte(fmt.Sprint("e", s))}
	}
	return out
}

// TestSweep: the sweeper deletes entries SweepGrace after they aged out,
// and their dedup keys once those are as old, in bounded statements; the
// log goes on at last + 1 after everything is deleted.
func TestSweep(t *testing.T) {
	t.Parallel()
	const day = 24 * time.Hour
	url := newURL(t)
	clk := newTestClock()
	s := openStore(t, url, postgres.Options{Retention: day, Now: clk.Now, SweepInterval: -1, SweepBatch: 7})
	c := sqlConn(t, url)
	ctx := t.Context()
	t0 := clk.Now()
	eu, _ := activate(t, s, "u")
	ev, _ := activate(t, s, "v")
	var dedup []persistence.DedupKey
	for i := 1; i <= 20; i++ {
		dedup = append(dedup, persistence.DedupKey{Key: fmt.Sprint("k", i), Seq: persistence.Seq(i)})
	}
	// u: 20 entries aged out (and past the grace) when appended, 10 new.
	for _, req := range []persistence.AppendRequest{
		{User: "u", Epoch: eu, Entries: timedEntries(1, 20, t0.Add(-3*day)), Dedup: dedup},
		{User: "u", Epoch: eu, Entries: timedEntries(21, 10, t0),
			Dedup:   []persistence.DedupKey{{Key: "new", Seq: 21}},
			Devices: []persistence.Device{{DeviceID: "d", Data: []byte("r"), Cursor: 30}}},
		// v: aged out, but within the grace.
		{User: "v", Epoch: ev, Entries: timedEntries(1, 5, t0.Add(-day-30*time.Minute))},
	} {
		if err := s.AppendSync(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 20 || res.Dedup != 0 || res.Users != 2 {
		t.Fatalf("first sweep = %+v, want 20 entries, 0 dedup keys, 2 users", res)
	}
	if n := rowCount(t, c, "tandem_log", "u"); n != 10 {
		t.Fatalf("u has %d log rows after the sweep, want 10", n)
	}
	if n := rowCount(t, c, "tandem_log", "v"); n != 5 {
		t.Fatalf("v has %d log rows (within the grace), want 5", n)
	}
	// The dedup keys outlive their entries: their time is the append's.
	if seq, ok, err := s.LookupDedup(ctx, "u", "k3"); err != nil || !ok || seq != 3 {
		t.Fatalf("LookupDedup(k3) after its entry was swept = %d, %v, %v", seq, ok, err)
	}

	clk.Set(t0.Add(2 * day))
	res, err = s.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 15 || res.Dedup != 21 {
		t.Fatalf("second sweep = %+v, want 15 entries, 21 dedup keys", res)
	}
	for _, table := range []string{"tandem_log", "tandem_dedup"} {
		for _, u := range []string{"u", "v"} {
			if n := rowCount(t, c, table, u); n != 0 {
				t.Errorf("%s: %d rows of %s left", table, n, u)
			}
		}
	}
	if st := s.Stats(); st.SweptEntries != 35 || st.SweptDedup != 21 {
		t.Errorf("stats %+v: want 35 entries, 21 dedup keys swept", st)
	}
	if devs, err := s.Devices(ctx, "u"); err != nil || len(devs) != 1 {
		t.Errorf("devices after the sweep: %+v, %v", devs, err)
	}
	// Seqs are not reused.
	if first, err := s.FirstSeq(ctx, "u"); err != nil || first != 31 {
		t.Fatalf("FirstSeq = %d, %v; want 31", first, err)
	}
	eu2, last := activate(t, s, "u")
	if last != 30 {
		t.Fatalf("Activate after the sweep = seq %d, want 30", last)
	}
	if err := s.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: eu2, Entries: timedEntries(31, 1, clk.Now())}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(ctx, "u", 0, 100); err != nil || len(got) != 1 || got[0].Seq != 31 {
		t.Fatalf("Read after the sweep = %+v, %v", got, err)
	}
}

// TestSweepLoop: the background sweeper runs every SweepInterval.
func TestSweepLoop(t *testing.T) {
	t.Parallel()
	url := newURL(t)
	clk := newTestClock()
	s := openStore(t, url, postgres.Options{Retention: time.Hour, Now: clk.Now, SweepInterval: 20 * time.Millisecond, SweepGrace: time.Minute})
	c := sqlConn(t, url)
	e, _ := activate(t, s, "u")
	if err := s.AppendSync(t.Context(), persistence.AppendRequest{User: "u", Epoch: e, Entries: timedEntries(1, 50, clk.Now())}); err != nil {
		t.Fatal(err)
	}
	clk.Set(clk.Now().Add(2 * time.Hour))
	deadline := time.Now().Add(10 * time.Second)
	for rowCount(t, c, "tandem_log", "u") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not delete aged-out entries within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
