package persistence

import (
	"errors"

	"github.com/dgraph-io/badger/v4"
)

// badgerKV is kvEngine on badger: a batch is one read-write transaction
// (committed with one msync when SyncWrites is on), a view one read-only
// transaction.
type badgerKV struct{ db *badger.DB }

func (e badgerKV) batch() kvBatch { return badgerBatch{e.db.NewTransaction(true)} }

func (e badgerKV) view() kvView { return badgerView{e.db.NewTransaction(false)} }

func (e badgerKV) maxBatch() (int64, int) {
	return e.db.MaxBatchSize() - batchMargin, int(e.db.MaxBatchCount()) - 2
}

func (e badgerKV) compact() error { return e.db.Flatten(2) }

func (e badgerKV) close() error { return e.db.Close() }

type badgerBatch struct{ txn *badger.Txn }

// set writes m into the transaction. Several writes of one key in one
// transaction (the high-water mark of a user's appends in one batch) leave
// one write, the last.
func (b badgerBatch) set(m mutation) error {
	var err error
	switch {
	case m.del:
		err = b.txn.Delete(m.key)
	case m.expiresAt != 0:
		e := badger.NewEntry(m.key, m.val)
		e.ExpiresAt = m.expiresAt
		err = b.txn.SetEntry(e)
	default:
		err = b.txn.Set(m.key, m.val)
	}
	if errors.Is(err, badger.ErrTxnTooBig) {
		return errKVTooBig
	}
	return err
}

func (b badgerBatch) commit() error { return b.txn.Commit() }
func (b badgerBatch) discard()      { b.txn.Discard() }

type badgerView struct{ txn *badger.Txn }

func (v badgerView) get(key []byte) ([]byte, bool, error) {
	item, err := v.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	val, err := item.ValueCopy(nil)
	return val, err == nil, err
}

// iter: no value prefetching. Values are small enough to stay in the LSM
// tree (the value threshold is 1 MiB or the batch cap), where prefetching
// only adds work: a catch-up read of 1,000 entries costs about a third of
// what it did with it (bench/README.md, "Catch-up").
func (v badgerView) iter(prefix []byte, reverse bool) kvIter {
	return &badgerIter{it: v.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: reverse}),
		prefix: prefix, reverse: reverse}
}

func (v badgerView) close() { v.txn.Discard() }

type badgerIter struct {
	it      *badger.Iterator
	prefix  []byte
	reverse bool
}

func (i *badgerIter) first() {
	if !i.reverse {
		i.it.Rewind()
		return
	}
	// Past every key of the prefix: keys are at most 65,000 bytes.
	end := append(append(make([]byte, 0, len(i.prefix)+16), i.prefix...),
		0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)
	i.it.Seek(end)
}

func (i *badgerIter) seek(k []byte) { i.it.Seek(k) }
func (i *badgerIter) next()         { i.it.Next() }
func (i *badgerIter) valid() bool   { return i.it.Valid() }
func (i *badgerIter) key() []byte   { return i.it.Item().Key() }
func (i *badgerIter) error() error  { return nil }
func (i *badgerIter) close()        { i.it.Close() }

func (i *badgerIter) value() ([]byte, error) {
	var val []byte
	err := i.it.Item().Value(func(v []byte) error { val = v; return nil })
	return val, err
}
