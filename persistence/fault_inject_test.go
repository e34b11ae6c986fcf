//go:build faultinject

package persistence

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
)

// TestFaultSyncFailureSticky injects a failed sync (EIO) into the 5th
// commit from now while users append concurrently: every append acked
// before is in the log after a reopen; the failed batch and everything
// after it get ErrStoreFailed, never an ack, and the store never retries.
func TestFaultSyncFailureSticky(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir, BadgerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const users = 8
	type ledger struct {
		epoch  Epoch
		last   Seq
		acked  map[Seq]bool
		failed int
		other  error
	}
	ls := make([]*ledger, users)
	for i := range ls {
		e, _, err := b.Activate(ctx, fmt.Sprint("u", i), "o")
		if err != nil {
			t.Fatal(err)
		}
		ls[i] = &ledger{epoch: e, acked: map[Seq]bool{}}
	}
	FailCommitsAfter(b, 4)
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Go(func() {
			for range 30 {
				err := b.AppendSync(ctx, AppendRequest{User: fmt.Sprint("u", i), Epoch: l.epoch, Entries: ents(l.last+1, 1, []byte("m"))})
				switch {
				case err == nil:
					if l.failed > 0 {
						l.other = fmt.Errorf("seq %d acked after a failure", l.last+1)
						return
					}
					l.last++
					l.acked[l.last] = true
				case errors.Is(err, ErrStoreFailed):
					l.failed++
				default:
					l.other = err
					return
				}
			}
		})
	}
	wg.Wait()
	failedOps := 0
	for i, l := range ls {
		if l.other != nil {
			t.Fatalf("u%d: %v", i, l.other)
		}
		failedOps += l.failed
	}
	if failedOps != users*30-int(sumAcked(ls, func(l *ledger) Seq { return l.last })) {
		t.Fatalf("%d appends failed: every one not acked must have failed", failedOps)
	}
	if err := b.Err(); !errors.Is(err, ErrStoreFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Err = %v, want ErrStoreFailed wrapping EIO", err)
	}
	if st := b.Stats(); st.CommitFailures != 1 || st.Commits != uint64(users)+4 {
		t.Fatalf("stats %+v: want 1 commit failure (never retried) after %d commits", st, users+4)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenBadger(dir, BadgerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i, l := range ls {
		got, err := b.Read(ctx, fmt.Sprint("u", i), 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if Seq(len(got)) != l.last {
			t.Fatalf("u%d: %d entries after reopen, %d acked", i, len(got), l.last)
		}
		for j, e := range got {
			if e.Seq != Seq(j+1) || !l.acked[e.Seq] {
				t.Fatalf("u%d: entry %d has seq %d (acked: %v)", i, j, e.Seq, l.acked[e.Seq])
			}
		}
	}
}

func sumAcked[L any](ls []L, f func(L) Seq) Seq {
	var n Seq
	for _, l := range ls {
		n += f(l)
	}
	return n
}
