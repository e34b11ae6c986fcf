package persistence

import (
	"bytes"
	"context"
	"errors"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleKV is kvEngine on pebble: a batch is a pebble batch committed with
// pebble.Sync (one WAL write and fdatasync), a view a pebble snapshot.
type pebbleKV struct {
	db        *pebble.DB
	sync      *pebble.WriteOptions
	maxBytes  int64
	maxWrites int
}

func (e *pebbleKV) batch() kvBatch { return &pebbleBatch{e: e, b: e.db.NewBatch()} }

func (e *pebbleKV) view() kvView { return pebbleView{e.db.NewSnapshot()} }

func (e *pebbleKV) maxBatch() (int64, int) { return e.maxBytes, e.maxWrites }

// compact compacts every key (they all start with a tag byte below 0xFF).
func (e *pebbleKV) compact() error {
	return e.db.Compact(context.Background(), []byte{0}, []byte{0xFF}, true)
}

func (e *pebbleKV) close() error { return e.db.Close() }

type pebbleBatch struct {
	e *pebbleKV
	b *pebble.Batch
}

// set ignores m.expiresAt: pebble has no TTL. Readers filter aged-out
// entries by their time, and the retention sweep deletes them.
func (b *pebbleBatch) set(m mutation) error {
	if int(b.b.Count()) >= b.e.maxWrites || int64(b.b.Len())+int64(len(m.key)+len(m.val)) > b.e.maxBytes {
		return errKVTooBig
	}
	if m.del {
		return b.b.Delete(m.key, nil)
	}
	return b.b.Set(m.key, m.val, nil)
}

func (b *pebbleBatch) commit() error { return b.b.Commit(b.e.sync) }
func (b *pebbleBatch) discard()      { _ = b.b.Close() }

type pebbleView struct{ s *pebble.Snapshot }

func (v pebbleView) get(key []byte) ([]byte, bool, error) {
	val, closer, err := v.s.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := bytes.Clone(val)
	if out == nil {
		out = []byte{}
	}
	return out, true, closer.Close()
}

func (v pebbleView) iter(prefix []byte, reverse bool) kvIter {
	it, err := v.s.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	return &pebbleIter{it: it, err: err, reverse: reverse}
}

func (v pebbleView) close() { _ = v.s.Close() }

// prefixEnd is the first key after every key that starts with p (nil: no
// such key, p is all 0xFF).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

type pebbleIter struct {
	it      *pebble.Iterator
	err     error // NewIter's
	reverse bool
	ok      bool
	seekBuf []byte
}

func (i *pebbleIter) first() {
	if i.it == nil {
		return
	}
	if i.reverse {
		i.ok = i.it.Last()
	} else {
		i.ok = i.it.First()
	}
}

func (i *pebbleIter) seek(k []byte) {
	if i.it == nil {
		return
	}
	if !i.reverse {
		i.ok = i.it.SeekGE(k)
		return
	}
	// The last key <= k is the last key < k + 0x00.
	i.seekBuf = append(append(i.seekBuf[:0], k...), 0)
	i.ok = i.it.SeekLT(i.seekBuf)
}

func (i *pebbleIter) next() {
	if i.reverse {
		i.ok = i.it.Prev()
	} else {
		i.ok = i.it.Next()
	}
}

func (i *pebbleIter) valid() bool { return i.it != nil && i.ok }
func (i *pebbleIter) key() []byte { return i.it.Key() }

func (i *pebbleIter) value() ([]byte, error) { return i.it.ValueAndErr() }

func (i *pebbleIter) error() error {
	if i.it == nil {
		return i.err
	}
	return i.it.Error()
}

func (i *pebbleIter) close() {
	if i.it != nil {
		_ = i.it.Close()
	}
}
