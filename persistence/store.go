package persistence

import (
	"context"
	"errors"
	"time"
)

// Epoch is a user's ownership generation. Activate bumps it; every write
// carries the epoch its writer activated with, and a write with an older
// epoch is refused with ErrFenced. This, not cluster membership, keeps one
// user's log single-writer (DESIGN.md §6).
type Epoch uint64

// Seq is a position in one user's sync log: dense from 1, never reused —
// not even once every entry of the user has aged out of the retention
// window and the store has been reopened.
type Seq uint64

var (
	// ErrFenced: the write carried an epoch older than the user's current
	// one. The writer must stop serving the user and never ack.
	ErrFenced = errors.New("persistence: stale epoch")
	// ErrSeqGap: the first entry of an append is not last seq + 1, or the
	// entries of one append are not consecutive.
	ErrSeqGap = errors.New("persistence: non-consecutive seq")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("persistence: store closed")
	// ErrTooLarge: one append is bigger than the store accepts in a batch.
	ErrTooLarge = errors.New("persistence: append too large")
	// ErrLocked: another store (in this or another process) has the
	// directory open.
	ErrLocked = errors.New("persistence: directory locked by another store")
	// ErrNotInLog: a rewrite names a seq beyond the user's log.
	ErrNotInLog = errors.New("persistence: no such entry")
)

// Entry is one stored sync-log entry. Data is opaque to the store (the
// actors keep a marshalled wire.Entry in it).
type Entry struct {
	Seq Seq
	// TimeMS is server time in Unix milliseconds, non-decreasing within
	// one user's log. Retention counts from it: the entry ages out once
	// TimeMS < now - retention.
	TimeMS int64
	Data   []byte
}

// DedupKey indexes an entry under an idempotency key (the sender's client
// message ID, or a delivered message's server ID). With retention the key
// is kept at least as long as the entries of its append, and removed some
// time after them (see LookupDedup).
type DedupKey struct {
	Key string
	Seq Seq
}

// OutboxItem is a fan-out that is pending until the other side confirms
// it: written in the same transaction as the entry (the outbox rule,
// DESIGN.md §3), deleted by a later append's OutboxDone. Messages do not
// use items: their log entries are the pending records and a FanoutMark
// says how far they are confirmed. Items are for the rare fan-outs whose
// payload the log entry does not carry (recalls, edits, group events).
type OutboxItem struct {
	Seq  Seq    // the originating entry's seq in this user's log
	Key  string // distinguishes several fan-outs of one entry ("" if one)
	Data []byte // opaque (a marshalled actorpb.OutboxItem)
}

// OutboxRef names an outbox item to delete.
type OutboxRef struct {
	Seq Seq
	Key string
}

// Device is a stored device record: the opaque record and the device's
// cursor, kept separately so cursor flushes do not rewrite the record.
type Device struct {
	DeviceID string
	Data     []byte // opaque (a marshalled actorpb.DeviceRecord); nil = keep
	Cursor   Seq
}

// Conv is the stored state of one conversation of one user.
type Conv struct {
	Key  string // conversation key, e.g. "d:peer" or "g:group"
	Data []byte // opaque (actors' conversation state)
}

// AppendRequest is everything one user's actor writes in one step: all of
// it is durable together, or none of it is.
type AppendRequest struct {
	User    string
	Epoch   Epoch
	Entries []Entry // consecutive; the first is the log's last seq + 1. May be empty.
	// Rewrites replace the stored data (and time) of entries already in
	// the log (seq <= the last seq before this request): recall erases a
	// message's content, an edit replaces it. The old bytes are gone from
	// reads at once and from the files once the store compacts.
	Rewrites []Entry

	Dedup      []DedupKey
	OutboxPut  []OutboxItem
	OutboxDone []OutboxRef
	// Fanout, if not nil, replaces the user's fan-out mark.
	Fanout  *FanoutMark
	Devices []Device // upserts; Data nil keeps the stored record and sets only Cursor
	Convs   []Conv   // upserts
}

// Store is what the user and group actors need from storage. Every method
// may be called concurrently. Appends of one user are applied in the order
// they were submitted.
//
// A store may keep log entries for a retention window only (set when it is
// opened, e.g. BadgerOptions.Retention; none: entries are kept forever).
// An entry whose TimeMS is older than now - retention has aged out: Read
// no longer returns it, FirstSeq moves past it, and the store may delete
// it (and the dedup keys of its append) at any time after. The retention
// applies to the log only: epochs, outbox items, devices and conversation
// states are kept until overwritten or deleted. Seqs go on from the last
// one ever appended, aged out or not.
type Store interface {
	// Activate makes owner the user's writer: it bumps and returns the
	// user's epoch and returns the last seq ever appended to the log (0
	// if none), also when those entries have aged out. A write with an
	// older epoch fails with ErrFenced from then on.
	Activate(ctx context.Context, user, owner string) (Epoch, Seq, error)

	// Epoch reads the user's current epoch (0: never activated) without
	// bumping it: a read, which fences nothing. Load tools and checks use
	// it to see that an activation is durable.
	Epoch(ctx context.Context, user string) (Epoch, error)

	// Append submits req for group commit and returns at once; done is
	// called exactly once, after req is durable (nil) or has failed: from
	// the committer goroutine, or before Append returns if the store is
	// closed (ErrClosed). done must not block. The store does not keep req
	// after Append returns. Completions of one user come in submission
	// order. A failure also fails every later append of the same user that
	// depended on it (the seq check). An epoch other than the user's current
	// one fails with ErrFenced.
	Append(req AppendRequest, done func(error))

	// AppendSync submits req and waits for it to be durable.
	AppendSync(ctx context.Context, req AppendRequest) error

	// Read returns up to limit entries with seq > after, in seq order,
	// skipping entries that have aged out. So the first entry returned
	// may be later than after + 1 (a cursor older than the retention
	// window); compare the cursor with FirstSeq to tell.
	Read(ctx context.Context, user string, after Seq, limit int) ([]Entry, error)

	// FirstSeq returns the seq of the first entry Read can still return
	// (the oldest entry that has not aged out), or last seq + 1 if there
	// is none — no entry, or all aged out. last is as Activate returns
	// it. A reader whose cursor c has c + 1 < FirstSeq has missed entries
	// that are gone ("cursor too old"). FirstSeq does not move backward
	// (entry times are non-decreasing and so is the store's clock).
	FirstSeq(ctx context.Context, user string) (Seq, error)

	// FirstSeqSince returns the seq of the first entry with TimeMS >= t
	// that has not aged out, or last seq + 1 if there is none. It is
	// never less than FirstSeq: for a t older than the retention window
	// it returns FirstSeq.
	FirstSeqSince(ctx context.Context, user string, t time.Time) (Seq, error)

	// LookupDedup returns the seq indexed under key, if any. With
	// retention a key may outlive its entry for a while (the badger store
	// keeps it up to an hour past its append's window): the seq returned
	// is then below FirstSeq and Read no longer returns that entry. The
	// caller must cope with that — the key is still a duplicate, of a
	// message that has aged out. Once the key is gone too, a late retry
	// of that message is not recognised.
	LookupDedup(ctx context.Context, user, key string) (Seq, bool, error)

	// Outbox returns the user's pending outbox items in seq order. A
	// pending fan-out mark comes first, as the item of seq 0 with the
	// empty key (IsFanoutMark): skip it, or use FanoutMark.
	Outbox(ctx context.Context, user string) ([]OutboxItem, error)

	// FanoutMark returns the user's fan-out mark (the zero mark if none
	// was written or the last one written was not Pending).
	FanoutMark(ctx context.Context, user string) (FanoutMark, error)

	// OutboxUsers lists users with pending outbox items or a pending
	// fan-out mark (at most limit,
	// in the store's own stable order, starting after the user named after;
	// "" starts at the beginning), so a node can re-drive them after a crash without
	// waiting for those users to come back.
	OutboxUsers(ctx context.Context, after string, limit int) ([]string, error)

	// Devices returns the user's stored device records.
	Devices(ctx context.Context, user string) ([]Device, error)

	// Convs returns the user's stored conversation states.
	Convs(ctx context.Context, user string) ([]Conv, error)

	Close() error
}
