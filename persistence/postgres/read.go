package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tandem-im/tandem/persistence"
)

// readSQL reads a page of a user's log; readRetainedSQL also skips aged-out
// entries ($3 is the cutoff), starting at the first retained one (an index
// probe) rather than walking over aged-out rows the sweeper has not
// deleted yet.
const (
	readSQL = `SELECT seq, time_ms, data FROM tandem_log
WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`
	readRetainedSQL = `SELECT seq, time_ms, data FROM tandem_log
WHERE user_id = $1 AND seq > $2 AND time_ms >= $4
  AND seq >= coalesce((SELECT seq FROM tandem_log WHERE user_id = $1 AND time_ms >= $4 ORDER BY time_ms, seq LIMIT 1), 9223372036854775807)
ORDER BY seq LIMIT $3`
)

// Read implements persistence.Store. limit <= 0 returns no entries. The
// entries and their Data belong to the caller.
func (s *Store) Read(ctx context.Context, user string, after persistence.Seq, limit int) ([]persistence.Entry, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	if limit <= 0 || after >= math.MaxInt64 {
		return nil, nil
	}
	var out []persistence.Entry
	err := s.use(ctx, func(ctx context.Context) error {
		var rows pgx.Rows
		var err error
		if cutoff := s.cutoffMS(); cutoff == math.MinInt64 {
			rows, err = s.pool.Query(ctx, readSQL, user, int64(after), limit)
		} else {
			rows, err = s.pool.Query(ctx, readRetainedSQL, user, int64(after), limit, cutoff)
		}
		if err != nil {
			return err
		}
		var seq, ts int64
		var data []byte
		_, err = pgx.ForEachRow(rows, []any{&seq, &ts, &data}, func() error {
			out = append(out, persistence.Entry{Seq: persistence.Seq(seq), TimeMS: ts, Data: nilIfEmpty(data)})
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: read log of %q after %d: %w", user, after, err)
	}
	return out, nil
}

// nilIfEmpty returns b, or nil if it is empty (as the badger store
// returns payloads). pgx scans bytea into a new slice for every row.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// firstSinceSQL returns the first entry at or after time $2 and the last
// seq. As entry times are non-decreasing along the log, the entry with the
// smallest (time, seq) at or after $2 is the one with the smallest seq.
const firstSinceSQL = `SELECT
  (SELECT seq FROM tandem_log WHERE user_id = $1 AND time_ms >= $2 ORDER BY time_ms, seq LIMIT 1),
  coalesce((SELECT last_seq FROM tandem_users WHERE user_id = $1), 0)`

// firstSince returns the seq of the first entry with TimeMS >= ms, or the
// last seq + 1 if there is none.
func (s *Store) firstSince(ctx context.Context, user string, ms int64) (persistence.Seq, error) {
	var first *int64
	var last int64
	err := s.use(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, firstSinceSQL, user, ms).Scan(&first, &last)
	})
	if err != nil {
		return 0, err
	}
	if first == nil {
		return persistence.Seq(last) + 1, nil
	}
	return persistence.Seq(*first), nil
}

// FirstSeq implements persistence.Store.
func (s *Store) FirstSeq(ctx context.Context, user string) (persistence.Seq, error) {
	if err := checkUser(user); err != nil {
		return 0, err
	}
	seq, err := s.firstSince(ctx, user, s.cutoffMS())
	if err != nil {
		return 0, fmt.Errorf("postgres: first retained seq of %q: %w", user, err)
	}
	return seq, nil
}

// FirstSeqSince implements persistence.Store.
func (s *Store) FirstSeqSince(ctx context.Context, user string, t time.Time) (persistence.Seq, error) {
	if err := checkUser(user); err != nil {
		return 0, err
	}
	// Entry time is whole milliseconds: TimeMS >= t ⇔ TimeMS >= ceil(t).
	seq, err := s.firstSince(ctx, user, max(ceilMS(t), s.cutoffMS()))
	if err != nil {
		return 0, fmt.Errorf("postgres: first seq of %q since %v: %w", user, t, err)
	}
	return seq, nil
}

// LookupDedup implements persistence.Store. With retention a key is kept
// until the sweeper deletes it, SweepGrace after its append's entries have
// aged out, so it may name an entry Read no longer returns.
func (s *Store) LookupDedup(ctx context.Context, user, key string) (persistence.Seq, bool, error) {
	if err := checkUser(user); err != nil {
		return 0, false, err
	}
	if err := checkText("dedup key", key, maxKeyLen); err != nil {
		return 0, false, err
	}
	var seq int64
	err := s.use(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, "SELECT seq FROM tandem_dedup WHERE user_id = $1 AND dedup_key = $2", user, key).Scan(&seq)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("postgres: look up dedup key of %q: %w", user, err)
	}
	return persistence.Seq(seq), true, nil
}

// Outbox implements persistence.Store: items in seq order, then key order
// (bytewise).
func (s *Store) Outbox(ctx context.Context, user string) ([]persistence.OutboxItem, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	var out []persistence.OutboxItem
	err := s.use(ctx, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, "SELECT seq, outbox_key, data FROM tandem_outbox WHERE user_id = $1 ORDER BY seq, outbox_key", user)
		if err != nil {
			return err
		}
		var seq int64
		var key string
		var data []byte
		_, err = pgx.ForEachRow(rows, []any{&seq, &key, &data}, func() error {
			out = append(out, persistence.OutboxItem{Seq: persistence.Seq(seq), Key: key, Data: nilIfEmpty(data)})
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: read outbox of %q: %w", user, err)
	}
	return out, nil
}

// FanoutMark implements persistence.Store.
func (s *Store) FanoutMark(ctx context.Context, user string) (persistence.FanoutMark, error) {
	if err := checkUser(user); err != nil {
		return persistence.FanoutMark{}, err
	}
	var m persistence.FanoutMark
	err := s.use(ctx, func(ctx context.Context) error {
		var data []byte
		err := s.pool.QueryRow(ctx, "SELECT data FROM tandem_outbox WHERE user_id = $1 AND seq = 0 AND outbox_key = ''", user).Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		m, err = persistence.DecodeFanoutMark(data)
		return err
	})
	if err != nil {
		return persistence.FanoutMark{}, fmt.Errorf("postgres: read fan-out mark of %q: %w", user, err)
	}
	return m, nil
}

// outboxUsersSQL lists distinct users with outbox items after $1, at most
// $2, with one index probe per user (a loose index scan) rather than a
// walk over every item.
const outboxUsersSQL = `WITH RECURSIVE u(user_id) AS (
  (SELECT user_id FROM tandem_outbox WHERE user_id > $1 ORDER BY user_id LIMIT 1)
  UNION ALL
  SELECT (SELECT o.user_id FROM tandem_outbox o WHERE o.user_id > u.user_id ORDER BY o.user_id LIMIT 1)
  FROM u WHERE u.user_id IS NOT NULL
)
SELECT user_id FROM u WHERE user_id IS NOT NULL LIMIT $2`

// OutboxUsers implements persistence.Store: users in bytewise order. It is
// the one statement that spans users (a paged index scan).
func (s *Store) OutboxUsers(ctx context.Context, after string, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	if err := checkText("user ID", after, maxIDLen); err != nil {
		return nil, err
	}
	var out []string
	err := s.use(ctx, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, outboxUsersSQL, after, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list users with pending outbox: %w", err)
	}
	return out, nil
}

// Devices implements persistence.Store: in device ID order. A device whose
// cursor was stored but never its record has nil Data.
// Epoch implements persistence.Store: the user's row's epoch, 0 without
// a row.
func (s *Store) Epoch(ctx context.Context, user string) (persistence.Epoch, error) {
	if err := checkUser(user); err != nil {
		return 0, err
	}
	var epoch int64
	err := s.use(ctx, func(ctx context.Context) error {
		err := s.pool.QueryRow(ctx, "SELECT epoch FROM tandem_users WHERE user_id = $1", user).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) {
			epoch = 0
			return nil
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: read epoch of %q: %w", user, err)
	}
	return persistence.Epoch(epoch), nil
}

func (s *Store) Devices(ctx context.Context, user string) ([]persistence.Device, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	var out []persistence.Device
	err := s.use(ctx, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, "SELECT device_id, data, cursor_seq FROM tandem_devices WHERE user_id = $1 ORDER BY device_id", user)
		if err != nil {
			return err
		}
		var id string
		var data []byte
		var cursor int64
		_, err = pgx.ForEachRow(rows, []any{&id, &data, &cursor}, func() error {
			d := persistence.Device{DeviceID: id, Cursor: persistence.Seq(cursor)}
			if data != nil {
				d.Data = append([]byte{}, data...) // a stored record, even an empty one, is never nil
			}
			out = append(out, d)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: read devices of %q: %w", user, err)
	}
	return out, nil
}

// Convs implements persistence.Store: in conversation key order.
func (s *Store) Convs(ctx context.Context, user string) ([]persistence.Conv, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	var out []persistence.Conv
	err := s.use(ctx, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, "SELECT conv_key, data FROM tandem_convs WHERE user_id = $1 ORDER BY conv_key", user)
		if err != nil {
			return err
		}
		var key string
		var data []byte
		_, err = pgx.ForEachRow(rows, []any{&key, &data}, func() error {
			out = append(out, persistence.Conv{Key: key, Data: nilIfEmpty(data)})
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: read conversations of %q: %w", user, err)
	}
	return out, nil
}
