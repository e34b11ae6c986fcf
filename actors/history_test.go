package actors

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

// fakeLogEntries is a log of n entries: every third a message with alice,
// the others messages with carol.
func fakeLogEntries(n int) []*wire.Entry {
	var out []*wire.Entry
	for i := 1; i <= n; i++ {
		peer := "carol"
		if i%3 == 0 {
			peer = "alice"
		}
		out = append(out, &wire.Entry{Seq: uint64(i), Kind: &wire.Entry_Message{Message: &wire.Message{
			MessageId: fmt.Sprint("m", i), Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
		}}})
	}
	return out
}

func reader(log []*wire.Entry) func(persistence.Seq, int) ([]*wire.Entry, error) {
	return func(after persistence.Seq, n int) ([]*wire.Entry, error) {
		var out []*wire.Entry
		for _, e := range log {
			if e.GetSeq() > uint64(after) && len(out) < n {
				out = append(out, e)
			}
		}
		return out, nil
	}
}

func TestHistoryScan(t *testing.T) {
	log := fakeLogEntries(1000)
	msgs, more, err := historyScan("d:alice", 0, 1001, 10, reader(log))
	if err != nil || len(msgs) != 10 || !more || msgs[0].GetMessageId() != "m999" || msgs[9].GetMessageId() != "m972" {
		t.Fatalf("first page: %d msgs, more %v, first %s last %s", len(msgs), more, msgs[0].GetMessageId(), msgs[len(msgs)-1].GetMessageId())
	}
	// Next page from the oldest one: continues without overlap.
	msgs2, _, _ := historyScan("d:alice", 0, 972, 10, reader(log))
	if msgs2[0].GetMessageId() != "m969" {
		t.Fatalf("second page starts at %s, want m969", msgs2[0].GetMessageId())
	}
	// The whole conversation: 333 messages, then no more.
	all, more, _ := historyScan("d:alice", 0, 1001, 1000, reader(log))
	if len(all) != 333 || more {
		t.Fatalf("whole history: %d messages, more %v", len(all), more)
	}
	// Cleared history hides up to the clear.
	after, _, _ := historyScan("d:alice", 900, 1001, 1000, reader(log))
	if len(after) != 33 || after[len(after)-1].GetMessageId() != "m903" {
		t.Fatalf("after a clear at 900: %d messages, oldest %s", len(after), after[len(after)-1].GetMessageId())
	}
	// A sparse conversation in a long log: once a message is found, the
	// page stops at the scan budget with has_more; with nothing found yet
	// it scans on to the start.
	long := fakeLogEntries(20000)
	for _, e := range long {
		e.GetMessage().Conversation.Id = "carol"
	}
	long[5].GetMessage().Conversation.Id = "alice"
	long[19990].GetMessage().Conversation.Id = "alice"
	few, more, _ := historyScan("d:alice", 0, 20001, 10, reader(long))
	if len(few) != 1 || few[0].GetMessageId() != "m19991" || !more {
		t.Fatalf("budget: %v, more %v; want the newest message and more", few, more)
	}
	rest, more, _ := historyScan("d:alice", 0, 19991, 10, reader(long))
	if len(rest) != 1 || rest[0].GetMessageId() != "m6" || more {
		t.Fatalf("continuation: %v, more %v; want the old message found past the budget", rest, more)
	}
}

// TestHistoryScanDoesNotHoldMailbox: while a history scan waits on the
// store, the same user's send is acked; the history page follows.
func TestHistoryScanDoesNotHoldMailbox(t *testing.T) {
	h := startUserHarness(t, "alice")
	a := h.login(&wire.Login{DeviceId: "a-phone", Platform: "ios", HasCursor: true})
	h.caughtUp(a)
	h.deliverAll("bob", 1, 300)

	entered, release := h.store.arm()
	t.Cleanup(release)
	h.frame(a, &wire.Frame{Id: 1000, Body: &wire.Frame_History{History: &wire.HistoryRequest{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Limit: 10,
	}}})
	select {
	case <-entered: // the scan has read a page and is held
	case <-time.After(10 * time.Second):
		t.Fatal("the history scan never read")
	}
	h.note(a, 2000, "while the scan is held")
	for _, f := range h.until(isReply(2000)) {
		if f.GetHistoryPage() != nil {
			t.Fatalf("history answered while its scan was held: %v", f)
		}
		if f.GetId() == 2000 && (f.GetSendAck().GetSeq() == 0 || f.GetSendAck().GetDuplicate()) {
			t.Fatalf("send during the scan: %v, want a new message's ack", f)
		}
	}
	release()
	got := h.until(isReply(1000))
	page := got[len(got)-1].GetHistoryPage()
	if len(page.GetMessages()) != 10 || !page.GetHasMore() || page.GetMessages()[0].GetMessageId() == "" ||
		string(page.GetMessages()[0].GetContent()) != "m300" || string(page.GetMessages()[9].GetContent()) != "m291" {
		t.Fatalf("history page: %v", page)
	}
}

// TestHistoryStartsAtTheConversationsLastMessage: a conversation without
// messages is answered without reading the log, and an old conversation's
// scan starts at its last message, not at the end of the log.
func TestHistoryStartsAtTheConversationsLastMessage(t *testing.T) {
	h := startUserHarness(t, "alice")
	a := h.login(&wire.Login{DeviceId: "a-phone", Platform: "ios", HasCursor: true})
	h.caughtUp(a)
	h.deliverAll("dave", 1, 1)
	h.deliverAll("bob", 2, 500)

	history := func(id uint64, peer string) *wire.HistoryPage {
		h.frame(a, &wire.Frame{Id: id, Body: &wire.Frame_History{History: &wire.HistoryRequest{
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
		}}})
		got := h.until(isReply(id))
		return got[len(got)-1].GetHistoryPage()
	}
	n := h.store.readCount()
	if p := history(1000, "erin"); len(p.GetMessages()) != 0 || p.GetHasMore() {
		t.Fatalf("history of a conversation without messages: %v", p)
	}
	if r := h.store.readsSince(n); len(r) != 0 {
		t.Fatalf("history of a conversation without messages read the log: %v", r)
	}
	p := history(1001, "dave")
	if len(p.GetMessages()) != 1 || p.GetHasMore() || string(p.GetMessages()[0].GetContent()) != "m1" {
		t.Fatalf("history of dave: %v", p)
	}
	// One read, of the entries up to the conversation's last message.
	old, ok, err := h.store.LookupDedup(context.Background(), "alice", "m:"+p.GetMessages()[0].GetMessageId())
	if err != nil || !ok {
		t.Fatalf("seq of dave's message: %v %v", ok, err)
	}
	if r := h.store.readsSince(n); len(r) != 1 || r[0].after != 0 || r[0].limit != int(old) {
		t.Fatalf("history of an old conversation read %v, want one read of seqs 1-%d", r, old)
	}
}

func TestHistoryScansLimits(t *testing.T) {
	var h historyScans
	var started []int
	for i := range maxHistoryScans + maxHistoryWaiting {
		if !h.start(func() { started = append(started, i) }) {
			t.Fatalf("scan %d refused", i)
		}
	}
	if len(started) != maxHistoryScans {
		t.Fatalf("%d scans started, want %d running and the rest waiting", len(started), maxHistoryScans)
	}
	if h.start(func() { t.Fatal("a scan past the waiting limit started") }) {
		t.Fatal("a scan past the waiting limit was accepted")
	}
	for range maxHistoryWaiting {
		h.done()
	}
	if len(started) != maxHistoryScans+maxHistoryWaiting || h.running != maxHistoryScans || len(h.waiting) != 0 {
		t.Fatalf("after the waiting ones started: %d started, %d running, %d waiting", len(started), h.running, len(h.waiting))
	}
	for i, s := range started {
		if s != i {
			t.Fatalf("scans started in order %v", started)
		}
	}
}

// TestHistoryScansQueuedPastTheLimit: with two scans held in the store, a
// third request waits (it has not read) while the user's send is acked;
// released, all three are answered.
func TestHistoryScansQueuedPastTheLimit(t *testing.T) {
	h := startUserHarness(t, "alice")
	a := h.login(&wire.Login{DeviceId: "a-phone", Platform: "ios", HasCursor: true})
	h.caughtUp(a)
	h.deliverAll("bob", 1, 50)

	n := h.store.readCount()
	entered, release := h.store.arm()
	t.Cleanup(release)
	for id := uint64(1001); id <= 1003; id++ {
		h.frame(a, &wire.Frame{Id: id, Body: &wire.Frame_History{History: &wire.HistoryRequest{
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Limit: 5,
		}}})
	}
	for range maxHistoryScans {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("a history scan never read")
		}
	}
	h.note(a, 2000, "while two scans are held")
	h.until(isReply(2000))
	if r := h.store.readsSince(n); len(r) != maxHistoryScans {
		t.Fatalf("%d history reads while %d scans were held, want the third waiting: %v", len(r), maxHistoryScans, r)
	}
	release()
	answered := map[uint64]bool{}
	for len(answered) < 3 {
		f := h.next()
		if p := f.GetHistoryPage(); p != nil {
			if len(p.GetMessages()) != 5 || string(p.GetMessages()[0].GetContent()) != "m50" {
				t.Fatalf("history page %d: %v", f.GetId(), p)
			}
			answered[f.GetId()] = true
		}
	}
}
