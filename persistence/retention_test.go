package persistence

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// testClock is a settable clock, starting at the real time.
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

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// rawKeys returns every live key of the database with its expiry.
func rawKeys(t *testing.T, b *Local) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	err := b.kv.(badgerKV).db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out[string(it.Item().KeyCopy(nil))] = it.Item().ExpiresAt()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rawHWM returns the stored high-water mark of user (false: none).
func rawHWM(t *testing.T, b *Local, user string) (Seq, bool) {
	t.Helper()
	var seq Seq
	found := false
	err := b.kv.(badgerKV).db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(hwmKey(user))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err == nil {
			seq, found = Seq(binary.BigEndian.Uint64(v)), true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq, found
}

func TestExpiresAt(t *testing.T) {
	for _, tc := range []struct {
		ms   int64
		keep time.Duration
		want uint64
	}{
		{1000, time.Second, 2},
		{1001, time.Second, 3}, // rounded up, never down
		{1999, time.Second, 3},
		{1_700_000_000_000, time.Hour, 1_700_003_600},
		{1_700_000_000_001, time.Hour + time.Millisecond, 1_700_003_601},
		{-1_000_000, time.Second, 1}, // long past: expired, not 0 (never)
		{-1000, time.Second, 1},
		{math.MinInt64, time.Hour, 1},
		{math.MaxInt64, time.Hour, math.MaxUint64},
		{math.MaxInt64 - 3_600_000, time.Hour, math.MaxInt64/1000 + 1},
	} {
		if got := expiresAt(tc.ms, tc.keep); got != tc.want {
			t.Errorf("expiresAt(%d, %v) = %d, want %d", tc.ms, tc.keep, got, tc.want)
		}
	}
}

func TestRetentionValidate(t *testing.T) {
	if err := (BadgerOptions{Retention: -time.Second}).Validate(); err == nil {
		t.Fatal("negative Retention accepted")
	}
	if err := (BadgerOptions{Retention: 30 * 24 * time.Hour}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestRetentionTTL: log and dedup keys carry a TTL that ends ttlMargin
// after the time filter hides them, derived from each entry's own time;
// outbox, device, conversation, epoch and high-water-mark keys have none.
// Without retention nothing has a TTL and no mark is written.
func TestRetentionTTL(t *testing.T) {
	const retention = 48 * time.Hour
	clk := newTestClock()
	b := openTest(t, BadgerOptions{Retention: retention, Now: clk.Now})
	ctx := t.Context()
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now().UnixMilli()
	times := []int64{now - 5000, now - 1234, now + 999}
	req := AppendRequest{User: "u", Epoch: e,
		Dedup:     []DedupKey{{Key: "m1", Seq: 1}, {Key: "m3", Seq: 3}},
		OutboxPut: []OutboxItem{{Seq: 1, Key: "x", Data: []byte("o")}},
		Devices:   []Device{{DeviceID: "d", Data: []byte("r"), Cursor: 1}},
		Convs:     []Conv{{Key: "c", Data: []byte("c")}},
	}
	for i, ms := range times {
		req.Entries = append(req.Entries, Entry{Seq: Seq(i + 1), TimeMS: ms, Data: []byte("x")})
	}
	if err := b.AppendSync(ctx, req); err != nil {
		t.Fatal(err)
	}
	// A rewrite's TTL follows its new time; a side-effects-only append's
	// dedup key counts from the clock.
	clk.Add(time.Hour)
	rewriteMS := now + 7777
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e,
		Rewrites: []Entry{{Seq: 2, TimeMS: rewriteMS, Data: []byte("edited")}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e,
		Dedup: []DedupKey{{Key: "late", Seq: 3}}}); err != nil {
		t.Fatal(err)
	}

	keep := retention + ttlMargin
	want := map[string]uint64{
		string(logKey("u", 1)):                      expiresAt(times[0], keep),
		string(logKey("u", 2)):                      expiresAt(rewriteMS, keep),
		string(logKey("u", 3)):                      expiresAt(times[2], keep),
		string(dedupKey("u", "m1")):                 expiresAt(times[2], keep), // the newest entry of the append
		string(dedupKey("u", "m3")):                 expiresAt(times[2], keep),
		string(dedupKey("u", "late")):               expiresAt(clk.Now().UnixMilli(), keep),
		string(epochKey("u")):                       0,
		string(hwmKey("u")):                         0,
		string(appendOutboxKey(nil, "u", 1, "x")):   0,
		string(appendDeviceKey(nil, "u", "d", 'r')): 0,
		string(appendDeviceKey(nil, "u", "d", 'c')): 0,
		string(appendConvKey(nil, "u", "c")):        0,
	}
	got := rawKeys(t, b)
	if len(got) != len(want) {
		t.Errorf("%d keys stored, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("key %q (tag %c) not stored", k, k[0])
		case g != w:
			t.Errorf("key %q (tag %c) expires at %d, want %d", k, k[0], g, w)
		}
		// The direction that matters: the TTL ends after the filter hides
		// the entry (TimeMS + retention), with the margin to spare.
		if k[0] == tagLog {
			ms := times[seqFromLogKey([]byte(k))-1]
			if k == string(logKey("u", 2)) {
				ms = rewriteMS
			}
			if hide := ms + retention.Milliseconds(); int64(g)*1000 < hide+ttlMargin.Milliseconds() {
				t.Errorf("key %q expires at %d s, before %d ms + margin", k, g, hide)
			}
		}
	}
	if hwm, ok := rawHWM(t, b, "u"); !ok || hwm != 3 {
		t.Errorf("high-water mark = %d, %v; want 3", hwm, ok)
	}

	// Without retention: no TTL anywhere, no mark.
	plain := openTest(t, BadgerOptions{})
	e, _, err = plain.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	req.Epoch = e
	if err := plain.AppendSync(ctx, req); err != nil {
		t.Fatal(err)
	}
	got = rawKeys(t, plain)
	for k, exp := range got {
		if exp != 0 {
			t.Errorf("without retention: key %q expires at %d", k, exp)
		}
	}
	if _, ok := got[string(hwmKey("u"))]; ok {
		t.Error("without retention: high-water mark written")
	}
	if len(got) != len(want)-2 { // no mark, no "late" dedup key
		t.Errorf("without retention: %d keys stored, want %d", len(got), len(want)-2)
	}
}

// TestRetentionHighWaterMark makes badger's TTL really fire (entries timed
// long before the window expire on commit) and checks the high-water mark
// keeps the last seq: through a batch of pipelined appends, a rewrite-only
// append, cache eviction and a reopen.
func TestRetentionHighWaterMark(t *testing.T) {
	const retention = 24 * time.Hour
	dir := t.TempDir()
	clk := newTestClock()
	opts := BadgerOptions{Retention: retention, Now: clk.Now, MaxCachedUsers: 1}
	b, err := OpenBadger(dir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()
	ctx := t.Context()
	old := clk.Now().Add(-3 * retention).UnixMilli()
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := b.Activate(ctx, "other", "o")
	if err != nil {
		t.Fatal(err)
	}

	// 50 pipelined appends of aged-out entries, committed together.
	release := hold(t, b, "other", other)
	before := b.Stats().Commits
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		b.Append(AppendRequest{User: "u", Epoch: e, Entries: []Entry{{Seq: Seq(i + 1), TimeMS: old, Data: []byte("x")}}},
			func(err error) { errs[i] = err; wg.Done() })
	}
	release()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	commits := b.Stats().Commits - before
	if commits > 2 { // the holding append committed before: one or two for the 50
		t.Fatalf("50 held appends took %d commits", commits)
	}
	if hwm, ok := rawHWM(t, b, "u"); !ok || hwm != 50 {
		t.Fatalf("high-water mark after one batch of 50 appends = %d, %v; want 50", hwm, ok)
	}
	// One mark write per commit, not one per append.
	versions := 0
	if err := b.kv.(badgerKV).db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true, Prefix: hwmKey("u")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			versions++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if versions < 1 || uint64(versions) > commits {
		t.Fatalf("%d versions of the mark after %d commits", versions, commits)
	}
	// Badger has expired every log key: the seek alone would say 0.
	if keys := rawKeys(t, b); len(keys) != 3 { // E u, E other, H u
		t.Fatalf("keys after the aged-out appends: %v; want only epochs and the mark", keys)
	}

	// A rewrite-only append of an expired entry keeps the mark at 50.
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Rewrites: []Entry{{Seq: 3, TimeMS: old, Data: []byte("r")}}}); err != nil {
		t.Fatal(err)
	}
	if hwm, _ := rawHWM(t, b, "u"); hwm != 50 {
		t.Fatalf("high-water mark after a rewrite = %d, want 50", hwm)
	}

	// With a one-user cache, each append of "other" evicts u, so u's
	// state is reloaded from disk every time.
	for i := Seq(1); i <= 3; i++ {
		if err := b.AppendSync(ctx, AppendRequest{User: "other", Epoch: other, Entries: []Entry{{Seq: i, TimeMS: old}}}); err != nil {
			t.Fatal(err)
		}
		if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: []Entry{{Seq: 1, TimeMS: old}}}); !errors.Is(err, ErrSeqGap) {
			t.Fatalf("reuse of seq 1 after eviction: err = %v, want ErrSeqGap", err)
		}
		if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: []Entry{{Seq: 50 + i, TimeMS: old}}}); err != nil {
			t.Fatalf("append of seq %d after eviction: %v", 50+i, err)
		}
	}
	if first, err := b.FirstSeq(ctx, "u"); err != nil || first != 54 {
		t.Fatalf("FirstSeq = %d, %v; want 54", first, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b, err = OpenBadger(dir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first, err := b.FirstSeqSince(ctx, "u", time.UnixMilli(0)); err != nil || first != 54 {
		t.Fatalf("FirstSeqSince after reopen = %d, %v; want 54", first, err)
	}
	if e2, last, err := b.Activate(ctx, "u", "o"); err != nil || last != 53 {
		t.Fatalf("Activate after reopen = %d, %v; want last seq 53", last, err)
	} else {
		e = e2
	}
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: []Entry{{Seq: 54, TimeMS: clk.Now().UnixMilli(), Data: []byte("new")}}}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Read(ctx, "u", 0, 100)
	if err != nil || len(got) != 1 || got[0].Seq != 54 {
		t.Fatalf("Read after reopen = %+v, %v; want seq 54 only", got, err)
	}
}

// TestRetentionReadFilter: Read starts at the first retained entry when
// the cursor is behind it, and filters each entry by its own time, also
// when a rewrite has moved one back past the window (the log's times are
// then no longer non-decreasing).
func TestRetentionReadFilter(t *testing.T) {
	const retention = time.Hour
	clk := newTestClock()
	b := openTest(t, BadgerOptions{Retention: retention, Now: clk.Now})
	ctx := t.Context()
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	// 1000 entries a second apart from now on: only the clock ages them,
	// badger's TTL (real time) never fires during the test.
	var all []Entry
	for i := range 1000 {
		all = append(all, Entry{Seq: Seq(i + 1), TimeMS: start.Add(time.Duration(i) * time.Second).UnixMilli(), Data: []byte("x")})
	}
	for i := 0; i < len(all); i += 250 {
		if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: all[i : i+250]}); err != nil {
			t.Fatal(err)
		}
	}
	// Seq 990 edited with a time two hours back.
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e,
		Rewrites: []Entry{{Seq: 990, TimeMS: start.Add(-2 * time.Hour).UnixMilli(), Data: []byte("y")}}}); err != nil {
		t.Fatal(err)
	}
	// Now entries 1-900 are older than the window.
	clk.Add(retention + 900*time.Second - time.Millisecond)
	got, err := b.Read(ctx, "u", 0, 20)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []Seq
	for _, en := range got {
		seqs = append(seqs, en.Seq)
	}
	if len(seqs) != 20 || seqs[0] != 901 || seqs[19] != 920 {
		t.Fatalf("Read(0, 20) = seqs %v, want 901-920", seqs)
	}
	got, err = b.Read(ctx, "u", 985, 10)
	if err != nil {
		t.Fatal(err)
	}
	seqs = seqs[:0]
	for _, en := range got {
		seqs = append(seqs, en.Seq)
	}
	if want := []Seq{986, 987, 988, 989, 991, 992, 993, 994, 995, 996}; !slices.Equal(seqs, want) {
		t.Fatalf("Read(985, 10) = seqs %v, want %v", seqs, want)
	}
	if first, err := b.FirstSeq(ctx, "u"); err != nil || first != 901 {
		t.Fatalf("FirstSeq = %d, %v; want 901", first, err)
	}
}

// TestRetentionEnabledLater: a log written without retention (no TTL, no
// mark) and then rewritten with it — the rewrite of its last entry, timed
// long ago, expires at once — still keeps its last seq.
func TestRetentionEnabledLater(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	old := time.Now().Add(-100 * 24 * time.Hour).UnixMilli()
	b, err := OpenBadger(dir, BadgerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, _, err := b.Activate(ctx, "u", "o")
	if err == nil {
		err = b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: []Entry{{Seq: 1, TimeMS: old}, {Seq: 2, TimeMS: old}, {Seq: 3, TimeMS: old}}})
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	opts := BadgerOptions{Retention: 24 * time.Hour}
	b, err = OpenBadger(dir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Read(ctx, "u", 0, 10); err != nil || len(got) != 0 {
		t.Fatalf("Read of aged-out entries = %+v, %v", got, err)
	}
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Rewrites: []Entry{{Seq: 3, TimeMS: old, Data: []byte("recalled")}}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := rawKeys(t, b)[string(logKey("u", 3))]; ok {
		t.Fatal("the rewritten entry has not expired: the test proves nothing")
	}
	// Reopen, so that the last seq is loaded from disk.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenBadger(dir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, last, err := b.Activate(ctx, "u", "o"); err != nil || last != 3 {
		t.Fatalf("Activate = last seq %d, %v; want 3", last, err)
	}
}
