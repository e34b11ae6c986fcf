package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tandem-im/tandem/persistence"
)

// op is one append: the caller's request, validated and copied by Append.
type op struct {
	user  string
	epoch persistence.Epoch

	// The entries' seqs (first..last; n == 0: none) and the highest seq
	// rewritten (must already be in the log).
	first, last persistence.Seq
	n           int
	maxRewrite  persistence.Seq

	// Copies of the request's slices; Data fields share one buffer.
	entries    []persistence.Entry
	rewrites   []persistence.Entry
	dedup      []persistence.DedupKey
	outboxPut  []persistence.OutboxItem
	outboxDone []persistence.OutboxRef
	devices    []persistence.Device
	convs      []persistence.Conv
	dedupTime  int64 // time_ms of the dedup rows

	rows  int   // row writes
	bytes int64 // estimated size
	err   error // found by Append; delivered in submission order

	done func(error)
	res  error // set before done
}

// batch is one group commit: ops taken from the queue together, in
// submission order, run by one worker goroutine in one transaction.
type batch struct {
	ops        []*op
	bytes      int64
	prevLocked <-chan struct{} // the batch before: closed once it holds its row locks (nil: none)
	locked     chan struct{}   // closed once this batch holds its row locks, or gave up
	finished   chan struct{}   // closed when the worker is done

	// Set by the worker before finished.
	staged  []*op // ops written (res nil unless err)
	err     error // the batch failed as a whole: every staged op failed
	entries int
}

// poison marks a user whose appends were in a batch that failed as a
// whole — possibly after its COMMIT reached the server, so whether they
// are durable is unknown. Later appends of that user with an epoch up to
// epoch fail too (they may depend on the failed ones), even if they
// committed: the actor stops on the first failure and activates again,
// with a higher epoch, reading what is durable.
type poison struct {
	epoch persistence.Epoch
	err   error
	at    time.Time
}

// poisonTTL is how long a poison entry is kept; by then the actor that got
// the failure has stopped.
const poisonTTL = 10 * time.Minute

// Append implements persistence.Store. req and its slices are copied
// before Append returns. After Close, done is called with
// persistence.ErrClosed before Append returns.
func (s *Store) Append(req persistence.AppendRequest, done func(error)) {
	o := s.encode(&req)
	o.done = done
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		done(persistence.ErrClosed)
		return
	}
	s.queue = append(s.queue, o)
	s.wake.Signal()
	s.mu.Unlock()
}

// AppendSync implements persistence.Store. If ctx ends first it returns
// ctx.Err(); the append may still become durable.
func (s *Store) AppendSync(ctx context.Context, req persistence.AppendRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := make(chan error, 1)
	s.Append(req, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Activate implements persistence.Store: one statement, its own
// transaction, outside the committer. It waits for the row lock of any
// batch writing the user, so the last seq it returns includes every
// append committed before it, and every later append with an older epoch
// is fenced. If ctx ends first it returns ctx.Err(); the epoch may still
// have been bumped (a later Activate bumps it again).
func (s *Store) Activate(ctx context.Context, user, owner string) (persistence.Epoch, persistence.Seq, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if err := checkUser(user); err != nil {
		return 0, 0, err
	}
	if err := checkText("owner", owner, maxIDLen); err != nil {
		return 0, 0, err
	}
	var epoch, last int64
	err := s.use(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, activateSQL, user, owner).Scan(&epoch, &last)
	})
	if err != nil {
		s.nFailed.Add(1)
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, persistence.ErrClosed) {
			return 0, 0, ctxErr
		}
		return 0, 0, fmt.Errorf("postgres: activate %q: %w", user, err)
	}
	s.nCommits.Add(1)
	s.nOps.Add(1)
	return persistence.Epoch(epoch), persistence.Seq(last), nil
}

const activateSQL = `INSERT INTO tandem_users AS u (user_id, epoch, owner, last_seq) VALUES ($1, 1, $2, 0)
ON CONFLICT (user_id) DO UPDATE SET epoch = u.epoch + 1, owner = excluded.owner
RETURNING u.epoch, u.last_seq`

// encode validates req and copies it into an op. It runs on the
// submitting goroutine, so the committer only checks and writes.
func (s *Store) encode(req *persistence.AppendRequest) *op {
	o := &op{user: req.User, epoch: req.Epoch, n: len(req.Entries)}
	// The fan-out mark is kept in tandem_outbox (seq 0, empty key), so
	// OutboxUsers lists users with pending fan-outs.
	marked, err := persistence.WithFanoutMark(*req)
	if err != nil {
		o.err = err
		return o
	}
	req = &marked
	if o.err = s.validate(req); o.err != nil {
		return o
	}
	if o.n > 0 {
		o.first, o.last = req.Entries[0].Seq, req.Entries[o.n-1].Seq
	}

	// Sizes, and one buffer for all the data.
	var dataLen int
	keyBytes := int64(len(req.User))
	for _, e := range req.Entries {
		dataLen += len(e.Data)
	}
	newest := s.opts.Now().UnixMilli()
	for _, e := range req.Rewrites {
		dataLen += len(e.Data)
		o.maxRewrite = max(o.maxRewrite, e.Seq)
	}
	for _, e := range append(req.Entries[:len(req.Entries):len(req.Entries)], req.Rewrites...) {
		newest = max(newest, e.TimeMS)
	}
	o.dedupTime = newest
	for _, d := range req.Dedup {
		keyBytes += int64(len(d.Key))
	}
	for _, x := range req.OutboxPut {
		dataLen += len(x.Data)
		keyBytes += int64(len(x.Key))
	}
	for _, x := range req.OutboxDone {
		keyBytes += int64(len(x.Key))
	}
	for _, d := range req.Devices {
		dataLen += len(d.Data)
		keyBytes += int64(len(d.DeviceID))
	}
	for _, c := range req.Convs {
		dataLen += len(c.Data)
		keyBytes += int64(len(c.Key))
	}
	o.rows = len(req.Entries) + len(req.Rewrites) + len(req.Dedup) + len(req.OutboxPut) +
		len(req.OutboxDone) + len(req.Devices) + len(req.Convs)
	o.bytes = int64(dataLen) + keyBytes + int64(o.rows+1)*(rowOverhead+int64(len(req.User)))
	if o.rows > s.opts.MaxBatchRows || o.bytes > s.opts.MaxBatchBytes {
		o.err = fmt.Errorf("%w: user %q append of %d bytes in %d rows; a commit holds at most %d bytes, %d rows",
			persistence.ErrTooLarge, o.user, o.bytes, o.rows, s.opts.MaxBatchBytes, s.opts.MaxBatchRows)
		o.rows, o.bytes = 0, 0 // it writes nothing: no reason to cut a batch before it
		return o
	}

	buf := make([]byte, 0, dataLen)
	// keep copies b into buf; nil stays nil (a device record to keep).
	keep := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		from := len(buf)
		buf = append(buf, b...)
		return buf[from:len(buf):len(buf)]
	}
	o.entries = slices.Clone(req.Entries)
	for i := range o.entries {
		o.entries[i].Data = keep(o.entries[i].Data)
	}
	o.rewrites = slices.Clone(req.Rewrites)
	for i := range o.rewrites {
		o.rewrites[i].Data = keep(o.rewrites[i].Data)
	}
	o.dedup = slices.Clone(req.Dedup)
	o.outboxPut = slices.Clone(req.OutboxPut)
	for i := range o.outboxPut {
		o.outboxPut[i].Data = keep(o.outboxPut[i].Data)
	}
	o.outboxDone = slices.Clone(req.OutboxDone)
	o.devices = slices.Clone(req.Devices)
	for i := range o.devices {
		o.devices[i].Data = keep(o.devices[i].Data)
	}
	o.convs = slices.Clone(req.Convs)
	for i := range o.convs {
		o.convs[i].Data = keep(o.convs[i].Data)
	}
	return o
}

// validate checks what does not depend on the stored state: IDs and keys
// storable as text, entries consecutive, seqs that fit a bigint.
func (s *Store) validate(req *persistence.AppendRequest) error {
	user := req.User
	if err := checkUser(user); err != nil {
		return err
	}
	for i, e := range req.Entries {
		if e.Seq > math.MaxInt64 {
			return fmt.Errorf("%w: user %q append of seq %d", persistence.ErrSeqGap, user, e.Seq)
		}
		if i > 0 && e.Seq != req.Entries[i-1].Seq+1 {
			return fmt.Errorf("%w: user %q append has seq %d after %d", persistence.ErrSeqGap, user, e.Seq, req.Entries[i-1].Seq)
		}
	}
	for _, e := range req.Rewrites {
		if e.Seq == 0 || e.Seq > math.MaxInt64 {
			return fmt.Errorf("%w: user %q rewrite of seq %d", persistence.ErrNotInLog, user, e.Seq)
		}
	}
	for _, d := range req.Dedup {
		if err := checkText("dedup key", d.Key, maxKeyLen); err != nil {
			return err
		}
	}
	for _, x := range req.OutboxPut {
		if err := checkText("outbox key", x.Key, maxKeyLen); err != nil {
			return err
		}
	}
	for _, x := range req.OutboxDone {
		if err := checkText("outbox key", x.Key, maxKeyLen); err != nil {
			return err
		}
	}
	for _, d := range req.Devices {
		if err := checkText("device ID", d.DeviceID, maxIDLen); err != nil {
			return err
		}
	}
	for _, c := range req.Convs {
		if err := checkText("conversation key", c.Key, maxKeyLen); err != nil {
			return err
		}
	}
	return nil
}

// commitLoop is the committer: it takes a pipeline slot, then the queued
// appends (as many as the batch caps allow), hands them to a worker and
// the completer, and repeats until Close has been called and the queue is
// empty. While batches are in flight, the queue accumulates the next one.
func (s *Store) commitLoop() {
	defer close(s.completions)
	var prevLocked <-chan struct{}
	for {
		s.slots <- struct{}{}
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closing {
			s.wake.Wait()
		}
		if len(s.queue) == 0 {
			s.mu.Unlock()
			<-s.slots
			return // closing, and everything submitted is in a batch
		}
		b := s.cut()
		s.mu.Unlock()

		b.prevLocked = prevLocked
		prevLocked = b.locked
		s.inFlight.Add(1)
		s.wg.Go(func() { s.runBatch(b) })
		s.completions <- b
	}
}

// cut takes the longest prefix of the queue within the batch caps (at
// least one op; an op over the caps alone was failed by encode and counts
// nothing). Called with mu held.
func (s *Store) cut() *batch {
	b := &batch{locked: make(chan struct{}), finished: make(chan struct{})}
	rows, k := 0, 0
	for ; k < len(s.queue); k++ {
		o := s.queue[k]
		if k > 0 && (rows+o.rows > s.opts.MaxBatchRows || b.bytes+o.bytes > s.opts.MaxBatchBytes) {
			break
		}
		rows += o.rows
		b.bytes += o.bytes
	}
	b.ops = slices.Clone(s.queue[:k])
	n := copy(s.queue, s.queue[k:])
	clear(s.queue[n:])
	s.queue = s.queue[:n]
	return b
}

// completeLoop calls the done callbacks of each batch, in batch order and,
// within a batch, in submission order: so each user's completions come in
// submission order. It frees the batch's pipeline slot afterwards.
func (s *Store) completeLoop() {
	lastExpiry := time.Now()
	for b := range s.completions {
		<-b.finished
		s.inFlight.Add(-1)
		if b.err != nil {
			s.log.Error("group commit failed", "appends", len(b.staged), "err", b.err)
			for _, o := range b.staged {
				o.res = b.err
			}
			s.poisonUsers(b.staged, b.err)
		} else if len(b.staged) > 0 {
			s.nCommits.Add(1)
			s.nOps.Add(uint64(len(b.staged)))
			s.nEntries.Add(uint64(b.entries))
			s.lastOps.Store(int64(len(b.staged)))
			s.lastBytes.Store(b.bytes)
		}
		for _, o := range b.ops {
			if o.res == nil {
				o.res = s.poisonedErr(o)
			}
			if o.res != nil {
				s.nFailed.Add(1)
			}
			o.done(o.res)
		}
		<-s.slots
		if now := time.Now(); now.Sub(lastExpiry) > time.Minute {
			s.expirePoison(now)
			lastExpiry = now
		}
	}
}

// poisonUsers records the users of ops, whose batch failed with err.
func (s *Store) poisonUsers(ops []*op, err error) {
	now := time.Now()
	s.poisonMu.Lock()
	defer s.poisonMu.Unlock()
	for _, o := range ops {
		p := s.poisoned[o.user]
		if o.epoch >= p.epoch {
			s.poisoned[o.user] = poison{epoch: o.epoch, err: err, at: now}
		}
	}
}

// expirePoison forgets users poisoned more than poisonTTL ago.
func (s *Store) expirePoison(now time.Time) {
	s.poisonMu.Lock()
	defer s.poisonMu.Unlock()
	for u, p := range s.poisoned {
		if now.Sub(p.at) > poisonTTL {
			delete(s.poisoned, u)
		}
	}
}

// poisonedErr returns the error o fails with because an earlier batch of
// its user failed as a whole, or nil.
func (s *Store) poisonedErr(o *op) error {
	s.poisonMu.Lock()
	defer s.poisonMu.Unlock()
	p, ok := s.poisoned[o.user]
	if !ok || o.epoch > p.epoch {
		return nil
	}
	return fmt.Errorf("postgres: an earlier append of user %q (epoch %d) failed, this one may depend on it: %w", o.user, p.epoch, p.err)
}

// runBatch is a batch's worker: it runs the batch's transaction and
// records the outcome for the completer.
func (s *Store) runBatch(b *batch) {
	defer close(b.finished)
	locked := sync1(b.locked)
	defer locked()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	// Row locks are taken in batch order: a batch that took its locks
	// before the batch ahead of it would see the user's state without that
	// batch's appends and fail the ones that depend on them.
	if b.prevLocked != nil {
		select {
		case <-b.prevLocked:
		case <-ctx.Done():
			b.err = fmt.Errorf("postgres: group commit of %d appends: waiting for the batch ahead: %w", len(b.ops), ctx.Err())
			b.staged = s.failEarly(b.ops)
			return
		}
	}
	if err := s.commitBatch(ctx, b, locked); err != nil {
		b.err = fmt.Errorf("postgres: group commit of %d appends: %w", len(b.staged), err)
	}
}

// failEarly returns the ops of a batch that failed before its state was
// read: those not failed already.
func (s *Store) failEarly(ops []*op) []*op {
	var out []*op
	for _, o := range ops {
		if o.err == nil {
			out = append(out, o)
		} else {
			o.res = o.err
		}
	}
	return out
}

// sync1 returns a function that closes ch the first time it is called.
func sync1(ch chan struct{}) func() {
	done := false
	return func() {
		if !done {
			done = true
			close(ch)
		}
	}
}

// userState is a user's row as the batch locked it: epoch 0 for a user
// never activated.
type userState struct {
	epoch persistence.Epoch
	last  persistence.Seq
}

// commitBatch runs one group commit, in two round trips:
//
//  1. BEGIN, and lock the rows of the batch's users in tandem_users, in
//     user_id order (so concurrent batches, here or on other nodes, cannot
//     deadlock), reading their epoch and last seq;
//  2. check each op against its user's state in submission order, as the
//     badger committer does: a fenced or gapped op fails, alone, and the
//     ops of the same user after it are checked against the state without
//     it;
//  3. one statement writes everything of the ops that passed: per user it
//     checks epoch and last seq again (and moves last seq) in
//     tandem_users, every insert, update and delete of the statement
//     writes only the rows of users that passed that check, and the
//     statement fails unless all of them did; then COMMIT, pipelined with
//     the statement.
//
// Any error fails every op that passed step 2 (the ones that did not have
// their own error already).
func (s *Store) commitBatch(ctx context.Context, b *batch, locked func()) error {
	var users []string
	for _, o := range b.ops {
		if o.err == nil {
			users = append(users, o.user)
		}
	}
	if len(users) == 0 {
		for _, o := range b.ops {
			o.res = o.err
		}
		return nil
	}
	slices.Sort(users)
	users = slices.Compact(users)

	fail := func(err error) error {
		b.staged = s.failEarly(b.ops)
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fail(fmt.Errorf("connect: %w", err))
	}
	defer s.release(conn)
	var lb pgx.Batch
	lb.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	lb.Queue(lockSQL, users)
	states, err := lockUsers(conn.SendBatch(ctx, &lb), len(users))
	locked()
	if err != nil {
		return fail(err)
	}

	w := newWriteSet()
	for _, o := range b.ops {
		if o.err != nil {
			o.res = o.err
			continue
		}
		if o.res = s.poisonedErr(o); o.res != nil {
			continue
		}
		st := states[o.user]
		next, err := check(o, st)
		if err != nil {
			o.res = err
			continue
		}
		states[o.user] = next
		w.add(o, st)
		b.staged = append(b.staged, o)
		b.entries += o.n
	}
	if len(b.staged) == 0 {
		return nil // nothing to write: release rolls back, freeing the locks
	}
	var wb pgx.Batch
	wb.Queue(writeSQL, w.args()...)
	wb.Queue("COMMIT")
	res := conn.SendBatch(ctx, &wb)
	_, werr := res.Exec()
	tag, cerr := res.Exec()
	closeErr := res.Close()
	switch {
	case werr != nil:
		return fmt.Errorf("write%s: %w", unknownOutcome(werr), werr)
	case cerr != nil:
		return fmt.Errorf("commit%s: %w", unknownOutcome(cerr), cerr)
	case tag.String() != "COMMIT":
		return fmt.Errorf("commit: the server answered %q", tag.String())
	case closeErr != nil:
		return fmt.Errorf("commit%s: %w", unknownOutcome(closeErr), closeErr)
	}
	if s.afterCommit != nil {
		if err := s.afterCommit(); err != nil {
			return fmt.Errorf("commit (outcome unknown): %w", err)
		}
	}
	return nil
}

// unknownOutcome says so for an error that is not the server's answer (a
// lost connection, a timeout): the transaction may have committed.
func unknownOutcome(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return ""
	}
	return " (outcome unknown)"
}

// release returns conn to the pool, first rolling back a transaction left
// open by a failure; a connection that cannot is discarded by the pool.
func (s *Store) release(conn *pgxpool.Conn) {
	if pc := conn.Conn().PgConn(); !pc.IsClosed() && !pc.IsBusy() && pc.TxStatus() != 'I' {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
			s.log.Debug("rollback after a failed group commit failed; the connection is discarded", "err", err)
		}
		cancel()
	}
	conn.Release()
}

const lockSQL = `SELECT user_id, epoch, last_seq FROM tandem_users
WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE`

// lockUsers reads the results of BEGIN and lockSQL: the users' states;
// users without a row are absent (never activated).
func lockUsers(res pgx.BatchResults, n int) (map[string]userState, error) {
	states := make(map[string]userState, n)
	err := func() error {
		if _, err := res.Exec(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		rows, err := res.Query()
		if err != nil {
			return fmt.Errorf("lock %d users: %w", n, err)
		}
		var user string
		var epoch, last int64
		_, err = pgx.ForEachRow(rows, []any{&user, &epoch, &last}, func() error {
			states[user] = userState{epoch: persistence.Epoch(epoch), last: persistence.Seq(last)}
			return nil
		})
		if err != nil {
			return fmt.Errorf("lock %d users: %w", n, err)
		}
		return nil
	}()
	if cerr := res.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("lock %d users: %w", n, cerr)
	}
	return states, err
}

// check validates o against its user's state and returns the state after
// o.
func check(o *op, st userState) (userState, error) {
	if st.epoch == 0 || o.epoch != st.epoch {
		return st, fmt.Errorf("%w: user %q append with epoch %d, current epoch %d", persistence.ErrFenced, o.user, o.epoch, st.epoch)
	}
	if o.maxRewrite > st.last {
		return st, fmt.Errorf("%w: user %q rewrite of seq %d, last seq is %d", persistence.ErrNotInLog, o.user, o.maxRewrite, st.last)
	}
	if o.n > 0 {
		if o.first != st.last+1 {
			return st, fmt.Errorf("%w: user %q append starts at seq %d, last seq is %d", persistence.ErrSeqGap, o.user, o.first, st.last)
		}
		st.last = o.last
	}
	return st, nil
}
