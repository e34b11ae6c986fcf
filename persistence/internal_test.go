package persistence

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain fails the package if goroutines outlive its tests: every store
// must have stopped its committer and closed badger.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 && os.Getenv("PERSISTENCE_RETRY_CHILD_DIR") == "" && os.Getenv(eioChildEnv) == "" {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			os.Stderr.WriteString("goroutines leaked: " + string(buf) + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func openTest(t *testing.T, opts BadgerOptions) *Local {
	t.Helper()
	b, err := OpenBadger(t.TempDir(), opts, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func ents(first Seq, n int, data []byte) []Entry {
	out := make([]Entry, n)
	for i := range out {
		out[i] = Entry{Seq: first + Seq(i), TimeMS: int64(first) + int64(i), Data: data}
	}
	return out
}

// hold blocks the committer inside a done callback until the returned
// release is called, so that everything submitted meanwhile lands in one
// batch. (Tests only: done must not block.)
func hold(t *testing.T, b *Local, user string, epoch Epoch) (release func()) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	b.Append(AppendRequest{User: user, Epoch: epoch}, func(err error) {
		if err != nil {
			t.Errorf("holding append: %v", err)
		}
		close(entered)
		<-gate
	})
	<-entered
	return sync.OnceFunc(func() { close(gate) })
}

func TestKeysPrefixFree(t *testing.T) {
	users := []string{"a", "ab", "a\x00", "a\x00\x01", "\x00", "b", "a|b", strings.Repeat("x", 300), strings.Repeat("x", 301)}
	keysOf := func(u string) [][]byte {
		return [][]byte{
			logKey(u, 0), logKey(u, 1<<40), epochKey(u), hwmKey(u), dedupKey(u, ""), dedupKey(u, "k"),
			appendOutboxKey(nil, u, 3, "k"), appendDeviceKey(nil, u, "d", deviceCursor),
			appendDeviceKey(nil, u, "", deviceRecord), appendConvKey(nil, u, "c"),
		}
	}
	for _, u1 := range users {
		for _, tag := range []byte{tagLog, tagEpoch, tagHWM, tagDedup, tagOutbox, tagDevice, tagConv} {
			p := userPrefix(tag, u1)
			for _, u2 := range users {
				for _, k := range keysOf(u2) {
					if u1 != u2 && bytes.HasPrefix(k, p) {
						t.Errorf("prefix of %q (tag %c) is a prefix of key %x of %q", u1, tag, k, u2)
					}
				}
			}
		}
	}
	// Big-endian seqs sort numerically.
	seqs := []Seq{0, 1, 255, 256, 1 << 32, 1<<64 - 1}
	for i := 1; i < len(seqs); i++ {
		if bytes.Compare(logKey("u", seqs[i-1]), logKey("u", seqs[i])) >= 0 {
			t.Errorf("log key of %d does not sort before %d", seqs[i-1], seqs[i])
		}
	}
	u := "user"
	rest := appendDeviceKey(nil, u, "dev|1", deviceRecord)[userPrefixLen(u):]
	if id, kind, ok := parseDeviceKey(rest); !ok || id != "dev|1" || kind != deviceRecord {
		t.Errorf("parseDeviceKey = %q, %q, %v", id, kind, ok)
	}
}

func TestRemoveEmptyMemFiles(t *testing.T) {
	dir := t.TempDir()
	files := map[string]int{"00001.mem": 0, "00002.mem": 10, "00003.vlog": 0, "MANIFEST": 0, "00004.mem": 0}
	for name, size := range files {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := removeEmptyMemFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if !slices.Equal(removed, []string{"00001.mem", "00004.mem"}) {
		t.Fatalf("removed %v", removed)
	}
	for name, size := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		gone := errors.Is(err, os.ErrNotExist)
		if want := size == 0 && strings.HasSuffix(name, ".mem"); gone != want {
			t.Errorf("%s: removed = %v, want %v (stat: %v)", name, gone, want, err)
		}
	}
}

// TestCommitFailure injects a failing commit: every append and activation
// of the batch fails with ErrStoreFailed, the store is failed for good
// (Failed closed, later writes and reads refused), and a reopen continues
// from what is durable, without anything of the batch.
func TestCommitFailure(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir, BadgerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	hook := func() error {
		if fail.Load() {
			return errors.New("injected commit failure")
		}
		return nil
	}
	b.commitHook.Store(&hook)
	ctx := t.Context()
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	ev, _, err := b.Activate(ctx, "v", "o")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: ents(1, 3, []byte("a"))}); err != nil {
		t.Fatal(err)
	}

	release := hold(t, b, "v", ev)
	fail.Store(true)
	var wg sync.WaitGroup
	res := make([]error, 4)
	submit := func(i int, req AppendRequest) {
		wg.Add(1)
		b.Append(req, func(err error) { res[i] = err; wg.Done() })
	}
	submit(0, AppendRequest{User: "u", Epoch: e, Entries: ents(4, 2, []byte("lost")), Dedup: []DedupKey{{Key: "lost", Seq: 4}}})
	submit(1, AppendRequest{User: "u", Epoch: e, Entries: ents(6, 1, []byte("lost"))})
	submit(2, AppendRequest{User: "v", Epoch: ev, Entries: ents(1, 1, []byte("lost"))})
	var actErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, actErr = b.Activate(ctx, "v", "other")
	}()
	// Let the activation reach the queue before releasing the committer.
	for b.Stats().Queued < 4 {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-b.Failed():
		t.Fatal("store failed before the failing commit")
	default:
	}
	release()
	wg.Wait()
	fail.Store(false) // badger works again: the store must still refuse
	for i, err := range res[:3] {
		if !errors.Is(err, ErrStoreFailed) || !strings.Contains(err.Error(), "injected") {
			t.Errorf("append %d in the failed commit: err = %v", i, err)
		}
	}
	if !errors.Is(actErr, ErrStoreFailed) || !strings.Contains(actErr.Error(), "injected") {
		t.Errorf("activation in the failed commit: err = %v", actErr)
	}
	select {
	case <-b.Failed():
	case <-time.After(time.Second):
		t.Fatal("Failed not closed after the failed commit")
	}
	if err := b.Err(); !errors.Is(err, ErrStoreFailed) || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Err = %v", err)
	}

	// Sticky: later writes are refused, not retried into an ack; reads go on.
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: ents(4, 1, []byte("b"))}); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("append after the failed commit: %v, want ErrStoreFailed", err)
	}
	if _, _, err := b.Activate(ctx, "w", "o"); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("activation after the failed commit: %v, want ErrStoreFailed", err)
	}
	if _, err := b.Read(ctx, "u", 0, 10); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("read after the failed commit: %v, want ErrStoreFailed", err)
	}
	if st := b.Stats(); st.Failed != 6 || st.CommitFailures != 1 {
		t.Fatalf("stats %+v: want 6 failed, 1 commit failure", st)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// A reopen continues from what is durable: seq 4 is next for u, v has
	// its pre-batch epoch and no entries.
	b, err = OpenBadger(dir, BadgerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	e2, last, err := b.Activate(ctx, "u", "o")
	if err != nil || last != 3 {
		t.Fatalf("Activate of u after reopen = %d, %d, %v; want last 3", e2, last, err)
	}
	if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e2, Entries: ents(4, 1, []byte("b"))}); err != nil {
		t.Fatalf("append of seq 4 after reopen: %v", err)
	}
	if e3, last, err := b.Activate(ctx, "v", "o"); err != nil || e3 != ev+1 || last != 0 {
		t.Fatalf("Activate of v after reopen = %d, %d, %v; want %d, 0", e3, last, err, ev+1)
	}
	if got, err := b.Read(ctx, "u", 0, 10); err != nil || len(got) != 4 {
		t.Fatalf("u has %d entries after reopen (err %v), want 4", len(got), err)
	}
	if _, ok, _ := b.LookupDedup(ctx, "u", "lost"); ok {
		t.Fatal("dedup key of the failed commit is stored")
	}
}

// TestTxnTooBigFallback lifts the committer's own caps above badger's, so
// that badger's ErrTxnTooBig decides: the committer must commit what it has
// and go on in a new transaction, and refuse only an append that is too
// big alone.
func TestTxnTooBigFallback(t *testing.T) {
	b := openTest(t, BadgerOptions{MemTableSize: 16 << 20}) // badger's limit: 2.4 MiB per transaction
	b.maxBytes, b.maxWrites = 1<<40, 1<<40
	ctx := t.Context()
	users := []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "big"}
	epochs := map[string]Epoch{}
	for _, u := range users {
		e, _, err := b.Activate(ctx, u, "o")
		if err != nil {
			t.Fatal(err)
		}
		epochs[u] = e
	}
	before := b.Stats().Commits
	release := hold(t, b, "u0", epochs["u0"])

	// Values stay under badger's 1 MiB value threshold so they count in
	// full against its 2.4 MiB transaction limit.
	val := bytes.Repeat([]byte("v"), 500<<10)
	var wg sync.WaitGroup
	res := make([]error, len(users))
	for i, u := range users {
		req := AppendRequest{User: u, Epoch: epochs[u], Entries: ents(1, 1, val)}
		if u == "big" {
			req.Entries = ents(1, 6, val) // 3 MB alone
		}
		wg.Add(1)
		b.Append(req, func(err error) { res[i] = err; wg.Done() })
	}
	release()
	wg.Wait()
	for i, u := range users {
		if u == "big" {
			if !errors.Is(res[i], ErrTooLarge) {
				t.Errorf("3 MB append: err = %v, want ErrTooLarge", res[i])
			}
			continue
		}
		if res[i] != nil {
			t.Errorf("append of %s: %v", u, res[i])
		}
		got, err := b.Read(ctx, u, 0, 2)
		if err != nil || len(got) != 1 || !bytes.Equal(got[0].Data, val) {
			t.Errorf("read of %s: %d entries, %v", u, len(got), err)
		}
	}
	// The holding append commits alone; 8 × 500 KiB need at least two
	// more commits under badger's limit.
	if c := b.Stats().Commits - before; c < 3 {
		t.Fatalf("%d commits; badger's limit should have split the batch", c)
	}
	if got, _ := b.Read(ctx, "big", 0, 10); len(got) != 0 {
		t.Fatalf("refused append stored %d entries", len(got))
	}
}

// TestAppendCopiesRequest: the request may be reused once Append returns.
func TestAppendCopiesRequest(t *testing.T) {
	b := openTest(t, BadgerOptions{})
	ctx := t.Context()
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	release := hold(t, b, "u", e)
	data := []byte("original")
	req := AppendRequest{User: "u", Epoch: e, Entries: ents(1, 1, data),
		Convs: []Conv{{Key: "c", Data: data}}}
	done := make(chan error, 1)
	b.Append(req, func(err error) { done <- err })
	copy(data, "CLOBBER!")
	req.Entries[0].Seq = 99
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := b.Read(ctx, "u", 0, 10)
	if err != nil || len(got) != 1 || got[0].Seq != 1 || string(got[0].Data) != "original" {
		t.Fatalf("Read = %+v, %v", got, err)
	}
	convs, err := b.Convs(ctx, "u")
	if err != nil || len(convs) != 1 || string(convs[0].Data) != "original" {
		t.Fatalf("Convs = %+v, %v", convs, err)
	}
}

// TestCloseRacesAppends closes the store while goroutines keep appending:
// every done is called exactly once, nothing panics, and what was acked is
// on disk after a reopen.
func TestCloseRacesAppends(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir, BadgerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const writers = 8
	acked := make([]atomic.Int64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		user := string(rune('a' + w))
		e, _, err := b.Activate(ctx, user, "o")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			var calls atomic.Int64
			var inflight sync.WaitGroup
			for seq := Seq(1); ; seq++ {
				inflight.Add(1)
				var closed atomic.Bool
				b.Append(AppendRequest{User: user, Epoch: e, Entries: ents(seq, 1, []byte("x"))}, func(err error) {
					calls.Add(1)
					switch {
					case err == nil:
						acked[w].Add(1)
					case errors.Is(err, ErrClosed):
						closed.Store(true)
					}
					inflight.Done()
				})
				if seq%16 == 0 || closed.Load() {
					inflight.Wait()
				}
				if closed.Load() {
					if calls.Load() != int64(seq) {
						t.Errorf("writer %d: %d done calls for %d appends", w, calls.Load(), seq)
					}
					return
				}
			}
		})
	}
	// Close once every writer has had appends acked.
	for w := range writers {
		for acked[w].Load() == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	b2, err := OpenBadger(dir, BadgerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	for w := range writers {
		user := string(rune('a' + w))
		_, last, err := b2.Activate(ctx, user, "o")
		if err != nil {
			t.Fatal(err)
		}
		if n := acked[w].Load(); Seq(n) != last {
			t.Errorf("writer %d: %d acked, last seq on disk %d", w, n, last)
		}
	}
}

func TestBadgerLogger(t *testing.T) {
	var buf bytes.Buffer
	l := badgerLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	l.Infof("routine %d\n", 1)
	l.Debugf("noise")
	if buf.Len() != 0 {
		t.Fatalf("info/debug logged at info level: %q", buf.String())
	}
	l.Warningf("careful %s", "now")
	l.Errorf("broken")
	out := buf.String()
	for _, want := range []string{"level=WARN msg=\"careful now\" component=badger", "level=ERROR msg=broken component=badger"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	buf.Reset()
	l = badgerLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Infof("routine %d\n", 2)
	if !strings.Contains(buf.String(), "level=DEBUG msg=\"routine 2\"") {
		t.Errorf("Infof at debug level logged %q", buf.String())
	}
}

func TestInvalidIDs(t *testing.T) {
	b := openTest(t, BadgerOptions{})
	ctx := context.Background()
	if _, _, err := b.Activate(ctx, "", "o"); err == nil {
		t.Error("Activate of an empty user ID succeeded")
	}
	if _, err := b.Read(ctx, strings.Repeat("x", maxIDLen+1), 0, 1); err == nil {
		t.Error("Read of an over-long user ID succeeded")
	}
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	err = b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Devices: []Device{{DeviceID: strings.Repeat("d", maxIDLen+1)}}})
	if err == nil {
		t.Error("append with an over-long device ID succeeded")
	}
}

// TestDoneOrder: in one batch, refused appends report in submission order
// with the committed ones, not ahead of them.
func TestDoneOrder(t *testing.T) {
	b := openTest(t, BadgerOptions{})
	e, _, err := b.Activate(t.Context(), "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	release := hold(t, b, "u", e)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i, req := range []AppendRequest{
		{User: "u", Epoch: e, Entries: ents(1, 1, nil)},
		{User: "u", Epoch: e, Entries: ents(5, 1, nil)},             // gap
		{User: "u", Epoch: e + 1, Entries: ents(2, 1, nil)},         // fenced
		{User: "u", Epoch: e, Entries: []Entry{{Seq: 2}, {Seq: 4}}}, // refused while encoding
		{User: "u", Epoch: e, Entries: ents(2, 1, nil)},
	} {
		wg.Add(1)
		b.Append(req, func(error) {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		})
	}
	release()
	wg.Wait()
	if !slices.Equal(order, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("done order %v, want submission order", order)
	}
}

// TestUserCacheBound: the committer keeps at most MaxCachedUsers states and
// reloads evicted ones from disk.
func TestUserCacheBound(t *testing.T) {
	b := openTest(t, BadgerOptions{MaxCachedUsers: 3})
	ctx := t.Context()
	users := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	epochs := map[string]Epoch{}
	for _, u := range users {
		e, _, err := b.Activate(ctx, u, "o")
		if err != nil {
			t.Fatal(err)
		}
		epochs[u] = e
	}
	for round := range 3 {
		for _, u := range users {
			seq := Seq(round + 1)
			if err := b.AppendSync(ctx, AppendRequest{User: u, Epoch: epochs[u], Entries: ents(seq, 1, nil)}); err != nil {
				t.Fatalf("round %d, user %s: %v", round, u, err)
			}
			if n := b.Stats().CachedUsers; n > 3 {
				t.Fatalf("%d cached users, limit 3", n)
			}
		}
	}
	for _, u := range users {
		if err := b.AppendSync(ctx, AppendRequest{User: u, Epoch: epochs[u], Entries: ents(3, 1, nil)}); !errors.Is(err, ErrSeqGap) {
			t.Fatalf("duplicate seq 3 of %s after eviction: err = %v, want ErrSeqGap", u, err)
		}
		if e, last, err := b.Activate(ctx, u, "o"); err != nil || e != epochs[u]+1 || last != 3 {
			t.Fatalf("Activate(%s) = %d, %d, %v; want %d, 3", u, e, last, err, epochs[u]+1)
		}
	}
}
