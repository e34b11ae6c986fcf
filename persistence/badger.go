package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"
)

// BadgerOptions configures OpenBadger. The zero value means the defaults:
// synchronous writes, no compression, 32 MiB memtables × 4, 32 MiB block
// cache, 16 MiB index cache, 2 compactors, 10 level-0 tables (stall at
// 30), a 256 MiB base level of 8 MiB tables. notes/badger.md started from
// 16 MiB × 2 and 3 level-0 tables (memory first); under a steady 1:1 load
// those compacted level 0 into level 1 so often that the compactions'
// table syncs queued ahead of the WAL's and whole seconds carried a
// quarter of the mean's acks. Fewer, larger level-0 compactions took the
// socket benchmark from about 10,000 to 13,000-14,000 acked msgs/s and its
// send→ack p99 from 160-175 to 80-100 ms (bench/README.md), for about
// 100 MiB more memory.
type BadgerOptions struct {
	// NoSync turns synchronous writes off: a commit returns before its
	// fsync. Acked appends may then be lost on power failure. Tests and
	// benchmarks only.
	NoSync bool

	MemTableSize            int64 // 0: 32 MiB
	NumMemtables            int   // 0: 4
	BlockCacheSize          int64 // 0: 32 MiB
	IndexCacheSize          int64 // 0: 16 MiB
	NumCompactors           int   // 0: 2
	NumLevelZeroTables      int   // 0: 10
	NumLevelZeroTablesStall int   // 0: 30
	BaseLevelSize           int64 // 0: 256 MiB
	BaseTableSize           int64 // 0: 8 MiB

	// MaxBatchBytes caps the estimated size of one commit (one badger
	// transaction). 0 or anything above badger's own limit (15% of
	// MemTableSize) means just under badger's limit. One append bigger
	// than the cap fails with ErrTooLarge.
	MaxBatchBytes int64
	// MaxBatchEntries caps the key writes of one commit: log entries plus
	// side-effect keys, plus with Retention one high-water-mark write per
	// append that writes log entries or rewrites. 0 or anything above
	// badger's limit means just under badger's limit (about 52,000 with
	// 32 MiB memtables).
	MaxBatchEntries int

	// MaxCachedUsers bounds the committer's per-user {epoch, last seq}
	// cache; users beyond it are evicted after a batch and reloaded from
	// disk when next written (point reads and a reverse seek). 0: 262,144.
	MaxCachedUsers int

	// Retention is how long log entries are kept, counted from each
	// entry's own TimeMS; 0 (the default) keeps them forever. Readers
	// (Read, FirstSeq, FirstSeqSince) treat an entry with TimeMS before
	// Now() - Retention as gone. Log entries and dedup keys are written
	// with a badger TTL that ends ttlMargin after that, so compaction
	// reclaims their space but the TTL never hides an entry the time
	// filter would still return. Outbox, device, conversation, epoch and
	// high-water-mark keys never expire. Seqs are never reused: the
	// highest seq appended is kept in a key of its own.
	Retention time.Duration
	// DiskReserve is the free space (bytes) the store keeps on its file
	// system: below it appends and activations fail with ErrDiskFull
	// before anything is written, and at DiskReserve + 25 % they are taken
	// again. 0: DefaultDiskReserve, which covers what badger may still
	// write once the store stops.
	DiskReserve int64
	// IndexOnlyCheck makes OpenBadger's start check (CheckBadger) open
	// every table and check its index, but not read and verify every
	// data block: a faster start for a large store that misses a damaged
	// data block until it is read.
	IndexOnlyCheck bool
	// RepairTornManifest accepts a MANIFEST whose last record is
	// incomplete, as a crash while badger wrote it leaves one: badger cuts
	// the record, and the tables the MANIFEST does not name are moved
	// into dir + "-quarantine-<time>" instead of being deleted by badger.
	// Without it OpenBadger refuses such a store (ErrDamaged). For one
	// start by an operator, after a crash.
	RepairTornManifest bool

	// Now is the clock of the retention filter; nil means time.Now.
	// Tests set it to move time without sleeping. Badger's TTL always
	// follows the real clock: a Now ahead of it only makes the filter
	// hide entries earlier, which is safe; one more than ttlMargin behind
	// it lets the TTL hide entries the filter would still return.
	Now func() time.Time
}

const (
	defaultMemTableSize   = 32 << 20
	defaultMaxCachedUsers = 1 << 18
	// batchMargin keeps a commit clear of badger's ErrTxnTooBig: badger's
	// limit also counts its own transaction marker entry.
	batchMargin = 4 << 10
	// ttlMargin is how much longer than Retention the badger TTL of log
	// entries and dedup keys runs. The TTL must end after the time filter
	// hides an entry, never before: TTL decides nothing, it only frees
	// space. The margin covers the rounding of expiry up to whole seconds
	// and a difference of up to an hour between Now and the system clock
	// (the one badger's expiry follows).
	ttlMargin = time.Hour
)

// Validate reports every invalid field in one joined error.
func (o BadgerOptions) Validate() error {
	var errs []error
	neg := func(name string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("persistence: %s must not be negative, got %d", name, v))
		}
	}
	neg("MemTableSize", o.MemTableSize)
	neg("NumMemtables", int64(o.NumMemtables))
	neg("BlockCacheSize", o.BlockCacheSize)
	neg("IndexCacheSize", o.IndexCacheSize)
	neg("NumCompactors", int64(o.NumCompactors))
	neg("NumLevelZeroTables", int64(o.NumLevelZeroTables))
	neg("NumLevelZeroTablesStall", int64(o.NumLevelZeroTablesStall))
	neg("BaseLevelSize", o.BaseLevelSize)
	neg("BaseTableSize", o.BaseTableSize)
	neg("MaxBatchBytes", o.MaxBatchBytes)
	neg("MaxBatchEntries", int64(o.MaxBatchEntries))
	neg("MaxCachedUsers", int64(o.MaxCachedUsers))
	neg("Retention", int64(o.Retention))
	neg("DiskReserve", o.DiskReserve)
	if o.MemTableSize > 0 && o.MemTableSize < 1<<20 {
		errs = append(errs, fmt.Errorf("persistence: MemTableSize must be at least 1 MiB, got %d", o.MemTableSize))
	}
	if o.NumCompactors == 1 {
		errs = append(errs, errors.New("persistence: NumCompactors must be 0 (default 2) or at least 2"))
	}
	d := o.withDefaults()
	if d.NumLevelZeroTablesStall <= d.NumLevelZeroTables {
		errs = append(errs, fmt.Errorf("persistence: NumLevelZeroTablesStall (%d) must exceed NumLevelZeroTables (%d)",
			d.NumLevelZeroTablesStall, d.NumLevelZeroTables))
	}
	return errors.Join(errs...)
}

func (o BadgerOptions) withDefaults() BadgerOptions {
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MemTableSize, defaultMemTableSize)
	defInt(&o.NumMemtables, 4)
	def(&o.BlockCacheSize, 32<<20)
	def(&o.IndexCacheSize, 16<<20)
	defInt(&o.NumCompactors, 2)
	defInt(&o.NumLevelZeroTables, 10)
	defInt(&o.NumLevelZeroTablesStall, 30)
	def(&o.BaseLevelSize, 256<<20)
	def(&o.BaseTableSize, 8<<20)
	defInt(&o.MaxCachedUsers, defaultMaxCachedUsers)
	if o.DiskReserve == 0 {
		o.DiskReserve = o.defaultDiskReserve()
	}
	return o
}

func (o BadgerOptions) badgerOptions(dir string, logger *slog.Logger) badger.Options {
	maxBatch := o.MemTableSize * 15 / 100
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{logger}).
		WithSyncWrites(!o.NoSync).
		WithCompression(options.None).
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(o.NumMemtables).
		WithBlockCacheSize(o.BlockCacheSize).
		WithIndexCacheSize(o.IndexCacheSize).
		WithNumCompactors(o.NumCompactors).
		WithNumLevelZeroTables(o.NumLevelZeroTables).
		WithNumLevelZeroTablesStall(o.NumLevelZeroTablesStall).
		WithBaseLevelSize(o.BaseLevelSize).
		WithBaseTableSize(o.BaseTableSize).
		WithValueThreshold(min(1<<20, maxBatch)).
		// Only the committer writes, so transactions cannot conflict.
		WithDetectConflicts(false)
}

// OpenBadger opens (or creates) the store in dir and starts its committer.
// If badger refuses to open, zero-byte memtable files (left by a crash
// between creating and sizing one, upstream badger #2207) are removed and
// the open is retried once.
func OpenBadger(dir string, opts BadgerOptions, logger *slog.Logger) (*Local, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts = opts.withDefaults()
	if err := checkStore(dir, opts, logger); err != nil {
		return nil, err
	}
	bopts := opts.badgerOptions(dir, logger)
	db, err := openDB(bopts)
	if err != nil {
		if isLockError(err) {
			return nil, fmt.Errorf("persistence: open badger in %s: %w: %w", dir, ErrLocked, err)
		}
		logger.Warn("badger open failed, retrying once", "dir", dir, "err", err)
		removed, rerr := removeEmptyMemFiles(dir)
		if rerr != nil {
			return nil, errors.Join(fmt.Errorf("persistence: open badger in %s: %w", dir, err), rerr)
		}
		if len(removed) > 0 {
			logger.Warn("removed zero-byte badger memtable files", "dir", dir, "files", removed)
		}
		db, err = openDB(bopts)
		if err != nil {
			return nil, openErr(dir, err)
		}
	}

	guard, err := newDiskGuard(dir, opts.DiskReserve, opts.MemTableSize, logger)
	if err == nil {
		err = guard.findMemtables()
	}
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	kv := badgerKV{db}
	maxBytes, maxWrites := kv.maxBatch()
	b := newLocal(kv, "badger", dir, guard, logger, localLimits{
		maxBytes: maxBytes, maxWrites: maxWrites, maxBatchBytes: opts.MaxBatchBytes, maxBatchEntries: opts.MaxBatchEntries,
		maxUsers: opts.MaxCachedUsers, retention: opts.Retention, now: opts.Now,
	})
	b.closeCheck = func() error { return flushRoom(dir, flushNeed(dir)) }
	b.start()
	return b, nil
}

// checkStore is OpenBadger's start check: dir is a writable directory
// that can hold memory-mapped files, the files in it can be opened for
// writing, and CheckBadger finds nothing damaged. Tables the MANIFEST does
// not name are logged: badger deletes them.
func checkStore(dir string, opts BadgerOptions, logger *slog.Logger) error {
	if err := CheckDir(dir, true); err != nil {
		return err
	}
	// A store another process has open is not examined (its files change
	// under the check): badger's open reports its lock. The shared lock
	// held meanwhile keeps one from opening it during the check.
	d, err := os.Open(dir)
	if err != nil {
		return ioRefusal(dir, "cannot be opened", err)
	}
	defer d.Close() // releases the lock
	if err := unix.Flock(int(d.Fd()), unix.LOCK_SH|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		return nil
	}
	if err := checkFilesWritable(dir); err != nil {
		return err
	}
	t0 := time.Now()
	res, err := CheckBadger(dir, !opts.IndexOnlyCheck, opts.RepairTornManifest)
	if err != nil {
		return err
	}
	logger.Debug("badger start check done", "dir", dir, "took", time.Since(t0), "blocks", !opts.IndexOnlyCheck)
	switch {
	case res.TornManifest > 0:
		// The tables the cut record named are set aside, not deleted: if
		// its changes were not a crash's (a flush whose WAL is still
		// there, a compaction whose inputs still are), their data is
		// only in them.
		q := ""
		if len(res.Orphans) > 0 {
			if q, err = quarantine(dir, res.Orphans); err != nil {
				return err
			}
		}
		logger.Warn("repairing a MANIFEST whose last record is incomplete: badger cuts it; tables it does not name were moved aside",
			"dir", dir, "cut_bytes", res.TornManifest, "moved", res.Orphans, "to", q)
	case len(res.Orphans) > 0:
		logger.Warn("badger will delete tables its MANIFEST does not name (left by an interrupted flush or compaction)",
			"dir", dir, "tables", res.Orphans)
	}
	return nil
}

// openDB is badger.Open with its panics (in this goroutine) turned into
// errors.
func openDB(bopts badger.Options) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("badger panicked while opening: %s", firstLine(fmt.Sprint(r)))
		}
	}()
	return badger.Open(bopts)
}

// openErr is the error of a failed second open: a *DirError when the
// cause is the disk (not writable, read-only, full) or a panic in badger
// (damaged files CheckBadger did not catch), anything else as it is.
func openErr(dir string, err error) error {
	wrapped := fmt.Errorf("persistence: open badger in %s (second attempt): %w", dir, err)
	switch {
	case isLockError(err):
		return fmt.Errorf("%w: %w", ErrLocked, wrapped)
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EROFS), errors.Is(err, syscall.ENOSPC):
		return ioRefusal(dir, "cannot be opened by badger", err)
	case strings.Contains(err.Error(), "badger panicked"):
		return damaged(dir, "cannot be opened by badger", err)
	}
	return wrapped
}

func isLockError(err error) bool {
	return strings.Contains(err.Error(), "Cannot acquire directory lock")
}

// removeEmptyMemFiles deletes the zero-byte *.mem files in dir and returns
// their names. A zero-byte memtable holds no data (not even its header);
// badger refuses to open a directory that has one. Call it only while no
// badger instance has dir open.
func removeEmptyMemFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("persistence: list %s for empty memtables: %w", dir, err)
	}
	var removed []string
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return removed, fmt.Errorf("persistence: stat %s: %w", e.Name(), err)
		}
		if info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return removed, fmt.Errorf("persistence: remove empty memtable %s: %w", e.Name(), err)
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// badgerLogger adapts badger's printf logger to slog. Badger logs routine
// events (compactions, flushes, replay) at info level: they go to Debug.
type badgerLogger struct{ l *slog.Logger }

func (g badgerLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !g.l.Enabled(ctx, level) {
		return
	}
	g.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (g badgerLogger) Errorf(f string, a ...any)   { g.logf(slog.LevelError, f, a...) }
func (g badgerLogger) Warningf(f string, a ...any) { g.logf(slog.LevelWarn, f, a...) }
func (g badgerLogger) Infof(f string, a ...any)    { g.logf(slog.LevelDebug, f, a...) }
func (g badgerLogger) Debugf(f string, a ...any)   { g.logf(slog.LevelDebug-4, f, a...) }
