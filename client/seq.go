package client

import (
	"github.com/tandem-im/tandem/proto/wire"
)

// seqBuffer puts entries of the user's sync log back into seq order. It is
// pure (no I/O, no locking): the Client feeds it what arrives from pushes,
// catch-up pages, gap pulls and its own send acks, and delivers what it
// returns.
//
// cursor is the highest seq accepted contiguously. Entries at or below it
// are duplicates; entries above cursor+1 are held until the gap before
// them is filled. maxSeen is the highest seq known to exist; while it is
// above cursor there is a gap to pull.
type seqBuffer struct {
	cursor  uint64
	based   bool // cursor is meaningful; false: the first entry sets it
	maxSeen uint64
	held    map[uint64]*wire.Entry
	maxHeld int // hold at most this many; the rest is pulled again later
}

func newSeqBuffer(maxHeld int) *seqBuffer {
	return &seqBuffer{held: make(map[uint64]*wire.Entry), maxHeld: maxHeld}
}

// setBase makes cursor the new contiguous position, forgetting held
// entries at or below it. It may move the cursor backwards (the server
// answered a login with a compensation window).
func (b *seqBuffer) setBase(cursor uint64) {
	b.cursor = cursor
	b.based = true
	b.maxSeen = cursor
	for s := range b.held {
		if s <= cursor {
			delete(b.held, s)
		} else {
			b.maxSeen = max(b.maxSeen, s)
		}
	}
}

// unbase forgets the cursor: the next entries set it.
func (b *seqBuffer) unbase() {
	b.based = false
	b.cursor, b.maxSeen = 0, 0
	clear(b.held)
}

// reset forgets held entries and what they implied (a new connection
// catches up from the cursor again).
func (b *seqBuffer) reset() {
	clear(b.held)
	b.maxSeen = b.cursor
}

// saw records that entries up to seq exist (a page's last_seq).
func (b *seqBuffer) saw(seq uint64) {
	if b.based && seq > b.maxSeen {
		b.maxSeen = seq
	}
}

// gap reports whether entries between cursor and maxSeen are missing.
func (b *seqBuffer) gap() bool { return b.based && b.maxSeen > b.cursor }

// add accepts es in any order and appends to ready, in seq order, every
// entry that is now contiguous with the cursor. dups counts entries that
// were already accepted or held. Entries with seq 0 are invalid and
// counted as dropped.
func (b *seqBuffer) add(es []*wire.Entry, ready []*wire.Entry) (_ []*wire.Entry, dups, dropped int) {
	if !b.based {
		lowest := uint64(0)
		for _, e := range es {
			if s := e.GetSeq(); s != 0 && (lowest == 0 || s < lowest) {
				lowest = s
			}
		}
		if lowest == 0 {
			return ready, 0, len(es)
		}
		b.setBase(lowest - 1)
	}
	for _, e := range es {
		s := e.GetSeq()
		switch {
		case s == 0:
			dropped++
			continue
		case s <= b.cursor:
			dups++
			continue
		}
		b.maxSeen = max(b.maxSeen, s)
		if s == b.cursor+1 {
			ready = append(ready, e)
			b.cursor = s
			ready = b.drain(ready)
			continue
		}
		if _, ok := b.held[s]; ok {
			dups++
			continue
		}
		if len(b.held) >= b.maxHeld {
			// maxSeen still covers it: a gap pull fetches it again.
			dropped++
			continue
		}
		b.held[s] = e
	}
	return ready, dups, dropped
}

func (b *seqBuffer) drain(ready []*wire.Entry) []*wire.Entry {
	for {
		e, ok := b.held[b.cursor+1]
		if !ok {
			return ready
		}
		delete(b.held, b.cursor+1)
		ready = append(ready, e)
		b.cursor++
	}
}
