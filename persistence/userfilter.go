package persistence

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
)

// userFilter answers, without a read, "may this user have an epoch
// record?" for the committer: no means the user was never activated on
// this store — its record is neither among those found when the store
// was opened nor written by an activation since — so loading its state
// reads nothing. A login storm of new users spent 9 % of its CPU (and the
// committer's one goroutine its time) on point reads that found nothing,
// more as the tables grew. Yes may be wrong (about 1 % of new users),
// never no: then the read is made as before.
//
// A chain of Bloom filters, each twice the size of the one before; only
// the last takes additions, so none is ever fuller than it was sized for.
// No pointers: the collector does not scan it. Only the committer
// goroutine uses it, after open.
type userFilter struct {
	seed  maphash.Seed
	parts []bloomPart
}

type bloomPart struct {
	bits []uint64
	mask uint64 // len(bits)·64 − 1: a power of two
	n    int    // users added
	cap  int    // users it is sized for
}

const (
	bloomBitsPerUser = 10 // ≈ 1 % false yes at capacity, with bloomProbes
	bloomProbes      = 7
	bloomMinUsers    = 1 << 16
)

func newUserFilter(expected int) *userFilter {
	f := &userFilter{seed: maphash.MakeSeed()}
	f.grow(max(2*expected, bloomMinUsers))
	return f
}

func (f *userFilter) grow(users int) {
	words := 1 << bits.Len(uint(users*bloomBitsPerUser/64))
	f.parts = append(f.parts, bloomPart{bits: make([]uint64, words), mask: uint64(words*64 - 1), cap: users})
}

// probes are the bit positions of user in a part: double hashing.
func (f *userFilter) hash(user string) (h1, h2 uint64) {
	h := maphash.String(f.seed, user)
	return h, h>>32 | h<<32 | 1
}

func (f *userFilter) add(user string) {
	p := &f.parts[len(f.parts)-1]
	if p.n >= p.cap {
		f.grow(2 * p.cap)
		p = &f.parts[len(f.parts)-1]
	}
	h1, h2 := f.hash(user)
	for i := range uint64(bloomProbes) {
		b := (h1 + i*h2) & p.mask
		p.bits[b/64] |= 1 << (b % 64)
	}
	p.n++
}

// mayHave is false only for a user never added.
func (f *userFilter) mayHave(user string) bool {
	h1, h2 := f.hash(user)
parts:
	for i := range f.parts {
		p := &f.parts[i]
		for j := range uint64(bloomProbes) {
			b := (h1 + j*h2) & p.mask
			if p.bits[b/64]&(1<<(b%64)) == 0 {
				continue parts
			}
		}
		return true
	}
	return false
}

// loadUserFilter builds the filter from every epoch record in the store.
// Call it before the committer starts: from then on the committer adds
// each activation's user as it stages it.
func (b *Local) loadUserFilter(ctx context.Context) error {
	f := newUserFilter(0) // it grows as the records come
	err := b.scan(ctx, []byte{tagEpoch}, func(rest, _ []byte) error {
		if len(rest) < 2 || int(binary.BigEndian.Uint16(rest)) != len(rest)-2 {
			return fmt.Errorf("malformed epoch key %x", rest)
		}
		f.add(string(rest[2:]))
		return nil
	})
	if err != nil {
		return fmt.Errorf("persistence: list the activated users: %w", err)
	}
	b.known = f
	return nil
}
