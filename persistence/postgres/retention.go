package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
)

// Retention (Options.Retention) in the PostgreSQL store:
//
//   - Correctness is the readers' time filter: an entry with TimeMS below
//     cutoffMS is not returned, whatever the table still holds.
//   - Space is the sweeper: every SweepInterval it deletes, user by user
//     (pages of sweepUsers users, at most SweepBatch rows per statement),
//     log entries that aged out more than SweepGrace ago and dedup keys
//     whose time (their append's newest entry) is that old.
//   - Seqs: tandem_users.last_seq is the high-water mark, moved by every
//     commit that appends; Activate, the seq check and FirstSeq's "last
//     seq + 1" read it, never the log, so deleted entries leave no gap to
//     reuse.

// sweepUsers is how many users one sweeper statement covers.
const sweepUsers = 1000

// ceilMS returns the smallest whole millisecond not before t: for integer
// milliseconds ms, ms >= t ⇔ ms >= ceilMS(t).
func ceilMS(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// cutoffMS returns the oldest entry time readers return now: entries with
// TimeMS < cutoffMS have aged out. math.MinInt64 without retention.
func (s *Store) cutoffMS() int64 {
	if s.opts.Retention <= 0 {
		return math.MinInt64
	}
	return ceilMS(s.opts.Now().Add(-s.opts.Retention))
}

// SweepResult counts what one Sweep deleted.
type SweepResult struct {
	Users   int // users looked at
	Entries int // aged-out log entries deleted
	Dedup   int // dedup keys deleted
}

// sweepLoop runs Sweep every SweepInterval until ctx ends.
func (s *Store) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.Sweep(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("retention sweep failed", "err", err)
			}
			continue
		}
		if res.Entries+res.Dedup > 0 {
			s.log.Debug("retention sweep", "users", res.Users, "entries", res.Entries, "dedup_keys", res.Dedup)
		}
	}
}

const (
	sweepUsersSQL = `SELECT user_id FROM tandem_users WHERE user_id > $1 ORDER BY user_id LIMIT $2`
	// The deletes skip rows a batch has locked (a rewrite in flight): the
	// sweeper never waits for a committer, so it cannot deadlock with one,
	// and the row goes at the next sweep.
	sweepLogSQL = `DELETE FROM tandem_log WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM tandem_log WHERE user_id = ANY($1::text[]) AND time_ms < $2 LIMIT $3 FOR UPDATE SKIP LOCKED))`
	sweepDedupSQL = `DELETE FROM tandem_dedup WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM tandem_dedup WHERE user_id = ANY($1::text[]) AND time_ms < $2 LIMIT $3 FOR UPDATE SKIP LOCKED))`
)

// Sweep deletes, once, the log entries that aged out more than SweepGrace
// ago and the dedup keys as old, going through all users in pages. The
// background sweeper calls it every SweepInterval; maintenance and tests
// may call it too. Without retention it does nothing.
func (s *Store) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	if s.opts.Retention <= 0 {
		return res, nil
	}
	cutoff := s.cutoffMS() - s.opts.SweepGrace.Milliseconds()
	err := s.use(ctx, func(ctx context.Context) error {
		after := ""
		for {
			rows, err := s.pool.Query(ctx, sweepUsersSQL, after, sweepUsers)
			if err != nil {
				return fmt.Errorf("list users after %q: %w", after, err)
			}
			users, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("list users after %q: %w", after, err)
			}
			if len(users) == 0 {
				return nil
			}
			res.Users += len(users)
			n, err := s.sweepDelete(ctx, sweepLogSQL, users, cutoff)
			res.Entries += n
			s.sweptEntries.Add(uint64(n))
			if err != nil {
				return fmt.Errorf("delete aged-out entries: %w", err)
			}
			n, err = s.sweepDelete(ctx, sweepDedupSQL, users, cutoff)
			res.Dedup += n
			s.sweptDedup.Add(uint64(n))
			if err != nil {
				return fmt.Errorf("delete aged-out dedup keys: %w", err)
			}
			after = users[len(users)-1]
		}
	})
	if err != nil {
		return res, fmt.Errorf("postgres: retention sweep: %w", err)
	}
	return res, nil
}

// sweepDelete runs a sweeper delete until it deletes less than a full
// statement's worth.
func (s *Store) sweepDelete(ctx context.Context, sql string, users []string, cutoff int64) (int, error) {
	total := 0
	for {
		tag, err := s.pool.Exec(ctx, sql, users, cutoff, s.opts.SweepBatch)
		if err != nil {
			return total, err
		}
		n := int(tag.RowsAffected())
		total += n
		if n < s.opts.SweepBatch {
			return total, nil
		}
	}
}
