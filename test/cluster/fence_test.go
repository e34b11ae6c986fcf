//go:build !race

package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/internal/clustertest"
	"github.com/tandem-im/tandem/internal/pgtest"
	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestDoubleActivationFenced forces two live activations of one user: two
// nodes that do not know each other (no seeds: a partition, as far as
// they can tell) on one PostgreSQL database both serve alice. The later
// activation bumps the epoch; every append of the stale one fails with
// ErrFenced: it acks nothing, stops, and its device is told to log in
// again. The log stays dense and holds exactly what was acked.
func TestDoubleActivationFenced(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.CreateDB(t, "fence")
	start := func() *node.Node {
		n, err := node.Start(context.Background(), node.Config{
			DataDir: t.TempDir(), WSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", RemoteAddr: "127.0.0.1:0",
			AdminKey: clustertest.AdminKey, JWTSecret: clustertest.JWTSecret, Store: url,
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Stop() })
		return n
	}
	a, b := start(), start()
	ws := func(n *node.Node) string { return "ws://" + n.WSAddr() + "/ws" }
	tok := func(n *node.Node, user string) string {
		tk, err := client.MintToken(context.Background(), "http://"+n.APIAddr(), clustertest.AdminKey, user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	dial := func(n *node.Node, device string, reconnect bool) *client.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Options{URL: ws(n), Token: tok(n, "alice"), DeviceID: device, Platform: "linux", Reconnect: reconnect})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	send := func(c *client.Client, cmid string) (*wire.SendAck, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Send(ctx, &wire.Send{ClientMessageId: cmid, Type: 1, Content: []byte(cmid),
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}})
	}

	onA := dial(a, "on-a", false)
	acked := map[string]uint64{}
	for i := range 3 {
		ack, err := send(onA, fmt.Sprintf("a-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		acked[ack.GetMessageId()] = ack.GetSeq()
	}
	// Node B activates alice too: the epoch moves on, A's activation is
	// stale but does not know it yet.
	onB := dial(b, "on-b", true) // logs in again after a 4017, resends unacked
	if _, err := send(onA, "stale"); err == nil {
		t.Fatal("the stale activation acked a send")
	}
	if failures := metric(t, a, "tandem_append_failures_total"); failures < 1 {
		t.Fatalf("node A counts %v append failures, want the fenced one", failures)
	}
	// Node A may activate alice again meanwhile (the dropped session's
	// close reaches her identity there), which fences B's activation in
	// turn: the two sides of a partition take turns, and each stale one
	// refuses (UNAVAILABLE, retry) instead of acking. A retry with the
	// same client message ID lands on a fresh activation.
	refused := 0
	for i := range 3 {
		cmid := fmt.Sprintf("b-%d", i)
		for try := 0; ; try++ {
			ack, err := send(onB, cmid)
			if err == nil {
				acked[ack.GetMessageId()] = ack.GetSeq()
				break
			}
			if !strings.Contains(err.Error(), "UNAVAILABLE") || try == 5 {
				t.Fatalf("send %s through B: %v", cmid, err)
			}
			refused++
		}
	}
	t.Logf("sends through B refused by a fenced activation and retried: %d", refused)

	// The log through B: dense, every acked message at its acked seq,
	// nothing of the stale activation.
	entries, err := clustertest.ReadLog(ws(b), tok(b, "alice"), "alice")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for i, e := range entries {
		if e.GetSeq() != uint64(i+1) {
			t.Fatalf("entry %d has seq %d: the log is not dense", i, e.GetSeq())
		}
		if m := e.GetMessage(); m != nil {
			if string(m.GetContent()) == "stale" {
				t.Fatalf("the stale activation's message is in the log at seq %d", e.GetSeq())
			}
			if seq, ok := acked[m.GetMessageId()]; !ok || seq != e.GetSeq() {
				t.Fatalf("message %s at seq %d: acked at %d (%v)", m.GetMessageId(), e.GetSeq(), seq, ok)
			}
			seen++
		}
	}
	if seen != len(acked) {
		t.Fatalf("the log holds %d messages, %d were acked", seen, len(acked))
	}
}

func metric(t *testing.T, n *node.Node, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}
