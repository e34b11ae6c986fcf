package postgres

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

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
