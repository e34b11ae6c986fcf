// Package postgres is the PostgreSQL persistence.Store, for clusters: every
// node opens the same database, so a user's log survives the loss of the
// node that served it (DESIGN.md §5). Durability and failover are the
// server's: a synchronous standby and the operator's tooling (e.g. Patroni)
// promote it; the store reconnects through a multi-host URL with
// target_session_attrs=read-write. It passes the same conformance suite
// (persistence/storetest) as the badger store.
//
// # Schema
//
// migrations/0001_init.sql, embedded and applied by Open (in one
// transaction, under an advisory lock, recorded in tandem_schema_version;
// a database at a newer version than the binary knows is refused with
// ErrSchemaTooNew). Tables are created in the connection's current schema
// (the first of its search_path), all named tandem_*:
//
//	tandem_users   (user_id)                  epoch, owner, last_seq  ownership, high-water mark
//	tandem_log     (user_id, seq)             time_ms, data           sync log; index (user_id, time_ms, seq)
//	tandem_dedup   (user_id, dedup_key)       seq, time_ms            idempotency keys
//	tandem_outbox  (user_id, seq, outbox_key) data                    pending fan-outs
//	tandem_devices (user_id, device_id)       data (NULL: none), cursor_seq
//	tandem_convs   (user_id, conv_key)        data                    conversation states
//
// plus tandem_check(ok, what), a function that fails the statement unless
// ok (see below).
//
// Every primary key starts with user_id and every statement names its
// users, so the tables could be distributed by user_id (Citus); the one
// listing across users is OutboxUsers (a paged loose index scan), and the
// sweeper pages through tandem_users. Keys and IDs are text in the "C"
// collation (bytewise order); payloads are bytea. PostgreSQL text cannot
// hold NUL: a key or ID with a NUL byte, invalid UTF-8 or over 1,024
// bytes is refused with ErrInvalidKey (the append fails alone, in
// submission order, like any refused append) and never stored altered.
//
// # Group commit and the fence
//
// Append validates and copies the request on the caller's goroutine and
// queues it. One committer goroutine cuts the queue into batches (at most
// MaxBatchRows rows and MaxBatchBytes) and hands each to a worker, with up
// to Pipeline batches in flight: while one commits, the next is sent and
// the queue accumulates the one after. A batch is one transaction, in two
// round trips:
//
//  1. BEGIN, and lock the batch's users' tandem_users rows in user_id
//     order (SELECT … ORDER BY user_id FOR UPDATE), reading epoch and last
//     seq. Batches take their locks in batch order (a batch starts once
//     the one ahead of it holds its locks), and sorted locks cannot
//     deadlock with other batches, here or on other nodes.
//  2. Check each append against its user's state in submission order: an
//     epoch other than the current one fails with persistence.ErrFenced, a
//     first seq other than last + 1 with persistence.ErrSeqGap, a rewrite
//     past the last seq with persistence.ErrNotInLog. Such an append fails
//     alone — other users of the batch are unaffected — and the same
//     user's later appends are checked against the state without it, so
//     the ones that depended on it fail the seq check.
//  3. One statement (writeSQL) writes every append that passed, as
//     multi-row unnest(array) inserts, updates and deletes, merged so that
//     each row is written once. It checks each user's epoch and last seq
//     again and moves last_seq in tandem_users, every write of the
//     statement is limited to the users that passed that check — the
//     fence is in the same statement as every insert — and the statement
//     fails unless all of them passed. COMMIT goes in the same round trip.
//  4. The done callbacks, in submission order.
//
// Activate is one statement of its own (INSERT … ON CONFLICT DO UPDATE SET
// epoch = epoch + 1 … RETURNING epoch, last_seq), outside the committer:
// it waits for the row lock of a batch writing the user, so its last seq
// includes every append committed before it, and every later append with
// the older epoch is fenced — also on another node.
//
// # Failures
//
// Nothing is retried. A batch that fails as a whole — a lost connection,
// the primary killed, a COMMIT whose outcome is unknown, CommitTimeout —
// fails every append in it that passed the check. Its users are also
// marked: their later appends with the same or an older epoch fail too,
// even ones already sent in the next batch of the pipeline, because
// whether the failed ones are durable is unknown. The actor stops on the
// failure and activates again, with a higher epoch, from what is durable.
// The pool reconnects for the next batch (to the new primary, with a
// multi-host URL).
//
// # Retention
//
// With Options.Retention, Read, FirstSeq and FirstSeqSince skip entries
// with TimeMS < Now() - Retention (Now is the injected clock); a
// background sweeper deletes them SweepGrace later, with their dedup keys,
// in pages of users and at most SweepBatch rows per statement, skipping
// rows a batch has locked. last_seq keeps the high-water mark, so seqs are
// never reused after entries are deleted, also across restarts.
//
// # Concurrency
//
// Every Store method may be called concurrently from any goroutine.
//
//   - done callbacks run on one completer goroutine, in submission order
//     per user, and must not block: while one runs no other completes.
//     They may call Append, but not AppendSync or Close (those wait for the
//     completer). After Close, Append calls done with
//     persistence.ErrClosed on the caller's goroutine before it returns.
//   - The request and its slices may be reused as soon as Append returns.
//   - Activate and AppendSync block until the commit; if ctx ends first
//     they return ctx.Err() and the operation may still take effect.
//   - Reads use their own pool connections, concurrently with the
//     committer, and see every commit whose done has been called.
//   - Close refuses new submissions, lets everything submitted be
//     committed or failed (bounded by CommitTimeout), cancels in-flight
//     reads, stops the sweeper and closes the pool; later calls fail with
//     persistence.ErrClosed. The committer, its workers, the completer and
//     the sweeper are owned by the Store and have exited when Close
//     returns.
package postgres
