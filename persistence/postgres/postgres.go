package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tandem-im/tandem/persistence"
)

// ErrInvalidKey: a user ID, device ID or key cannot be stored in a text
// column as it is (it contains NUL, is not valid UTF-8, or is too long).
// Nothing of the request is stored.
var ErrInvalidKey = errors.New("postgres: key not storable as text")

// Options configures Open. The zero value means the defaults.
type Options struct {
	// PoolSize is the most connections the store opens: the committer's
	// (one per batch in flight, see Pipeline) plus readers and
	// activations. 0: 16. A pool no larger than Pipeline works, with less
	// overlap: a batch takes its connection only once the batch ahead of it
	// holds its row locks.
	PoolSize int

	// Retention is how long log entries are kept, counted from each
	// entry's own TimeMS; 0 keeps them forever. Readers (Read, FirstSeq,
	// FirstSeqSince) treat an entry with TimeMS before Now() - Retention
	// as gone; the sweeper deletes it SweepGrace later.
	Retention time.Duration
	// Now is the clock of the retention filter and the sweeper; nil means
	// time.Now. Tests set it to move time without sleeping.
	Now func() time.Time

	// Logger receives the store's warnings and errors; nil discards them.
	Logger *slog.Logger

	// MaxBatchRows caps the row writes of one commit (log entries,
	// rewrites and side-effect rows; not the per-user epoch check). 0:
	// 4096. One append with more fails with persistence.ErrTooLarge.
	MaxBatchRows int
	// MaxBatchBytes caps the estimated size of one commit (data, keys and
	// IDs). 0: 8 MiB. One append bigger than that fails with
	// persistence.ErrTooLarge.
	MaxBatchBytes int64
	// Pipeline is how many batches may be in flight at once: while one
	// commits, the next is sent. 0: 2; 1 commits one batch at a time.
	Pipeline int
	// CommitTimeout bounds one batch, from taking its connection to the
	// end of its COMMIT; a batch that runs out fails. 0: 30 s.
	CommitTimeout time.Duration
	// ConnectTimeout bounds each connection attempt when the URL does not
	// set connect_timeout. 0: 10 s.
	ConnectTimeout time.Duration

	// SweepInterval is the time between two sweeps of aged-out entries
	// (with Retention only). 0: 5 minutes; negative: no background sweep
	// (Sweep can still be called).
	SweepInterval time.Duration
	// SweepGrace is how long after an entry has aged out (the readers no
	// longer return it) the sweeper deletes it, and its dedup keys: it
	// covers clocks of other nodes that run behind. 0: 1 hour.
	SweepGrace time.Duration
	// SweepBatch caps the rows one sweeper statement deletes. 0: 5000.
	SweepBatch int
}

const (
	defaultPoolSize       = 16
	defaultMaxBatchRows   = 4096
	defaultMaxBatchBytes  = 8 << 20
	defaultPipeline       = 2
	defaultCommitTimeout  = 30 * time.Second
	defaultConnectTimeout = 10 * time.Second
	defaultOpenTimeout    = time.Minute
	defaultSweepInterval  = 5 * time.Minute
	defaultSweepGrace     = time.Hour
	defaultSweepBatch     = 5000

	// maxIDLen bounds user and device IDs and maxKeyLen the free-form keys
	// (dedup, outbox, conversation): together with the user ID a key must
	// stay well inside a btree index entry (about 2,700 bytes), or the
	// insert would fail the whole batch.
	maxIDLen  = 1024
	maxKeyLen = 1024
	// rowOverhead is what one row adds to the batch size estimate besides
	// its data and keys (seqs, times, array headers).
	rowOverhead = 24
)

// Validate reports every invalid field in one joined error.
func (o Options) Validate() error {
	var errs []error
	neg := func(name string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("postgres: %s must not be negative, got %d", name, v))
		}
	}
	neg("PoolSize", int64(o.PoolSize))
	neg("Retention", int64(o.Retention))
	neg("MaxBatchRows", int64(o.MaxBatchRows))
	neg("MaxBatchBytes", o.MaxBatchBytes)
	neg("Pipeline", int64(o.Pipeline))
	neg("CommitTimeout", int64(o.CommitTimeout))
	neg("ConnectTimeout", int64(o.ConnectTimeout))
	neg("SweepGrace", int64(o.SweepGrace))
	neg("SweepBatch", int64(o.SweepBatch))
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.PoolSize, defaultPoolSize)
	def(&o.MaxBatchRows, defaultMaxBatchRows)
	def(&o.Pipeline, defaultPipeline)
	def(&o.SweepBatch, defaultSweepBatch)
	if o.MaxBatchBytes == 0 {
		o.MaxBatchBytes = defaultMaxBatchBytes
	}
	defDur(&o.CommitTimeout, defaultCommitTimeout)
	defDur(&o.ConnectTimeout, defaultConnectTimeout)
	defDur(&o.SweepInterval, defaultSweepInterval)
	defDur(&o.SweepGrace, defaultSweepGrace)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Store is the PostgreSQL persistence.Store: a pgx connection pool, one
// committer goroutine that group-commits the appends of all users, and
// (with retention) a sweeper. See the package doc for the concurrency
// contract.
type Store struct {
	// Set by Open, then read-only.
	pool      *pgxpool.Pool
	opts      Options // with defaults
	log       *slog.Logger
	wg        sync.WaitGroup     // committer, batch workers, completer, sweeper
	life      context.Context    // ends when Close starts: reads and activations abort
	endLife   context.CancelFunc // called by Close
	stopSweep context.CancelFunc // called by Close

	// Any goroutine may submit; only the committer drains.
	mu      sync.Mutex
	wake    sync.Cond // on mu: queue grew or closing was set
	queue   []*op
	closing bool

	// Pipeline slots (one per batch in flight, taken by the committer,
	// given back by the completer) and the batches in submission order.
	slots       chan struct{}
	completions chan *batch

	// Users whose batch failed as a whole; see poison. Any goroutine.
	poisonMu sync.Mutex
	poisoned map[string]poison

	// Readers and activations hold gate shared while they use the pool;
	// Close ends life (aborting them), then takes gate exclusively.
	gate       sync.RWMutex
	gateClosed bool

	closeOnce sync.Once

	// afterCommit, if set (tests only, before the first Append), runs
	// after each group commit's COMMIT; an error fails the batch as if
	// the connection had been lost with the COMMIT's answer.
	afterCommit func() error

	// Counters; any goroutine.
	nCommits     atomic.Uint64
	nOps         atomic.Uint64
	nEntries     atomic.Uint64
	nFailed      atomic.Uint64
	lastOps      atomic.Int64
	lastBytes    atomic.Int64
	inFlight     atomic.Int64
	sweptEntries atomic.Uint64
	sweptDedup   atomic.Uint64
}

var _ persistence.Store = (*Store)(nil)

// Open connects to the database at url (a postgres:// URL or keyword/value
// string as pgx takes it; several hosts with target_session_attrs=read-write
// connect to whichever is the writable primary), migrates its schema to
// this binary's version and starts the committer. If ctx has no deadline,
// Open gives up after a minute; each connection attempt is bounded by
// connect_timeout (Options.ConnectTimeout when the URL has none). Open
// fails with ErrSchemaTooNew if a newer tandem has migrated the database.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultOpenTimeout)
		defer cancel()
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse connection string: %w", err)
	}
	cfg.MaxConns = int32(opts.PoolSize)
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	}
	rp := cfg.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		rp["application_name"] = "tandem"
	}
	// The fence relies on READ COMMITTED row locking (FOR UPDATE waits,
	// then sees the committed row), whatever the server's default.
	rp["default_transaction_isolation"] = "read committed"
	// The store's statements are prepared once per connection and keyed
	// by user: a generic plan (index probes per user) fits every call and
	// spares planning the group-commit statement on every batch.
	rp["plan_cache_mode"] = "force_generic_plan"

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open %s: connect: %w", describe(cfg), err)
	}
	from, to, err := migrate(ctx, pool, opts.Logger)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open %s: %w", describe(cfg), err)
	}
	if from != to {
		opts.Logger.Info("migrated the database schema", "from_version", from, "to_version", to)
	}
	var syncCommit string
	if err := pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&syncCommit); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open %s: read synchronous_commit: %w", describe(cfg), err)
	}
	if syncCommit == "off" {
		opts.Logger.Warn("synchronous_commit is off: acked appends can be lost when the server crashes")
	}

	s := &Store{
		pool:        pool,
		opts:        opts,
		log:         opts.Logger,
		slots:       make(chan struct{}, opts.Pipeline),
		completions: make(chan *batch, opts.Pipeline),
		poisoned:    make(map[string]poison),
	}
	s.wake.L = &s.mu
	s.life, s.endLife = context.WithCancel(context.Background())
	s.wg.Go(s.commitLoop)
	s.wg.Go(s.completeLoop)
	sweepCtx, stopSweep := context.WithCancel(s.life)
	s.stopSweep = stopSweep
	if opts.Retention > 0 && opts.SweepInterval > 0 {
		s.wg.Go(func() { s.sweepLoop(sweepCtx) })
	}
	return s, nil
}

// describe names the database of cfg for errors: hosts, database and
// user, never the password.
func describe(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	hosts := []string{fmt.Sprintf("%s:%d", c.Host, c.Port)}
	for _, f := range c.Fallbacks {
		if h := fmt.Sprintf("%s:%d", f.Host, f.Port); h != hosts[len(hosts)-1] {
			hosts = append(hosts, h)
		}
	}
	return fmt.Sprintf("database %q on %s as %q", c.Database, strings.Join(hosts, ","), c.User)
}

// Close stops taking submissions, lets the committer finish everything
// already submitted (committed, or failed within CommitTimeout), waits for
// it and the sweeper, and closes the pool. In-flight reads and activations
// are cancelled and fail with persistence.ErrClosed, as does every call
// after Close. Close may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.endLife()
		s.gate.Lock()
		s.gateClosed = true
		s.gate.Unlock()

		s.mu.Lock()
		s.closing = true
		s.wake.Broadcast()
		s.mu.Unlock()
		s.stopSweep()
		s.wg.Wait()
		s.pool.Close()
	})
	return nil
}

// use runs fn with the pool unless ctx is done or the store is closed.
// fn's context also ends when Close is called; its error then matches
// persistence.ErrClosed.
func (s *Store) use(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.gateClosed {
		return persistence.ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	err := fn(ctx)
	if err != nil && s.life.Err() != nil {
		return fmt.Errorf("%w (%w)", persistence.ErrClosed, err)
	}
	return err
}

// Stats are the store's counters since Open.
type Stats struct {
	Commits         uint64 // transactions committed: group commits and activations
	Ops             uint64 // appends and activations made durable
	Entries         uint64 // log entries made durable
	Failed          uint64 // appends and activations that failed
	LastCommitOps   int    // appends in the latest group commit
	LastCommitBytes int64  // estimated size of the latest group commit
	Queued          int    // submitted, not yet taken by the committer
	InFlight        int    // batches sent and not yet completed
	SweptEntries    uint64 // aged-out log entries deleted
	SweptDedup      uint64 // dedup keys deleted after their entries
}

// Stats returns the current counters. Safe to call concurrently.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	queued := len(s.queue)
	s.mu.Unlock()
	return Stats{
		Commits:         s.nCommits.Load(),
		Ops:             s.nOps.Load(),
		Entries:         s.nEntries.Load(),
		Failed:          s.nFailed.Load(),
		LastCommitOps:   int(s.lastOps.Load()),
		LastCommitBytes: s.lastBytes.Load(),
		Queued:          queued,
		InFlight:        int(s.inFlight.Load()),
		SweptEntries:    s.sweptEntries.Load(),
		SweptDedup:      s.sweptDedup.Load(),
	}
}

// checkText reports whether s can be stored in a text column as it is:
// at most max bytes, valid UTF-8, no NUL.
func checkText(what, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%w: %s of %d bytes, at most %d", ErrInvalidKey, what, len(s), max)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: %s %q contains NUL", ErrInvalidKey, what, s)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidKey, what, s)
	}
	return nil
}

func checkUser(user string) error {
	if user == "" {
		return fmt.Errorf("%w: empty user ID", ErrInvalidKey)
	}
	return checkText("user ID", user, maxIDLen)
}

// rollback ends tx if Commit has not (after Commit it is a no-op). If
// that fails the connection is broken, and the pool discards it.
func rollback(tx pgx.Tx, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		log.Debug("rollback failed; the connection is discarded", "err", err)
	}
}
