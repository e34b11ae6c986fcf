package persistence

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// Read implements Store. limit <= 0 returns no entries. The returned
// entries and their Data belong to the caller. With retention, entries
// with TimeMS before the cutoff are skipped whether or not badger has
// expired them yet; a cursor behind the retained part starts with a binary
// search for it rather than a walk over aged-out entries.
func (b *Local) Read(ctx context.Context, user string, after Seq, limit int) ([]Entry, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	if limit <= 0 || after == math.MaxUint64 {
		return nil, nil
	}
	cutoff := b.cutoffMS()
	var out []Entry
	err := b.view(ctx, func(v kvView) error {
		it := v.iter(userPrefix(tagLog, user), false)
		defer it.close()
		it.seek(logKey(user, after+1))
		if cutoff != math.MinInt64 && it.valid() {
			val, err := it.value()
			var ts int64
			if err == nil {
				ts, err = decodeTime(val)
			}
			if err != nil {
				return fmt.Errorf("seq %d: %w", seqFromLogKey(it.key()), err)
			}
			if ts < cutoff {
				first, err := firstSince(v, user, cutoff)
				if err != nil {
					return err
				}
				if first > after+1 {
					it.seek(logKey(user, first))
				}
			}
		}
		for ; it.valid() && len(out) < limit; it.next() {
			e := Entry{Seq: seqFromLogKey(it.key())}
			val, err := it.value()
			if err == nil {
				e.TimeMS, e.Data, err = decodeLogValue(val)
			}
			if err != nil {
				return fmt.Errorf("seq %d: %w", e.Seq, err)
			}
			// Times are non-decreasing, so after the seek this is only a
			// guard (e.g. a rewrite that moved an entry's time back).
			if e.TimeMS < cutoff {
				continue
			}
			out = append(out, e)
		}
		return it.error()
	})
	if err != nil {
		return nil, fmt.Errorf("persistence: read log of %q after %d: %w", user, after, err)
	}
	return out, nil
}

func decodeLogValue(v []byte) (timeMS int64, data []byte, err error) {
	if len(v) < 8 {
		return 0, nil, fmt.Errorf("log value of %d bytes", len(v))
	}
	timeMS = int64(binary.BigEndian.Uint64(v))
	if len(v) > 8 {
		data = append([]byte(nil), v[8:]...)
	}
	return timeMS, data, nil
}

// FirstSeqSince implements Store: firstSince for the later of t and the
// retention cutoff.
func (b *Local) FirstSeqSince(ctx context.Context, user string, t time.Time) (Seq, error) {
	if err := checkUser(user); err != nil {
		return 0, err
	}
	// Entry time is whole milliseconds: TimeMS >= t ⇔ TimeMS >= ceil(t).
	ms := max(ceilMS(t), b.cutoffMS())
	var res Seq
	err := b.view(ctx, func(v kvView) error {
		var err error
		res, err = firstSince(v, user, ms)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("persistence: first seq of %q since %v: %w", user, t, err)
	}
	return res, nil
}

// FirstSeq implements Store: firstSince for the retention cutoff, the
// first stored entry without retention.
func (b *Local) FirstSeq(ctx context.Context, user string) (Seq, error) {
	if err := checkUser(user); err != nil {
		return 0, err
	}
	ms := b.cutoffMS()
	var res Seq
	err := b.view(ctx, func(v kvView) error {
		var err error
		res, err = firstSince(v, user, ms)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("persistence: first retained seq of %q: %w", user, err)
	}
	return res, nil
}

// firstSince returns the seq of the first entry with TimeMS >= ms, or the
// last seq + 1 (high-water mark included) if there is none: a binary
// search over the log by seek, as TimeMS is non-decreasing along it. The
// log may start after seq 1 (once expired); each probe takes the first
// entry at or after its seq.
func firstSince(v kvView, user string, ms int64) (Seq, error) {
	last, err := lastSeq(v, user)
	if err != nil {
		return 0, err
	}
	it := v.iter(userPrefix(tagLog, user), false)
	defer it.close()
	// probe returns the first entry with seq >= s (ok false: none).
	probe := func(s Seq) (Seq, int64, bool, error) {
		it.seek(logKey(user, s))
		if !it.valid() {
			return 0, 0, false, it.error()
		}
		val, err := it.value()
		var ts int64
		if err == nil {
			ts, err = decodeTime(val)
		}
		return seqFromLogKey(it.key()), ts, true, err
	}
	first, _, ok, err := probe(0)
	if err != nil || !ok {
		return last + 1, err
	}
	// Smallest x in [first, last+1] whose first entry at or after x has
	// TimeMS >= ms (x = last+1 always qualifies: there is none).
	lo, hi := first, last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		_, ts, ok, err := probe(mid)
		if err != nil {
			return 0, err
		}
		if !ok || ts >= ms {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo <= last {
		s, _, ok, err := probe(lo)
		if err != nil {
			return 0, err
		}
		if ok {
			return s, nil
		}
	}
	return last + 1, nil
}

func decodeTime(v []byte) (int64, error) {
	if len(v) < 8 {
		return 0, fmt.Errorf("log value of %d bytes", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// LookupDedup implements Store. With retention a key is found until its
// TTL ends, ttlMargin past the retention window of its append, so it may
// name an entry Read no longer returns.
func (b *Local) LookupDedup(ctx context.Context, user, key string) (Seq, bool, error) {
	if err := checkUser(user); err != nil {
		return 0, false, err
	}
	var seq Seq
	var found bool
	err := b.view(ctx, func(v kvView) error {
		val, ok, err := v.get(dedupKey(user, key))
		if err != nil || !ok {
			return err
		}
		if len(val) != 8 {
			return fmt.Errorf("dedup value of %d bytes", len(val))
		}
		seq, found = Seq(binary.BigEndian.Uint64(val)), true
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("persistence: look up dedup key of %q: %w", user, err)
	}
	return seq, found, nil
}

// scan calls fn with the part of each key after prefix and a copy of its
// value, in key order.
func (b *Local) scan(ctx context.Context, prefix []byte, fn func(rest, val []byte) error) error {
	return b.view(ctx, func(v kvView) error {
		it := v.iter(prefix, false)
		defer it.close()
		for it.first(); it.valid(); it.next() {
			val, err := it.value()
			if err != nil {
				return err
			}
			if err := fn(it.key()[len(prefix):], bytes.Clone(val)); err != nil {
				return err
			}
		}
		return it.error()
	})
}

// Outbox implements Store: items in seq order, then key order.
func (b *Local) Outbox(ctx context.Context, user string) ([]OutboxItem, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	var out []OutboxItem
	err := b.scan(ctx, userPrefix(tagOutbox, user), func(rest, val []byte) error {
		if len(rest) < 8 {
			return fmt.Errorf("outbox key of %d bytes after the prefix", len(rest))
		}
		out = append(out, OutboxItem{
			Seq:  Seq(binary.BigEndian.Uint64(rest)),
			Key:  string(rest[8:]),
			Data: nilIfEmpty(val),
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("persistence: read outbox of %q: %w", user, err)
	}
	return out, nil
}

// Epoch implements Store: the committed epoch record, 0 if there is none.
func (b *Local) Epoch(ctx context.Context, user string) (Epoch, error) {
	if err := checkUser(user); err != nil {
		return 0, err
	}
	var e Epoch
	err := b.view(ctx, func(v kvView) (err error) {
		e, err = readEpoch(v, user)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("persistence: %q: %w", user, err)
	}
	return e, nil
}

// Devices implements Store: in device ID order. A device whose record was
// never stored but whose cursor was is returned with nil Data.
func (b *Local) Devices(ctx context.Context, user string) ([]Device, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	var out []Device
	err := b.scan(ctx, userPrefix(tagDevice, user), func(rest, val []byte) error {
		id, kind, ok := parseDeviceKey(rest)
		if !ok {
			return fmt.Errorf("malformed device key %x", rest)
		}
		// The record ('c' < 'r') follows the cursor of the same device.
		if len(out) == 0 || out[len(out)-1].DeviceID != id {
			out = append(out, Device{DeviceID: id})
		}
		d := &out[len(out)-1]
		switch kind {
		case deviceRecord:
			if val == nil {
				val = []byte{} // a stored record is never nil
			}
			d.Data = val
		case deviceCursor:
			if len(val) != 8 {
				return fmt.Errorf("cursor of device %q has %d bytes", id, len(val))
			}
			d.Cursor = Seq(binary.BigEndian.Uint64(val))
		default:
			return fmt.Errorf("device key of kind %q", kind)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("persistence: read devices of %q: %w", user, err)
	}
	return out, nil
}

// Convs implements Store: in conversation key order.
func (b *Local) Convs(ctx context.Context, user string) ([]Conv, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	var out []Conv
	err := b.scan(ctx, userPrefix(tagConv, user), func(rest, val []byte) error {
		out = append(out, Conv{Key: string(rest), Data: nilIfEmpty(val)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("persistence: read conversations of %q: %w", user, err)
	}
	return out, nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// OutboxUsers implements Store: the users with at least one pending outbox
// item, in key order, at most limit of them after the user named after ("" to
// start). Key-only iteration that skips over each user's items.
func (b *Local) OutboxUsers(ctx context.Context, after string, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []string
	err := b.view(ctx, func(v kvView) error {
		it := v.iter([]byte{tagOutbox}, false)
		defer it.close()
		start := []byte{tagOutbox}
		if after != "" {
			start = append(userPrefix(tagOutbox, after), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)
		}
		for it.seek(start); it.valid() && len(out) < limit; {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := it.key()
			if len(k) < 3 {
				return fmt.Errorf("malformed outbox key %x", k)
			}
			n := int(binary.BigEndian.Uint16(k[1:3]))
			if len(k) < 3+n {
				return fmt.Errorf("malformed outbox key %x", k)
			}
			user := string(k[3 : 3+n])
			out = append(out, user)
			// Past every key of this user: its seqs are 8 bytes of at most 0xFF.
			it.seek(append(userPrefix(tagOutbox, user), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))
		}
		return it.error()
	})
	if err != nil {
		return nil, fmt.Errorf("persistence: list users with pending outbox: %w", err)
	}
	return out, nil
}
