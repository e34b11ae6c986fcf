package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/tandem-im/tandem/persistence"
)

func fanoutMark(t *testing.T, s persistence.Store, user string) persistence.FanoutMark {
	t.Helper()
	m, err := s.FanoutMark(ctxT(t), user)
	if err != nil {
		t.Fatalf("FanoutMark(%q): %v", user, err)
	}
	return m
}

func outboxUsers(t *testing.T, s persistence.Store) []string {
	t.Helper()
	var got []string
	after := ""
	for {
		us, err := s.OutboxUsers(ctxT(t), after, 100)
		if err != nil {
			t.Fatalf("OutboxUsers: %v", err)
		}
		if len(us) == 0 {
			return got
		}
		got = append(got, us...)
		after = us[len(us)-1]
	}
}

// testFanoutMark: the fan-out mark is written with the append that carries
// it (atomically with its entries), lists the user in OutboxUsers while
// pending, is fenced like every write, survives a reopen, and is gone
// once written not pending.
func testFanoutMark(t *testing.T, h Harness) {
	s := h.Open(t)
	e, _ := activate(t, s, "u")
	activate(t, s, "quiet")
	if m := fanoutMark(t, s, "u"); m != (persistence.FanoutMark{}) {
		t.Fatalf("mark of a fresh user = %+v, want the zero mark", m)
	}
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 1, 2),
		Fanout: &persistence.FanoutMark{Done: 0, Pending: true}})
	if m := fanoutMark(t, s, "u"); m != (persistence.FanoutMark{Done: 0, Pending: true}) {
		t.Fatalf("mark = %+v, want pending after 0", m)
	}
	if got := outboxUsers(t, s); !slices.Equal(got, []string{"u"}) {
		t.Fatalf("OutboxUsers = %v, want [u]: a pending mark lists its user", got)
	}
	items, err := s.Outbox(ctxT(t), "u")
	if err != nil || len(items) != 1 || !persistence.IsFanoutMark(items[0].Seq, items[0].Key) {
		t.Fatalf("Outbox = %+v, %v; want only the mark", items, err)
	}

	// The mark moves with later appends, with or without entries; items
	// and the mark coexist.
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 3, 1),
		OutboxPut: []persistence.OutboxItem{{Seq: 3, Key: "bob/r1", Data: []byte("recall")}}})
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e, Fanout: &persistence.FanoutMark{Done: 2, Pending: true}})
	if m := fanoutMark(t, s, "u"); m != (persistence.FanoutMark{Done: 2, Pending: true}) {
		t.Fatalf("mark = %+v, want pending after 2", m)
	}

	// Fenced: nothing of the append is written, the mark included.
	e2, _ := activate(t, s, "u")
	err = s.AppendSync(ctxT(t), persistence.AppendRequest{User: "u", Epoch: e, Entries: entries("u", 4, 1),
		Fanout: &persistence.FanoutMark{Done: 4, Pending: true}})
	if !errors.Is(err, persistence.ErrFenced) {
		t.Fatalf("fenced append: err = %v, want ErrFenced", err)
	}
	if m := fanoutMark(t, s, "u"); m.Done != 2 {
		t.Fatalf("a fenced append moved the mark to %+v", m)
	}
	// The reserved item cannot be written as an item.
	err = s.AppendSync(ctxT(t), persistence.AppendRequest{User: "u", Epoch: e2,
		OutboxPut: []persistence.OutboxItem{{Seq: 0, Key: "", Data: []byte("x")}}})
	if err == nil {
		t.Fatal("an outbox item named like the fan-out mark was accepted")
	}

	if h.Reopen != nil {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		s = h.Reopen(t, s)
		if m := fanoutMark(t, s, "u"); m != (persistence.FanoutMark{Done: 2, Pending: true}) {
			t.Fatalf("mark after reopen = %+v, want pending after 2", m)
		}
	}

	// Caught up: not pending. The user stays listed for its item only.
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e2, Fanout: &persistence.FanoutMark{Done: 3}})
	if m := fanoutMark(t, s, "u"); m != (persistence.FanoutMark{}) {
		t.Fatalf("mark after catching up = %+v, want the zero mark", m)
	}
	checkOutbox(t, s, "u", "3/bob/r1:recall")
	appendSync(t, s, persistence.AppendRequest{User: "u", Epoch: e2, OutboxDone: []persistence.OutboxRef{{Seq: 3, Key: "bob/r1"}}})
	if got := outboxUsers(t, s); len(got) != 0 {
		t.Fatalf("OutboxUsers = %v, want none", got)
	}
	checkLog(t, s, "u", 3)
}
