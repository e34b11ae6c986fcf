package persistence

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleKV is kvEngine on pebble: a batch is a pebble batch committed with
// pebble.Sync (one WAL write and fdatasync), a view a pebble snapshot.
type pebbleKV struct {
	db        *pebble.DB
	sync      *pebble.WriteOptions
	maxBytes  int64
	maxWrites int
	// memCap bounds a batch's memtable footprint (as pebble estimates it:
	// key, value and a skiplist node per write) below pebble's large-batch
	// threshold, half a memtable: a batch above it is not applied to the
	// memtable but queued as a flushable of its own — sorted, and flushed
	// to level 0 at once with a memtable rotation — which under a burst of
	// small writes made many small L0 tables.
	memCap uint64
	// spare is the last committed batch, reset: its buffer is reused
	// (growing a fresh batch to several MiB copied it ~10 times).
	spare atomic.Pointer[pebble.Batch]
}

// pebbleNodeOverhead is what pebble adds to a write's key and value in its
// memtable estimate (a skiplist node of the maximum height, the key's
// trailer, padding).
const pebbleNodeOverhead = 200

// pebbleMemCap is memCap for a memtable size.
func pebbleMemCap(memTableSize int64) uint64 { return uint64(memTableSize) * 7 / 16 }

func (e *pebbleKV) batch() kvBatch {
	b := e.spare.Swap(nil)
	if b == nil {
		b = e.db.NewBatch(pebble.WithMaxRetainedSizeBytes(int(e.maxBytes) + 1<<20))
	}
	return &pebbleBatch{e: e, b: b}
}

func (e *pebbleKV) view() kvView { return pebbleView{e.db.NewSnapshot()} }

func (e *pebbleKV) maxBatch() (int64, int) { return e.maxBytes, e.maxWrites }

// compact compacts every key (they all start with a tag byte below 0xFF).
func (e *pebbleKV) compact() error {
	return e.db.Compact(context.Background(), []byte{0}, []byte{0xFF}, true)
}

func (e *pebbleKV) close() error {
	if b := e.spare.Swap(nil); b != nil {
		_ = b.Close()
	}
	return e.db.Close()
}

type pebbleBatch struct {
	e      *pebbleKV
	b      *pebble.Batch
	mem    uint64 // memtable footprint, as pebble estimates it
	failed bool   // a commit failed (or panicked): never reused
}

// set ignores m.expiresAt: pebble has no TTL. Readers filter aged-out
// entries by their time, and the retention sweep deletes them.
func (b *pebbleBatch) set(m mutation) error {
	mem := uint64(len(m.key) + len(m.val) + pebbleNodeOverhead)
	if int(b.b.Count()) >= b.e.maxWrites || int64(b.b.Len())+int64(len(m.key)+len(m.val)) > b.e.maxBytes || b.mem+mem > b.e.memCap {
		return errKVTooBig
	}
	b.mem += mem
	if m.del {
		return b.b.Delete(m.key, nil)
	}
	return b.b.Set(m.key, m.val, nil)
}

func (b *pebbleBatch) commit() error {
	b.failed = true // until Commit returns without error or panic
	err := b.b.Commit(b.e.sync)
	b.failed = err != nil
	return err
}

// discard keeps a committed or unused batch's buffer for the next batch.
// (Committed means applied to the memtable and written to the WAL: the
// buffer is free. memCap keeps every batch out of pebble's flushable
// path, where the memtable queue would keep referencing it.)
func (b *pebbleBatch) discard() {
	if b.failed {
		_ = b.b.Close()
		return
	}
	b.b.Reset()
	if old := b.e.spare.Swap(b.b); old != nil {
		_ = old.Close()
	}
}

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
