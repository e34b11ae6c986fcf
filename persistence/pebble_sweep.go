package persistence

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Retention on pebble. Pebble has no TTL, so the readers' time filter is
// all that hides an aged-out entry (as on badger, where the TTL only frees
// space), and sweepLoop frees the space: every sweepEvery it walks the
// users that have a high-water mark (every user whose log was written
// with retention on), deletes each one's log keys below the first entry
// that has not aged out (one range deletion) and the dedup keys that name
// a seq below the first entry that is less than ttlMargin past the
// window. Seqs stay safe: the high-water mark is never deleted.

// sweepEvery is how often the retention sweep runs. A sweep reads the
// dedup keys of every user with a high-water mark.
var sweepEvery = 10 * time.Minute

// sweepUsers is how many users one sweep batch covers.
const sweepUsers = 256

func (b *Local) sweepLoop() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stopGuard:
			return
		case <-t.C:
			if n, err := b.sweep(context.Background()); err != nil {
				b.log.Warn("retention sweep", "err", err)
			} else if n > 0 {
				b.log.Debug("retention sweep", "users", n)
			}
		}
	}
}

// sweep runs one retention sweep and returns how many users it looked at.
// A failed store is not swept.
func (b *Local) sweep(ctx context.Context) (users int, err error) {
	kv, ok := b.kv.(*pebbleKV)
	if !ok || b.retention <= 0 {
		return 0, nil
	}
	defer recoverPebbleFatal(&err)
	cutoff := b.cutoffMS()
	dedupCutoff := cutoff - ttlMargin.Milliseconds()
	from := []byte{tagHWM}
	for {
		var next []byte
		err := b.view(ctx, func(v kvView) error {
			it := v.iter([]byte{tagHWM}, false)
			defer it.close()
			batch := kv.db.NewBatch()
			defer batch.Close()
			n := 0
			for it.seek(from); it.valid() && n < sweepUsers; it.next() {
				k := it.key()
				if len(k) < 3 || len(k) != 3+int(binary.BigEndian.Uint16(k[1:3])) {
					return fmt.Errorf("malformed high-water-mark key %x", k)
				}
				user := string(k[3:])
				if err := b.sweepUser(v, batch, user, cutoff, dedupCutoff); err != nil {
					return fmt.Errorf("user %q: %w", user, err)
				}
				n++
				next = append(append(next[:0], k...), 0)
			}
			if err := it.error(); err != nil {
				return err
			}
			users += n
			if n < sweepUsers {
				next = nil
			}
			if batch.Empty() {
				return nil
			}
			return batch.Commit(pebble.NoSync)
		})
		if err != nil || next == nil {
			return users, err
		}
		from = next
	}
}

// sweepUser adds user's deletions to batch.
func (b *Local) sweepUser(v kvView, batch *pebble.Batch, user string, cutoff, dedupCutoff int64) error {
	first, err := firstSince(v, user, cutoff)
	if err != nil {
		return err
	}
	// A range deletion only where there is something below first: a range
	// tombstone per user and sweep would slow every read.
	lit := v.iter(userPrefix(tagLog, user), false)
	lit.first()
	below := lit.valid() && seqFromLogKey(lit.key()) < first
	err = lit.error()
	lit.close()
	if err != nil {
		return err
	}
	if below {
		if err := batch.DeleteRange(logKey(user, 0), logKey(user, first), nil); err != nil {
			return err
		}
	}
	dfirst, err := firstSince(v, user, dedupCutoff)
	if err != nil {
		return err
	}
	prefix := userPrefix(tagDedup, user)
	it := v.iter(prefix, false)
	defer it.close()
	for it.first(); it.valid(); it.next() {
		val, err := it.value()
		if err != nil {
			return err
		}
		if len(val) == 8 && Seq(binary.BigEndian.Uint64(val)) < dfirst {
			if err := batch.Delete(it.key(), nil); err != nil {
				return err
			}
		}
	}
	return it.error()
}
