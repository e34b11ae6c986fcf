package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// PebbleOptions configures OpenPebble. The zero value means the defaults:
// synchronous writes, 64 MiB memtables, a 32 MiB block cache, pebble's own
// compaction settings (snappy-compressed tables, level 0 compacted at 4
// sub-levels, writes stopped at 40).
//
// Why pebble (docs/adr/0006-pebble.md): on this class of machine (a
// virtual disk whose write cache every fdatasync flushes) badger's table
// writes — each table written whole and synced with one msync — held the
// WAL's sync for hundreds of milliseconds to seconds, so no badger setting
// met the send→ack tail at 20,000 msgs/s; pebble, with the same keys and
// the same group commit, kept the commit p99 at 12 ms over 60 s.
type PebbleOptions struct {
	// NoSync turns synchronous writes off: a commit returns before its
	// WAL is synced. Acked appends may then be lost on power failure.
	// Tests and benchmarks only.
	NoSync bool

	MemTableSize int64 // 0: 64 MiB
	CacheSize    int64 // block cache; 0: 32 MiB

	// MaxBatchBytes and MaxBatchEntries cap one commit; 0 means
	// MemTableSize/4 and 200,000 writes.
	MaxBatchBytes   int64
	MaxBatchEntries int
	// MaxCachedUsers: as BadgerOptions.MaxCachedUsers.
	MaxCachedUsers int
	// Retention: as BadgerOptions.Retention, but pebble has no TTL: the
	// readers' time filter hides aged-out entries, and a sweep deletes
	// them (and their dedup keys) later.
	Retention time.Duration
	// DiskReserve: as BadgerOptions.DiskReserve; 0: DefaultPebbleDiskReserve.
	DiskReserve int64
	// Now: as BadgerOptions.Now.
	Now func() time.Time
}

const defaultPebbleMemTable = 64 << 20

// Validate reports every invalid field in one joined error.
func (o PebbleOptions) Validate() error {
	var errs []error
	for name, v := range map[string]int64{"MemTableSize": o.MemTableSize, "CacheSize": o.CacheSize,
		"MaxBatchBytes": o.MaxBatchBytes, "MaxBatchEntries": int64(o.MaxBatchEntries),
		"MaxCachedUsers": int64(o.MaxCachedUsers), "Retention": int64(o.Retention), "DiskReserve": o.DiskReserve} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("persistence: %s must not be negative, got %d", name, v))
		}
	}
	if o.MemTableSize > 0 && o.MemTableSize < 1<<20 {
		errs = append(errs, fmt.Errorf("persistence: MemTableSize must be at least 1 MiB, got %d", o.MemTableSize))
	}
	if o.MemTableSize >= 4<<30 {
		errs = append(errs, fmt.Errorf("persistence: MemTableSize must be below 4 GiB, got %d", o.MemTableSize))
	}
	return errors.Join(errs...)
}

func (o PebbleOptions) withDefaults() PebbleOptions {
	if o.MemTableSize == 0 {
		o.MemTableSize = defaultPebbleMemTable
	}
	if o.CacheSize == 0 {
		o.CacheSize = 32 << 20
	}
	if o.MaxCachedUsers == 0 {
		o.MaxCachedUsers = defaultMaxCachedUsers
	}
	if o.DiskReserve == 0 {
		o.DiskReserve = DefaultPebbleDiskReserve(o)
	}
	return o
}

// DefaultPebbleDiskReserve is the reserve for o: the WAL and the flush of
// the memtables pebble may hold (two queued and the one being written),
// and 64 MiB for a compaction's new tables before it deletes the old
// ones. Pebble writes with write(2), not into mmapped files: a full disk
// gives it ENOSPC, never a SIGBUS, but an ENOSPC in a commit fails the
// store (ErrStoreFailed) where the reserve refuses writes and recovers.
func DefaultPebbleDiskReserve(o PebbleOptions) int64 {
	mt := o.MemTableSize
	if mt == 0 {
		mt = defaultPebbleMemTable
	}
	return 3*mt + 64<<20
}

// OpenPebble opens (or creates) a pebble store in dir and starts its
// committer.
func OpenPebble(dir string, opts PebbleOptions, logger *slog.Logger) (*Local, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts = opts.withDefaults()
	if err := CheckDir(dir, false); err != nil {
		return nil, err
	}
	if err := checkFilesWritable(dir); err != nil {
		return nil, err
	}
	if err := checkPebbleManifest(dir); err != nil {
		return nil, err
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		Cache:                       cache,
		MemTableSize:                uint64(opts.MemTableSize),
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       40,
		BytesPerSync:                512 << 10,
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      pebbleLogger{logger},
		EventListener:               pebbleEvents(logger),
	}
	po.EnsureDefaults()
	db, err := openPebbleDB(dir, po)
	if err != nil {
		return nil, pebbleOpenErr(dir, err)
	}
	guard, err := newDiskGuard(dir, opts.DiskReserve, 0, logger)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	kv := &pebbleKV{db: db, sync: pebble.Sync, maxBytes: opts.MemTableSize / 4, maxWrites: 200_000, memCap: pebbleMemCap(opts.MemTableSize)}
	if opts.NoSync {
		kv.sync = pebble.NoSync
	}
	if opts.MaxBatchBytes > 0 && opts.MaxBatchBytes < kv.maxBytes {
		kv.maxBytes = opts.MaxBatchBytes
	}
	if opts.MaxBatchEntries > 0 && opts.MaxBatchEntries < kv.maxWrites {
		kv.maxWrites = opts.MaxBatchEntries
	}
	b := newLocal(kv, "pebble", dir, guard, logger, localLimits{
		maxBytes: kv.maxBytes, maxWrites: kv.maxWrites,
		maxUsers: opts.MaxCachedUsers, retention: opts.Retention, now: opts.Now,
	})
	b.start()
	if opts.Retention > 0 {
		b.wg.Go(b.sweepLoop)
	}
	return b, nil
}

// openPebbleDB is pebble.Open with a fatal error (pebbleLogger.Fatalf) or
// a panic turned into an error.
func openPebbleDB(dir string, po *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pebble failed while opening: %s", firstLine(fmt.Sprint(r)))
		}
	}()
	return pebble.Open(dir, po)
}

// pebbleOpenErr names the data dir and the fix where it can.
func pebbleOpenErr(dir string, err error) error {
	switch {
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EACCES) && strings.Contains(err.Error(), "LOCK"),
		strings.Contains(err.Error(), "lock held by current process"):
		return fmt.Errorf("persistence: open pebble in %s: %w: %w", dir, ErrLocked, err)
	case errors.Is(err, pebble.ErrCorruption), strings.Contains(err.Error(), "corrupt"),
		strings.Contains(err.Error(), "pebble failed while opening"):
		return damaged(dir, "cannot be opened by pebble", err)
	}
	return ioRefusal(dir, "cannot be opened by pebble", err)
}

// pebbleEvents logs what an operator needs from pebble: write stalls and
// slow disk operations as warnings, background errors as errors, flushes
// and compactions at debug level.
func pebbleEvents(log *slog.Logger) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) { log.Error("pebble background error", "err", err) },
		WriteStallBegin: func(i pebble.WriteStallBeginInfo) {
			log.Warn("pebble write stall: commits wait for flushes or compactions", "reason", i.Reason)
		},
		WriteStallEnd: func() { log.Warn("pebble write stall ended") },
		DiskSlow: func(i pebble.DiskSlowInfo) {
			log.Warn("pebble: slow disk operation", "op", i.OpType.String(), "path", i.Path, "took", i.Duration)
		},
		FlushEnd: func(i pebble.FlushInfo) { log.Debug("pebble flush", "info", i.String()) },
		CompactionEnd: func(i pebble.CompactionInfo) {
			log.Debug("pebble compaction", "info", i.String())
		},
	}
}

// pebbleFatal is what pebbleLogger.Fatalf panics with: pebble calls
// Fatalf where it cannot go on (a failed WAL write or sync in a commit)
// and expects it not to return.
type pebbleFatal struct{ msg string }

// recoverPebbleFatal, deferred, turns a pebbleFatal panic into *err and
// lets any other panic go on.
func recoverPebbleFatal(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(pebbleFatal)
		if !ok {
			panic(r)
		}
		*err = fmt.Errorf("pebble: %s", f.msg)
	}
}

// pebbleLogger adapts pebble's logger to slog; routine events go to Debug.
type pebbleLogger struct{ l *slog.Logger }

func (g pebbleLogger) Infof(f string, a ...any) {
	ctx := context.Background()
	if g.l.Enabled(ctx, slog.LevelDebug) {
		g.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "pebble")
	}
}

func (g pebbleLogger) Errorf(f string, a ...any) {
	g.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "pebble")
}

func (g pebbleLogger) Fatalf(f string, a ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(f, a...))
	g.l.Error(msg, "component", "pebble", "fatal", true)
	panic(pebbleFatal{msg})
}
