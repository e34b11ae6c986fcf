package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/postgres"
)

var (
	_ actors.Store = (*persistence.Local)(nil)
	_ actors.Store = (*postgres.Store)(nil)
)

// nodeStore is the store as the node holds it: what the actors need, a
// Close, and the counters /metrics exports.
type nodeStore interface {
	actors.Store
	Epoch(ctx context.Context, user string) (persistence.Epoch, error) // Node.ReadEpoch
	Close() error
}

// storeStats are the counters both backends keep.
type storeStats struct {
	Commits, Ops, Entries, Failed uint64
	Queued, LastCommitOps         int
	CommitFailures                uint64 // badger only
}

// storeOpenTimeout bounds opening the store: an unreachable PostgreSQL
// fails the start with a clear error instead of hanging it.
const storeOpenTimeout = 30 * time.Second

// openStore opens the configured backend (cfg has its defaults) and
// returns it with its stats function and a description for the logs.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (nodeStore, func() storeStats, string, error) {
	if cfg.postgres() {
		ctx, cancel := context.WithTimeout(ctx, storeOpenTimeout)
		defer cancel()
		s, err := postgres.Open(ctx, cfg.Store, postgres.Options{
			PoolSize: cfg.StorePoolSize, Retention: cfg.Retention, Now: cfg.Now, Logger: log.With("component", "postgres"),
		})
		if err != nil {
			return nil, nil, "", fmt.Errorf("open the PostgreSQL store %s: %w", redactURL(cfg.Store), err)
		}
		stats := func() storeStats {
			st := s.Stats()
			return storeStats{Commits: st.Commits, Ops: st.Ops, Entries: st.Entries, Failed: st.Failed, Queued: st.Queued, LastCommitOps: st.LastCommitOps}
		}
		return s, stats, "postgres:" + redactURL(cfg.Store), nil
	}
	if cfg.Store == "pebble" {
		dir := filepath.Join(cfg.DataDir, "pebble")
		o := persistence.PebbleOptions{Retention: cfg.Retention, Now: cfg.Now, DiskReserve: cfg.DiskReserve}
		if cfg.pebble != nil {
			cfg.pebble(&o)
		}
		s, err := persistence.OpenPebble(dir, o, log.With("component", "pebble"))
		if _, ok := errors.AsType[*persistence.DirError](err); ok {
			return nil, nil, "", err
		}
		if err != nil {
			return nil, nil, "", fmt.Errorf("open the pebble store in %s: %w", dir, err)
		}
		return s, localStats(s), "pebble:" + dir, nil
	}
	dir := filepath.Join(cfg.DataDir, "badger")
	s, err := persistence.OpenBadger(dir, badgerOptions(cfg), log.With("component", "badger"))
	if _, ok := errors.AsType[*persistence.DirError](err); ok {
		return nil, nil, "", err // names the file already
	}
	if err != nil {
		return nil, nil, "", fmt.Errorf("open the badger store in %s: %w", dir, err)
	}
	return s, localStats(s), "badger:" + dir, nil
}

func localStats(s *persistence.Local) func() storeStats {
	return func() storeStats {
		st := s.Stats()
		return storeStats{st.Commits, st.Ops, st.Entries, st.Failed, st.Queued, st.LastCommitOps, st.CommitFailures}
	}
}

// badgerOptions are the store options for cfg: the retention, the clock
// and the --badger-tuning preset.
func badgerOptions(cfg Config) persistence.BadgerOptions {
	o := persistence.BadgerOptions{Retention: cfg.Retention, Now: cfg.Now, DiskReserve: cfg.DiskReserve,
		IndexOnlyCheck: cfg.BadgerCheck == "index", RepairTornManifest: cfg.BadgerRepairTornManifest}
	if cfg.BadgerTuning == "latency" {
		o.MemTableSize, o.NumMemtables = 8<<20, 6
		o.NumLevelZeroTables, o.NumLevelZeroTablesStall = 20, 40
		o.BaseTableSize = 4 << 20
	}
	if cfg.badger != nil {
		cfg.badger(&o)
	}
	return o
}

// storeHealth is what the badger store tells about its ability to write
// (the PostgreSQL store has none: its commits fail with PostgreSQL's own
// errors, answered UNAVAILABLE by the actors).
type storeHealth interface {
	WriteErr() error
	Failed() <-chan struct{}
	Err() error
	Disk() persistence.DiskStatus
}

var _ storeHealth = (*persistence.Local)(nil)

// StoreFailedError is what Run returns when the store failed while
// serving (a write or fsync error: persistence.ErrStoreFailed). The node
// stopped taking writes at once and then stopped, as PostgreSQL stops on
// a failed fsync: a restart replays only what is durable, and the actors
// activate from it. cmd/tandem exits with code 5.
type StoreFailedError struct{ Err error }

func (e *StoreFailedError) Error() string {
	return "store failed while serving: restart to recover from what is durable: " + e.Err.Error()
}
func (e *StoreFailedError) Unwrap() error { return e.Err }

// storeReady is the store's part of readiness: nil, or why it takes no
// writes ("disk full: 3.1 MiB free on <dir>, reserve 64.0 MiB", "store
// failed: <err>").
func storeReady(h storeHealth) error {
	if h == nil {
		return nil
	}
	if err := h.Err(); err != nil {
		return fmt.Errorf("store failed: %s", strings.TrimPrefix(err.Error(), "persistence: store failed: "))
	}
	if err := h.WriteErr(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "persistence: "))
	}
	return nil
}
