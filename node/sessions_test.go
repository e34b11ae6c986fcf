//go:build !race

// The test starts a protoactor cluster member, which has data races of
// its own: it stays out of the race run.

package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/auth"
	"github.com/tandem-im/tandem/proto/wire"
)

// recordingTable is a session table that keeps what the actors push.
type recordingTable struct {
	mu     sync.Mutex
	frames map[uint64][]*wire.Frame
}

func (r *recordingTable) Deliver(sid uint64, frames []*wire.Frame) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames[sid] = append(r.frames[sid], frames...)
	return true
}

func (r *recordingTable) Kick(uint64, *wire.Kick) bool { return true }

func (r *recordingTable) acked(sid uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.frames[sid] {
		if f.GetSendAck() != nil {
			return true
		}
	}
	return false
}

// TestSessionsHook: with Config.Sessions a caller logs in through
// Node.Frontend with a token of the node's keys, the actors push into its
// table, and Node.ReadLog reads what they made durable.
func TestSessionsHook(t *testing.T) {
	table := &recordingTable{frames: map[uint64][]*wire.Frame{}}
	n, err := Start(context.Background(), Config{
		DataDir: t.TempDir(), WSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", RemoteAddr: "127.0.0.1:0",
		Sessions: table,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	keys, err := auth.New(n.JWTSecret)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := keys.Mint("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, user, ok := n.Frontend().Login(ctx, 7, &wire.Frame{Id: 1, Body: &wire.Frame_Login{Login: &wire.Login{Token: tok, DeviceId: "d0", Platform: "linux"}}})
	if !ok || user != "alice" || reply.GetLoginOk() == nil {
		t.Fatalf("login: %v %q %v", ok, user, reply)
	}
	n.Frontend().Frame(7, "alice", &wire.Frame{Id: 2, Body: &wire.Frame_Send{Send: &wire.Send{
		ClientMessageId: "c1", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Type: int32(wire.MessageType_TEXT), Content: []byte("hi"),
	}}})
	for !table.acked(7) {
		if ctx.Err() != nil {
			t.Fatal("no SendAck reached the session table")
		}
		time.Sleep(10 * time.Millisecond)
	}
	entries, err := n.ReadLog(ctx, "alice", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var login, sent bool
	for _, e := range entries {
		var en wire.Entry
		if err := proto.Unmarshal(e.Data, &en); err != nil {
			t.Fatal(err)
		}
		login = login || en.GetDevice().GetKind() == wire.DeviceEvent_LOGGED_IN
		sent = sent || en.GetMessage().GetClientMessageId() == "c1"
	}
	if !login || !sent {
		t.Errorf("alice's log (%d entries): login %v, message %v", len(entries), login, sent)
	}
	// The conversation with bob is stored with the message.
	convs, err := n.ReadConvs(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 1 || convs[0].Key != "d:bob" {
		t.Errorf("alice's conversation states: %+v, want the one with bob", convs)
	}
	// Groups are created through the group actors, as the server API does.
	name, members, werr, err := n.Groups().GroupOp(ctx, "team", "create", "alice", "Team", []string{"alice", "bob"})
	if err != nil || werr != nil || name != "Team" || len(members) != 2 {
		t.Errorf("create a group: %q %v %v %v", name, members, werr, err)
	}
}
