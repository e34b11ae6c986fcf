package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tandem-im/tandem/internal/pgtest"
	"github.com/tandem-im/tandem/persistence"
)

var internalSchemas atomic.Int64

func openInternal(t *testing.T) (*Store, string) {
	t.Helper()
	url := pgtest.Shared(t).CreateSchema(t, "postgres", fmt.Sprint("internal", internalSchemas.Add(1)))
	s, err := Open(t.Context(), url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

// TestWriteFenceAtomic: if one user of a group-commit statement does not
// pass the fence in the statement (its epoch moved), the statement fails
// as a whole: none of the other users' rows are written either, so the
// COMMIT pipelined after it cannot commit a partial batch.
func TestWriteFenceAtomic(t *testing.T) {
	t.Parallel()
	s, url := openInternal(t)
	ctx := t.Context()
	eu, _, err := s.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	ev, _, err := s.Activate(ctx, "v", "o")
	if err != nil {
		t.Fatal(err)
	}
	w := newWriteSet()
	w.add(&op{user: "u", epoch: eu, n: 1, first: 1, last: 1, entries: []persistence.Entry{{Seq: 1, TimeMS: 1, Data: []byte("u1")}},
		dedup: []persistence.DedupKey{{Key: "k", Seq: 1}}}, userState{epoch: eu})
	// v as the committer would have seen it before another node activated it.
	w.add(&op{user: "v", epoch: ev, n: 1, first: 1, last: 1, entries: []persistence.Entry{{Seq: 1, TimeMS: 1, Data: []byte("v1")}}}, userState{epoch: ev})
	if _, _, err := s.Activate(ctx, "v", "other node"); err != nil {
		t.Fatal(err)
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, writeSQL, w.args()...)
	if err == nil || !strings.Contains(err.Error(), "check failed") {
		t.Fatalf("write with a moved epoch: err = %v, want the statement's check to fail", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM tandem_log) + (SELECT count(*) FROM tandem_dedup)").Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows written by the failed statement: %d, %v", n, err)
	}
	var last int64
	if err := conn.QueryRow(ctx, "SELECT last_seq FROM tandem_users WHERE user_id = 'u'").Scan(&last); err != nil || last != 0 {
		t.Fatalf("u's last_seq after the failed statement: %d, %v", last, err)
	}

	// The same statement without v passes.
	w2 := newWriteSet()
	w2.add(&op{user: "u", epoch: eu, n: 1, first: 1, last: 1, entries: []persistence.Entry{{Seq: 1, TimeMS: 1, Data: []byte("u1")}}}, userState{epoch: eu})
	if _, err := conn.Exec(ctx, writeSQL, w2.args()...); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(ctx, "u", 0, 10); err != nil || len(got) != 1 {
		t.Fatalf("Read = %v, %v", got, err)
	}
}

// TestUnknownOutcomePoisons: a batch whose COMMIT's outcome is unknown
// fails its appends; the user's later appends with that epoch fail too —
// also one already committed in the next batch of the pipeline — until
// the user is activated again.
func TestUnknownOutcomePoisons(t *testing.T) {
	t.Parallel()
	url := pgtest.Shared(t).CreateSchema(t, "postgres", fmt.Sprint("internal", internalSchemas.Add(1)))
	s, err := Open(t.Context(), url, Options{MaxBatchRows: 1}) // one append per batch
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	e, _, err := s.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	var commits atomic.Int32
	s.afterCommit = func() error {
		if commits.Add(1) > 1 {
			return nil
		}
		// Fail late: once the next batch (seq 2) has been checked and
		// committed, before this one is known to have failed.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			var last int64
			if err := s.pool.QueryRow(context.Background(), "SELECT last_seq FROM tandem_users WHERE user_id = 'u'").Scan(&last); err != nil {
				return err
			}
			if last == 2 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		return errors.New("connection lost before COMMIT's answer")
	}
	entry := func(seq persistence.Seq) []persistence.Entry {
		return []persistence.Entry{{Seq: seq, TimeMS: int64(seq), Data: []byte("x")}}
	}
	errs := make(chan error, 2)
	for seq := persistence.Seq(1); seq <= 2; seq++ {
		s.Append(persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(seq)}, func(err error) { errs <- err })
	}
	for i := range 2 {
		if err := <-errs; err == nil || !strings.Contains(err.Error(), "outcome unknown") {
			t.Fatalf("append %d: err = %v, want the unknown outcome", i+1, err)
		}
	}
	// Both are durable in fact: the second batch saw the first committed.
	if got, err := s.Read(ctx, "u", 0, 10); err != nil || len(got) != 2 {
		t.Fatalf("Read = %d entries, %v; want 2", len(got), err)
	}
	if err := s.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(3)}); err == nil {
		t.Fatal("a later append with the same epoch succeeded")
	}
	e2, last, err := s.Activate(ctx, "u", "o")
	if err != nil || last != 2 {
		t.Fatalf("Activate = seq %d, %v; want 2", last, err)
	}
	if err := s.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e2, Entries: entry(3)}); err != nil {
		t.Fatalf("append after activating again: %v", err)
	}
}
