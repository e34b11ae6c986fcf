package client

import (
	"slices"
	"testing"

	"github.com/tandem-im/tandem/proto/wire"
)

func entries(seqs ...uint64) []*wire.Entry {
	out := make([]*wire.Entry, len(seqs))
	for i, s := range seqs {
		out[i] = &wire.Entry{Seq: s}
	}
	return out
}

func seqsOf(es []*wire.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.GetSeq()
	}
	return out
}

func TestSeqBuffer(t *testing.T) {
	type step struct {
		add     []uint64
		ready   []uint64
		dups    int
		cursor  uint64
		gap     bool
		maxSeen uint64
	}
	tests := []struct {
		name    string
		base    *uint64
		maxHeld int
		steps   []step
	}{
		{
			name: "in order",
			base: new(uint64(0)),
			steps: []step{
				{add: []uint64{1, 2, 3}, ready: []uint64{1, 2, 3}, cursor: 3, maxSeen: 3},
			},
		},
		{
			name: "duplicates and old seqs dropped",
			base: new(uint64(5)),
			steps: []step{
				{add: []uint64{6, 6, 3, 5}, ready: []uint64{6}, dups: 3, cursor: 6, maxSeen: 6},
				{add: []uint64{6}, dups: 1, cursor: 6, maxSeen: 6},
			},
		},
		{
			name: "gap held then filled",
			base: new(uint64(0)),
			steps: []step{
				{add: []uint64{1, 4, 5, 4}, ready: []uint64{1}, dups: 1, cursor: 1, gap: true, maxSeen: 5},
				{add: []uint64{3}, cursor: 1, gap: true, maxSeen: 5},
				{add: []uint64{2, 3}, ready: []uint64{2, 3, 4, 5}, dups: 1, cursor: 5, maxSeen: 5},
			},
		},
		{
			name: "unbased takes the lowest seq as start",
			steps: []step{
				{add: []uint64{9, 7, 8}, ready: []uint64{7, 8, 9}, cursor: 9, maxSeen: 9},
			},
		},
		{
			name:    "held overflow is refetched, not lost",
			base:    new(uint64(0)),
			maxHeld: 1,
			steps: []step{
				{add: []uint64{3, 4}, cursor: 0, gap: true, maxSeen: 4},
				{add: []uint64{1, 2}, ready: []uint64{1, 2, 3}, cursor: 3, gap: true, maxSeen: 4},
				{add: []uint64{4}, ready: []uint64{4}, cursor: 4, maxSeen: 4},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			held := tt.maxHeld
			if held == 0 {
				held = 100
			}
			b := newSeqBuffer(held)
			if tt.base != nil {
				b.setBase(*tt.base)
			}
			for i, st := range tt.steps {
				ready, dups, _ := b.add(entries(st.add...), nil)
				if got := seqsOf(ready); !slices.Equal(got, st.ready) && (len(got) != 0 || len(st.ready) != 0) {
					t.Fatalf("step %d: ready %v, want %v", i, got, st.ready)
				}
				if dups != st.dups || b.cursor != st.cursor || b.gap() != st.gap || b.maxSeen != st.maxSeen {
					t.Fatalf("step %d: dups %d cursor %d gap %v maxSeen %d; want %d %d %v %d",
						i, dups, b.cursor, b.gap(), b.maxSeen, st.dups, st.cursor, st.gap, st.maxSeen)
				}
			}
		})
	}
}

func TestSeqBufferSawAndBase(t *testing.T) {
	b := newSeqBuffer(100)
	b.saw(10) // not based: means nothing yet
	if b.gap() {
		t.Fatal("gap before a base")
	}
	b.setBase(4)
	b.saw(6)
	if !b.gap() {
		t.Fatal("last_seq beyond the cursor is a gap")
	}
	ready, _, _ := b.add(entries(5, 6), nil)
	if len(ready) != 2 || b.gap() {
		t.Fatalf("ready %v gap %v", seqsOf(ready), b.gap())
	}
	b.add(entries(9), nil)
	b.setBase(2) // compensation moved the cursor back: held entries above stay
	if b.cursor != 2 || b.maxSeen != 9 || len(b.held) != 1 {
		t.Fatalf("after setBase(2): cursor %d maxSeen %d held %d", b.cursor, b.maxSeen, len(b.held))
	}
	b.reset()
	if b.gap() || len(b.held) != 0 {
		t.Fatal("reset kept a gap")
	}
}

func TestRing(t *testing.T) {
	r := newRing[int](3)
	r.push(1, 2)
	if got, next := r.since(0); !slices.Equal(got, []int{1, 2}) || next != 2 {
		t.Fatalf("since(0) = %v %d", got, next)
	}
	r.push(3, 4, 5)
	if got, next := r.since(0); !slices.Equal(got, []int{3, 4, 5}) || next != 5 {
		t.Fatalf("since(0) = %v %d", got, next)
	}
	if got, _ := r.since(4); !slices.Equal(got, []int{5}) {
		t.Fatalf("since(4) = %v", got)
	}
	none := newRing[int](-1)
	none.push(1, 2)
	if got, next := none.since(0); len(got) != 0 || next != 2 {
		t.Fatalf("keep-none ring since(0) = %v %d", got, next)
	}
}
