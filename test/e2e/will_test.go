//go:build !race

package e2e

import (
	"testing"
	"time"

	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

func willFrame(peer, text string, grace int32) *wire.Frame {
	return &wire.Frame{Body: &wire.Frame_SetWill{SetWill: &wire.SetWill{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
		Message:      &wire.Send{Type: int32(wire.MessageType_TEXT), Content: []byte(text)},
		GraceSeconds: grace,
	}}}
}

func (d *device) willsWith(text string) int {
	n := 0
	for _, m := range d.allTransient() {
		if m.GetWill() && string(m.GetContent()) == text {
			n++
		}
	}
	return n
}

// TestWillMessages: a will is delivered to the peer's online devices when
// the session drops, not when it logs out, and not when the device resumes
// within the grace period; it never enters anybody's log.
func TestWillMessages(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	bob := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	ctx := ctxT(t, 30*time.Second)

	// 1. Drop (socket closed, no logout): fires at once.
	a := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	if rep, err := a.Request(ctx, willFrame("bob", "dropped", 0)); err != nil || rep.GetOk() == nil {
		t.Fatalf("SetWill: %v %v", rep, err)
	}
	a.Close()
	waitFor(t, 10*time.Second, func() bool { return bob.willsWith("dropped") == 1 }, func() string { return "bob never got the will" })
	m := bob.allTransient()[0]
	if m.GetSender() != "alice" || m.GetConversation().GetId() != "alice" || m.GetSenderDevice() != "a1" {
		t.Fatalf("will as delivered: %v", m)
	}

	// 2. Logout: discarded.
	a = dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	if _, err := a.Request(ctx, willFrame("bob", "logged out", 0)); err != nil {
		t.Fatal(err)
	}
	if err := a.Logout(ctx); err != nil {
		t.Fatal(err)
	}

	// 3. Grace period, and the device resumes in time: nothing.
	a = dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	if _, err := a.Request(ctx, willFrame("bob", "blip", 2)); err != nil {
		t.Fatal(err)
	}
	a.Close()
	a = dial(t, ws, api, "alice", "a1", devOpts{platform: "ios", hasCursor: true, cursor: 0})

	// 4. Grace period, and the device stays away: fires after it.
	a2 := dial(t, ws, api, "alice", "a2", devOpts{platform: "macos"})
	if _, err := a2.Request(ctx, willFrame("bob", "gone for good", 1)); err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	a2.Close()
	waitFor(t, 10*time.Second, func() bool { return bob.willsWith("gone for good") == 1 }, func() string { return "the graced will never fired" })
	if waited := time.Since(dropped); waited < 900*time.Millisecond {
		t.Fatalf("graced will fired after %s, before its 1 s grace", waited)
	}
	// By now the blip's grace (2 s) has passed too: it must not have fired,
	// and neither must the logged-out one.
	time.Sleep(1500 * time.Millisecond)
	if bob.willsWith("blip") != 0 || bob.willsWith("logged out") != 0 {
		t.Fatalf("bob got wills he should not have: %v", bob.allTransient())
	}
	// Wills are never stored: bob's log holds no message at all.
	if got := messageIDs(t, n, "bob"); len(got) != 0 {
		t.Fatalf("bob's log holds messages %v, want none", got)
	}
}

// TestHeartbeatTimeoutFiresWill: a logged-in client that goes silent is
// closed after the heartbeat timeout (kick frame, close 4014) as an
// unexpected drop: its will reaches the peer; a client that pings stays.
func TestHeartbeatTimeoutFiresWill(t *testing.T) {
	n := startNodeWith(t, t.TempDir(), func(c *node.Config) { c.HeartbeatTimeout = 2 * time.Second })
	ws, api := n.wsURL(), n.apiURL()
	bob := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"}) // the Go client pings every heartbeat_seconds/2

	silent := rawDial(t, ws)
	lo := silent.loginAs(&wire.Login{Token: token(t, api, "alice"), DeviceId: "a1", Platform: "ios", HasCursor: true}, 1)
	if lo.GetLoginOk().GetHeartbeatSeconds() != 1 {
		t.Fatalf("LoginOk.heartbeat_seconds = %d, want half the 2 s timeout", lo.GetLoginOk().GetHeartbeatSeconds())
	}
	f := willFrame("bob", "timed out", 0)
	f.Id = 2
	silent.write(f)
	if rep, _ := silent.readReply(); rep.GetOk() == nil {
		t.Fatalf("SetWill: %v", rep)
	}
	start := time.Now()
	k, _ := silent.readReply()
	if k.GetKick().GetReason() != wire.Kick_HEARTBEAT_TIMEOUT || !k.GetKick().GetMayReconnect() {
		t.Fatalf("silent client got %v, want Kick HEARTBEAT_TIMEOUT", k)
	}
	if _, code := silent.read(); code != wire.CloseHeartbeatTimeout {
		t.Fatalf("close code %d, want %d", code, wire.CloseHeartbeatTimeout)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("closed %s after its last frame, before the 2 s timeout", d)
	}
	waitFor(t, 10*time.Second, func() bool { return bob.willsWith("timed out") == 1 }, func() string { return "the will of the timed-out session never arrived" })
	if !bob.Connected() || bob.Stats().Reconnects != 0 {
		t.Fatal("the pinging client was dropped too")
	}
}
