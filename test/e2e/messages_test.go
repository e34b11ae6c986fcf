//go:build !race

package e2e

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

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
