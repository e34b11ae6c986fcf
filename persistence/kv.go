package persistence

import "errors"

// The local store (Local) keeps its keys in an embedded ordered key-value
// engine: badger (OpenBadger) or pebble (OpenPebble). The committer, the
// key layout and every read are the same on both; kvEngine is the little
// they need from the engine.

// kvEngine is an open engine. Any goroutine may call it.
type kvEngine interface {
	// batch starts a write batch; only the committer writes.
	batch() kvBatch
	// view returns a consistent read-only snapshot; close it when done.
	view() kvView
	// maxBatch is the most bytes and key writes one batch may hold.
	maxBatch() (bytes int64, writes int)
	// compact rewrites the whole key space, dropping versions no reader
	// sees (overwritten and deleted values, expired entries).
	compact() error
	close() error
}

// kvBatch collects writes that become durable together.
type kvBatch interface {
	// set stages m; errKVTooBig when the batch cannot hold it (the batch
	// then holds an unknown part of m: discard it).
	set(m mutation) error
	// commit writes the batch and syncs it to stable storage.
	commit() error
	discard()
}

// kvView is a read-only snapshot.
type kvView interface {
	// get returns a copy of key's value (ok false: no such key).
	get(key []byte) (val []byte, ok bool, err error)
	// iter iterates over the keys that start with prefix, backward if
	// reverse. It starts unpositioned: call first or seek.
	iter(prefix []byte, reverse bool) kvIter
	close()
}

// kvIter walks the keys of one prefix. key and value are valid until the
// next move.
type kvIter interface {
	// first moves to the first key of the prefix (the last if reverse).
	first()
	// seek moves to the first key >= k (reverse: the last key <= k).
	seek(k []byte)
	next()
	valid() bool
	key() []byte
	value() ([]byte, error)
	// error is what ended the iteration early, if anything did.
	error() error
	close()
}

// errKVTooBig: the batch cannot hold one more write.
var errKVTooBig = errors.New("persistence: batch too big")
