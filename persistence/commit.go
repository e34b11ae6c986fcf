package persistence

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// mutation is one key write of a commit.
type mutation struct {
	key, val  []byte
	del       bool
	expiresAt uint64 // badger TTL in Unix seconds; 0: never expires
}

// writeCost is the size badger charges a write against its transaction
// limit, rounded up: key + value + 2 meta bytes + 8 version bytes (badger's
// estimate is never larger).
func writeCost(key, val []byte) int64 { return int64(len(key)+len(val)) + 12 }

type opKind uint8

const (
	opAppend opKind = iota
	opActivate
)

// op is one submission to the committer: an append or an activation.
type op struct {
	kind  opKind
	user  string
	epoch Epoch  // append: the writer's epoch
	owner string // activate: the new owner

	// Append: the entries' seqs (first..last; n == 0: none), the encoded
	// writes and their cost. Activate: muts is built by the committer.
	first, last Seq
	n           int
	maxRewrite  Seq // highest seq rewritten; must already be in the log
	muts        []mutation
	hwm         int // index in muts of the high-water-mark write (its value is set by the committer); -1: none
	size        int64
	err         error // found while encoding; delivered in submission order

	done func(error)

	// Set by the committer before done.
	res      error
	newEpoch Epoch
	lastSeq  Seq
}

// userState is what the committer knows of a user: the current epoch (0:
// never activated) and the last seq ever appended to the log (see lastSeq;
// entries may have expired since). It always equals what is committed on
// disk between batches.
type userState struct {
	epoch Epoch
	last  Seq
}

// chunk is the open transaction of the committer and the ops whose done is
// due when it commits.
type chunk struct {
	txn    kvBatch // writes of staged; nil until needed
	rtxn   kvView  // read-only snapshot for loading uncached users
	ops    []*op   // every op to report at the next flush, in submission order
	staged []*op   // ops whose writes are in txn
	bytes  int64
	writes int
}

// encodeAppend turns req into its key writes. It runs on the submitting
// goroutine, so the committer only applies and checks. Errors are the
// caller's (bad IDs, non-consecutive entries).
//
// keep > 0 is the retention plus ttlMargin: log entries then expire keep
// after their own TimeMS and dedup keys keep after the later of nowMS and
// the newest entry time of req; and a request that writes log keys also
// writes the user's high-water mark, muts[hwm], whose value the committer
// fills in with the user's last seq (-1: no such write).
func encodeAppend(req *AppendRequest, keep time.Duration, nowMS int64) (muts []mutation, size int64, hwm int, err error) {
	hwm = -1
	user := req.User
	if err := checkUser(user); err != nil {
		return nil, 0, hwm, err
	}
	for i := 1; i < len(req.Entries); i++ {
		if req.Entries[i].Seq != req.Entries[i-1].Seq+1 {
			return nil, 0, hwm, fmt.Errorf("%w: user %q append has seq %d after %d",
				ErrSeqGap, user, req.Entries[i].Seq, req.Entries[i-1].Seq)
		}
	}
	writesLog := len(req.Entries)+len(req.Rewrites) > 0

	// One buffer for every key and value of the request.
	n := 0
	for _, e := range req.Entries {
		n += logKeyLen(user) + 8 + len(e.Data)
	}
	for _, e := range req.Rewrites {
		if e.Seq == 0 {
			return nil, 0, hwm, fmt.Errorf("%w: user %q rewrite of seq 0", ErrNotInLog, user)
		}
		n += logKeyLen(user) + 8 + len(e.Data)
	}
	for _, d := range req.Dedup {
		if err := checkTail("dedup key", d.Key); err != nil {
			return nil, 0, hwm, err
		}
		n += userPrefixLen(user) + len(d.Key) + 8
	}
	for _, o := range req.OutboxPut {
		if err := checkTail("outbox key", o.Key); err != nil {
			return nil, 0, hwm, err
		}
		n += outboxKeyLen(user, o.Key) + len(o.Data)
	}
	for _, o := range req.OutboxDone {
		if err := checkTail("outbox key", o.Key); err != nil {
			return nil, 0, hwm, err
		}
		n += outboxKeyLen(user, o.Key)
	}
	for _, d := range req.Devices {
		if err := checkDevice(d.DeviceID); err != nil {
			return nil, 0, hwm, err
		}
		n += deviceKeyLen(user, d.DeviceID) + 8
		if d.Data != nil {
			n += deviceKeyLen(user, d.DeviceID) + len(d.Data)
		}
	}
	for _, c := range req.Convs {
		if err := checkTail("conversation key", c.Key); err != nil {
			return nil, 0, hwm, err
		}
		n += userPrefixLen(user) + len(c.Key) + len(c.Data)
	}

	nHWM := 0
	if keep > 0 && writesLog {
		nHWM = 1
		n += userPrefixLen(user) + 8
	}

	buf := make([]byte, 0, n)
	muts = make([]mutation, 0, len(req.Entries)+len(req.Rewrites)+len(req.Dedup)+len(req.OutboxPut)+
		len(req.OutboxDone)+2*len(req.Devices)+len(req.Convs)+nHWM)
	// cut returns buf[from:] capped so later appends cannot reach it.
	cut := func(from int) []byte { return buf[from:len(buf):len(buf)] }
	add := func(kFrom, vFrom int, del bool, expires uint64) {
		k, v := buf[kFrom:vFrom:vFrom], cut(vFrom)
		if del {
			v = nil
		}
		muts = append(muts, mutation{key: k, val: v, del: del, expiresAt: expires})
		size += writeCost(k, v)
	}
	// ttl returns the expiry of a key kept until keep after timeMS.
	ttl := func(timeMS int64) uint64 {
		if keep <= 0 {
			return 0
		}
		return expiresAt(timeMS, keep)
	}

	newest := nowMS
	for _, e := range append(req.Entries[:len(req.Entries):len(req.Entries)], req.Rewrites...) {
		k := len(buf)
		buf = appendLogKey(buf, user, e.Seq)
		v := len(buf)
		buf = binary.BigEndian.AppendUint64(buf, uint64(e.TimeMS))
		buf = append(buf, e.Data...)
		add(k, v, false, ttl(e.TimeMS))
		newest = max(newest, e.TimeMS)
	}
	if nHWM > 0 {
		k := len(buf)
		buf = appendUserPrefix(buf, tagHWM, user)
		v := len(buf)
		buf = binary.BigEndian.AppendUint64(buf, 0) // set by the committer
		hwm = len(muts)
		add(k, v, false, 0)
	}
	// A dedup key outlives the entries of its append, and its write: it
	// may name an entry that has aged out, never the other way round.
	dedupTTL := ttl(newest)
	for _, d := range req.Dedup {
		k := len(buf)
		buf = appendDedupKey(buf, user, d.Key)
		v := len(buf)
		buf = binary.BigEndian.AppendUint64(buf, uint64(d.Seq))
		add(k, v, false, dedupTTL)
	}
	// Puts before deletes: an item put and done in one request is gone.
	for _, o := range req.OutboxPut {
		k := len(buf)
		buf = appendOutboxKey(buf, user, o.Seq, o.Key)
		v := len(buf)
		buf = append(buf, o.Data...)
		add(k, v, false, 0)
	}
	for _, o := range req.OutboxDone {
		k := len(buf)
		buf = appendOutboxKey(buf, user, o.Seq, o.Key)
		add(k, len(buf), true, 0)
	}
	for _, d := range req.Devices {
		if d.Data != nil {
			k := len(buf)
			buf = appendDeviceKey(buf, user, d.DeviceID, deviceRecord)
			v := len(buf)
			buf = append(buf, d.Data...)
			add(k, v, false, 0)
		}
		k := len(buf)
		buf = appendDeviceKey(buf, user, d.DeviceID, deviceCursor)
		v := len(buf)
		buf = binary.BigEndian.AppendUint64(buf, uint64(d.Cursor))
		add(k, v, false, 0)
	}
	for _, c := range req.Convs {
		k := len(buf)
		buf = appendConvKey(buf, user, c.Key)
		v := len(buf)
		buf = append(buf, c.Data...)
		add(k, v, false, 0)
	}
	return muts, size, hwm, nil
}

// submit queues o for the committer, or fails it at once with ErrClosed.
func (b *Local) submit(o *op) {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		o.done(ErrClosed)
		return
	}
	b.queue = append(b.queue, o)
	b.wake.Signal()
	b.mu.Unlock()
}

// Append implements Store. req's slices are copied before Append returns.
// After Close, done is called with ErrClosed before Append returns (there
// is no committer left to call it).
func (b *Local) Append(req AppendRequest, done func(error)) {
	o := &op{kind: opAppend, user: req.User, epoch: req.Epoch, n: len(req.Entries), done: done}
	for _, e := range req.Rewrites {
		o.maxRewrite = max(o.maxRewrite, e.Seq)
	}
	if o.n > 0 {
		o.first, o.last = req.Entries[0].Seq, req.Entries[o.n-1].Seq
	}
	var keep time.Duration
	var nowMS int64
	if b.retention > 0 {
		keep, nowMS = b.retention+ttlMargin, b.now().UnixMilli()
	}
	if req, o.err = WithFanoutMark(req); o.err == nil {
		o.muts, o.size, o.hwm, o.err = encodeAppend(&req, keep, nowMS)
	}
	b.submit(o)
}

// AppendSync implements Store. If ctx ends first it returns ctx.Err(); the
// append may still become durable.
func (b *Local) AppendSync(ctx context.Context, req AppendRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := make(chan error, 1)
	b.Append(req, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Activate implements Store. It goes through the committer like an append,
// so it is ordered with the appends submitted around it and is durable
// when it returns. If ctx ends first it returns ctx.Err(); the epoch may
// still have been bumped (a later Activate bumps it again).
func (b *Local) Activate(ctx context.Context, user, owner string) (Epoch, Seq, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if err := checkUser(user); err != nil {
		return 0, 0, err
	}
	a := activations.Get().(*activation)
	o := &a.op
	*o = op{kind: opActivate, user: user, owner: owner, hwm: -1, done: a.done}
	o.size = int64(userPrefixLen(user)+8+len(owner)) + 12 // writeCost of the epoch write
	b.submit(o)
	select {
	case err := <-a.answer:
		epoch, last := o.newEpoch, o.lastSeq
		*o = op{}
		activations.Put(a)
		if err != nil {
			return 0, 0, fmt.Errorf("persistence: activate %q: %w", user, err)
		}
		return epoch, last, nil
	case <-ctx.Done():
		return 0, 0, ctx.Err() // a is the committer's still: not reused
	}
}

// activation is an Activate's op and the channel its answer comes on,
// reused once answered (an op, a channel and a closure per activation were
// a seventh of an activation storm's allocation). The committer does not
// touch an op after calling its done.
type activation struct {
	op     op
	answer chan error // buffered: done never blocks the committer
	done   func(error)
}

var activations = sync.Pool{New: func() any {
	a := &activation{answer: make(chan error, 1)}
	a.done = func(err error) { a.answer <- err }
	return a
}}

// commitLoop is the committer: it takes everything queued, commits it in
// as few transactions as the caps allow, and repeats until Close has been
// called and the queue is empty.
func (b *Local) commitLoop() {
	var spare []*op
	for {
		b.mu.Lock()
		for len(b.queue) == 0 && !b.closing {
			b.wake.Wait()
		}
		batch := b.queue
		b.queue = spare[:0]
		b.mu.Unlock()
		if len(batch) == 0 {
			return // closing, and everything submitted is done
		}
		b.guard.maybeCheck(time.Now())

		for _, o := range batch {
			b.add(o)
		}
		b.flush()
		b.evictUsers()

		clear(batch)
		spare = batch
	}
}

// add puts o into the open chunk, flushing it first if o would not fit.
func (b *Local) add(o *op) {
	c := &b.chunk
	if o.err == nil && (o.size > b.maxBytes || len(o.muts) > b.maxWrites) {
		o.err = fmt.Errorf("%w: user %q append of %d bytes in %d writes; a commit holds at most %d bytes, %d writes",
			ErrTooLarge, o.user, o.size, len(o.muts), b.maxBytes, b.maxWrites)
	}
	if o.err != nil {
		b.report(o, o.err)
		return
	}
	// Nothing is written while the store is failed or full: the user's
	// cached state stays what is on disk, so no seq is skipped or reused.
	if err := b.WriteErr(); err != nil {
		if errors.Is(err, ErrDiskFull) {
			b.guard.refused.Add(1)
		}
		b.report(o, err)
		return
	}
	nWrites := max(len(o.muts), 1) // an activation writes one key
	if c.bytes+o.size > b.maxBytes || c.writes+nWrites > b.maxWrites {
		b.flush()
	}
	b.stage(o, true)
}

// stage checks o against the user's state and writes it into the open
// transaction. retry allows one more attempt in a fresh transaction if
// badger finds the open one too big.
func (b *Local) stage(o *op, retry bool) {
	c := &b.chunk
	prev, err := b.userState(o.user)
	if err != nil {
		b.report(o, err)
		return
	}
	next, err := b.check(o, prev)
	if err != nil {
		b.report(o, err)
		return
	}
	if o.hwm >= 0 {
		// Never lower than the stored mark: next.last started from it.
		binary.BigEndian.PutUint64(o.muts[o.hwm].val, uint64(next.last))
	}
	if c.txn == nil {
		c.txn = b.kv.batch()
	}
	for _, m := range o.muts {
		if err := c.txn.set(m); err != nil {
			// The transaction holds part of o: rebuild it without o.
			b.rebuild()
			switch {
			case !errors.Is(err, errKVTooBig):
				b.report(o, fmt.Errorf("persistence: write append of %q: %w", o.user, err))
			case retry && b.flushIfStaged():
				b.stage(o, false)
			default:
				b.report(o, fmt.Errorf("%w: user %q: %w", ErrTooLarge, o.user, err))
			}
			return
		}
	}
	b.users[o.user] = next
	if o.kind == opActivate {
		o.newEpoch, o.lastSeq = next.epoch, next.last
	}
	c.ops = append(c.ops, o)
	c.staged = append(c.staged, o)
	c.bytes += o.size
	c.writes += max(len(o.muts), 1)
}

// check validates o against the user's state and returns the state after
// o. For an activation it also builds the epoch write.
func (b *Local) check(o *op, st userState) (userState, error) {
	switch o.kind {
	case opActivate:
		if b.known != nil && st.epoch == 0 {
			b.known.add(o.user) // its first record: before it can be committed
		}
		st.epoch++
		key := epochKey(o.user)
		val := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(o.owner)), uint64(st.epoch))
		val = append(val, o.owner...)
		o.muts = []mutation{{key: key, val: val}}
		return st, nil
	default:
		if st.epoch == 0 || o.epoch != st.epoch {
			return st, fmt.Errorf("%w: user %q append with epoch %d, current epoch %d", ErrFenced, o.user, o.epoch, st.epoch)
		}
		if o.maxRewrite > st.last {
			return st, fmt.Errorf("%w: user %q rewrite of seq %d, last seq is %d", ErrNotInLog, o.user, o.maxRewrite, st.last)
		}
		if o.n > 0 {
			if o.first != st.last+1 {
				return st, fmt.Errorf("%w: user %q append starts at seq %d, last seq is %d", ErrSeqGap, o.user, o.first, st.last)
			}
			st.last = o.last
		}
		return st, nil
	}
}

// userState returns the committer's state of user, loading it from the
// committed data if it is not cached — without a read for a user the
// filter says was never activated (userfilter.go).
func (b *Local) userState(user string) (userState, error) {
	if st, ok := b.users[user]; ok {
		return st, nil
	}
	var st userState // never activated: no epoch, no log (see loadUserState)
	if b.known == nil || b.known.mayHave(user) {
		c := &b.chunk
		if c.rtxn == nil {
			c.rtxn = b.kv.view()
		}
		var err error
		if st, err = loadUserState(c.rtxn, user); err != nil {
			return st, fmt.Errorf("persistence: load state of %q: %w", user, err)
		}
	}
	b.users[user] = st
	return st, nil
}

func loadUserState(v kvView, user string) (userState, error) {
	var st userState
	var err error
	switch st.epoch, err = readEpoch(v, user); {
	case err != nil:
		return st, err
	case st.epoch == 0:
		// Never activated: every append is fenced by the epoch, so there
		// is no log and no high-water mark to look for (a new user's
		// activation spares the reverse seek and the point read).
		return st, nil
	}
	st.last, err = lastSeq(v, user)
	return st, err
}

// readEpoch reads user's epoch record: 0 if there is none.
func readEpoch(v kvView, user string) (Epoch, error) {
	val, ok, err := v.get(epochKey(user))
	switch {
	case err != nil:
		return 0, fmt.Errorf("read epoch: %w", err)
	case !ok:
		return 0, nil
	case len(val) < 8:
		return 0, fmt.Errorf("read epoch: epoch record of %d bytes", len(val))
	}
	return Epoch(binary.BigEndian.Uint64(val)), nil
}

// lastSeq returns the user's last log seq (0: none ever appended): the
// larger of the last log key, found with a reverse seek, and the stored
// high-water mark, a point read. The mark is the answer once every log key
// has expired; the seek is, for logs written without retention (no mark,
// or a stale one: those keys never expire).
func lastSeq(v kvView, user string) (Seq, error) {
	var last Seq
	it := v.iter(userPrefix(tagLog, user), true)
	it.first()
	if it.valid() {
		last = seqFromLogKey(it.key())
	}
	err := it.error()
	it.close()
	if err != nil {
		return 0, fmt.Errorf("read last log key: %w", err)
	}

	val, ok, err := v.get(hwmKey(user))
	switch {
	case err != nil:
		return 0, fmt.Errorf("read high-water mark: %w", err)
	case !ok:
		return last, nil
	case len(val) != 8:
		return 0, fmt.Errorf("read high-water mark: high-water mark of %d bytes", len(val))
	}
	return max(last, Seq(binary.BigEndian.Uint64(val))), nil
}

// rebuild discards the open transaction and writes the staged ops again
// into a new one. If that fails they fail.
func (b *Local) rebuild() {
	c := &b.chunk
	c.txn.discard()
	c.txn = nil
	if len(c.staged) == 0 {
		return
	}
	c.txn = b.kv.batch()
	for _, o := range c.staged {
		for _, m := range o.muts {
			if err := c.txn.set(m); err != nil {
				b.failStaged(fmt.Errorf("persistence: rewrite %d appends: %w", len(c.staged), err))
				return
			}
		}
	}
}

// flushIfStaged commits the chunk if it holds writes; it reports whether
// it did (so that a retry in a fresh transaction can differ).
func (b *Local) flushIfStaged() bool {
	if len(b.chunk.staged) == 0 {
		return false
	}
	b.flush()
	return true
}

// failStaged fails every staged op with err. Their users' cached states
// ran ahead of the disk: they are dropped, so the next op of such a user
// reloads what is actually committed (the pre-chunk state when the failed
// transaction left nothing, and whatever badger kept if it did), and the
// later appends that depended on the failed ones fail the seq check.
func (b *Local) failStaged(err error) {
	c := &b.chunk
	if c.txn != nil {
		c.txn.discard()
		c.txn = nil
	}
	for _, o := range c.staged {
		delete(b.users, o.user)
		o.res = err
	}
	clear(c.staged)
	c.staged = c.staged[:0]
}

// report records o's failure; its done is called at the next flush, after
// the ops submitted before it.
func (b *Local) report(o *op, err error) {
	o.res = err
	b.chunk.ops = append(b.chunk.ops, o)
}

// flush commits the open transaction (one fsync) and calls done of every op
// of the chunk in submission order.
func (b *Local) flush() {
	c := &b.chunk
	if len(c.staged) > 0 {
		err := b.commit()
		if err != nil {
			// What a failed write or fsync left on disk is unknown, and a
			// retried fsync may report success for pages the kernel has
			// already dropped (PostgreSQL's fsyncgate): never retry, never
			// ack, take no more writes. Reopening replays what is durable.
			b.log.Error("commit failed: the store takes no more writes", "appends", len(c.staged), "err", err)
			b.nCommitErrs.Add(1)
			b.fail(err)
			b.failStaged(fmt.Errorf("%w: commit %d appends: %w", ErrStoreFailed, len(c.staged), err))
		} else {
			b.guard.allocateMemtables()
			var entries uint64
			for _, o := range c.staged {
				entries += uint64(o.n)
			}
			b.nCommits.Add(1)
			b.nOps.Add(uint64(len(c.staged)))
			b.nEntries.Add(entries)
			b.lastOps.Store(int64(len(c.staged)))
			b.lastBytes.Store(c.bytes)
		}
	}
	if c.txn != nil {
		c.txn.discard()
		c.txn = nil
	}
	if c.rtxn != nil {
		c.rtxn.close()
		c.rtxn = nil
	}
	for _, o := range c.ops {
		if o.res != nil {
			b.nFailed.Add(1)
		}
		o.done(o.res)
	}
	clear(c.ops)
	clear(c.staged)
	c.ops, c.staged = c.ops[:0], c.staged[:0]
	c.bytes, c.writes = 0, 0
}

func (b *Local) commit() (err error) {
	// Pebble calls its logger's Fatalf on a failed WAL write or sync;
	// pebbleLogger panics there (pebble must not go on as if it had
	// committed). The store fails; nothing is acked.
	defer recoverPebbleFatal(&err)
	if hook := b.commitHook.Load(); hook != nil {
		if err := (*hook)(); err != nil {
			return err
		}
	}
	return b.chunk.txn.commit()
}

// evictUsers keeps the state cache within maxUsers. It runs between
// batches, when every cached state equals the committed one, so an evicted
// user is simply reloaded when next written.
func (b *Local) evictUsers() {
	if over := len(b.users) - b.maxUsers; over > 0 {
		for u := range b.users {
			delete(b.users, u)
			if over--; over == 0 {
				break
			}
		}
	}
	b.cachedUsers.Store(int64(len(b.users)))
}
