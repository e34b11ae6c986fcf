package persistence

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Local is the embedded Store: an ordered key-value engine on local disk
// (badger, OpenBadger, or pebble, OpenPebble) with one committer goroutine
// that group-commits the appends of all users. See the package doc for
// the concurrency contract.
type Local struct {
	// Set by OpenBadger, then read-only.
	kv     kvEngine
	engine string // "badger" or "pebble", for messages
	// closeCheck, if set, runs before the engine is closed; an error
	// leaves the engine open (badger on a full disk: flushRoom).
	closeCheck func() error
	dir        string
	log        *slog.Logger
	maxBytes   int64            // per commit, estimated as badger does (plus slack)
	maxWrites  int              // key writes per commit
	maxUsers   int              // cached user states
	retention  time.Duration    // 0: keep forever
	now        func() time.Time // retention clock
	guard      *diskGuard
	stopGuard  chan struct{} // closed by Close: the guard's ticker ends
	wg         sync.WaitGroup

	// A failed commit makes the store refuse every later write. failErr
	// is set once (by the committer), then failed is closed.
	failErr atomic.Pointer[error]
	failed  chan struct{}

	// Any goroutine may submit; only the committer drains.
	mu      sync.Mutex
	wake    sync.Cond // on mu: queue grew or closing was set
	queue   []*op
	closing bool

	// Readers hold dbMu shared while they use db; Close takes it
	// exclusively to close db.
	dbMu     sync.RWMutex
	dbClosed bool

	closeOnce sync.Once
	closeErr  error

	// Only the committer goroutine.
	users map[string]userState
	known *userFilter // users that may have an epoch record (userfilter.go); nil: every state is read
	chunk chunk
	// commitHook, if set (tests, and the faultinject build), runs before
	// each commit; an error fails the commit as if badger's write or sync
	// had failed. Any goroutine may set it.
	commitHook atomic.Pointer[func() error]

	// Counters; any goroutine.
	nCommits    atomic.Uint64
	nOps        atomic.Uint64
	nEntries    atomic.Uint64
	nFailed     atomic.Uint64
	nCommitErrs atomic.Uint64
	lastOps     atomic.Int64
	lastBytes   atomic.Int64
	cachedUsers atomic.Int64
}

var _ Store = (*Local)(nil)

// localLimits are the committer's caps and the retention, whatever the
// engine.
type localLimits struct {
	maxBytes, maxBatchBytes    int64 // the engine's cap, the configured one (0: none)
	maxWrites, maxBatchEntries int
	maxUsers                   int
	retention                  time.Duration
	now                        func() time.Time
}

// newLocal is the store on an open engine; start starts its goroutines.
func newLocal(kv kvEngine, engine, dir string, guard *diskGuard, logger *slog.Logger, l localLimits) *Local {
	b := &Local{
		kv:        kv,
		engine:    engine,
		guard:     guard,
		stopGuard: make(chan struct{}),
		failed:    make(chan struct{}),
		dir:       dir,
		log:       logger,
		maxBytes:  l.maxBytes,
		maxWrites: l.maxWrites,
		maxUsers:  l.maxUsers,
		retention: l.retention,
		now:       l.now,
		users:     make(map[string]userState),
	}
	if b.now == nil {
		b.now = time.Now
	}
	if l.maxBatchBytes > 0 && l.maxBatchBytes < b.maxBytes {
		b.maxBytes = l.maxBatchBytes
	}
	if l.maxBatchEntries > 0 && l.maxBatchEntries < b.maxWrites {
		b.maxWrites = l.maxBatchEntries
	}
	b.wake.L = &b.mu
	return b
}

// start lists the activated users into the committer's filter
// (userfilter.go), then starts the committer and the disk guard. Without
// the list (a read error) every user's state is read, as before.
func (b *Local) start() {
	t0 := time.Now()
	if err := b.loadUserFilter(context.Background()); err != nil {
		b.log.Warn("no filter of activated users: every activation reads its epoch record", "err", err)
	} else if d := time.Since(t0); d > time.Second {
		b.log.Info("listed the activated users", "took", d)
	}
	b.wg.Go(b.commitLoop)
	b.wg.Go(b.guardLoop)
}

// Close stops taking submissions, lets the committer commit everything
// already submitted, waits for it, and closes the database. Calls after
// Close fail with ErrClosed; Close itself may be called more than once.
// After a failed commit it waits for badger at most failedCloseWait, then
// returns an error and leaves badger's goroutines (and the dir lock) to
// the process's end.
// On a file system too full for badger's closing memtable flushes Close
// leaves badger open and returns an error matching ErrNotClosed
// (flushRoom): everything committed is in the write-ahead log.
func (b *Local) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closing = true
		b.wake.Signal()
		b.mu.Unlock()
		close(b.stopGuard)
		b.wg.Wait()

		// Readers in flight finish; later ones get ErrClosed.
		b.dbMu.Lock()
		b.dbClosed = true
		b.dbMu.Unlock()
		if b.closeCheck != nil {
			if err := b.closeCheck(); err != nil {
				b.closeErr = err // left open: its close would fault
				return
			}
		}
		closed := make(chan error, 1)
		go func() { closed <- b.kv.close() }()
		var err error
		if b.Err() == nil {
			err = <-closed
		} else {
			// Badger's close flushes the memtable and retries a failed
			// flush every second, forever: on a failed disk it would never
			// return. Whatever it has not written is in the WAL, or was
			// never acked. Pebble's close is not bounded either.
			select {
			case err = <-closed:
			case <-time.After(failedCloseWait):
				err = fmt.Errorf("gave up after %v (%s cannot flush its memtable; the WAL holds it): %w", failedCloseWait, b.engine, b.Err())
			}
		}
		if err != nil {
			b.closeErr = fmt.Errorf("persistence: close %s: %w", b.engine, err)
		}
	})
	return b.closeErr
}

// failedCloseWait bounds Close after a failed commit.
const failedCloseWait = 3 * time.Second

// Stats are the committer's counters since OpenBadger.
type Stats struct {
	Commits         uint64 // badger transactions committed (one fsync each)
	Ops             uint64 // appends and activations made durable
	Entries         uint64 // log entries made durable
	Failed          uint64 // appends and activations that failed
	CommitFailures  uint64 // commits badger failed (a write or sync error; the first one fails the store)
	LastCommitOps   int    // appends and activations in the latest commit
	LastCommitBytes int64  // estimated size of the latest commit
	Queued          int    // submitted, not yet taken by the committer
	CachedUsers     int    // user states the committer holds
}

// Stats returns the current counters. Safe to call concurrently.
func (b *Local) Stats() Stats {
	b.mu.Lock()
	queued := len(b.queue)
	b.mu.Unlock()
	return Stats{
		Commits:         b.nCommits.Load(),
		Ops:             b.nOps.Load(),
		Entries:         b.nEntries.Load(),
		Failed:          b.nFailed.Load(),
		CommitFailures:  b.nCommitErrs.Load(),
		LastCommitOps:   int(b.lastOps.Load()),
		LastCommitBytes: b.lastBytes.Load(),
		Queued:          queued,
		CachedUsers:     int(b.cachedUsers.Load()),
	}
}

// view runs fn in a read-only transaction unless ctx is done or the store
// is closed or failed. A failed store serves no reads: badger puts a
// batch into its memtable before syncing it, so the batch whose sync
// failed is readable although it was never acked and may not be on disk
// (its seqs may be taken by other entries after a restart).
func (b *Local) view(ctx context.Context, fn func(v kvView) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.Err(); err != nil {
		return err
	}
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return ErrClosed
	}
	v := b.kv.view()
	defer v.close()
	return fn(v)
}

// Compact merges the LSM tree's levels into one, dropping versions no reader
// can see any more (overwritten values such as recalled content, expired
// entries) from the files. It blocks while it runs: for maintenance and
// tests, not the hot path. Badger's Flatten leaves level 0 alone while it
// is the only level with tables and holds fewer than NumLevelZeroTables
// (a young store): its tables are compacted once it fills.
func (b *Local) Compact() error {
	if err := b.kv.compact(); err != nil {
		return fmt.Errorf("persistence: compact %s: %w", b.engine, err)
	}
	return nil
}
