package persistence_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/storetest"
)

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openBadger opens a Badger in dir and closes it when the test ends.
func openBadger(t testing.TB, dir string, opts persistence.BadgerOptions) *persistence.Local {
	t.Helper()
	b, err := persistence.OpenBadger(dir, opts, testLogger())
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// harness opens every badger store in its own t.TempDir and reopens it
// in the same directory with the same options (retention and clock
// included).
func harness(opts persistence.BadgerOptions) storetest.Harness {
	return localHarness(opts, openBadger, func(o persistence.BadgerOptions, r time.Duration, now func() time.Time) persistence.BadgerOptions {
		o.Retention, o.Now = r, now
		return o
	})
}

// localHarness is the conformance harness of a local store opened by
// open with options O; withRetention sets the retention and clock.
func localHarness[O any](opts O, open func(testing.TB, string, O) *persistence.Local,
	withRetention func(O, time.Duration, func() time.Time) O) storetest.Harness {
	type opened struct {
		dir  string
		opts O
	}
	var mu sync.Mutex
	stores := make(map[persistence.Store]opened)
	openIn := func(t *testing.T, dir string, opts O) persistence.Store {
		b := open(t, dir, opts)
		mu.Lock()
		stores[b] = opened{dir, opts}
		mu.Unlock()
		return b
	}
	return storetest.Harness{
		Open: func(t *testing.T) persistence.Store { return openIn(t, t.TempDir(), opts) },
		Reopen: func(t *testing.T, old persistence.Store) persistence.Store {
			mu.Lock()
			o, ok := stores[old]
			mu.Unlock()
			if !ok {
				t.Fatal("Reopen of a store this harness did not open")
			}
			return openIn(t, o.dir, o.opts)
		},
		OpenWithRetention: func(t *testing.T, retention time.Duration, now func() time.Time) persistence.Store {
			return openIn(t, t.TempDir(), withRetention(opts, retention, now))
		},
	}
}

func TestBadgerConformance(t *testing.T) {
	storetest.Run(t, harness(persistence.BadgerOptions{}))
}

// TestBadgerConformanceTight runs the suite with commits capped near the
// suite's largest append and a one-user state cache, so commits split and
// user states are reloaded from disk all the time.
func TestBadgerConformanceTight(t *testing.T) {
	if testing.Short() {
		t.Skip("second conformance run")
	}
	storetest.Run(t, harness(persistence.BadgerOptions{
		MaxBatchEntries: 64,
		MaxBatchBytes:   16 << 10,
		MaxCachedUsers:  1,
	}))
}

func entry(seq persistence.Seq, data []byte) []persistence.Entry {
	return []persistence.Entry{{Seq: seq, TimeMS: int64(seq), Data: data}}
}

// TestGroupCommitBatches checks that concurrent appends of many users share
// commits: one fsync per append would make Commits equal Ops.
func TestGroupCommitBatches(t *testing.T) {
	b := openBadger(t, t.TempDir(), persistence.BadgerOptions{})
	ctx := t.Context()
	const users, per = 64, 30
	errs := make(chan error, users)
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			user := fmt.Sprint("u", u)
			e, _, err := b.Activate(ctx, user, "o")
			if err != nil {
				errs <- err
				return
			}
			for i := 1; i <= per; i++ {
				if err := b.AppendSync(ctx, persistence.AppendRequest{User: user, Epoch: e, Entries: entry(persistence.Seq(i), []byte("m"))}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := b.Stats()
	if st.Ops != users*(per+1) || st.Entries != users*per || st.Failed != 0 {
		t.Fatalf("stats %+v: want %d ops, %d entries, 0 failed", st, users*(per+1), users*per)
	}
	if st.Commits > st.Ops/4 {
		t.Fatalf("%d appends and activations took %d commits; want at most a quarter as many", st.Ops, st.Commits)
	}
	t.Logf("%d ops in %d commits (%.1f per commit)", st.Ops, st.Commits, float64(st.Ops)/float64(st.Commits))

	// One goroutine pipelining appends without waiting batches too.
	e, _, err := b.Activate(ctx, "pipe", "o")
	if err != nil {
		t.Fatal(err)
	}
	before := b.Stats().Commits
	const n = 1000
	var done sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	for i := 1; i <= n; i++ {
		done.Add(1)
		b.Append(persistence.AppendRequest{User: "pipe", Epoch: e, Entries: entry(persistence.Seq(i), []byte("p"))}, func(err error) {
			if err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
			done.Done()
		})
	}
	done.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d pipelined appends failed, first: %v", len(failed), failed[0])
	}
	if c := b.Stats().Commits - before; c > n/4 {
		t.Fatalf("%d pipelined appends took %d commits; want at most %d", n, c, n/4)
	}
}

func TestBatchCaps(t *testing.T) {
	b := openBadger(t, t.TempDir(), persistence.BadgerOptions{MaxBatchEntries: 10, MaxBatchBytes: 4 << 10})
	ctx := t.Context()
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	// 100 appends of two writes each: at most 5 fit a commit.
	var wg sync.WaitGroup
	errs := make([]error, 100)
	for i := range errs {
		wg.Add(1)
		seq := persistence.Seq(i + 1)
		b.Append(persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(seq, []byte("x")),
			Dedup: []persistence.DedupKey{{Key: fmt.Sprint(seq), Seq: seq}}}, func(err error) { errs[i] = err; wg.Done() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	st := b.Stats()
	if st.Commits < 100/5+1 || st.LastCommitOps > 5 {
		t.Fatalf("stats %+v: want at least 21 commits of at most 5 appends", st)
	}

	// Too many writes or too many bytes in one append: ErrTooLarge, and
	// the appends that follow it fail the seq check.
	tooMany := make([]persistence.Entry, 11)
	for i := range tooMany {
		tooMany[i] = entry(persistence.Seq(101+i), nil)[0]
	}
	for name, req := range map[string]persistence.AppendRequest{
		"writes": {User: "u", Epoch: e, Entries: tooMany},
		"bytes":  {User: "u", Epoch: e, Entries: entry(101, make([]byte, 5<<10))},
	} {
		var big, next error
		wg.Add(2)
		b.Append(req, func(err error) { big = err; wg.Done() })
		b.Append(persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(102, nil)}, func(err error) { next = err; wg.Done() })
		wg.Wait()
		if !errors.Is(big, persistence.ErrTooLarge) || !errors.Is(next, persistence.ErrSeqGap) {
			t.Fatalf("%s: too large, next = %v, %v; want ErrTooLarge, ErrSeqGap", name, big, next)
		}
	}
	if err := b.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(101, []byte("ok"))}); err != nil {
		t.Fatalf("append after the refused ones: %v", err)
	}
}

func TestDefaultBatchCap(t *testing.T) {
	b := openBadger(t, t.TempDir(), persistence.BadgerOptions{})
	e, _, err := b.Activate(t.Context(), "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	// 15% of the default 32 MiB memtable is 4.8 MiB.
	err = b.AppendSync(t.Context(), persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(1, make([]byte, 5<<20))})
	if !errors.Is(err, persistence.ErrTooLarge) {
		t.Fatalf("5 MiB append: err = %v, want ErrTooLarge", err)
	}
	big := bytes.Repeat([]byte("b"), 4<<20)
	if err := b.AppendSync(t.Context(), persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(1, big)}); err != nil {
		t.Fatalf("4 MiB append: %v", err)
	}
	got, err := b.Read(t.Context(), "u", 0, 1)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Data, big) {
		t.Fatalf("Read of the 4 MiB entry: %d entries, %v", len(got), err)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (persistence.BadgerOptions{}).Validate(); err != nil {
		t.Fatalf("zero options: %v", err)
	}
	err := persistence.BadgerOptions{NumCompactors: 1, MemTableSize: -1, NumLevelZeroTables: 31}.Validate()
	if err == nil {
		t.Fatal("invalid options accepted")
	}
	for _, want := range []string{"NumCompactors", "MemTableSize", "NumLevelZeroTablesStall"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := persistence.OpenBadger(t.TempDir(), persistence.BadgerOptions{NumCompactors: 1}, nil); err == nil {
		t.Fatal("OpenBadger accepted invalid options")
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openBadger(t, dir, persistence.BadgerOptions{})
	if b, err := persistence.OpenBadger(dir, persistence.BadgerOptions{}, testLogger()); err == nil {
		b.Close()
		t.Fatal("second OpenBadger of an open directory succeeded")
	}
}

// TestOpenRetryAfterEmptyMemFile reproduces upstream badger #2207: a
// zero-byte memtable file makes badger.Open fail with "Create a new file".
// A failed badger.Open leaks goroutines (upstream), so the open under test
// runs in a child process.
func TestOpenRetryAfterEmptyMemFile(t *testing.T) {
	if dir := os.Getenv("PERSISTENCE_RETRY_CHILD_DIR"); dir != "" {
		retryChild(t, dir)
		return
	}
	prepare := func() string {
		dir := t.TempDir()
		b, err := persistence.OpenBadger(dir, persistence.BadgerOptions{}, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		e, _, err := b.Activate(t.Context(), "u", "o")
		if err == nil {
			err = b.AppendSync(t.Context(), persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(1, []byte("kept"))})
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	// The bug is real: plain badger refuses the directory.
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenRetryAfterEmptyMemFile$", "-test.v")
	cmd.Env = append(os.Environ(), "PERSISTENCE_RETRY_CHILD_DIR="+prepare(), "PERSISTENCE_RETRY_CHILD_PLAIN=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("plain badger.Open failed")) {
		t.Fatalf("plain badger child: %v\n%s", err, out)
	}

	// OpenBadger retries and keeps the data.
	cmd = exec.Command(os.Args[0], "-test.run=^TestOpenRetryAfterEmptyMemFile$", "-test.v")
	cmd.Env = append(os.Environ(), "PERSISTENCE_RETRY_CHILD_DIR="+prepare())
	out, err = cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("retrying once")) || !bytes.Contains(out, []byte("--- PASS")) {
		t.Fatalf("OpenBadger child: %v\n%s", err, out)
	}
}

func retryChild(t *testing.T, dir string) {
	if os.Getenv("PERSISTENCE_RETRY_CHILD_PLAIN") != "" {
		db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
		if err == nil {
			db.Close()
			t.Fatal("plain badger.Open succeeded")
		}
		if !strings.Contains(err.Error(), "Create a new file") {
			t.Fatalf("plain badger.Open: unexpected error %v", err)
		}
		t.Logf("plain badger.Open failed: %v", err)
		return
	}
	var logs bytes.Buffer
	b, err := persistence.OpenBadger(dir, persistence.BadgerOptions{}, slog.New(slog.NewTextHandler(&logs, nil)))
	t.Log(logs.String())
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	defer b.Close()
	got, err := b.Read(context.Background(), "u", 0, 10)
	if err != nil || len(got) != 1 || string(got[0].Data) != "kept" {
		t.Fatalf("Read after retried open = %v, %v", got, err)
	}
	if e, last, err := b.Activate(context.Background(), "u", "o2"); err != nil || e != 2 || last != 1 {
		t.Fatalf("Activate after retried open = %d, %d, %v", e, last, err)
	}
}

// BenchmarkGroupCommit: users each keep one 200-byte append in flight, as
// actors pipelining their appends do; one iteration submits one append
// (waiting first for that user's previous one). msgs/s counts durable
// entries; msgs/commit how many share one fsync. The ",retention" runs
// store with a 30-day retention (TTLs and a high-water mark per user and
// commit).
func BenchmarkGroupCommit(b *testing.B) {
	for _, run := range []struct {
		users     int
		retention time.Duration
	}{{64, 0}, {256, 0}, {64, 30 * 24 * time.Hour}, {256, 30 * 24 * time.Hour}} {
		name := fmt.Sprint("users=", run.users)
		if run.retention > 0 {
			name += ",retention"
		}
		users := run.users
		b.Run(name, func(b *testing.B) {
			s := openBadger(b, b.TempDir(), persistence.BadgerOptions{Retention: run.retention})
			epochs := make([]persistence.Epoch, users)
			names := make([]string, users)
			results := make([]chan error, users)
			dones := make([]func(error), users)
			for u := range users {
				names[u] = fmt.Sprintf("user-%04d", u)
				e, _, err := s.Activate(context.Background(), names[u], "bench")
				if err != nil {
					b.Fatal(err)
				}
				epochs[u] = e
				ch := make(chan error, 1)
				results[u], dones[u] = ch, func(err error) { ch <- err }
			}
			payload := bytes.Repeat([]byte("m"), 200)
			seqs := make([]persistence.Seq, users)
			commits := s.Stats().Commits
			n := 0
			start := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				u := n % users
				n++
				if seqs[u] > 0 {
					if err := <-results[u]; err != nil {
						b.Fatal(err)
					}
				}
				seqs[u]++
				s.Append(persistence.AppendRequest{
					User: names[u], Epoch: epochs[u],
					Entries: []persistence.Entry{{Seq: seqs[u], TimeMS: time.Now().UnixMilli(), Data: payload}},
				}, dones[u])
			}
			for u := range users {
				if seqs[u] > 0 {
					if err := <-results[u]; err != nil {
						b.Fatal(err)
					}
				}
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(n)/float64(s.Stats().Commits-commits), "msgs/commit")
		})
	}
}
