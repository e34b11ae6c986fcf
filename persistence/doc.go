// Package persistence stores each user's sync log and the state that must
// be durable with it: ownership epochs, the dedup index, the outbox of
// pending fan-outs, device records and cursors, conversation states.
//
// # Data flow
//
// User and group actors are the only writers (DESIGN.md §1, §3): an actor
// calls Activate before it serves a user, then submits one AppendRequest
// per step — new log entries plus their side effects — and acks its
// devices only after the append is durable. Readers (catch-up, history,
// compensation) call Read, FirstSeq and FirstSeqSince. Store is the
// interface; Local is the embedded backend, on badger (OpenBadger) or
// pebble (OpenPebble) through kvEngine (kv.go); postgres is the cluster
// backend; storetest is the conformance suite every backend runs.
//
// # Retention
//
// A store may keep log entries for a retention window only
// (BadgerOptions.Retention; the node passes --retention). Readers decide
// what has aged out by each entry's own TimeMS against the store's clock:
// Read skips entries with TimeMS < now - retention, FirstSeq is the first
// seq Read can still return (last seq + 1 when none), and FirstSeqSince
// never answers below FirstSeq. Actors compare a device's cursor c with
// FirstSeq: c + 1 < FirstSeq means the cursor is too old and the device
// gets the compensation window instead (SPEC.md, Sync). LookupDedup may
// still return the seq of an aged-out entry for a while; that entry then
// reads as missing.
//
// Pebble has no TTL: a sweep deletes aged-out log and dedup keys
// (pebble_sweep.go). Badger deletes aged-out data with TTLs: log (L) and dedup (I) keys
// expire an hour (ttlMargin) after the filter has hidden them, so badger's
// expiry — which upstream reports as not always reliable across restarts —
// never decides what a reader gets; it only lets compaction reclaim the
// space. Outbox, device, conversation and epoch keys never expire. Seqs
// are never reused: with retention on, every commit that writes a user's
// log also writes the user's high-water mark (H, one small key per user
// per commit), and the last seq is the larger of the last log key and
// that mark, so a user whose entries have all expired still continues at
// last + 1, also after a restart.
//
// # Concurrency
//
// Every Store method may be called concurrently from any goroutine.
// Appends of one user are applied in submission order, and a failed append
// fails the later ones of that user that depend on it through the seq
// check. The epoch check keeps each user's log single-writer: after a new
// Activate, appends carrying the older epoch fail with ErrFenced.
//
// Local runs one committer goroutine, owned by the Local value and
// stopped by Close. It is the only writer to the database (on pebble the
// retention sweep also deletes aged-out keys, which no append touches): it takes every
// queued append and activation (of all users), checks each against the
// user's cached {epoch, last seq}, writes the ones that pass into one
// badger transaction or pebble batch, commits it with one fsync, and then calls every done
// callback in submission order. So:
//
//   - done callbacks run on the committer goroutine and must not block:
//     while one runs, nothing commits. They may call Append, but not
//     AppendSync, Activate or Close (those wait for the committer). After
//     Close, Append calls done with ErrClosed on the caller's goroutine
//     before it returns.
//   - Append encodes the request on the caller's goroutine; the request
//     and its slices may be reused as soon as Append returns.
//   - Activate and AppendSync block until the commit; if ctx ends first
//     they return ctx.Err() and the operation may still take effect.
//   - An append for a user the committer has not seen since the store was
//     opened is checked against the committed epoch and last seq, loaded
//     lazily; it needs no Activate in this process. Never-activated users
//     are fenced.
//   - Reads run concurrently with the committer on badger snapshots and
//     see every commit whose done has been called.
//   - Close refuses new submissions, commits everything submitted before
//     it, waits for the committer and closes the database; later calls
//     fail with ErrClosed. On a file system without room for badger's
//     closing memtable flushes it leaves badger open (ErrNotClosed): the
//     write-ahead log holds everything committed.
//
// Disk space and write errors (diskguard.go, issue 13); the guard and the
// failed state are the same on pebble, which writes with write(2) (a full
// disk is ENOSPC there, not SIGBUS) and reports a failed WAL write or
// sync through its logger's Fatalf, which the committer recovers into
// ErrStoreFailed. Badger writes its
// WAL, tables and value log through mmapped sparse files, so a full file
// system kills the process with SIGBUS instead of returning ENOSPC. A
// guard (statfs before a batch, at most every 5 ms, and every 250 ms on
// its own goroutine, also stopped by Close) keeps BadgerOptions.DiskReserve
// free: below it every append and activation fails with ErrDiskFull
// before anything is written (the cached {epoch, last seq} stay what is
// on disk: no seq is skipped or reused), reads go on, and at the reserve
// + 25 % writes are taken again. On a tmpfs each new memtable file is
// allocated whole after the commit that made it (not on ext4 or xfs:
// unwritten extents, see newDiskGuard). Any error of a badger commit (a
// write or its sync) fails the store for good: that batch and every later
// append, activation and read fail with ErrStoreFailed, a failed commit is
// never retried (PostgreSQL's fsyncgate), Failed is closed, and the owner
// must reopen the store, which replays what is durable. WriteErr, Disk,
// Failed and Err may be called from any goroutine.
//
// # Before badger opens
//
// OpenBadger checks the directory first (preflight.go): CheckDir probes
// that it is a directory this process can write, fsync and map shared
// and writable (refusals match ErrUnusable); every file in it must open
// for writing; CheckBadger replays the MANIFEST read-only, opens every
// table it names (index and, unless IndexOnlyCheck, every block's
// checksum) in a goroutine whose panics are caught, and walks the value
// logs (refusals match ErrDamaged). Badger would otherwise panic in its
// own goroutines on a cut table, or start from a cut MANIFEST and delete
// the tables it no longer names. A *DirError names the file, the problem
// and the fix in one line. A store another process holds is not checked:
// badger's open reports its lock.
package persistence
