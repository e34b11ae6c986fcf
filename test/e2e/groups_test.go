//go:build !race

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

func groupSend(id, cmid, body string) *wire.Send {
	return &wire.Send{ClientMessageId: cmid, Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: id},
		Type: int32(wire.MessageType_TEXT), Content: []byte(body)}
}

// groupMessages reads a user's whole log through a fresh device and
// returns the group messages in it by message ID (failing on a duplicate).
func groupMessages(t *testing.T, n *testNode, user, group string) (map[string]*wire.Message, []*wire.GroupEvent) {
	t.Helper()
	d := dial(t, n.wsURL(), n.apiURL(), user, "audit-"+user, devOpts{platform: "miniprogram", hasCursor: true, cursor: 0})
	defer d.Close()
	d.waitSeq(t, d.LoginOk().GetLastSeq())
	msgs := map[string]*wire.Message{}
	var events []*wire.GroupEvent
	for _, e := range d.all() {
		if m := e.GetMessage(); m.GetConversation().GetType() == wire.Conversation_GROUP && m.GetConversation().GetId() == group {
			if msgs[m.GetMessageId()] != nil {
				t.Fatalf("%s has group message %s twice", user, m.GetMessageId())
			}
			msgs[m.GetMessageId()] = m
		}
		if g := e.GetGroup(); g.GetGroupId() == group {
			events = append(events, g)
		}
	}
	return msgs, events
}

// TestGroup200: a message to a 200-member group reaches all 200 logs
// exactly once — also one whose fan-out the node's stop interrupted, after
// the restart re-drives it; membership changes are in every affected log;
// non-members may not send; a member who joins later does not see older
// messages.
func TestGroup200(t *testing.T) {
	if testing.Short() {
		t.Skip("200 members")
	}
	dir := t.TempDir()
	n := startNode(t, dir)
	var members []string
	for i := range 200 {
		members = append(members, fmt.Sprintf("m%03d", i))
	}
	body := `{"group_id":"big","name":"two hundred","owner":"m000","members":["` + strings.Join(members, `","`) + `"]}`
	if code, m := apiDo(t, "POST", n.apiURL()+"/v1/groups", body); code != 200 || len(m["members"].([]any)) != 200 {
		t.Fatalf("create: %d %v", code, m)
	}
	ctx := ctxT(t, 60*time.Second)
	sender := dial(t, n.wsURL(), n.apiURL(), "m000", "phone", devOpts{platform: "ios"})
	ack, err := sender.Send(ctx, groupSend("big", "g-1", "hello 200"))
	if err != nil || ack.GetMessageId() == "" {
		t.Fatalf("group send: %v %v", ack, err)
	}
	again, err := sender.Send(ctx, groupSend("big", "g-1", "hello 200"))
	if err != nil || !again.GetDuplicate() || again.GetMessageId() != ack.GetMessageId() {
		t.Fatalf("resend: %v %v", again, err)
	}
	outsider := dial(t, n.wsURL(), n.apiURL(), "outsider", "o1", devOpts{platform: "ios"})
	if _, err := outsider.Send(ctx, groupSend("big", "x-1", "let me in")); err == nil || !strings.Contains(err.Error(), "NOT_GROUP_MEMBER") {
		t.Fatalf("a non-member's send: %v, want NOT_GROUP_MEMBER", err)
	}

	// A second message, and the node stops right after its ack: part of
	// the fan-out may not have happened. The restart re-drives it.
	ack2, err := sender.Send(ctx, groupSend("big", "g-2", "across a restart"))
	if err != nil {
		t.Fatal(err)
	}
	sender.Close()
	outsider.Close()
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, dir)

	for _, u := range members {
		var msgs map[string]*wire.Message
		var events []*wire.GroupEvent
		waitFor(t, 20*time.Second, func() bool {
			msgs, events = groupMessages(t, n, u, "big")
			return len(msgs) == 2
		}, func() string { return fmt.Sprintf("%s has %d of the 2 group messages", u, len(msgs)) })
		if msgs[ack.GetMessageId()] == nil || msgs[ack2.GetMessageId()] == nil {
			t.Fatalf("%s lacks a group message", u)
		}
		if len(events) != 1 || events[0].GetKind() != wire.GroupEvent_CREATED {
			t.Fatalf("%s group events %v, want CREATED", u, events)
		}
	}

	// A late joiner sees the JOINED event and nothing from before.
	if code, m := apiDo(t, "POST", n.apiURL()+"/v1/groups/big/members", `{"user_ids":["late"]}`); code != 200 || len(m["members"].([]any)) != 201 {
		t.Fatalf("add: %d %v", code, m)
	}
	waitFor(t, 10*time.Second, func() bool {
		_, ev := groupMessages(t, n, "late", "big")
		return len(ev) == 1 && ev[0].GetKind() == wire.GroupEvent_JOINED
	}, func() string { return "late joiner never got JOINED" })
	if msgs, _ := groupMessages(t, n, "late", "big"); len(msgs) != 0 {
		t.Fatalf("a late joiner sees %d older messages", len(msgs))
	}
	// History of the group: a member's log has both messages, newest
	// first; the late joiner's has none.
	history := func(user string) []*wire.Message {
		d := dial(t, n.wsURL(), n.apiURL(), user, "hist", devOpts{platform: "pad", hasCursor: true, cursor: 0})
		defer d.Close()
		rep, err := d.Request(ctx, &wire.Frame{Body: &wire.Frame_History{History: &wire.HistoryRequest{
			Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "big"}, Limit: 10}}})
		if err != nil {
			t.Fatal(err)
		}
		return rep.GetHistoryPage().GetMessages()
	}
	if h := history("m042"); len(h) != 2 || h[0].GetMessageId() != ack2.GetMessageId() {
		t.Fatalf("m042's group history: %v", h)
	}
	if h := history("late"); len(h) != 0 {
		t.Fatalf("the late joiner's group history: %v", h)
	}
	// Removal: the removed member learns it and may no longer send.
	if code, _ := apiDo(t, "DELETE", n.apiURL()+"/v1/groups/big/members/m199", ""); code != 200 {
		t.Fatalf("remove: %d", code)
	}
	waitFor(t, 10*time.Second, func() bool {
		_, ev := groupMessages(t, n, "m199", "big")
		return len(ev) == 3 && ev[1].GetKind() == wire.GroupEvent_JOINED && ev[2].GetKind() == wire.GroupEvent_REMOVED
	}, func() string { return "removed member never got REMOVED" })
	gone := dial(t, n.wsURL(), n.apiURL(), "m199", "p", devOpts{platform: "ios"})
	if _, err := gone.Send(ctx, groupSend("big", "z-1", "still here?")); err == nil || !strings.Contains(err.Error(), "NOT_GROUP_MEMBER") {
		t.Fatalf("a removed member's send: %v", err)
	}
}

// TestGroupRecall: the sender edits, then recalls a group message; every
// member's log, including a member offline at the time, follows.
func TestGroupRecall(t *testing.T) {
	n := startNode(t, t.TempDir())
	if code, m := apiDo(t, "POST", n.apiURL()+"/v1/groups", `{"group_id":"trio","members":["ann","ben","cid"]}`); code != 200 {
		t.Fatalf("create: %d %v", code, m)
	}
	ctx := ctxT(t, 20*time.Second)
	ann := dial(t, n.wsURL(), n.apiURL(), "ann", "a", devOpts{platform: "ios"})
	cid := dial(t, n.wsURL(), n.apiURL(), "cid", "c", devOpts{platform: "ios"})
	cidCursor := cid.Cursor()
	cid.Close()
	ack, err := ann.Send(ctx, groupSend("trio", "t1", "regret"))
	if err != nil {
		t.Fatal(err)
	}
	ben := dial(t, n.wsURL(), n.apiURL(), "ben", "b", devOpts{platform: "ios", hasCursor: true, cursor: 0})
	ben.waitMessages(t, 1)
	// First an edit: every member's copy gets the new content.
	if rep, err := ann.Request(ctx, &wire.Frame{Body: &wire.Frame_Edit{Edit: &wire.Edit{
		Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "trio"}, MessageId: ack.GetMessageId(), Content: []byte("second thoughts")}}}); err != nil || rep.GetOk() == nil {
		t.Fatalf("group edit: %v %v", rep, err)
	}
	for _, u := range []string{"ann", "ben", "cid"} {
		waitFor(t, 10*time.Second, func() bool {
			msgs, _ := groupMessages(t, n, u, "trio")
			m := msgs[ack.GetMessageId()]
			return m != nil && m.GetEdited() && string(m.GetContent()) == "second thoughts"
		}, func() string { return u + "'s copy was never edited" })
	}
	if _, err := ben.Request(ctx, &wire.Frame{Body: &wire.Frame_Recall{Recall: &wire.Recall{
		Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "trio"}, MessageId: ack.GetMessageId()}}}); err == nil {
		t.Fatal("ben recalled ann's message")
	}
	if rep, err := ann.Request(ctx, &wire.Frame{Body: &wire.Frame_Recall{Recall: &wire.Recall{
		Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "trio"}, MessageId: ack.GetMessageId()}}}); err != nil || rep.GetOk() == nil {
		t.Fatalf("recall: %v %v", rep, err)
	}
	for _, u := range []string{"ann", "ben", "cid"} {
		waitFor(t, 10*time.Second, func() bool {
			msgs, _ := groupMessages(t, n, u, "trio")
			m := msgs[ack.GetMessageId()]
			return m != nil && m.GetRecalled() && len(m.GetContent()) == 0
		}, func() string { return u + "'s copy was never erased" })
	}
	cid = dial(t, n.wsURL(), n.apiURL(), "cid", "c", devOpts{platform: "ios", hasCursor: true, cursor: cidCursor})
	waitFor(t, 10*time.Second, func() bool {
		for _, e := range cid.all() {
			if e.GetRecall().GetMessageId() == ack.GetMessageId() {
				return true
			}
		}
		return false
	}, func() string { return "the offline member never got the RecallEvent" })
}

// TestGroupTransient: a transient group message reaches online members
// only and is never stored.
func TestGroupTransient(t *testing.T) {
	n := startNode(t, t.TempDir())
	if code, m := apiDo(t, "POST", n.apiURL()+"/v1/groups", `{"group_id":"duo","members":["ann","ben","cid"]}`); code != 200 {
		t.Fatalf("create: %d %v", code, m)
	}
	ann := dial(t, n.wsURL(), n.apiURL(), "ann", "a", devOpts{platform: "ios"})
	ben := dial(t, n.wsURL(), n.apiURL(), "ben", "b", devOpts{platform: "ios"})
	m := groupSend("duo", "typing", "ann is typing")
	m.Options = &wire.SendOptions{Transient: true}
	if ack, err := ann.Send(ctxT(t, 10*time.Second), m); err != nil || ack.GetSeq() != 0 {
		t.Fatalf("transient group send: %v %v", ack, err)
	}
	waitFor(t, 10*time.Second, func() bool { return len(ben.allTransient()) == 1 }, func() string { return "ben never got it" })
	if msgs, _ := groupMessages(t, n, "cid", "duo"); len(msgs) != 0 {
		t.Fatalf("cid (offline) has %d group messages, want none", len(msgs))
	}
}

// TestGroupFanoutKill9: the node (a separate process) is killed with
// SIGKILL right after a 200-member group message is acked — in the middle
// of its fan-out. After the restart every member's log has it exactly once.
func TestGroupFanoutKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level crash test")
	}
	bin, err := buildServer()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ws, api := freePort(t), freePort(t)
	p := startProc(t, bin, dir, ws, api)
	wsURL, apiURL := "ws://"+ws+"/ws", "http://"+api
	var members []string
	for i := range 200 {
		members = append(members, fmt.Sprintf("k%03d", i))
	}
	body := `{"group_id":"crash","members":["` + strings.Join(members, `","`) + `"]}`
	if code, m := apiDo(t, "POST", apiURL+"/v1/groups", body); code != 200 {
		t.Fatalf("create: %d %v", code, m)
	}
	sender := dial(t, wsURL, apiURL, "k000", "phone", devOpts{platform: "ios"})
	ack, err := sender.Send(ctxT(t, 20*time.Second), groupSend("crash", "c-1", "mid fan-out"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGKILL) // right after the ack: the fan-out is under way
	<-p.exited
	sender.Close()
	// How much of the fan-out was left (timing decides; logged, not asserted).
	if st, err := persistence.OpenBadger(filepath.Join(dir, "badger"), persistence.BadgerOptions{}, nil); err == nil {
		items, _ := st.Outbox(context.Background(), "#g:crash")
		t.Logf("pending group outbox items at the kill: %d (of 400: 200 CREATED events + 200 deliveries)", len(items))
		st.Close()
	}

	startProc(t, bin, dir, ws, api)
	seen := 0
	for _, u := range members {
		var got int
		waitFor(t, 30*time.Second, func() bool {
			d := dial(t, wsURL, apiURL, u, "audit", devOpts{platform: "miniprogram", hasCursor: true, cursor: 0})
			defer d.Close()
			d.waitSeq(t, d.LoginOk().GetLastSeq())
			got = 0
			for _, e := range d.msgs() {
				if e.GetMessage().GetMessageId() == ack.GetMessageId() {
					got++
				}
			}
			return got >= 1
		}, func() string { return u + " never got the group message after the crash" })
		if got != 1 {
			t.Fatalf("%s has the message %d times", u, got)
		}
		seen++
	}
	t.Logf("all %d members have the message exactly once after kill -9", seen)
}
