//go:build !race

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestMultiDeviceSync: alice on two devices, bob on two, a third bob device
// offline during the exchange, and a brand-new bob device afterwards.
func TestMultiDeviceSync(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()

	a1 := dial(t, ws, api, "alice", "a-phone", devOpts{platform: "ios"})
	a2 := dial(t, ws, api, "alice", "a-laptop", devOpts{platform: "macos", json: true})
	b1 := dial(t, ws, api, "bob", "b-phone", devOpts{platform: "android"})
	b2 := dial(t, ws, api, "bob", "b-web", devOpts{platform: "web", json: true})

	// bob's third device has seen nothing yet; it goes offline now.
	b3 := dial(t, ws, api, "bob", "b-pad", devOpts{platform: "ipad", hasCursor: true, cursor: 0})
	b3cursor := b3.Cursor()
	b3.Close()

	const total = 20
	ctx := ctxT(t, 30*time.Second)
	var acks []*wire.SendAck
	// Half one at a time, half pipelined.
	for i := range total / 2 {
		ack, err := a1.Send(ctx, text("bob", fmt.Sprintf("m%d", i), fmt.Sprintf("hello %d", i)))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		acks = append(acks, ack)
	}
	var pend []*client.Pending
	for i := total / 2; i < total; i++ {
		pend = append(pend, a1.SendAsync(text("bob", fmt.Sprintf("m%d", i), fmt.Sprintf("hello %d", i))))
	}
	for i, p := range pend {
		ack, err := p.Wait(ctx)
		if err != nil {
			t.Fatalf("pipelined send %d: %v", i, err)
		}
		acks = append(acks, ack)
	}
	// alice's log holds her two devices' login events, then the messages:
	// the acks' seqs are consecutive.
	for i, ack := range acks {
		if ack.GetSeq() != acks[0].GetSeq()+uint64(i) || ack.GetDuplicate() || ack.GetMessageId() == "" {
			t.Fatalf("ack %d = %v, want seq %d, not duplicate", i, ack, acks[0].GetSeq()+uint64(i))
		}
	}
	if st := a1.Stats(); st.Acks != total || st.DuplicateAcks != 0 {
		t.Fatalf("a1 got %d acks (%d duplicate), want exactly one per send", st.Acks, st.DuplicateAcks)
	}

	// Every device of both users ends with the same 20 messages, seqs 1..20.
	for _, d := range []struct {
		name string
		dev  *device
	}{{"alice/phone", a1}, {"alice/laptop (carbons)", a2}, {"bob/phone", b1}, {"bob/web", b2}} {
		d.dev.waitMessages(t, total)
		got := messages(t, d.name, d.dev.all(), 1)
		if len(got) != total {
			t.Fatalf("%s has %d messages, want %d: %s", d.name, len(got), total, fmtEntries(d.dev.all()))
		}
		for i, ack := range acks {
			e := got[ack.GetMessageId()]
			if e == nil {
				t.Fatalf("%s lacks message %d (%s)", d.name, i, ack.GetMessageId())
			}
			m := e.GetMessage()
			if string(m.GetContent()) != fmt.Sprintf("hello %d", i) || m.GetSender() != "alice" || m.GetClientMessageId() != fmt.Sprintf("m%d", i) {
				t.Fatalf("%s: message %d = %v", d.name, i, m)
			}
		}
	}
	// Conversation is from the reader's side; the carbon names the sending device.
	if m := b1.msgs()[0].GetMessage(); m.GetConversation().GetId() != "alice" {
		t.Fatalf("bob sees conversation %v, want DIRECT alice", m.GetConversation())
	}
	if m := a2.msgs()[0].GetMessage(); m.GetConversation().GetId() != "bob" || m.GetSenderDevice() != "a-phone" {
		t.Fatalf("alice's laptop sees %v, want conversation bob from a-phone", m)
	}

	// A resend with the same client message ID makes no second message.
	dup, err := a1.Send(ctx, text("bob", "m3", "hello 3"))
	if err != nil {
		t.Fatal(err)
	}
	if !dup.GetDuplicate() || dup.GetSeq() != acks[3].GetSeq() || dup.GetMessageId() != acks[3].GetMessageId() {
		t.Fatalf("resend answered %v, want the original ack %v marked duplicate", dup, acks[3])
	}
	marker, err := a1.Send(ctx, text("bob", "marker", "after the resend"))
	if err != nil {
		t.Fatal(err)
	}
	if want := acks[total-1].GetSeq() + 1; marker.GetSeq() != want {
		t.Fatalf("next message got seq %d, want %d: the resend took a seq", marker.GetSeq(), want)
	}
	b1.waitMessages(t, total+1)
	if got := b1.msgs(); len(got) != total+1 || got[total].GetMessage().GetMessageId() != marker.GetMessageId() {
		t.Fatalf("bob's log after resend + marker: %s", fmtEntries(b1.all()))
	}

	// The offline device catches up by cursor.
	bobLast := b1.all()[len(b1.all())-1].GetSeq()
	b3 = dial(t, ws, api, "bob", "b-pad", devOpts{platform: "ipad", hasCursor: true, cursor: b3cursor})
	b3.waitMessages(t, total+1)
	if got := messages(t, "bob/pad", b3.all(), b3cursor+1); len(got) != total+1 {
		t.Fatalf("bob/pad caught up %d messages, want %d", len(got), total+1)
	}
	if lo := b3.LoginOk(); lo.GetLastSeq() != bobLast || lo.GetCompensationFromSeq() != 0 {
		t.Fatalf("bob/pad LoginOk = %v, want last_seq %d and no compensation", lo, bobLast)
	}

	// A new device (no cursor) gets the compensation window: today's messages.
	b4 := dial(t, ws, api, "bob", "b-desktop", devOpts{platform: "windows"})
	if lo := b4.LoginOk(); lo.GetCompensationFromSeq() != 1 {
		t.Fatalf("new device LoginOk = %v, want compensation from seq 1", lo)
	}
	b4.waitMessages(t, total+1)
	if got := messages(t, "bob/desktop", b4.all(), 1); len(got) != total+1 {
		t.Fatalf("new device got %d messages, want %d", len(got), total+1)
	}

	// The node's own counters saw the traffic.
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"tandem_sends_total 22", "tandem_gateway_sessions ", "tandem_store_commits_total "} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %q", want)
		}
	}
	if !regexp.MustCompile(`tandem_store_entries_total (4[2-9]|[5-9]\d|\d{3,})\b`).Match(body) {
		t.Fatalf("/metrics: store entries below the 42 messages written (2 logs × 21):\n%s", grepLines(string(body), "tandem_store"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRestart: stop the node, start it on the same data folder, and every
// device catches up with nothing lost.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	ws, api := n.wsURL(), n.apiURL()
	a := dial(t, ws, api, "alice", "a1", devOpts{})
	b := dial(t, ws, api, "bob", "b1", devOpts{})
	ctx := ctxT(t, 30*time.Second)
	var sent []*wire.SendAck
	for i := range 30 {
		ack, err := a.Send(ctx, text("bob", fmt.Sprintf("r%d", i), "before restart"))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, ack)
	}
	b.waitMessages(t, 10) // bob's device saw some, maybe all; its cursor is what it saw
	aCur, bCur := a.Cursor(), b.Cursor()
	a.Close()
	b.Close()
	if err := n.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	n2 := startNode(t, dir)
	ws, api = n2.wsURL(), n2.apiURL()
	a = dial(t, ws, api, "alice", "a1", devOpts{hasCursor: true, cursor: aCur})
	b = dial(t, ws, api, "bob", "b1", devOpts{hasCursor: true, cursor: bCur})
	full := dial(t, ws, api, "bob", "b-audit", devOpts{platform: "web", hasCursor: true, cursor: 0}) // web: b1 (ios) keeps its mobile slot
	full.waitMessages(t, 30)
	got := messages(t, "bob (full read)", full.all(), 1)
	for i, ack := range sent {
		if got[ack.GetMessageId()] == nil {
			t.Fatalf("message %d lost across the restart", i)
		}
	}
	// bob's device catches up exactly the messages after its cursor.
	var after int
	for _, e := range full.msgs() {
		if e.GetSeq() > bCur {
			after++
		}
	}
	b.waitMessages(t, after)
	messages(t, "bob/b1 after restart", b.all(), bCur+1)
	if len(b.msgs()) != after {
		t.Fatalf("bob's device caught up %d messages after cursor %d, want %d", len(b.msgs()), bCur, after)
	}
	// The log continues densely after the restart.
	ack, err := a.Send(ctx, text("bob", "after", "after restart"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.GetSeq() <= sent[len(sent)-1].GetSeq() {
		t.Fatalf("first send after restart got seq %d, not after %d", ack.GetSeq(), sent[len(sent)-1].GetSeq())
	}
	b.waitMessages(t, after+1)
	full.waitMessages(t, 31)
	messages(t, "bob (full read, after)", full.all(), 1)
}
