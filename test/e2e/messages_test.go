//go:build !race

package e2e

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestTransientMessages: a transient message reaches the online devices of
// the conversation only — never a log, a sync page, a retry or an offline
// device.
func TestTransientMessages(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	a1 := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	a2 := dial(t, ws, api, "alice", "a2", devOpts{platform: "web", json: true})
	b1 := dial(t, ws, api, "bob", "b1", devOpts{platform: "web", json: true})
	b2 := dial(t, ws, api, "bob", "b2", devOpts{platform: "ios"})
	b2cursor := b2.Cursor()
	b2.Close() // offline during the exchange

	m := text("bob", "typing-1", "alice is typing")
	m.Options = &wire.SendOptions{Transient: true}
	ack, err := a1.Send(ctxT(t, 10*time.Second), m)
	if err != nil {
		t.Fatal(err)
	}
	if ack.GetSeq() != 0 || ack.GetMessageId() == "" {
		t.Fatalf("transient ack %v, want seq 0", ack)
	}
	for name, d := range map[string]*device{"bob/b1": b1, "alice/a2": a2} {
		waitFor(t, 10*time.Second, func() bool { return len(d.allTransient()) == 1 }, func() string { return name + " never got the transient" })
		got := d.allTransient()[0]
		if got.GetMessageId() != ack.GetMessageId() || string(got.GetContent()) != "alice is typing" || !got.GetOptions().GetTransient() {
			t.Fatalf("%s got %v", name, got)
		}
	}
	if len(a1.allTransient()) != 0 {
		t.Fatal("the sending device got its own transient back")
	}
	// Never stored: a stored message sent after it is the only message in
	// any log, and the offline device never sees the transient.
	if _, err := a1.Send(ctxT(t, 10*time.Second), text("bob", "stored-1", "stored")); err != nil {
		t.Fatal(err)
	}
	b2 = dial(t, ws, api, "bob", "b2", devOpts{platform: "ios", hasCursor: true, cursor: b2cursor})
	b2.waitMessages(t, 1)
	if got := messageIDs(t, n, "bob"); len(got) != 1 {
		t.Fatalf("bob's log holds %d messages, want only the stored one", len(got))
	}
	time.Sleep(200 * time.Millisecond)
	if len(b2.allTransient()) != 0 || len(b2.msgs()) != 1 {
		t.Fatalf("the offline device got %d transients, %d messages", len(b2.allTransient()), len(b2.msgs()))
	}
}

// TestCustomTypesPassThrough: custom types (>= 1000), attributes, mentions
// and binary content pass through untouched between a binary and a JSON
// device, live and through sync.
func TestCustomTypesPassThrough(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	a := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	bJSON := dial(t, ws, api, "bob", "b1", devOpts{platform: "web", json: true})

	content := []byte{0, 1, 2, 0xff, 0xfe, '"', '\\', '\n'}
	send := &wire.Send{
		ClientMessageId: "custom-1",
		Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"},
		Type:            4242,
		Content:         content,
		Attributes:      map[string]string{"kind": "sticker", "ünï": "çødé ☃", "empty": ""},
		MentionList:     []string{"bob", "carol"},
		Options:         &wire.SendOptions{PushData: `{"title":"hi"}`},
	}
	if _, err := a.Send(ctxT(t, 10*time.Second), send); err != nil {
		t.Fatal(err)
	}
	bJSON.waitMessages(t, 1)
	bBin := dial(t, ws, api, "bob", "b2", devOpts{platform: "ios", hasCursor: true, cursor: 0})
	bBin.waitMessages(t, 1)
	for name, m := range map[string]*wire.Message{"json live": bJSON.msgs()[0].GetMessage(), "binary sync": bBin.msgs()[0].GetMessage()} {
		if m.GetType() != 4242 || string(m.GetContent()) != string(content) || !proto.Equal(&wire.SendOptions{PushData: `{"title":"hi"}`}, m.GetOptions()) ||
			len(m.GetAttributes()) != 3 || m.GetAttributes()["ünï"] != "çødé ☃" || m.GetAttributes()["empty"] != "" ||
			len(m.GetMentionList()) != 2 || !m.GetMentioned() {
			t.Fatalf("%s: message changed in transit: %v", name, m)
		}
	}
}

// TestRecall: the sender recalls; online devices get the RecallEvent at
// once, an offline device converges at its next sync (content erased,
// recalled set); after a restart the content is gone from both logs as the
// store returns them; nobody else may recall it.
func TestRecall(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	ws, api := n.wsURL(), n.apiURL()
	a1 := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	b1 := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	b2 := dial(t, ws, api, "bob", "b2", devOpts{platform: "ios"})
	b1.waitSeq(t, b2.LoginOk().GetLastSeq()+1) // b2's own login event
	b2cursor := b2.Cursor()
	b2.Close()

	secret := "the launch code is 0000"
	ctx := ctxT(t, 20*time.Second)
	ack, err := a1.Send(ctx, text("bob", "secret-1", secret))
	if err != nil {
		t.Fatal(err)
	}
	b1.waitMessages(t, 1)

	// bob may not recall alice's message.
	rep, err := b1.Request(ctx, &wire.Frame{Body: &wire.Frame_Recall{Recall: &wire.Recall{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}, MessageId: ack.GetMessageId()}}})
	if err == nil || rep.GetOk() != nil {
		t.Fatalf("bob recalled alice's message: %v", rep)
	}
	rep, err = a1.Request(ctx, &wire.Frame{Body: &wire.Frame_Recall{Recall: &wire.Recall{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, MessageId: ack.GetMessageId()}}})
	if err != nil || rep.GetOk() == nil {
		t.Fatalf("recall: %v %v", rep, err)
	}
	isRecall := func(e *wire.Entry) bool { return e.GetRecall().GetMessageId() == ack.GetMessageId() }
	for name, d := range map[string]*device{"alice/a1": a1, "bob/b1": b1} {
		waitFor(t, 10*time.Second, func() bool {
			for _, e := range d.all() {
				if isRecall(e) {
					return true
				}
			}
			return false
		}, func() string { return name + " never got the RecallEvent: " + fmtEntries(d.all()) })
	}

	// The offline device syncs: the message is there, erased and marked,
	// followed by the RecallEvent.
	b2 = dial(t, ws, api, "bob", "b2", devOpts{platform: "ios", hasCursor: true, cursor: b2cursor})
	waitFor(t, 10*time.Second, func() bool {
		for _, e := range b2.all() {
			if isRecall(e) {
				return true
			}
		}
		return false
	}, func() string { return "offline device never converged: " + fmtEntries(b2.all()) })
	var m *wire.Message
	for _, e := range b2.msgs() {
		if e.GetMessage().GetMessageId() == ack.GetMessageId() {
			m = e.GetMessage()
		}
	}
	if m == nil || !m.GetRecalled() || len(m.GetContent()) != 0 {
		t.Fatalf("offline device sees %v, want the message recalled with no content", m)
	}

	// After a restart the content is in neither log.
	a1.Close()
	b1.Close()
	b2.Close()
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, dir)
	for _, u := range []string{"alice", "bob"} {
		d := dial(t, n2.wsURL(), n2.apiURL(), u, "audit", devOpts{platform: "web", hasCursor: true, cursor: 0})
		d.waitSeq(t, d.LoginOk().GetLastSeq())
		for _, e := range d.all() {
			if strings.Contains(e.String(), "launch code") || strings.Contains(string(e.GetMessage().GetContent()), secret) {
				t.Fatalf("%s's log still holds the recalled content: %v", u, e)
			}
		}
	}
}

// TestEdit: the sender edits; online devices get the EditEvent; a device
// offline during the edit syncs the original entry with the new content
// (edited) and the event; nobody else may edit.
func TestEdit(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	a1 := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	b1 := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	b2 := dial(t, ws, api, "bob", "b2", devOpts{platform: "ios"})
	b1.waitSeq(t, b2.LoginOk().GetLastSeq()+1)
	b2cursor := b2.Cursor()
	b2.Close()

	ctx := ctxT(t, 20*time.Second)
	ack, err := a1.Send(ctx, text("bob", "e-1", "helo wrold"))
	if err != nil {
		t.Fatal(err)
	}
	b1.waitMessages(t, 1)
	editFrame := func(peer, body string) *wire.Frame {
		return &wire.Frame{Body: &wire.Frame_Edit{Edit: &wire.Edit{
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer}, MessageId: ack.GetMessageId(), Content: []byte(body),
		}}}
	}
	if rep, err := b1.Request(ctx, editFrame("alice", "bob was here")); err == nil {
		t.Fatalf("bob edited alice's message: %v", rep)
	}
	if rep, err := a1.Request(ctx, editFrame("bob", "hello world")); err != nil || rep.GetOk() == nil {
		t.Fatalf("edit: %v %v", rep, err)
	}
	isEdit := func(e *wire.Entry) bool {
		return e.GetEdit().GetMessage().GetMessageId() == ack.GetMessageId() && string(e.GetEdit().GetMessage().GetContent()) == "hello world"
	}
	hasEdit := func(d *device) func() bool {
		return func() bool {
			for _, e := range d.all() {
				if isEdit(e) {
					return true
				}
			}
			return false
		}
	}
	waitFor(t, 10*time.Second, hasEdit(b1), func() string { return "bob/b1 never got the EditEvent: " + fmtEntries(b1.all()) })
	waitFor(t, 10*time.Second, hasEdit(a1), func() string { return "alice/a1 never got the EditEvent" })

	b2 = dial(t, ws, api, "bob", "b2", devOpts{platform: "ios", hasCursor: true, cursor: b2cursor})
	waitFor(t, 10*time.Second, hasEdit(b2), func() string { return "offline device never converged: " + fmtEntries(b2.all()) })
	m := b2.msgs()[0].GetMessage()
	if string(m.GetContent()) != "hello world" || !m.GetEdited() || m.GetMessageId() != ack.GetMessageId() {
		t.Fatalf("offline device sees %v, want the edited content in the original entry", m)
	}
	// A fresh full read of alice's log shows the same.
	audit := dial(t, ws, api, "alice", "audit", devOpts{platform: "web", hasCursor: true, cursor: 0})
	audit.waitMessages(t, 1)
	if m := audit.msgs()[0].GetMessage(); string(m.GetContent()) != "hello world" || !m.GetEdited() {
		t.Fatalf("alice's log has %v", m)
	}
}

// TestHistory: HistoryRequest pages a conversation newest first, with
// recalled messages as tombstones and edited ones with their latest
// content; clear history hides what came before, for that user only.
func TestHistory(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	a := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	b := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	c := dial(t, ws, api, "carol", "c1", devOpts{platform: "web"})
	ctx := ctxT(t, 30*time.Second)
	var ids []string
	for i := range 25 {
		ack, err := a.Send(ctx, text("bob", fmt.Sprint("h", i), fmt.Sprint("msg ", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ack.GetMessageId())
		if i%5 == 0 { // interleave another conversation in bob's log
			if _, err := c.Send(ctx, text("bob", fmt.Sprint("x", i), "noise")); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.waitMessages(t, 30)
	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}
	if rep, err := a.Request(ctx, &wire.Frame{Body: &wire.Frame_Recall{Recall: &wire.Recall{Conversation: conv, MessageId: ids[24]}}}); err != nil || rep.GetOk() == nil {
		t.Fatalf("recall: %v %v", rep, err)
	}
	if rep, err := a.Request(ctx, &wire.Frame{Body: &wire.Frame_Edit{Edit: &wire.Edit{Conversation: conv, MessageId: ids[23], Content: []byte("edited")}}}); err != nil || rep.GetOk() == nil {
		t.Fatalf("edit: %v %v", rep, err)
	}
	history := func(d *device, peer, before string, limit uint32) *wire.HistoryPage {
		rep, err := d.Request(ctx, &wire.Frame{Body: &wire.Frame_History{History: &wire.HistoryRequest{
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer}, BeforeMessageId: before, Limit: limit}}})
		if err != nil {
			t.Fatal(err)
		}
		return rep.GetHistoryPage()
	}
	// bob reads alice's conversation in pages of 10.
	var got []*wire.Message
	before := ""
	for page := 0; ; page++ {
		p := history(b, "alice", before, 10)
		got = append(got, p.GetMessages()...)
		if !p.GetHasMore() || page > 5 {
			break
		}
		before = p.GetMessages()[len(p.GetMessages())-1].GetMessageId()
	}
	if len(got) != 25 {
		t.Fatalf("bob's history of alice has %d messages, want 25", len(got))
	}
	for i, m := range got {
		if want := ids[24-i]; m.GetMessageId() != want {
			t.Fatalf("history[%d] = %s, want %s (newest first)", i, m.GetMessageId(), want)
		}
	}
	waitFor(t, 10*time.Second, func() bool {
		p := history(b, "alice", "", 2)
		return len(p.GetMessages()) == 2 && p.GetMessages()[0].GetRecalled() && string(p.GetMessages()[1].GetContent()) == "edited"
	}, func() string { return fmt.Sprint("bob's newest history: ", history(b, "alice", "", 2)) })
	if m := history(b, "alice", "", 1).GetMessages()[0]; len(m.GetContent()) != 0 {
		t.Fatalf("recalled message in history still has content: %v", m)
	}
	// bob clears the conversation: his history is empty, alice's is not.
	if rep, err := b.Request(ctx, &wire.Frame{Body: &wire.Frame_ConversationOp{ConversationOp: &wire.ConversationOp{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}, Op: wire.ConversationOp_CLEAR_HISTORY}}}); err != nil || rep.GetOk() == nil {
		t.Fatalf("clear: %v %v", rep, err)
	}
	if p := history(b, "alice", "", 10); len(p.GetMessages()) != 0 || p.GetHasMore() {
		t.Fatalf("bob's history after clearing: %v", p)
	}
	if p := history(a, "bob", "", 10); len(p.GetMessages()) != 10 {
		t.Fatalf("alice's history after bob cleared his: %d messages", len(p.GetMessages()))
	}
	// Bad requests.
	if _, err := b.Request(ctx, &wire.Frame{Body: &wire.Frame_History{History: &wire.HistoryRequest{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}, BeforeMessageId: "nope"}}}); err == nil {
		t.Fatal("history before an unknown message answered")
	}
}

// TestRetention: entries older than the retention window are gone; a
// device whose cursor is older gets cursor_too_old and the compensation
// window, a gap pull into the removed range gets CURSOR_TOO_OLD, and seqs
// are never reused.
func TestRetention(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	n := startNodeWith(t, t.TempDir(), func(c *node.Config) { c.Now = clock; c.Retention = 48 * time.Hour; c.CompensationDays = 1 })
	ws, api := n.wsURL(), n.apiURL()
	a := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	b2 := dial(t, ws, api, "bob", "b2", devOpts{platform: "ios"})
	ctx := ctxT(t, 20*time.Second)
	for i := range 5 {
		if _, err := a.Send(ctx, text("bob", fmt.Sprint("old", i), "old")); err != nil {
			t.Fatal(err)
		}
	}
	b2.waitMessages(t, 5)
	oldCursor := b2.Cursor()
	b2.Close()

	offset.Store(int64(72 * time.Hour)) // everything so far is past the 48 h window
	ack, err := a.Send(ctx, text("bob", "new", "after the window"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.GetSeq() <= 6 {
		t.Fatalf("alice's seq after everything aged out: %d, want it to continue", ack.GetSeq())
	}

	b2 = dial(t, ws, api, "bob", "b2", devOpts{platform: "ios", hasCursor: true, cursor: 2})
	lo := b2.LoginOk()
	if !lo.GetCursorTooOld() || lo.GetCompensationFromSeq() <= oldCursor {
		t.Fatalf("LoginOk %v for cursor 2: want cursor_too_old and compensation after the removed entries (old cursor %d)", lo, oldCursor)
	}
	b2.waitMessages(t, 1)
	if m := b2.msgs()[0].GetMessage(); m.GetClientMessageId() != "new" {
		t.Fatalf("device got %v, want only the retained message", m)
	}
	rep, err := b2.Request(ctx, &wire.Frame{Body: &wire.Frame_Sync{Sync: &wire.SyncRequest{AfterSeq: 1, Limit: 10}}})
	if err == nil || rep != nil && rep.GetError() == nil {
		t.Fatalf("gap pull into the removed range answered %v", rep)
	}
	if !strings.Contains(err.Error(), "CURSOR_TOO_OLD") {
		t.Fatalf("gap pull into the removed range: %v, want CURSOR_TOO_OLD", err)
	}
	if got := messageIDs(t, n, "bob"); len(got) != 1 {
		t.Fatalf("bob's readable log holds %d messages, want 1", len(got))
	}
}
