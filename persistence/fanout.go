package persistence

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// FanoutMark is a user's (or group's) fan-out watermark (DESIGN.md §3,
// docs/adr/0005-fan-out-watermark.md): the log entries that fan out — a
// one-to-one message the user sent, a group's message — are themselves
// the "fan-out pending" records, and the mark says how far they are
// confirmed. While Pending, every fan-out of an entry with seq <= Done is
// confirmed and later ones may not be; the user is listed by OutboxUsers
// so a node re-drives it after a crash. Not Pending: nothing is
// outstanding (Done is then not kept).
//
// The writer keeps the stored mark at or behind the truth: Done may lag
// (a stale mark re-drives entries already delivered, which recipients
// de-duplicate by message ID) but never run ahead, and Pending is set in
// the same append as the first entry it covers.
type FanoutMark struct {
	Done    Seq
	Pending bool
}

// fanoutRef is where both stores keep a pending mark: the outbox item of
// seq 0 with the empty key (no fan-out item uses it: an item's key names
// its recipient and message). Keeping it in the outbox range makes
// OutboxUsers list users with pending fan-outs at no extra cost. Outbox
// returns it like an item; callers skip it (IsFanoutMark).
var fanoutRef = OutboxRef{}

// IsFanoutMark reports whether an item Outbox returned is the fan-out mark
// rather than a fan-out item.
func IsFanoutMark(seq Seq, key string) bool { return seq == fanoutRef.Seq && key == fanoutRef.Key }

// errReservedOutbox: an outbox item named like the fan-out mark.
var errReservedOutbox = errors.New("persistence: outbox item of seq 0 with an empty key is reserved for the fan-out mark")

// WithFanoutMark returns req with req.Fanout turned into the outbox write
// that stores it (a put of the mark, or its delete), for stores that keep
// the mark in their outbox range. req's slices are not modified.
func WithFanoutMark(req AppendRequest) (AppendRequest, error) {
	for _, o := range req.OutboxPut {
		if IsFanoutMark(o.Seq, o.Key) {
			return req, errReservedOutbox
		}
	}
	for _, o := range req.OutboxDone {
		if IsFanoutMark(o.Seq, o.Key) {
			return req, errReservedOutbox
		}
	}
	if req.Fanout == nil {
		return req, nil
	}
	m := *req.Fanout
	req.Fanout = nil
	if m.Pending {
		req.OutboxPut = append(req.OutboxPut[:len(req.OutboxPut):len(req.OutboxPut)],
			OutboxItem{Seq: fanoutRef.Seq, Key: fanoutRef.Key, Data: binary.BigEndian.AppendUint64(nil, uint64(m.Done))})
	} else {
		req.OutboxDone = append(req.OutboxDone[:len(req.OutboxDone):len(req.OutboxDone)], fanoutRef)
	}
	return req, nil
}

// DecodeFanoutMark decodes the stored value of a pending mark.
func DecodeFanoutMark(data []byte) (FanoutMark, error) {
	if len(data) != 8 {
		return FanoutMark{}, fmt.Errorf("persistence: fan-out mark of %d bytes, want 8", len(data))
	}
	return FanoutMark{Done: Seq(binary.BigEndian.Uint64(data)), Pending: true}, nil
}

// FanoutMark implements Store.
func (b *Local) FanoutMark(ctx context.Context, user string) (FanoutMark, error) {
	if err := checkUser(user); err != nil {
		return FanoutMark{}, err
	}
	var m FanoutMark
	err := b.view(ctx, func(v kvView) error {
		val, ok, err := v.get(appendOutboxKey(nil, user, fanoutRef.Seq, fanoutRef.Key))
		if err != nil || !ok {
			return err
		}
		m, err = DecodeFanoutMark(val)
		return err
	})
	if err != nil {
		return FanoutMark{}, fmt.Errorf("persistence: read fan-out mark of %q: %w", user, err)
	}
	return m, nil
}
