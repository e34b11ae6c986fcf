// Package storetest is the conformance suite of persistence.Store: every
// backend (badger, PostgreSQL) runs it from its own tests:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, storetest.Harness{Open: ..., Reopen: ...})
//	}
//
// The suite uses only the Store interface and the sentinels of package
// persistence. It runs its subtests sequentially; each opens its own store.
// No single append of the suite has more than 64 key writes (entries plus
// side effects) or 16 KiB, so a backend may run it with batch limits
// configured that low.
//
// Besides what the Store docs say, the suite holds backends to these
// readings of them:
//   - an append whose epoch is not the user's current one (older, newer,
//     or any epoch of a never-activated user) fails with ErrFenced;
//   - an append is checked against the stored epoch and last seq: it needs
//     no Activate in the same process (e.g. after a reopen);
//   - Epoch reads the current epoch (0 before the first Activate, the one
//     the last Activate returned after it, also after a reopen) and
//     bumps nothing;
//   - done callbacks of one user's appends are called in submission order,
//     failures included;
//   - OutboxDone in the same append as OutboxPut of the same item deletes
//     it; Outbox is ordered by seq, then key;
//   - a pending fan-out mark lists its user in OutboxUsers and comes back
//     from Outbox as the item of seq 0 with the empty key;
//   - after Close every method fails with an error matching ErrClosed
//     (Append through done), and nothing hangs;
//   - AppendSync and Activate with a context already done return its error.
//
// The retention tests (Harness.OpenWithRetention) hold backends to these:
//   - an entry has aged out once its TimeMS < now - retention, now from
//     the clock the store was opened with; the boundary itself is kept;
//   - aged-out entries are never returned, even if the backend has not
//     deleted them, and entries appended already aged out are never
//     returned either; the seq still moves on;
//   - the last seq (Activate, the seq check of appends, "last seq + 1" of
//     FirstSeq and FirstSeqSince) counts aged-out entries, also after a
//     reopen, and also for appends checked without a new Activate;
//   - outbox items, devices and conversation states do not age out; a
//     dedup key may outlive its entry, but never names another seq.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
)

// Harness opens stores for the suite.
type Harness struct {
	// Open returns a new, empty store. It registers the store's Close
	// with t.Cleanup; the suite may close the store earlier, so a second
	// Close must be harmless.
	Open func(t *testing.T) persistence.Store
	// Reopen returns a store over the data of old, which the suite has
	// closed, and registers its Close like Open. The new store is
	// configured as old was: for a store from OpenWithRetention, the same
	// retention and clock. Nil skips the tests that need it.
	Reopen func(t *testing.T, old persistence.Store) persistence.Store
	// OpenWithRetention returns a new, empty store that keeps log entries
	// for retention (> 0) measured against now, and registers its Close
	// like Open. Nil skips the retention tests. The suite's clocks start
	// at the real time and only move forward; the entries it appends are
	// timed by them, or already older than the window when appended.
	OpenWithRetention func(t *testing.T, retention time.Duration, now func() time.Time) persistence.Store
}

// waitTimeout bounds every wait for a done callback: a store that never
// calls done fails the test instead of hanging it.
const waitTimeout = 30 * time.Second

// Run runs the suite against the stores h opens.
func Run(t *testing.T, h Harness) {
	if h.Open == nil {
		t.Fatal("storetest: Harness.Open is nil")
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"ActivateEmpty", testActivateEmpty},
		{"ActivateBumpsEpoch", testActivateBumpsEpoch},
		{"RoundTrip", testRoundTrip},
		{"ReadPaging", testReadPaging},
		{"SeqGapRefused", testSeqGapRefused},
		{"Fenced", testFenced},
		{"NeverActivatedFenced", testNeverActivatedFenced},
		{"FenceDuringPipeline", testFenceDuringPipeline},
		{"ConcurrentUsers", testConcurrentUsers},
		{"Pipelined", testPipelined},
		{"FailureFailsDependents", testFailureFailsDependents},
		{"SideEffects", testSideEffects},
		{"SideEffectsOnly", testSideEffectsOnly},
		{"OutboxOrder", testOutboxOrder},
		{"OutboxUsers", testOutboxUsers},
		{"FanoutMark", testFanoutMark},
		{"Rewrite", testRewrite},
		{"PrefixUsers", testPrefixUsers},
		{"FirstSeqSince", testFirstSeqSince},
		{"AppendSyncContext", testAppendSyncContext},
		{"FirstSeq", testFirstSeq},
		{"Reopen", testReopen},
		{"Close", testClose},
		{"RetentionRead", testRetentionRead},
		{"RetentionAgedAtAppend", testRetentionAgedAtAppend},
		{"RetentionReopen", testRetentionReopen},
		{"RetentionFirstSeqSince", testRetentionFirstSeqSince},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// ---- helpers ----

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func activate(t *testing.T, s persistence.Store, user string) (persistence.Epoch, persistence.Seq) {
	t.Helper()
	e, last, err := s.Activate(ctxT(t), user, "owner-"+user)
	if err != nil {
		t.Fatalf("Activate(%q): %v", user, err)
	}
	return e, last
}

// data is the payload the suite stores for user's entry seq.
func data(user string, seq persistence.Seq) []byte {
	return fmt.Appendf(nil, "%s#%d", user, seq)
}

// entries returns n entries from seq first; entry seq s has TimeMS 1000*s.
func entries(user string, first persistence.Seq, n int) []persistence.Entry {
	out := make([]persistence.Entry, n)
	for i := range out {
		s := first + persistence.Seq(i)
		out[i] = persistence.Entry{Seq: s, TimeMS: 1000 * int64(s), Data: data(user, s)}
	}
	return out
}

func appendSync(t *testing.T, s persistence.Store, req persistence.AppendRequest) {
	t.Helper()
	if err := s.AppendSync(ctxT(t), req); err != nil {
		t.Fatalf("AppendSync(user %q, epoch %d, %d entries): %v", req.User, req.Epoch, len(req.Entries), err)
	}
}

// pending collects the done results of asynchronous appends.
type pending struct {
	mu    sync.Mutex
	res   []error
	calls []int
	order []int // indexes in the order done was called
	left  sync.WaitGroup
}

// submit calls Append and records its result under the next index.
func (p *pending) submit(s persistence.Store, req persistence.AppendRequest) int {
	p.mu.Lock()
	i := len(p.res)
	p.res = append(p.res, nil)
	p.calls = append(p.calls, 0)
	p.mu.Unlock()
	p.left.Add(1)
	s.Append(req, func(err error) {
		p.mu.Lock()
		p.res[i] = err
		p.calls[i]++
		p.order = append(p.order, i)
		first := p.calls[i] == 1
		p.mu.Unlock()
		if first {
			p.left.Done()
		}
	})
	return i
}

// wait waits for every done and checks each was called exactly once.
func (p *pending) wait(t *testing.T) []error {
	t.Helper()
	ch := make(chan struct{})
	go func() { p.left.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("done not called for every append within %v", waitTimeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, n := range p.calls {
		if n != 1 {
			t.Errorf("append %d: done called %d times", i, n)
		}
	}
	return slices.Clone(p.res)
}

func readAll(t *testing.T, s persistence.Store, user string) []persistence.Entry {
	t.Helper()
	var all []persistence.Entry
	var after persistence.Seq
	for {
		page, err := s.Read(ctxT(t), user, after, 100)
		if err != nil {
			t.Fatalf("Read(%q, %d): %v", user, after, err)
		}
		if len(page) == 0 {
			return all
		}
		if len(page) > 100 {
			t.Fatalf("Read(%q, %d, limit 100) returned %d entries", user, after, len(page))
		}
		for _, e := range page {
			if e.Seq <= after {
				t.Fatalf("Read(%q, %d): seq %d out of order", user, after, e.Seq)
			}
			after = e.Seq
		}
		all = append(all, page...)
	}
}

// checkLog checks user's log is exactly seqs 1..n as written by entries.
func checkLog(t *testing.T, s persistence.Store, user string, n int) {
	t.Helper()
	got := readAll(t, s, user)
	if len(got) != n {
		t.Fatalf("user %q: log has %d entries, want %d", user, len(got), n)
	}
	for i, e := range got {
		want := persistence.Seq(i + 1)
		if e.Seq != want || e.TimeMS != 1000*int64(want) || !bytes.Equal(e.Data, data(user, want)) {
			t.Fatalf("user %q: entry %d = {seq %d, time %d, data %q}, want {seq %d, time %d, data %q}",
				user, i, e.Seq, e.TimeMS, e.Data, want, 1000*int64(want), data(user, want))
		}
	}
}

// sideEffects returns an append's side effects, tagged so their presence
// can be checked.
func sideEffects(tag string, seq persistence.Seq) persistence.AppendRequest {
	return persistence.AppendRequest{
		Dedup:     []persistence.DedupKey{{Key: "dedup-" + tag, Seq: seq}},
		OutboxPut: []persistence.OutboxItem{{Seq: seq, Key: "out-" + tag, Data: []byte("outbox " + tag)}},
		Devices:   []persistence.Device{{DeviceID: "dev-" + tag, Data: []byte("device " + tag), Cursor: seq}},
		Convs:     []persistence.Conv{{Key: "conv-" + tag, Data: []byte("conv " + tag)}},
	}
}

func withSideEffects(req persistence.AppendRequest, tag string, seq persistence.Seq) persistence.AppendRequest {
	se := sideEffects(tag, seq)
	req.Dedup, req.OutboxPut, req.Devices, req.Convs = se.Dedup, se.OutboxPut, se.Devices, se.Convs
	return req
}

// checkSideEffects checks whether the side effects tagged tag are stored.
func checkSideEffects(t *testing.T, s persistence.Store, user, tag string, want bool) {
	t.Helper()
	ctx := ctxT(t)
	_, found, err := s.LookupDedup(ctx, user, "dedup-"+tag)
	if err != nil {
		t.Fatalf("LookupDedup: %v", err)
	}
	out, err := s.Outbox(ctx, user)
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	devs, err := s.Devices(ctx, user)
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	convs, err := s.Convs(ctx, user)
	if err != nil {
		t.Fatalf("Convs: %v", err)
	}
	has := map[string]bool{
		"dedup":  found,
		"outbox": slices.ContainsFunc(out, func(o persistence.OutboxItem) bool { return o.Key == "out-"+tag }),
		"device": slices.ContainsFunc(devs, func(d persistence.Device) bool { return d.DeviceID == "dev-"+tag }),
		"conv":   slices.ContainsFunc(convs, func(c persistence.Conv) bool { return c.Key == "conv-"+tag }),
	}
	for what, got := range has {
		if got != want {
			t.Errorf("user %q: %s of %q stored = %v, want %v", user, what, tag, got, want)
		}
	}
}

// ---- tests ----

// checkEpoch: Epoch reads want for user (twice: reading bumps nothing).
func checkEpoch(t *testing.T, s persistence.Store, user string, want persistence.Epoch) {
	t.Helper()
	for range 2 {
		if e, err := s.Epoch(ctxT(t), user); err != nil || e != want {
			t.Fatalf("Epoch(%q) = %d, %v; want %d", user, e, err, want)
		}
	}
}

func testActivateEmpty(t *testing.T, h Harness) {
	s := h.Open(t)
	checkEpoch(t, s, "alice", 0)
	e, last := activate(t, s, "alice")
	if e != 1 || last != 0 {
		t.Fatalf("first Activate = (epoch %d, seq %d), want (1, 0)", e, last)
	}
	checkEpoch(t, s, "alice", 1)
	if got := readAll(t, s, "alice"); len(got) != 0 {
		t.Fatalf("new user has %d entries", len(got))
	}
	for name, fn := range map[string]func() (int, error){
		"Outbox":  func() (int, error) { v, err := s.Outbox(ctxT(t), "alice"); return len(v), err },
		"Devices": func() (int, error) { v, err := s.Devices(ctxT(t), "alice"); return len(v), err },
		"Convs":   func() (int, error) { v, err := s.Convs(ctxT(t), "alice"); return len(v), err },
	} {
		if n, err := fn(); err != nil || n != 0 {
			t.Errorf("%s of a new user = %d items, %v; want 0, nil", name, n, err)
		}
	}
}

func testActivateBumpsEpoch(t *testing.T, h Harness) {
	s := h.Open(t)
	e1, _ := activate(t, s, "bob")
	appendSync(t, s, persistence.AppendRequest{User: "bob", Epoch: e1, Entries: entries("bob", 1, 3)})
	e2, last := activate(t, s, "bob")
	if e2 != e1+1 || last != 3 {
		t.Fatalf("second Activate = (epoch %d, seq %d), want (%d, 3)", e2, last, e1+1)
	}
	checkEpoch(t, s, "bob", e2)
	checkEpoch(t, s, "never-activated", 0)
	// Another user's epoch is independent.
	if e, _ := activate(t, s, "carol"); e != 1 {
		t.Fatalf("first Activate of another user = epoch %d, want 1", e)
	}
}

func testRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	want := []persistence.Entry{
		{Seq: 1, TimeMS: 1_700_000_000_123, Data: []byte("hello")},
		{Seq: 2, TimeMS: 1_700_000_000_123, Data: bytes.Repeat([]byte{0, 0xff, '|'}, 1000)},
		{Seq: 3, TimeMS: 1_700_000_000_999, Data: []byte("x")},
	}
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: want[:2]})
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: want[2:]})
	got, err := s.Read(ctxT(t), "u", 0, 10)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("Read returned %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Seq != want[i].Seq || got[i].TimeMS != want[i].TimeMS || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Errorf("entry %d = {%d %d %.20q}, want {%d %d %.20q}", i,
				got[i].Seq, got[i].TimeMS, got[i].Data, want[i].Seq, want[i].TimeMS, want[i].Data)
		}
	}
	// The returned data belongs to the caller.
	got[0].Data[0] = 'J'
	again, err := s.Read(ctxT(t), "u", 0, 1)
	if err != nil || len(again) != 1 || string(again[0].Data) != "hello" {
		t.Fatalf("after modifying a read result, Read = %v, %v; want the stored entry", again, err)
	}
}

func testReadPaging(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 1, 10)})
	for _, tc := range []struct {
		after persistence.Seq
		limit int
		want  []persistence.Seq
	}{
		{0, 3, []persistence.Seq{1, 2, 3}},
		{3, 3, []persistence.Seq{4, 5, 6}},
		{8, 5, []persistence.Seq{9, 10}},
		{9, 1, []persistence.Seq{10}},
		{10, 5, nil},
		{50, 5, nil},
		{0, 100, []persistence.Seq{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
	} {
		got, err := s.Read(ctxT(t), "u", tc.after, tc.limit)
		if err != nil {
			t.Fatalf("Read(after %d, limit %d): %v", tc.after, tc.limit, err)
		}
		var seqs []persistence.Seq
		for _, e := range got {
			seqs = append(seqs, e.Seq)
			if !bytes.Equal(e.Data, data("u", e.Seq)) {
				t.Errorf("seq %d: data %q", e.Seq, e.Data)
			}
		}
		if !slices.Equal(seqs, tc.want) {
			t.Errorf("Read(after %d, limit %d) = seqs %v, want %v", tc.after, tc.limit, seqs, tc.want)
		}
	}
	checkLog(t, s, "u", 10)
}

func testSeqGapRefused(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	// Gap on an empty log.
	req := withSideEffects(persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 2, 1)}, "gap0", 2)
	if err := s.AppendSync(ctxT(t), req); !errors.Is(err, persistence.ErrSeqGap) {
		t.Fatalf("append of seq 2 to an empty log: err = %v, want ErrSeqGap", err)
	}
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 1, 2)})

	bad := map[string][]persistence.Entry{
		"gap":                 entries("u", 4, 2),
		"duplicate":           entries("u", 2, 1),
		"overlap":             entries("u", 2, 3),
		"seq zero":            {{Seq: 0, TimeMS: 1, Data: []byte("z")}},
		"non-consecutive":     {entries("u", 3, 1)[0], entries("u", 5, 1)[0]},
		"repeated in request": {entries("u", 3, 1)[0], entries("u", 3, 1)[0]},
		"descending":          {entries("u", 4, 1)[0], entries("u", 3, 1)[0]},
	}
	for name, ents := range bad {
		tag := "bad-" + name
		req := withSideEffects(persistence.AppendRequest{User: "u", Epoch: e, Entries: ents}, tag, 3)
		if err := s.AppendSync(ctxT(t), req); !errors.Is(err, persistence.ErrSeqGap) {
			t.Errorf("%s: err = %v, want ErrSeqGap", name, err)
		}
		checkSideEffects(t, s, "u", tag, false)
	}
	checkSideEffects(t, s, "u", "gap0", false)
	checkLog(t, s, "u", 2)
	// The log still takes the right next seq.
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 3, 1)})
	checkLog(t, s, "u", 3)
}

func testFenced(t *testing.T, h Harness) {
	s := h.Open(t)
	e1, _ := activate(t, s, "u")
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e1, Entries: entries("u", 1, 2)})
	e2, last := activate(t, s, "u")
	if e2 <= e1 || last != 2 {
		t.Fatalf("second Activate = (epoch %d, seq %d), want (> %d, 2)", e2, last, e1)
	}
	stale := withSideEffects(persistence.AppendRequest{User: "u", Epoch: e1, Entries: entries("u", 3, 1)}, "stale", 3)
	if err := s.AppendSync(ctxT(t), stale); !errors.Is(err, persistence.ErrFenced) {
		t.Fatalf("append with the old epoch: err = %v, want ErrFenced", err)
	}
	// A stale side-effects-only append is fenced too.
	staleSE := withSideEffects(persistence.AppendRequest{User: "u", Epoch: e1}, "stale-se", 2)
	if err := s.AppendSync(ctxT(t), staleSE); !errors.Is(err, persistence.ErrFenced) {
		t.Fatalf("side-effects-only append with the old epoch: err = %v, want ErrFenced", err)
	}
	// An epoch never issued is not accepted either.
	future := persistence.AppendRequest{User: "u", Epoch: e2 + 1, Entries: entries("u", 3, 1)}
	if err := s.AppendSync(ctxT(t), future); !errors.Is(err, persistence.ErrFenced) {
		t.Fatalf("append with a future epoch: err = %v, want ErrFenced", err)
	}
	checkSideEffects(t, s, "u", "stale", false)
	checkSideEffects(t, s, "u", "stale-se", false)
	checkLog(t, s, "u", 2)

	// The new owner continues from the last seq.
	appendSync(t, s, withSideEffects(persistence.AppendRequest{User: "u", Epoch: e2, Entries: entries("u", 3, 2)}, "new", 3))
	checkLog(t, s, "u", 4)
	checkSideEffects(t, s, "u", "new", true)
}

func testNeverActivatedFenced(t *testing.T, h Harness) {
	s := h.Open(t)
	for _, ep := range []persistence.Epoch{0, 1} {
		req := withSideEffects(persistence.AppendRequest{User: "ghost", Epoch: ep, Entries: entries("ghost", 1, 1)}, "ghost", 1)
		if err := s.AppendSync(ctxT(t), req); !errors.Is(err, persistence.ErrFenced) {
			t.Errorf("append with epoch %d to a never-activated user: err = %v, want ErrFenced", ep, err)
		}
	}
	checkLog(t, s, "ghost", 0)
	checkSideEffects(t, s, "ghost", "ghost", false)
}

// testFenceDuringPipeline activates a user while its old owner has appends
// in flight: whatever the interleaving, a prefix of them is durable, the
// rest are fenced, and the new owner sees exactly that prefix.
func testFenceDuringPipeline(t *testing.T, h Harness) {
	s := h.Open(t)
	e1, _ := activate(t, s, "u")
	const n = 60
	var p pending
	var e2 persistence.Epoch
	var last persistence.Seq
	var actErr error
	var wg sync.WaitGroup
	for i := range n {
		p.submit(s, persistence.AppendRequest{User: "u", Epoch: e1, Entries: entries("u", persistence.Seq(i+1), 1)})
		if i == n/3 {
			wg.Go(func() { e2, last, actErr = s.Activate(ctxT(t), "u", "new-owner") })
		}
	}
	res := p.wait(t)
	wg.Wait()
	if actErr != nil {
		t.Fatalf("Activate: %v", actErr)
	}
	ok := 0
	for ok < n && res[ok] == nil {
		ok++
	}
	for i := ok; i < n; i++ {
		if !errors.Is(res[i], persistence.ErrFenced) {
			t.Fatalf("append %d (after %d succeeded): err = %v, want ErrFenced", i+1, ok, res[i])
		}
	}
	if e2 <= e1 || last != persistence.Seq(ok) {
		t.Fatalf("Activate = (epoch %d, seq %d); want epoch > %d and seq %d (the acked prefix)", e2, last, e1, ok)
	}
	checkLog(t, s, "u", ok)
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e2, Entries: entries("u", last+1, 1)})
	checkLog(t, s, "u", ok+1)
}

func testConcurrentUsers(t *testing.T, h Harness) {
	s := h.Open(t)
	users, per := 50, 200
	if testing.Short() {
		users, per = 20, 50
	}
	errs := make(chan error, users)
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			user := fmt.Sprintf("user-%d", u)
			ctx := ctxT(t)
			e, _, err := s.Activate(ctx, user, "o")
			if err != nil {
				errs <- fmt.Errorf("activate %s: %w", user, err)
				return
			}
			for i := 1; i <= per; i++ {
				req := persistence.AppendRequest{User: user, Epoch: e, Entries: entries(user, persistence.Seq(i), 1),
					Dedup: []persistence.DedupKey{{Key: fmt.Sprint("m", i), Seq: persistence.Seq(i)}}}
				if err := s.AppendSync(ctx, req); err != nil {
					errs <- fmt.Errorf("%s append %d: %w", user, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for u := range users {
		user := fmt.Sprintf("user-%d", u)
		checkLog(t, s, user, per)
		seq, ok, err := s.LookupDedup(ctxT(t), user, fmt.Sprint("m", per))
		if err != nil || !ok || seq != persistence.Seq(per) {
			t.Fatalf("%s: LookupDedup(m%d) = %d, %v, %v", user, per, seq, ok, err)
		}
	}
}

func testPipelined(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	const n = 100
	var p pending
	for i := range n {
		p.submit(s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", persistence.Seq(i+1), 1)})
	}
	for i, err := range p.wait(t) {
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
	}
	p.mu.Lock()
	order := slices.Clone(p.order)
	p.mu.Unlock()
	if !slices.IsSorted(order) {
		t.Errorf("done callbacks out of submission order: %v", order)
	}
	checkLog(t, s, "u", n)
}

func testFailureFailsDependents(t *testing.T, h Harness) {
	s := h.Open(t)
	e1, _ := activate(t, s, "u")
	var p pending
	p.submit(s, persistence.AppendRequest{User: "u", Epoch: e1, Entries: entries("u", 1, 1)})
	// Seq 2 carries non-consecutive entries: refused, and 3..5 need it.
	p.submit(s, persistence.AppendRequest{User: "u", Epoch: e1,
		Entries: []persistence.Entry{entries("u", 2, 1)[0], entries("u", 4, 1)[0]}})
	for i := 3; i <= 5; i++ {
		p.submit(s, withSideEffects(persistence.AppendRequest{User: "u", Epoch: e1, Entries: entries("u", persistence.Seq(i), 1)},
			fmt.Sprint("dep", i), persistence.Seq(i)))
	}
	res := p.wait(t)
	p.mu.Lock()
	if !slices.IsSorted(p.order) {
		t.Errorf("done callbacks of one user out of submission order: %v", p.order)
	}
	p.mu.Unlock()
	if res[0] != nil {
		t.Fatalf("append 1: %v", res[0])
	}
	for i, err := range res[1:] {
		if !errors.Is(err, persistence.ErrSeqGap) {
			t.Errorf("append %d: err = %v, want ErrSeqGap", i+2, err)
		}
	}
	for i := 3; i <= 5; i++ {
		checkSideEffects(t, s, "u", fmt.Sprint("dep", i), false)
	}
	checkLog(t, s, "u", 1)

	// A fenced append fails its dependents the same way.
	e2, _ := activate(t, s, "u")
	var q pending
	q.submit(s, persistence.AppendRequest{User: "u", Epoch: e1, Entries: entries("u", 2, 1)})
	q.submit(s, persistence.AppendRequest{User: "u", Epoch: e2, Entries: entries("u", 3, 1)})
	q.submit(s, persistence.AppendRequest{User: "u", Epoch: e2, Entries: entries("u", 2, 1)})
	res = q.wait(t)
	if !errors.Is(res[0], persistence.ErrFenced) || !errors.Is(res[1], persistence.ErrSeqGap) || res[2] != nil {
		t.Fatalf("fenced, dependent, retry = %v, %v, %v; want ErrFenced, ErrSeqGap, nil", res[0], res[1], res[2])
	}
	checkLog(t, s, "u", 2)
}

func testSideEffects(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := ctxT(t)
	e, _ := activate(t, s, "u")
	appendSync(t, s, persistence.AppendRequest{
		User: "u", Epoch: e, Entries: entries("u", 1, 2),
		Dedup: []persistence.DedupKey{{Key: "cm-1", Seq: 1}, {Key: "srv-9", Seq: 2}},
		OutboxPut: []persistence.OutboxItem{
			{Seq: 1, Key: "", Data: []byte("to bob")},
			{Seq: 2, Key: "g1", Data: []byte("to g1")},
			{Seq: 2, Key: "g2", Data: []byte("to g2")},
		},
		Devices: []persistence.Device{
			{DeviceID: "phone", Data: []byte("phone record"), Cursor: 1},
			{DeviceID: "web", Data: []byte("web record"), Cursor: 0},
		},
		Convs: []persistence.Conv{{Key: "d:bob", Data: []byte("conv bob v1")}, {Key: "g:g1", Data: []byte("conv g1")}},
	})
	for key, want := range map[string]persistence.Seq{"cm-1": 1, "srv-9": 2} {
		seq, ok, err := s.LookupDedup(ctx, "u", key)
		if err != nil || !ok || seq != want {
			t.Errorf("LookupDedup(%q) = %d, %v, %v; want %d, true, nil", key, seq, ok, err, want)
		}
	}
	if _, ok, err := s.LookupDedup(ctx, "u", "cm-unknown"); err != nil || ok {
		t.Errorf("LookupDedup of an unknown key = %v, %v; want false, nil", ok, err)
	}
	checkOutbox(t, s, "u", "1/:to bob", "2/g1:to g1", "2/g2:to g2")
	checkDevices(t, s, "u", "phone:phone record@1", "web:web record@0")
	checkConvs(t, s, "u", "d:bob=conv bob v1", "g:g1=conv g1")

	// Cursor-only update keeps the record; a record update replaces it;
	// outbox done deletes; a conv upsert replaces.
	appendSync(t, s, persistence.AppendRequest{
		User: "u", Epoch: e, Entries: entries("u", 3, 1),
		OutboxDone: []persistence.OutboxRef{{Seq: 2, Key: "g1"}, {Seq: 7, Key: "never-put"}},
		Devices: []persistence.Device{
			{DeviceID: "phone", Cursor: 3},
			{DeviceID: "web", Data: []byte("web record v2"), Cursor: 2},
		},
		Convs: []persistence.Conv{{Key: "d:bob", Data: []byte("conv bob v2")}},
	})
	checkOutbox(t, s, "u", "1/:to bob", "2/g2:to g2")
	checkDevices(t, s, "u", "phone:phone record@3", "web:web record v2@2")
	checkConvs(t, s, "u", "d:bob=conv bob v2", "g:g1=conv g1")
	checkLog(t, s, "u", 3)
}

func testSideEffectsOnly(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 1, 2)})
	appendSync(t, s, withSideEffects(persistence.AppendRequest{User: "u", Epoch: e}, "only", 2))
	checkSideEffects(t, s, "u", "only", true)
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, OutboxDone: []persistence.OutboxRef{{Seq: 2, Key: "out-only"}}})
	checkOutbox(t, s, "u")
	checkLog(t, s, "u", 2)
	// Side-effect-only appends do not move the log.
	if e2, last := activate(t, s, "u"); last != 2 {
		t.Fatalf("Activate after side-effect-only appends = seq %d, want 2", last)
	} else {
		appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e2, Entries: entries("u", 3, 1)})
	}
	checkLog(t, s, "u", 3)
}

func testOutboxOrder(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	for first := persistence.Seq(1); first < 300; first += 50 {
		appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", first, 50)})
	}
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e,
		OutboxPut: []persistence.OutboxItem{
			{Seq: 300, Key: "a", Data: []byte("x")},
			{Seq: 256, Key: "b", Data: []byte("x")},
			{Seq: 256, Key: "a", Data: []byte("x")},
			{Seq: 2, Key: "", Data: []byte("x")},
			{Seq: 1, Key: "z", Data: []byte("x")},
		}})
	checkOutbox(t, s, "u", "1/z:x", "2/:x", "256/a:x", "256/b:x", "300/a:x")
	// Put and done in one append: done wins.
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e,
		OutboxPut:  []persistence.OutboxItem{{Seq: 5, Key: "k", Data: []byte("x")}},
		OutboxDone: []persistence.OutboxRef{{Seq: 5, Key: "k"}, {Seq: 300, Key: "a"}}})
	checkOutbox(t, s, "u", "1/z:x", "2/:x", "256/a:x", "256/b:x")
}

func testPrefixUsers(t *testing.T, h Harness) {
	s := h.Open(t)
	users := []string{"a", "ab", "a.b", "b", "a:"}
	for i, u := range users {
		e, _ := activate(t, s, u)
		n := i + 1
		req := withSideEffects(persistence.AppendRequest{User: u, Epoch: e, Entries: entries(u, 1, n)}, u, persistence.Seq(n))
		// Every user also writes the same key names.
		req.Dedup = append(req.Dedup, persistence.DedupKey{Key: "shared", Seq: persistence.Seq(n)})
		req.Convs = append(req.Convs, persistence.Conv{Key: "shared", Data: []byte(u)})
		appendSync(t, s, req)
	}
	for i, u := range users {
		n := i + 1
		checkLog(t, s, u, n)
		for _, other := range users {
			checkSideEffects(t, s, u, other, other == u)
		}
		seq, ok, err := s.LookupDedup(ctxT(t), u, "shared")
		if err != nil || !ok || seq != persistence.Seq(n) {
			t.Errorf("user %q: LookupDedup(shared) = %d, %v, %v; want %d", u, seq, ok, err, n)
		}
		checkConvs(t, s, u, "conv-"+u+"=conv "+u, "shared="+u)
		since, err := s.FirstSeqSince(ctxT(t), u, time.UnixMilli(0))
		if err != nil || since != 1 {
			t.Errorf("user %q: FirstSeqSince(0) = %d, %v; want 1", u, since, err)
		}
		if first, err := s.FirstSeq(ctxT(t), u); err != nil || first != 1 {
			t.Errorf("user %q: FirstSeq = %d, %v; want 1", u, first, err)
		}
		if _, last := activate(t, s, u); last != persistence.Seq(n) {
			t.Errorf("user %q: Activate = seq %d, want %d", u, last, n)
		}
	}
}

func testFirstSeqSince(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := ctxT(t)
	if got, err := s.FirstSeqSince(ctx, "empty", time.UnixMilli(0)); err != nil || got != 1 {
		t.Fatalf("FirstSeqSince on an empty log = %d, %v; want 1", got, err)
	}
	e, _ := activate(t, s, "u")
	times := []int64{1000, 1000, 2000, 3000, 3000, 3000, 5000, 8000, 8000, 9000}
	ents := make([]persistence.Entry, len(times))
	for i, ms := range times {
		ents[i] = persistence.Entry{Seq: persistence.Seq(i + 1), TimeMS: ms, Data: []byte("x")}
	}
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: ents})
	last := persistence.Seq(len(times))
	for _, tc := range []struct {
		t    time.Time
		want persistence.Seq
	}{
		{time.UnixMilli(0), 1},
		{time.UnixMilli(1000), 1},
		{time.UnixMilli(999).Add(500 * time.Microsecond), 1},
		{time.UnixMilli(1000).Add(time.Microsecond), 3},
		{time.UnixMilli(1001), 3},
		{time.UnixMilli(2000), 3},
		{time.UnixMilli(2500), 4},
		{time.UnixMilli(3000), 4},
		{time.UnixMilli(4000), 7},
		{time.UnixMilli(5000), 7},
		{time.UnixMilli(5001), 8},
		{time.UnixMilli(8000), 8},
		{time.UnixMilli(9000), 10},
		{time.UnixMilli(9001), last + 1},
		{time.UnixMilli(1 << 50), last + 1},
	} {
		got, err := s.FirstSeqSince(ctx, "u", tc.t)
		if err != nil || got != tc.want {
			t.Errorf("FirstSeqSince(%d µs) = %d, %v; want %d", tc.t.UnixMicro(), got, err, tc.want)
		}
	}
	// A longer log, checked against a linear scan.
	e2, _ := activate(t, s, "long")
	var all []persistence.Entry
	ms := int64(0)
	for i := 1; i <= 1000; i++ {
		if i%7 == 0 || i%13 == 0 {
			ms += int64(i % 5 * 100)
		}
		all = append(all, persistence.Entry{Seq: persistence.Seq(i), TimeMS: ms, Data: []byte("y")})
	}
	for i := 0; i < len(all); i += 50 {
		appendSync(t, s, persistence.AppendRequest{User: "long", Epoch: e2, Entries: all[i : i+50]})
	}
	for q := int64(-100); q <= ms+100; q += 37 {
		want := persistence.Seq(len(all) + 1)
		for _, en := range all {
			if en.TimeMS >= q {
				want = en.Seq
				break
			}
		}
		got, err := s.FirstSeqSince(ctx, "long", time.UnixMilli(q))
		if err != nil || got != want {
			t.Fatalf("long log: FirstSeqSince(%d ms) = %d, %v; want %d", q, got, err, want)
		}
	}
}

func testAppendSyncContext(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 1, 1)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendSync with a cancelled context: err = %v, want context.Canceled", err)
	}
	if _, _, err := s.Activate(ctx, "u", "o"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Activate with a cancelled context: err = %v, want context.Canceled", err)
	}
}

func testReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("Harness.Reopen not set")
	}
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	appendSync(t, s, withSideEffects(persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 1, 5)}, "before", 5))
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Devices: []persistence.Device{{DeviceID: "dev-before", Cursor: 4}}})
	ev, _ := activate(t, s, "v")
	appendSync(t, s, persistence.AppendRequest{User: "v", Epoch: ev, Entries: entries("v", 1, 2)})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := h.Reopen(t, s)
	checkEpoch(t, s2, "u", e)
	checkLog(t, s2, "u", 5)
	checkLog(t, s2, "v", 2)
	checkSideEffects(t, s2, "u", "before", true)
	checkDevices(t, s2, "u", "dev-before:device before@4")
	// The old epoch is still current until somebody activates: an append
	// needs no Activate in this process.
	appendSync(t, s2, persistence.AppendRequest{User: "v", Epoch: ev, Entries: entries("v", 3, 1)})
	checkLog(t, s2, "v", 3)

	e2, last := activate(t, s2, "u")
	if e2 <= e || last != 5 {
		t.Fatalf("Activate after reopen = (epoch %d, seq %d), want (> %d, 5)", e2, last, e)
	}
	if err := s2.AppendSync(ctxT(t), persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 6, 1)}); !errors.Is(err, persistence.ErrFenced) {
		t.Fatalf("append with the pre-reopen epoch after a new Activate: err = %v, want ErrFenced", err)
	}
	appendSync(t, s2, persistence.AppendRequest{User: "u", Epoch: e2, Entries: entries("u", 6, 1)})
	checkLog(t, s2, "u", 6)
}

func testClose(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	const n = 200
	var p pending
	for i := range n {
		p.submit(s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", persistence.Seq(i+1), 1)})
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	res := p.wait(t)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close did not return")
	}
	acked := 0
	for acked < n && res[acked] == nil {
		acked++
	}
	for i := acked; i < n; i++ {
		if res[i] == nil {
			t.Fatalf("append %d succeeded after append %d failed (%v)", i+1, acked+1, res[acked])
		}
	}

	// Everything after Close fails with ErrClosed, without hanging.
	var q pending
	q.submit(s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", persistence.Seq(acked+1), 1)})
	if res := q.wait(t); !errors.Is(res[0], persistence.ErrClosed) {
		t.Errorf("Append after Close: done(%v), want ErrClosed", res[0])
	}
	ctx := ctxT(t)
	calls := map[string]func() error{
		"AppendSync": func() error {
			return s.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", persistence.Seq(acked+1), 1)})
		},
		"Activate":      func() error { _, _, err := s.Activate(ctx, "u", "o"); return err },
		"Read":          func() error { _, err := s.Read(ctx, "u", 0, 10); return err },
		"FirstSeqSince": func() error { _, err := s.FirstSeqSince(ctx, "u", time.UnixMilli(0)); return err },
		"FirstSeq":      func() error { _, err := s.FirstSeq(ctx, "u"); return err },
		"LookupDedup":   func() error { _, _, err := s.LookupDedup(ctx, "u", "k"); return err },
		"Outbox":        func() error { _, err := s.Outbox(ctx, "u"); return err },
		"Devices":       func() error { _, err := s.Devices(ctx, "u"); return err },
		"Convs":         func() error { _, err := s.Convs(ctx, "u"); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
	_ = s.Close() // a second Close must not panic or hang; its error is the backend's choice

	if h.Reopen == nil {
		return
	}
	// Every acked append is durable.
	s2 := h.Reopen(t, s)
	got := readAll(t, s2, "u")
	if len(got) < acked {
		t.Fatalf("after reopen the log has %d entries, %d were acked before Close", len(got), acked)
	}
	checkLog(t, s2, "u", len(got))
	if _, last := activate(t, s2, "u"); last != persistence.Seq(len(got)) {
		t.Fatalf("Activate after reopen = seq %d, want %d", last, len(got))
	}
}

// ---- comparison helpers: items formatted as strings ----

func checkOutbox(t *testing.T, s persistence.Store, user string, want ...string) {
	t.Helper()
	items, err := s.Outbox(ctxT(t), user)
	if err != nil {
		t.Fatalf("Outbox(%q): %v", user, err)
	}
	var got []string
	for _, o := range items {
		got = append(got, fmt.Sprintf("%d/%s:%s", o.Seq, o.Key, o.Data))
	}
	if !slices.Equal(got, want) {
		t.Errorf("Outbox(%q) = %q, want %q", user, got, want)
	}
}

func checkDevices(t *testing.T, s persistence.Store, user string, want ...string) {
	t.Helper()
	devs, err := s.Devices(ctxT(t), user)
	if err != nil {
		t.Fatalf("Devices(%q): %v", user, err)
	}
	var got []string
	for _, d := range devs {
		got = append(got, fmt.Sprintf("%s:%s@%d", d.DeviceID, d.Data, d.Cursor))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Devices(%q) = %q, want %q", user, got, want)
	}
}

func checkConvs(t *testing.T, s persistence.Store, user string, want ...string) {
	t.Helper()
	convs, err := s.Convs(ctxT(t), user)
	if err != nil {
		t.Fatalf("Convs(%q): %v", user, err)
	}
	var got []string
	for _, c := range convs {
		got = append(got, fmt.Sprintf("%s=%s", c.Key, c.Data))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Convs(%q) = %q, want %q", user, got, want)
	}
}

// testOutboxUsers: only users with pending items are listed, each once, in
// pages; "a" and "ab" are distinct; a user whose items are all done is gone.
func testOutboxUsers(t *testing.T, h Harness) {
	s := h.Open(t)
	users := []string{"a", "ab", "b", "c", "quiet"}
	for _, u := range users {
		e, _ := activate(t, s, u)
		req := persistence.AppendRequest{User: u, Epoch: e, Entries: entries(u, 1, 3)}
		if u != "quiet" {
			for seq := persistence.Seq(1); seq <= 3; seq++ {
				req.OutboxPut = append(req.OutboxPut,
					persistence.OutboxItem{Seq: seq, Key: "x", Data: []byte("1")},
					persistence.OutboxItem{Seq: seq, Key: "yy", Data: []byte("2")})
			}
		}
		appendSync(t, s, req)
	}
	// "c" confirms everything: it must drop out.
	e, _ := activate(t, s, "c")
	var done []persistence.OutboxRef
	for seq := persistence.Seq(1); seq <= 3; seq++ {
		done = append(done, persistence.OutboxRef{Seq: seq, Key: "x"}, persistence.OutboxRef{Seq: seq, Key: "yy"})
	}
	appendSync(t, s, persistence.AppendRequest{User: "c", Epoch: e, OutboxDone: done})

	var got []string
	after := ""
	for page := 0; page < 10; page++ {
		us, err := s.OutboxUsers(ctxT(t), after, 2)
		if err != nil {
			t.Fatalf("OutboxUsers: %v", err)
		}
		if len(us) == 0 {
			break
		}
		if len(us) > 2 {
			t.Fatalf("OutboxUsers(limit 2) returned %d", len(us))
		}
		got = append(got, us...)
		after = us[len(us)-1]
	}
	// The order is the store's own (stable for paging), so compare as sets.
	sort.Strings(got)
	want := []string{"a", "ab", "b"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("OutboxUsers pages = %v, want %v", got, want)
	}
	if us, err := s.OutboxUsers(ctxT(t), "", 0); err != nil || len(us) != 0 {
		t.Fatalf("OutboxUsers(limit 0) = %v, %v", us, err)
	}
}

// testRewrite: rewrites replace stored entries atomically with new ones;
// a rewrite beyond the log, or fenced, changes nothing.
func testRewrite(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 1, 3)})
	// Rewrite seq 2 and append seq 4 in one request.
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e,
		Entries:  []persistence.Entry{{Seq: 4, TimeMS: 4000, Data: []byte("recall of 2")}},
		Rewrites: []persistence.Entry{{Seq: 2, TimeMS: 2000, Data: []byte("erased")}},
	})
	got, err := s.Read(ctxT(t), "u", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || string(got[1].Data) != "erased" || got[1].TimeMS != 2000 || string(got[0].Data) != string(data("u", 1)) || string(got[3].Data) != "recall of 2" {
		t.Fatalf("after rewrite: %+v", got)
	}
	// Beyond the log: refused, and the entry in the same request is not stored.
	err = s.AppendSync(ctxT(t), persistence.AppendRequest{User: "u", Epoch: e,
		Entries:  []persistence.Entry{{Seq: 5, TimeMS: 5000, Data: []byte("x")}},
		Rewrites: []persistence.Entry{{Seq: 9, TimeMS: 1, Data: []byte("nope")}},
	})
	if !errors.Is(err, persistence.ErrNotInLog) {
		t.Fatalf("rewrite beyond the log: %v, want ErrNotInLog", err)
	}
	// Fenced: refused.
	e2, _ := activate(t, s, "u")
	err = s.AppendSync(ctxT(t), persistence.AppendRequest{User: "u", Epoch: e, Rewrites: []persistence.Entry{{Seq: 1, TimeMS: 1, Data: []byte("stale")}}})
	if !errors.Is(err, persistence.ErrFenced) {
		t.Fatalf("stale rewrite: %v, want ErrFenced", err)
	}
	got, _ = s.Read(ctxT(t), "u", 0, 10)
	if len(got) != 4 || string(got[0].Data) != string(data("u", 1)) {
		t.Fatalf("a refused rewrite changed the log: %+v", got)
	}
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e2, Entries: []persistence.Entry{{Seq: 5, TimeMS: 5000, Data: []byte("ok")}}})
}
