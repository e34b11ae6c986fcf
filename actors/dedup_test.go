package actors

import (
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// sendAckOf returns the one SendAck effs answer session sid with.
func sendAckOf(t *testing.T, effs []effect, sid uint64) *wire.SendAck {
	t.Helper()
	var acks []*wire.SendAck
	for _, f := range framesTo(effs, sid) {
		if a := f.GetSendAck(); a != nil {
			acks = append(acks, a)
		}
	}
	if len(acks) != 1 {
		t.Fatalf("%d SendAcks, want 1: %v", len(acks), effs)
	}
	return acks[0]
}

// TestFirstAttemptSkipsStoreLookup: a send flagged first_attempt is not
// looked up in the store (a failing store read proves it); a resend is;
// a resend of a recent send is answered from memory.
func TestFirstAttemptSkipsStoreLookup(t *testing.T) {
	h := newHarness(t, "alice")
	h.login(1, "phone", true, 0)
	h.log.err = errors.New("store read")

	first := directSend("c1", "bob", "hi")
	first.FirstAttempt = true
	effs := h.st.send(sk(1), 10, first, t0)
	if len(appends(effs)) != 1 {
		t.Fatalf("first attempt with a failing store read: %v, want one append", effs)
	}
	ack := sendAckOf(t, h.completeAppends(effs), 1)
	if ack.GetDuplicate() || ack.GetSeq() == 0 {
		t.Fatalf("ack %v", ack)
	}

	// A resend of it: the store is not needed, memory answers.
	again := h.st.send(sk(1), 11, directSend("c1", "bob", "hi"), t0)
	if got := sendAckOf(t, again, 1); !got.GetDuplicate() || got.GetMessageId() != ack.GetMessageId() || got.GetSeq() != ack.GetSeq() {
		t.Fatalf("resend answered %v, want a duplicate of %v", got, ack)
	}

	// A resend the activation does not remember goes to the store, which
	// fails here: UNAVAILABLE, nothing appended.
	other := h.st.send(sk(1), 12, directSend("c-old", "bob", "hi"), t0)
	if len(appends(other)) != 0 {
		t.Fatalf("resend with a failing store read appended: %v", other)
	}
	fs := framesTo(other, 1)
	if len(fs) != 1 || fs[0].GetError().GetName() != "UNAVAILABLE" {
		t.Fatalf("resend with a failing store read: %v, want UNAVAILABLE", fs)
	}

	// The store's answer for a resend of an older send.
	h.log.err = nil
	h.log.byKey["c:c-old"] = &wire.Entry{Seq: 1, Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "OLD", ServerTimeMs: 5}}}
	if got := sendAckOf(t, h.st.send(sk(1), 13, directSend("c-old", "bob", "hi"), t0), 1); !got.GetDuplicate() || got.GetMessageId() != "OLD" {
		t.Fatalf("resend of a stored send: %v", got)
	}
}

// TestRecentAcksBounded: the in-memory acks keep the newest recentAckSize.
func TestRecentAcksBounded(t *testing.T) {
	var r recentAcks
	for i := range recentAckSize + 10 {
		r.add(fmt.Sprint("c", i), &wire.SendAck{Seq: uint64(i + 1)})
	}
	if len(r.r.vals) != recentAckSize {
		t.Fatalf("%d acks kept, want %d", len(r.r.vals), recentAckSize)
	}
	for i := range 10 {
		if r.get(fmt.Sprint("c", i)) != nil {
			t.Fatalf("c%d kept after %d newer", i, recentAckSize)
		}
	}
	if a := r.get(fmt.Sprint("c", recentAckSize+9)); a == nil || a.GetSeq() != recentAckSize+10 {
		t.Fatalf("newest: %v", a)
	}
}

// TestDeliveredBeforeNewestEntry: a message minted more than clockSkew
// after the newest entry the log held at activation needs no store read
// to be known new; one minted earlier does.
func TestDeliveredBeforeNewestEntry(t *testing.T) {
	h := newHarness(t, "bob")
	newest := t0.Add(-time.Hour)
	h.st.logNewestMS, h.st.logTimeKnown = newest.UnixMilli(), true
	h.log.err = errors.New("store read")
	deliver := func(minted time.Time) []effect {
		id := ulid.MustNew(ulid.Timestamp(minted), rand.Reader).String()
		return h.st.deliver(&actorpb.Deliver{FromUser: "alice", Message: &wire.Message{
			MessageId: id, Sender: "alice", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"},
			Type: 1, Content: []byte("hi"),
		}}, t0)
	}
	if effs := deliver(newest.Add(clockSkew + time.Second)); len(appends(effs)) != 1 {
		t.Fatalf("a message minted after the log's newest entry + skew: %v, want an append without a store read", effs)
	}
	if effs := deliver(newest.Add(clockSkew - time.Second)); len(appends(effs)) != 0 {
		t.Fatalf("a message minted within skew of the log's newest entry: %v, want the store asked (it fails here: nothing appended)", effs)
	}
	h.st.logTimeKnown = false // the actors' clock is not the real one
	if effs := deliver(newest.Add(time.Hour)); len(appends(effs)) != 0 {
		t.Fatalf("without a known log time: %v, want the store asked", effs)
	}
}
