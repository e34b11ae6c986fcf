//go:build !race

// The in-process test starts protoactor members, which have data races of
// their own: these tests stay out of the race run.

package clustertest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/internal/clustertest"
	"github.com/tandem-im/tandem/internal/leakcheck"
	"github.com/tandem-im/tandem/proto/wire"
)

func TestMain(m *testing.M) {
	// The goroutines reaping node processes must be gone.
	leakcheck.Main(m, 5*time.Second, "tandem/internal/clustertest.")
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dial logs user's device in at wsURL; it reconnects (to the same URL)
// invisibly and is closed at cleanup.
func dial(t *testing.T, wsURL, apiURL, user string) *client.Client {
	t.Helper()
	tok, err := client.MintToken(ctxT(t, 10*time.Second), apiURL, clustertest.AdminKey, user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctxT(t, 10*time.Second), client.Options{
		URL: wsURL, Token: tok, DeviceID: user + "-dev", Platform: "linux", Reconnect: true,
	})
	if err != nil {
		t.Fatalf("dial %s at %s: %v", user, wsURL, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitCaughtUp(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// deliver sends a text from c to peer, retrying temporary refusals (an
// actor moving after a node died) with the same client message ID, and
// waits until to has it.
func deliver(t *testing.T, c *client.Client, peer string, to *client.Client, body string) {
	t.Helper()
	ctx := ctxT(t, 15*time.Second)
	id := client.NewClientMessageID()
	for {
		_, err := c.Send(ctx, &wire.Send{
			ClientMessageId: id,
			Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
			Type:            int32(wire.MessageType_TEXT),
			Content:         []byte(body),
		})
		var se *client.Error
		if err == nil {
			break
		}
		if !errors.As(err, &se) || !se.Temporary() || ctx.Err() != nil {
			t.Fatalf("send %q: %v", body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := to.WaitEntry(ctx, func(e *wire.Entry) bool { return e.GetMessage().GetClientMessageId() == id }); err != nil {
		t.Fatalf("%q not delivered: %v", body, err)
	}
}

// Three node processes on badger: a message crosses nodes; after kill -9
// of one node the others serve; SIGTERM stops a node in bounded time; a
// restart on the same ports and data rejoins.
func TestProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no process-level tests")
	}
	t0 := time.Now()
	c := clustertest.Start(t, clustertest.Config{
		Nodes: 3,
		Flags: func(int) []string { return []string{"--unsafe-multi-node-badger"} },
	})
	t.Logf("3 processes ready and joined in %s", time.Since(t0).Round(time.Millisecond))
	for i := range c.Len() {
		if c.Node(i).PID() == 0 || !c.Node(i).Running() {
			t.Fatalf("node %d not running", i)
		}
	}
	n0, n2 := c.Node(0), c.Node(2)
	alice := dial(t, n0.WSURL(), n0.APIURL(), "alice")
	bob := dial(t, n2.WSURL(), n2.APIURL(), "bob")
	deliver(t, alice, "bob", bob, "across nodes")

	c.Kill(1)
	if c.Node(1).Running() {
		t.Fatal("node 1 still running after Kill")
	}
	c.WaitMembers(2)
	deliver(t, alice, "bob", bob, "after node 1 died")

	code, took := c.Term(2)
	t.Logf("node 2 stopped on SIGTERM in %s with code %d", took.Round(time.Millisecond), code)
	if code != 0 || took > 15*time.Second {
		t.Fatalf("Term(2) = code %d after %s, want 0 within 15 s", code, took)
	}

	c.Restart(1)
	n1 := c.Node(1)
	carol := dial(t, n1.WSURL(), n1.APIURL(), "carol")
	deliver(t, carol, "alice", alice, "from the restarted node")
	t.Logf("whole test %s", time.Since(t0).Round(time.Millisecond))
}

// Three in-process nodes: a message from a device on node 0 reaches a
// device on node 2.
func TestInProcess(t *testing.T) {
	t0 := time.Now()
	nodes := clustertest.StartInProcess(t, 3, nil)
	t.Logf("3 in-process nodes joined in %s", time.Since(t0).Round(time.Millisecond))
	for i, n := range nodes {
		if got := n.ClusterMembers(); got != 3 {
			t.Fatalf("node %d sees %d members", i, got)
		}
	}
	url := func(i int) (string, string) {
		return "ws://" + nodes[i].WSAddr() + "/ws", "http://" + nodes[i].APIAddr()
	}
	ws0, api0 := url(0)
	ws2, api2 := url(2)
	alice := dial(t, ws0, api0, "alice")
	bob := dial(t, ws2, api2, "bob")
	deliver(t, alice, "bob", bob, "in process")
}
