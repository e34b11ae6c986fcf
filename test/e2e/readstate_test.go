//go:build !race

package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

func listConversations(t *testing.T, d *device, all bool) map[string]*wire.ConversationState {
	t.Helper()
	rep, err := d.Request(ctxT(t, 10*time.Second), &wire.Frame{Body: &wire.Frame_ListConversations{ListConversations: &wire.ListConversations{All: all}}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*wire.ConversationState{}
	for _, c := range rep.GetConversationList().GetConversations() {
		out[c.GetConversation().GetId()] = c
	}
	return out
}

// TestUnreadUnderConcurrency: two of bob's devices mark alice's
// conversation read while alice keeps sending. Afterwards every device and
// the conversation list agree, a recount from the log equals the stored
// count, and a device that was offline converges at login.
func TestUnreadUnderConcurrency(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	alice := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	b1 := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	b2 := dial(t, ws, api, "bob", "b2", devOpts{platform: "ios", json: true})
	b3 := dial(t, ws, api, "bob", "b3", devOpts{platform: "ipad"})
	b3cursor := b3.Cursor()
	b3.Close()

	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}
	ctx := ctxT(t, 60*time.Second)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, d := range []*device{b1, b2} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(15 * time.Millisecond):
				}
				if _, err := d.Request(ctx, &wire.Frame{Body: &wire.Frame_MarkRead{MarkRead: &wire.MarkRead{Conversation: conv}}}); err != nil {
					t.Errorf("mark read: %v", err)
					return
				}
			}
		})
	}
	const burst = 40
	for i := range burst {
		alice.SendAsync(text("bob", fmt.Sprint("m", i), "hi"))
		time.Sleep(3 * time.Millisecond)
	}
	b1.waitMessages(t, burst)
	b2.waitMessages(t, burst)
	close(stop)
	wg.Wait()
	// One last mark once everything arrived, then three more: exactly 3 unread.
	if _, err := b2.Request(ctx, &wire.Frame{Body: &wire.Frame_MarkRead{MarkRead: &wire.MarkRead{Conversation: conv}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := alice.Send(ctx, text("bob", fmt.Sprint("late", i), "unread")); err != nil {
			t.Fatal(err)
		}
	}
	b1.waitMessages(t, burst+3)
	b2.waitMessages(t, burst+3)

	l1, l2 := listConversations(t, b1, true)["alice"], listConversations(t, b2, true)["alice"]
	if l1.GetUnread() != 3 || l2.GetUnread() != 3 || l1.GetReadSeq() != l2.GetReadSeq() {
		t.Fatalf("devices disagree or wrong: b1 %v, b2 %v; want 3 unread on both", l1, l2)
	}

	// Recount from the log, as a fresh device reads it.
	audit := dial(t, ws, api, "bob", "audit", devOpts{platform: "windows", hasCursor: true, cursor: 0})
	audit.waitSeq(t, audit.LoginOk().GetLastSeq())
	var readSeq uint64
	var msgs []*wire.Entry
	for _, e := range audit.all() {
		if r := e.GetRead(); r != nil && r.GetConversation().GetId() == "alice" {
			readSeq = max(readSeq, r.GetUpToSeq())
		}
		if e.GetMessage().GetSender() == "alice" {
			msgs = append(msgs, e)
		}
	}
	var unread uint32
	for _, e := range msgs {
		if e.GetSeq() > readSeq {
			unread++
		}
	}
	if unread != l1.GetUnread() || readSeq != l1.GetReadSeq() {
		t.Fatalf("recount from the log: %d unread after seq %d; stored: %d after %d", unread, readSeq, l1.GetUnread(), l1.GetReadSeq())
	}

	// The offline device converges: its login list shows the 3 unread, and
	// a mark-read from it clears every other device's count.
	b3 = dial(t, ws, api, "bob", "b3", devOpts{platform: "ipad", hasCursor: true, cursor: b3cursor})
	if c := listConversations(t, b3, false)["alice"]; c.GetUnread() != 3 || c.GetLastMessage().GetClientMessageId() != "late2" {
		t.Fatalf("offline device's list: %v", c)
	}
	if _, err := b3.Request(ctx, &wire.Frame{Body: &wire.Frame_MarkRead{MarkRead: &wire.MarkRead{Conversation: conv}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		for _, e := range b1.all() {
			if r := e.GetRead(); r != nil && r.GetUnread() == 0 && r.GetUpToSeq() >= l1.GetReadSeq()+1 {
				return true
			}
		}
		return false
	}, func() string { return "b1 never saw the final ReadEvent" })
	if c := listConversations(t, b2, false); len(c) != 0 {
		t.Fatalf("after the last mark, b2's unread list is %v", c)
	}
}

// TestConversationOpsSync: pin and delete on one device reach the others,
// also one that was offline.
func TestConversationOpsSync(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	alice := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	carol := dial(t, ws, api, "carol", "c1", devOpts{platform: "ios"})
	b1 := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	b2 := dial(t, ws, api, "bob", "b2", devOpts{platform: "ios"})
	ctx := ctxT(t, 20*time.Second)
	if _, err := alice.Send(ctx, text("bob", "x1", "from alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Send(ctx, text("bob", "y1", "from carol")); err != nil {
		t.Fatal(err)
	}
	b2.waitMessages(t, 2)
	b2cursor := b2.Cursor()
	b2.Close()
	op := func(id string, o wire.ConversationOp_Op) {
		if rep, err := b1.Request(ctx, &wire.Frame{Body: &wire.Frame_ConversationOp{ConversationOp: &wire.ConversationOp{
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: id}, Op: o}}}); err != nil || rep.GetOk() == nil {
			t.Fatalf("op %v on %s: %v %v", o, id, rep, err)
		}
	}
	op("alice", wire.ConversationOp_PIN)
	op("carol", wire.ConversationOp_DELETE)

	b2 = dial(t, ws, api, "bob", "b2", devOpts{platform: "ios", hasCursor: true, cursor: b2cursor})
	waitFor(t, 10*time.Second, func() bool {
		pinned, deleted := false, false
		for _, e := range b2.all() {
			if o := e.GetConversationOp(); o != nil {
				pinned = pinned || (o.GetOp() == wire.ConversationOp_PIN && o.GetConversation().GetId() == "alice")
				deleted = deleted || (o.GetOp() == wire.ConversationOp_DELETE && o.GetConversation().GetId() == "carol")
			}
		}
		return pinned && deleted
	}, func() string { return "offline device never got the ops: " + fmtEntries(b2.all()) })
	all := listConversations(t, b2, true)
	if !all["alice"].GetPinned() || all["carol"] != nil {
		t.Fatalf("b2's list: %v, want alice pinned and carol deleted", all)
	}
	// A new message from carol brings the conversation back.
	if _, err := carol.Send(ctx, text("bob", "y2", "again")); err != nil {
		t.Fatal(err)
	}
	b2.waitMessages(t, 1) // the one new message after its cursor
	if c := listConversations(t, b2, true)["carol"]; c == nil || c.GetUnread() != 1 {
		t.Fatalf("carol after a new message: %v", c)
	}
}

// TestReceipts: with receipt_requested, alice's devices learn when bob's
// device acked the message (delivered) and when bob marked it read.
func TestReceipts(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	a1 := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	a2 := dial(t, ws, api, "alice", "a2", devOpts{platform: "web"})
	a3 := dial(t, ws, api, "alice", "a3", devOpts{platform: "macos"})
	a3cursor := a3.Cursor()
	a3.Close() // offline while the receipts happen
	b1 := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	ctx := ctxT(t, 20*time.Second)
	m := text("bob", "rr-1", "did you get this?")
	m.Options = &wire.SendOptions{ReceiptRequested: true}
	if _, err := a1.Send(ctx, m); err != nil {
		t.Fatal(err)
	}
	receipt := func(d *device, read bool) func() bool {
		return func() bool {
			for _, e := range d.all() {
				if r := e.GetReceipt(); r != nil && r.GetConversation().GetId() == "bob" && r.GetLastDeliveredAtMs() > 0 && (!read || r.GetLastReadAtMs() > 0) {
					return true
				}
			}
			return false
		}
	}
	// bob's client acks its cursor by itself (batched): "delivered".
	waitFor(t, 10*time.Second, receipt(a2, false), func() string { return "no delivered receipt: " + fmtEntries(a2.all()) })
	if _, err := b1.Request(ctx, &wire.Frame{Body: &wire.Frame_MarkRead{MarkRead: &wire.MarkRead{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, receipt(a1, true), func() string { return "no read receipt: " + fmtEntries(a1.all()) })
	// The device that was offline gets both at its next sync.
	a3 = dial(t, ws, api, "alice", "a3", devOpts{platform: "macos", hasCursor: true, cursor: a3cursor})
	waitFor(t, 10*time.Second, receipt(a3, true), func() string { return "offline device never got the receipts: " + fmtEntries(a3.all()) })
}
