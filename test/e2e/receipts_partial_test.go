//go:build !race

package e2e

import (
	"testing"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// TestReceiptsPartial (issue 9): two receipt-requested messages; bob marks
// read up to the first only. alice gets a read receipt naming exactly the
// first (message ID and seq in her log), none for the second until bob
// reads it too; bob's cursor acks bring delivered receipts naming the
// newest message they passed. A message that did not ask gets none.
func TestReceiptsPartial(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	a1 := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	b1 := dial(t, ws, api, "bob", "b1", devOpts{platform: "web", json: true})
	ctx := ctxT(t, 30*time.Second)

	asked := func(cmid string) *wire.SendAck {
		m := text("bob", cmid, "did you get "+cmid+"?")
		m.Options = &wire.SendOptions{ReceiptRequested: true}
		ack, err := a1.Send(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	first := asked("rr-1")
	second := asked("rr-2")
	if _, err := a1.Send(ctx, text("bob", "plain-1", "no receipt please")); err != nil {
		t.Fatal(err)
	}
	b1.waitMessages(t, 3)
	bobSeq := map[string]uint64{}
	for _, e := range b1.msgs() {
		bobSeq[e.GetMessage().GetMessageId()] = e.GetSeq()
	}

	// receipt finds a receipt of alice's for bob, read or delivered only,
	// naming ack's message.
	receipt := func(read bool, ack *wire.SendAck) func() bool {
		return func() bool {
			for _, e := range a1.all() {
				r := e.GetReceipt()
				if r != nil && r.GetConversation().GetId() == "bob" && (r.GetLastReadAtMs() != 0) == read &&
					r.GetUpToMessageId() == ack.GetMessageId() && r.GetUpToSenderSeq() == ack.GetSeq() {
					return true
				}
			}
			return false
		}
	}
	readReceipts := func() (n int) {
		for _, e := range a1.all() {
			if e.GetReceipt().GetLastReadAtMs() != 0 {
				n++
			}
		}
		return n
	}
	markRead := func(seq uint64) {
		t.Helper()
		if _, err := b1.Request(ctx, &wire.Frame{Body: &wire.Frame_MarkRead{MarkRead: &wire.MarkRead{
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}, UpToSeq: seq}}}); err != nil {
			t.Fatal(err)
		}
	}

	// bob's client acks its cursor by itself (batched): a delivered receipt
	// up to the second (possibly one up to the first before it).
	waitFor(t, 10*time.Second, receipt(false, second), func() string { return "no delivered receipt up to the second: " + fmtEntries(a1.all()) })

	markRead(bobSeq[first.GetMessageId()])
	waitFor(t, 10*time.Second, receipt(true, first), func() string { return "no read receipt up to the first: " + fmtEntries(a1.all()) })
	if receipt(true, second)() || readReceipts() != 1 {
		t.Fatalf("a partial read reported more than the first: %s", fmtEntries(a1.all()))
	}

	markRead(bobSeq[second.GetMessageId()])
	waitFor(t, 10*time.Second, receipt(true, second), func() string { return "no read receipt up to the second: " + fmtEntries(a1.all()) })

	// Reading the message that did not ask: nothing more.
	markRead(0)
	if _, err := a1.Send(ctx, text("bob", "plain-2", "sync point")); err != nil {
		t.Fatal(err)
	}
	b1.waitMessages(t, 4)
	markRead(0)
	time.Sleep(200 * time.Millisecond)
	if n := readReceipts(); n != 2 {
		t.Fatalf("%d read receipts, want 2 (none for messages that did not ask): %s", n, fmtEntries(a1.all()))
	}
}
