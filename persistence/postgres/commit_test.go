package postgres_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/postgres"
)

func entry(seq persistence.Seq, data []byte) []persistence.Entry {
	return []persistence.Entry{{Seq: seq, TimeMS: int64(seq), Data: data}}
}

func activate(t testing.TB, s persistence.Store, user string) (persistence.Epoch, persistence.Seq) {
	t.Helper()
	e, last, err := s.Activate(t.Context(), user, "owner")
	if err != nil {
		t.Fatalf("Activate(%q): %v", user, err)
	}
	return e, last
}

// xid returns the server's current transaction ID counter: it moves by one
// per transaction that writes (and by one for this call).
func xid(t testing.TB, url string) int64 {
	t.Helper()
	var x int64
	if err := sqlConn(t, url).QueryRow(t.Context(), "SELECT txid_current()").Scan(&x); err != nil {
		t.Fatal(err)
	}
	return x
}

// hold blocks the completer inside a done callback until release is
// called. With Pipeline 1 the committer cannot cut the next batch
// meanwhile, so everything submitted lands in one batch. (Tests only: done
// must not block.)
func hold(t *testing.T, s *postgres.Store, user string, epoch persistence.Epoch) (release func()) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	s.Append(persistence.AppendRequest{User: user, Epoch: epoch}, func(err error) {
		if err != nil {
			t.Errorf("holding append: %v", err)
		}
		close(entered)
		<-gate
	})
	<-entered
	release = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release)
	return release
}

// results collects done results by index.
type results struct {
	mu   sync.Mutex
	errs []error
	wg   sync.WaitGroup
}

func (r *results) submit(s persistence.Store, req persistence.AppendRequest) int {
	r.mu.Lock()
	i := len(r.errs)
	r.errs = append(r.errs, nil)
	r.mu.Unlock()
	r.wg.Add(1)
	s.Append(req, func(err error) {
		r.mu.Lock()
		r.errs[i] = err
		r.mu.Unlock()
		r.wg.Done()
	})
	return i
}

func (r *results) wait(t *testing.T) []error {
	t.Helper()
	ch := make(chan struct{})
	go func() { r.wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("done not called within 30 s")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

// TestGroupCommitBatches: concurrent appends of many users share
// transactions — counted by the store and by the server's transaction
// IDs — and so do pipelined appends of one user. Not parallel: other
// tests' transactions on the shared server would count.
func TestGroupCommitBatches(t *testing.T) {
	url := newURL(t)
	s := openStore(t, url, postgres.Options{})
	ctx := t.Context()
	const users, per = 64, 30
	epochs := make([]persistence.Epoch, users)
	for u := range users {
		epochs[u], _ = activate(t, s, fmt.Sprint("u", u))
	}
	before, xBefore := s.Stats(), xid(t, url)
	errs := make(chan error, users)
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			user := fmt.Sprint("u", u)
			for i := 1; i <= per; i++ {
				req := persistence.AppendRequest{User: user, Epoch: epochs[u], Entries: entry(persistence.Seq(i), []byte("m")),
					Dedup: []persistence.DedupKey{{Key: fmt.Sprint("c", i), Seq: persistence.Seq(i)}}}
				if err := s.AppendSync(ctx, req); err != nil {
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
	st := s.Stats()
	ops, commits := st.Ops-before.Ops, st.Commits-before.Commits
	xacts := xid(t, url) - xBefore - 1 // the second probe's own
	if ops != users*per || st.Entries-before.Entries != users*per || st.Failed != 0 {
		t.Fatalf("stats %+v: want %d more ops and entries, 0 failed", st, users*per)
	}
	if commits > ops/4 || xacts > int64(ops/4) {
		t.Fatalf("%d appends took %d commits, %d server transactions; want at most a quarter as many", ops, commits, xacts)
	}
	t.Logf("%d appends of %d users in %d commits (%.1f per commit), %d server transactions",
		ops, users, commits, float64(ops)/float64(commits), xacts)

	// One user pipelining appends without waiting batches too.
	e, _ := activate(t, s, "pipe")
	c0 := s.Stats().Commits
	var r results
	const n = 1000
	for i := 1; i <= n; i++ {
		r.submit(s, persistence.AppendRequest{User: "pipe", Epoch: e, Entries: entry(persistence.Seq(i), []byte("p"))})
	}
	if err := errors.Join(r.wait(t)...); err != nil {
		t.Fatal(err)
	}
	if c := s.Stats().Commits - c0; c > n/4 {
		t.Fatalf("%d pipelined appends took %d commits; want at most %d", n, c, n/4)
	}
	got, err := s.Read(ctx, "pipe", 0, 2*n)
	if err != nil || len(got) != n || got[n-1].Seq != n {
		t.Fatalf("Read of the pipelined log: %d entries, %v", len(got), err)
	}
}

// TestFenceInMixedBatch: in one batch, a fenced user's appends (and the
// ones depending on them) fail while the other users' appends commit, in
// one transaction.
func TestFenceInMixedBatch(t *testing.T) {
	t.Parallel()
	url := newURL(t)
	s := openStore(t, url, postgres.Options{Pipeline: 1})
	other := openStore(t, url, postgres.Options{}) // another node on the same database
	ctx := t.Context()
	eh, _ := activate(t, s, "holder")
	ea, _ := activate(t, s, "a")
	eb, _ := activate(t, s, "b")
	ec, _ := activate(t, s, "c")
	for _, u := range []struct {
		name string
		e    persistence.Epoch
	}{{"a", ea}, {"b", eb}, {"c", ec}} {
		if err := s.AppendSync(ctx, persistence.AppendRequest{User: u.name, Epoch: u.e, Entries: entry(1, []byte("first"))}); err != nil {
			t.Fatal(err)
		}
	}
	// "a" moves to the other node.
	ea2, last := activate(t, other, "a")
	if last != 1 {
		t.Fatalf("Activate on the other store: last %d, want 1", last)
	}

	release := hold(t, s, "holder", eh)
	c0 := s.Stats().Commits
	var r results
	r.submit(s, persistence.AppendRequest{User: "b", Epoch: eb, Entries: entry(2, []byte("b2")),
		Devices: []persistence.Device{{DeviceID: "d", Data: []byte("rec"), Cursor: 2}}})
	r.submit(s, persistence.AppendRequest{User: "a", Epoch: ea, Entries: entry(2, []byte("stale")),
		Dedup: []persistence.DedupKey{{Key: "stale", Seq: 2}}})
	r.submit(s, persistence.AppendRequest{User: "c", Epoch: ec, Entries: entry(2, []byte("c2"))})
	r.submit(s, persistence.AppendRequest{User: "a", Epoch: ea, Entries: entry(3, []byte("stale too"))})
	r.submit(s, persistence.AppendRequest{User: "b", Epoch: eb, Entries: entry(3, []byte("b3"))})
	r.submit(s, persistence.AppendRequest{User: "c", Epoch: ec, Entries: entry(4, []byte("gap"))})
	release()
	res := r.wait(t)
	want := []error{nil, persistence.ErrFenced, nil, persistence.ErrFenced, nil, persistence.ErrSeqGap}
	for i, w := range want {
		if (w == nil && res[i] != nil) || (w != nil && !errors.Is(res[i], w)) {
			t.Errorf("append %d: err = %v, want %v", i, res[i], w)
		}
	}
	if st := s.Stats(); st.Commits != c0+1 || st.LastCommitOps != 3 {
		t.Errorf("stats %+v: want one more commit, of b, b and c", st)
	}
	for user, n := range map[string]int{"a": 1, "b": 3, "c": 2} {
		got, err := s.Read(ctx, user, 0, 10)
		if err != nil || len(got) != n {
			t.Errorf("%s: %d entries, %v; want %d", user, len(got), err, n)
		}
	}
	if _, found, _ := s.LookupDedup(ctx, "a", "stale"); found {
		t.Error("the fenced append's dedup key was stored")
	}
	// The new owner goes on.
	if err := other.AppendSync(ctx, persistence.AppendRequest{User: "a", Epoch: ea2, Entries: entry(2, []byte("a2"))}); err != nil {
		t.Fatal(err)
	}
}

// TestBatchMerge: one batch holding several appends of one user that
// write the same rows (a rewrite of an entry appended in the batch, an
// outbox item put then done, a device record then a cursor-only update,
// one dedup key and conversation twice) stores what applying them in
// order would.
func TestBatchMerge(t *testing.T) {
	t.Parallel()
	s := openStore(t, newURL(t), postgres.Options{Pipeline: 1})
	ctx := t.Context()
	eh, _ := activate(t, s, "holder")
	e, _ := activate(t, s, "u")
	if err := s.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(1, []byte("one")),
		OutboxPut: []persistence.OutboxItem{{Seq: 1, Key: "old", Data: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	release := hold(t, s, "holder", eh)
	var r results
	r.submit(s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(2, []byte("two")),
		Dedup:     []persistence.DedupKey{{Key: "k", Seq: 2}},
		OutboxPut: []persistence.OutboxItem{{Seq: 2, Key: "a", Data: []byte("a")}, {Seq: 2, Key: "b", Data: []byte("b")}},
		Devices:   []persistence.Device{{DeviceID: "d", Data: []byte("record"), Cursor: 1}},
		Convs:     []persistence.Conv{{Key: "c", Data: []byte("v1")}}})
	r.submit(s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(3, []byte("three")),
		Rewrites:   []persistence.Entry{{Seq: 2, TimeMS: 2, Data: []byte("two, edited")}, {Seq: 1, TimeMS: 1, Data: []byte("one, edited")}},
		Dedup:      []persistence.DedupKey{{Key: "k", Seq: 3}},
		OutboxDone: []persistence.OutboxRef{{Seq: 2, Key: "a"}, {Seq: 1, Key: "old"}},
		Devices:    []persistence.Device{{DeviceID: "d", Cursor: 3}},
		Convs:      []persistence.Conv{{Key: "c", Data: []byte("v2")}}})
	r.submit(s, persistence.AppendRequest{User: "u", Epoch: e,
		Rewrites:  []persistence.Entry{{Seq: 1, TimeMS: 1, Data: []byte("one, edited twice")}},
		OutboxPut: []persistence.OutboxItem{{Seq: 2, Key: "a", Data: []byte("a again")}}})
	release()
	if err := errors.Join(r.wait(t)...); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, "u", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var data []string
	for _, en := range got {
		data = append(data, string(en.Data))
	}
	if want := []string{"one, edited twice", "two, edited", "three"}; !slices.Equal(data, want) {
		t.Errorf("log = %q, want %q", data, want)
	}
	if seq, ok, err := s.LookupDedup(ctx, "u", "k"); err != nil || !ok || seq != 3 {
		t.Errorf("LookupDedup(k) = %d, %v, %v; want 3", seq, ok, err)
	}
	out, _ := s.Outbox(ctx, "u")
	var items []string
	for _, o := range out {
		items = append(items, fmt.Sprintf("%d/%s:%s", o.Seq, o.Key, o.Data))
	}
	if want := []string{"2/a:a again", "2/b:b"}; !slices.Equal(items, want) {
		t.Errorf("outbox = %q, want %q", items, want)
	}
	devs, _ := s.Devices(ctx, "u")
	if len(devs) != 1 || string(devs[0].Data) != "record" || devs[0].Cursor != 3 {
		t.Errorf("devices = %+v, want d:record@3", devs)
	}
	convs, _ := s.Convs(ctx, "u")
	if len(convs) != 1 || string(convs[0].Data) != "v2" {
		t.Errorf("convs = %+v, want c=v2", convs)
	}
}

// TestInvalidKeys: IDs and keys that text cannot hold as they are (NUL,
// invalid UTF-8, too long) are refused with ErrInvalidKey, alone, and
// nothing of the append is stored.
func TestInvalidKeys(t *testing.T) {
	t.Parallel()
	s := openStore(t, newURL(t), postgres.Options{})
	ctx := t.Context()
	e, _ := activate(t, s, "u")
	if err := s.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(1, []byte("ok\x00bytes are fine in data"))}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Activate(ctx, "u\x00x", "o"); !errors.Is(err, postgres.ErrInvalidKey) {
		t.Errorf("Activate of a user with NUL: %v, want ErrInvalidKey", err)
	}
	if _, err := s.Read(ctx, "g\x00group", 0, 1); !errors.Is(err, postgres.ErrInvalidKey) {
		t.Errorf("Read of a user with NUL: %v, want ErrInvalidKey", err)
	}
	if _, _, err := s.LookupDedup(ctx, "u", "k\x00"); !errors.Is(err, postgres.ErrInvalidKey) {
		t.Errorf("LookupDedup of a key with NUL: %v, want ErrInvalidKey", err)
	}
	long := string(bytes.Repeat([]byte("k"), 1025))
	base := func() persistence.AppendRequest {
		return persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(2, []byte("two")),
			Dedup:     []persistence.DedupKey{{Key: "d", Seq: 2}},
			OutboxPut: []persistence.OutboxItem{{Seq: 2, Key: "o", Data: []byte("x")}},
			Devices:   []persistence.Device{{DeviceID: "dev", Data: []byte("r"), Cursor: 2}},
			Convs:     []persistence.Conv{{Key: "c", Data: []byte("x")}}}
	}
	bad := map[string]func(*persistence.AppendRequest){
		"user NUL":         func(r *persistence.AppendRequest) { r.User = "u\x00" },
		"dedup NUL":        func(r *persistence.AppendRequest) { r.Dedup[0].Key = "#g:\x00x" },
		"outbox NUL":       func(r *persistence.AppendRequest) { r.OutboxPut[0].Key = "\x00" },
		"outbox done NUL":  func(r *persistence.AppendRequest) { r.OutboxDone = []persistence.OutboxRef{{Seq: 1, Key: "a\x00"}} },
		"device NUL":       func(r *persistence.AppendRequest) { r.Devices[0].DeviceID = "de\x00v" },
		"conv NUL":         func(r *persistence.AppendRequest) { r.Convs[0].Key = "g:\x00" },
		"conv invalid":     func(r *persistence.AppendRequest) { r.Convs[0].Key = "g:\xff" },
		"dedup too long":   func(r *persistence.AppendRequest) { r.Dedup[0].Key = long },
		"user too long":    func(r *persistence.AppendRequest) { r.User = long },
		"device not UTF-8": func(r *persistence.AppendRequest) { r.Devices[0].DeviceID = "\xc3\x28" },
	}
	// Each bad append fails alone in a batch of good ones of other users.
	others := make([]persistence.Epoch, 3)
	for i := range others {
		others[i], _ = activate(t, s, fmt.Sprint("other", i))
	}
	seq := persistence.Seq(1)
	for name, spoil := range bad {
		var r results
		for i, oe := range others {
			r.submit(s, persistence.AppendRequest{User: fmt.Sprint("other", i), Epoch: oe, Entries: entry(seq, []byte("x"))})
		}
		req := base()
		spoil(&req)
		bi := r.submit(s, req)
		res := r.wait(t)
		for i, err := range res {
			if i == bi && !errors.Is(err, postgres.ErrInvalidKey) {
				t.Errorf("%s: err = %v, want ErrInvalidKey", name, err)
			}
			if i != bi && err != nil {
				t.Errorf("%s: another user's append in the batch failed: %v", name, err)
			}
		}
		seq++
	}
	// Nothing of them was stored; the log goes on at 2.
	got, _ := s.Read(ctx, "u", 0, 10)
	if len(got) != 1 || string(got[0].Data) != "ok\x00bytes are fine in data" {
		t.Fatalf("log after refused appends: %+v", got)
	}
	if _, found, _ := s.LookupDedup(ctx, "u", "d"); found {
		t.Error("dedup key of a refused append stored")
	}
	for name, n := range map[string]func() (int, error){
		"outbox":  func() (int, error) { v, err := s.Outbox(ctx, "u"); return len(v), err },
		"devices": func() (int, error) { v, err := s.Devices(ctx, "u"); return len(v), err },
		"convs":   func() (int, error) { v, err := s.Convs(ctx, "u"); return len(v), err },
	} {
		if k, err := n(); k != 0 || err != nil {
			t.Errorf("%s of u after refused appends: %d, %v", name, k, err)
		}
	}
	req := base()
	if err := s.AppendSync(ctx, req); err != nil {
		t.Fatalf("the good append after the refused ones: %v", err)
	}
}

// TestBatchCaps: an append over the caps fails with ErrTooLarge and its
// dependents with ErrSeqGap; batches stay within the caps.
func TestBatchCaps(t *testing.T) {
	t.Parallel()
	s := openStore(t, newURL(t), postgres.Options{MaxBatchRows: 10, MaxBatchBytes: 4 << 10})
	ctx := t.Context()
	e, _ := activate(t, s, "u")
	var r results
	for i := 1; i <= 100; i++ {
		seq := persistence.Seq(i)
		r.submit(s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(seq, []byte("x")),
			Dedup: []persistence.DedupKey{{Key: fmt.Sprint(seq), Seq: seq}}})
	}
	if err := errors.Join(r.wait(t)...); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.LastCommitOps > 5 || st.Commits < 100/5+1 {
		t.Fatalf("stats %+v: want commits of at most 5 appends of 2 rows", st)
	}
	tooMany := make([]persistence.Entry, 11)
	for i := range tooMany {
		tooMany[i] = entry(persistence.Seq(101+i), nil)[0]
	}
	for name, req := range map[string]persistence.AppendRequest{
		"rows":  {User: "u", Epoch: e, Entries: tooMany},
		"bytes": {User: "u", Epoch: e, Entries: entry(101, make([]byte, 5<<10))},
	} {
		var q results
		q.submit(s, req)
		q.submit(s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(102, nil)})
		res := q.wait(t)
		if !errors.Is(res[0], persistence.ErrTooLarge) || !errors.Is(res[1], persistence.ErrSeqGap) {
			t.Fatalf("%s: too large, next = %v, %v; want ErrTooLarge, ErrSeqGap", name, res[0], res[1])
		}
	}
	if err := s.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(101, []byte("ok"))}); err != nil {
		t.Fatal(err)
	}
}

// TestCloseUnderLoad closes the store while writers keep appending: every
// done is called exactly once, Close returns, appends after it fail with
// ErrClosed, and what was acked is in the database.
func TestCloseUnderLoad(t *testing.T) {
	t.Parallel()
	url := newURL(t)
	s, err := postgres.Open(t.Context(), url, postgres.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 16
	acked := make([]atomic.Int64, writers)
	var calls, submitted atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		user := fmt.Sprint("w", w)
		e, _ := activate(t, s, user)
		wg.Go(func() {
			var inflight sync.WaitGroup
			var closed atomic.Bool
			for seq := persistence.Seq(1); !closed.Load(); seq++ {
				inflight.Add(1)
				submitted.Add(1)
				s.Append(persistence.AppendRequest{User: user, Epoch: e, Entries: entry(seq, []byte("x"))}, func(err error) {
					calls.Add(1)
					switch {
					case err == nil:
						acked[w].Add(1)
					case errors.Is(err, persistence.ErrClosed):
						closed.Store(true)
					}
					inflight.Done()
				})
				if seq%8 == 0 {
					inflight.Wait()
				}
			}
			inflight.Wait()
		})
	}
	for w := range writers {
		for acked[w].Load() < 20 {
			time.Sleep(time.Millisecond)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return under load")
	}
	wg.Wait()
	if calls.Load() != submitted.Load() {
		t.Fatalf("%d done calls for %d appends", calls.Load(), submitted.Load())
	}
	if err := s.AppendSync(t.Context(), persistence.AppendRequest{User: "w0", Epoch: 1}); !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("AppendSync after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s2 := openStore(t, url, postgres.Options{})
	for w := range writers {
		_, last := activate(t, s2, fmt.Sprint("w", w))
		if n := acked[w].Load(); persistence.Seq(n) != last {
			t.Errorf("writer %d: %d acked, last seq in the database %d", w, n, last)
		}
	}
}

// TestActivateAcrossStores: two stores on one database are two nodes; an
// activation on one fences the other's appends, pipelined ones included.
func TestActivateAcrossStores(t *testing.T) {
	t.Parallel()
	url := newURL(t)
	a := openStore(t, url, postgres.Options{})
	b := openStore(t, url, postgres.Options{})
	e1, _ := activate(t, a, "u")
	var r results
	for i := 1; i <= 200; i++ {
		r.submit(a, persistence.AppendRequest{User: "u", Epoch: e1, Entries: entry(persistence.Seq(i), []byte("a"))})
		if i == 50 {
			e2, last := activate(t, b, "u")
			if e2 != e1+1 {
				t.Fatalf("Activate on b: epoch %d, want %d", e2, e1+1)
			}
			t.Logf("b activated at seq %d", last)
		}
	}
	res := r.wait(t)
	ok := 0
	for ok < len(res) && res[ok] == nil {
		ok++
	}
	for i := ok; i < len(res); i++ {
		if !errors.Is(res[i], persistence.ErrFenced) {
			t.Fatalf("append %d after %d acked: %v, want ErrFenced", i+1, ok, res[i])
		}
	}
	got, err := b.Read(t.Context(), "u", 0, 1000)
	if err != nil || len(got) != ok {
		t.Fatalf("b reads %d entries, %v; %d were acked on a", len(got), err, ok)
	}
}
