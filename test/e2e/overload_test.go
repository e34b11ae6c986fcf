//go:build !race

package e2e

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestOverloadRefusedNotQueued sends a burst far past the session's bound
// in one write: what the node cannot take is answered RATE_LIMITED with a
// retry hint at once and stored nowhere; every acked send is in both logs
// (read by fresh devices); retrying the refused ones with their client
// message IDs completes the set, each message exactly once.
func TestOverloadRefusedNotQueued(t *testing.T) {
	n := startNodeWith(t, t.TempDir(), func(c *node.Config) { c.MaxSessionSends = 2 })
	const total = 60
	c := rawDial(t, n.wsURL())
	if f := c.login(token(t, n.apiURL(), "olga"), "phone", 1); f.GetLoginOk() == nil {
		t.Fatalf("login: %v", f)
	}
	send := func(id uint64, i int) *wire.Frame {
		return &wire.Frame{Id: id, Body: &wire.Frame_Send{Send: &wire.Send{
			ClientMessageId: fmt.Sprintf("burst-%d", i),
			Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "oscar"},
			Type:            1, Content: []byte(fmt.Sprintf("m%d", i)),
		}}}
	}
	burst := func(ids map[uint64]int) {
		var buf bytes.Buffer
		for id, i := range ids {
			b, err := proto.Marshal(send(id, i))
			if err != nil {
				t.Fatal(err)
			}
			if err := wsutil.WriteClientMessage(&buf, ws.OpBinary, b); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.nc.Write(buf.Bytes()); err != nil { // one write: the gateway reads it all at once
			t.Fatal(err)
		}
	}
	// answers reads one answer per id and returns the refused ones.
	acked := map[int]*wire.SendAck{}
	answers := func(ids map[uint64]int) map[uint64]int {
		refused := map[uint64]int{}
		for range ids {
			f, code := c.readReply()
			i, ok := ids[f.GetId()]
			switch {
			case f == nil:
				t.Fatalf("connection closed with %d", code)
			case !ok:
				t.Fatalf("answer for an unknown id: %v", f)
			case f.GetSendAck() != nil:
				if f.GetSendAck().GetDuplicate() {
					t.Fatalf("send %d acked as a duplicate: a refused send was stored", i)
				}
				acked[i] = f.GetSendAck()
			case f.GetError().GetName() == "RATE_LIMITED":
				if e := f.GetError(); !e.GetTemporary() || e.GetRetryAfterMs() == 0 {
					t.Fatalf("RATE_LIMITED without a retry hint: %v", e)
				}
				refused[f.GetId()] = i
			default:
				t.Fatalf("send %d: %v", i, f)
			}
		}
		return refused
	}

	ids := map[uint64]int{}
	for i := range total {
		ids[uint64(100+i)] = i
	}
	burst(ids)
	refused := answers(ids)
	if len(refused) == 0 {
		t.Fatalf("a burst of %d sends past a bound of 2 in flight: none refused", total)
	}
	t.Logf("first burst: %d acked, %d refused", len(acked), len(refused))

	// Nothing refused was stored: the log holds exactly what was acked.
	checkLogs := func() {
		t.Helper()
		for _, who := range []string{"olga", "oscar"} {
			d := dial(t, n.wsURL(), n.apiURL(), who, fmt.Sprintf("fresh-%d", len(acked)), devOpts{hasCursor: true})
			// The sender's log has every acked send already; the
			// recipient's gets them as the deliveries land.
			d.waitMessages(t, len(acked))
			got := map[string]bool{}
			for _, e := range d.msgs() {
				m := e.GetMessage()
				if got[m.GetMessageId()] {
					t.Fatalf("%s: message %s twice", who, m.GetMessageId())
				}
				got[m.GetMessageId()] = true
			}
			if len(got) != len(acked) {
				t.Fatalf("%s's log holds %d messages, %d were acked", who, len(got), len(acked))
			}
			for i, a := range acked {
				if !got[a.GetMessageId()] {
					t.Fatalf("%s's log lacks acked send %d (%s)", who, i, a.GetMessageId())
				}
			}
			d.Close()
		}
	}
	checkLogs()

	// Retrying the refused sends (same client message IDs, one at a time
	// as the hint asks) completes the set.
	for len(refused) > 0 {
		next := map[uint64]int{}
		for id, i := range refused {
			one := map[uint64]int{id + 1000: i}
			burst(one)
			for nid, j := range answers(one) {
				next[nid] = j
			}
		}
		refused = next
	}
	if len(acked) != total {
		t.Fatalf("%d of %d sends acked after the retries", len(acked), total)
	}
	checkLogs()
}
