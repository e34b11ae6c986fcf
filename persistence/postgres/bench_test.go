package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/postgres"
)

// BenchmarkGroupCommit is the badger store's benchmark of the same name
// (persistence/badger_test.go) against PostgreSQL: users each keep one
// 200-byte append in flight, as actors pipelining their appends do; one
// iteration submits one append (waiting first for that user's previous
// one). msgs/s counts durable entries; msgs/commit how many share one
// transaction. The ",retention" runs store with a 30-day retention; the
// ",pipeline=N" runs change how many batches are in flight (default 2).
// The server is pgtest's, on the same machine, fsync on.
func BenchmarkGroupCommit(b *testing.B) {
	for _, run := range []struct {
		users     int
		retention time.Duration
		pipeline  int
	}{
		{64, 0, 0}, {256, 0, 0}, {64, 30 * 24 * time.Hour, 0}, {256, 30 * 24 * time.Hour, 0},
		{256, 0, 1}, {256, 0, 4},
	} {
		name := fmt.Sprint("users=", run.users)
		if run.retention > 0 {
			name += ",retention"
		}
		if run.pipeline > 0 {
			name += fmt.Sprint(",pipeline=", run.pipeline)
		}
		users := run.users
		b.Run(name, func(b *testing.B) {
			s := openStore(b, newURL(b), postgres.Options{Retention: run.retention, Pipeline: run.pipeline})
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
