//go:build !race

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/proto/wire"
)

// dense checks that es are seqs from..to, each once, in order.
func dense(t *testing.T, who string, es []*wire.Entry, from, to uint64) {
	t.Helper()
	if uint64(len(es)) != to-from+1 {
		t.Fatalf("%s: %d entries, want seqs %d-%d (%d)", who, len(es), from, to, to-from+1)
	}
	for i, e := range es {
		if want := from + uint64(i); e.GetSeq() != want {
			t.Fatalf("%s: entry %d has seq %d, want %d", who, i, e.GetSeq(), want)
		}
	}
}

// TestCatchupThousandsOverWebSocket: a device 3,000 entries behind logs in
// with cursor 0 while another device of the user keeps sending. It gets
// every seq exactly once and in order, never sees a hole (no gap pull),
// and the messages sent during its catch-up arrive too.
func TestCatchupThousandsOverWebSocket(t *testing.T) {
	n := startCatchupNode(t, 1)
	const backlog, during = 3000, 300
	fillNotes(t, n, "cu-alice", backlog, 256, nil)

	tok := token(t, n.apiURL(), "cu-alice")
	ctx := ctxT(t, 60*time.Second)
	sender, err := client.Dial(ctx, client.Options{URL: n.wsURL(), Token: tok, DeviceID: "sender", Platform: "linux", HasCursor: true, Cursor: 0, KeepEntries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close() })
	if err := sender.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	sent := make(chan uint64, 1)
	start := make(chan struct{})
	go func() {
		<-start
		var last uint64
		for i := range during {
			ack, err := sender.Send(ctx, text("cu-alice", fmt.Sprint("during-", i), "sent during the catch-up"))
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				break
			}
			last = ack.GetSeq()
		}
		sent <- last
	}()

	d := &device{}
	close(start)
	d.Client, err = client.Dial(ctx, client.Options{
		URL: n.wsURL(), Token: tok, DeviceID: "behind", Platform: "ipad", HasCursor: true, Cursor: 0, KeepEntries: -1,
		OnEntry: func(e *wire.Entry) {
			d.mu.Lock()
			d.entries = append(d.entries, e)
			d.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	last := <-sent
	if t.Failed() {
		return
	}
	d.waitSeq(t, last)
	es := d.all()
	dense(t, "the device behind", es, 1, es[len(es)-1].GetSeq())
	if st := d.Stats(); st.GapPulls != 0 {
		t.Fatalf("the device pulled %d gaps: the catch-up left a hole", st.GapPulls)
	}
	notes := 0
	for _, e := range es {
		if e.GetMessage() != nil {
			notes++
		}
	}
	if notes != backlog+during {
		t.Fatalf("the device got %d messages, want %d", notes, backlog+during)
	}
}

// TestCompensationWindowOverWebSocket: with --compensation-days 7, a new
// device (no cursor) gets exactly the entries of the last 7 days — written
// over 8 days through the node's send path — in order, once each.
func TestCompensationWindowOverWebSocket(t *testing.T) {
	const days, perDay = 7, 300
	n := startCatchupNode(t, days)
	// Day 0 is 8 days ago (outside the window); days 1-7 are 7 days minus
	// an hour ago, then one day later each.
	fillNotes(t, n, "cu-bob", (days+1)*perDay, 64, func(i int) time.Duration {
		if d := i / perDay; d > 0 {
			return days*24*time.Hour - time.Hour - time.Duration(d-1)*24*time.Hour
		}
		return (days + 1) * 24 * time.Hour
	})
	n.setAgo(0)
	r := catchUp(t, n, token(t, n.apiURL(), "cu-bob"), "cu-bob", "new-device", false)
	from := r.loginOk.GetCompensationFromSeq()
	if from == 0 || len(r.entries) == 0 {
		t.Fatalf("LoginOk %v, %d entries: want the compensation window", r.loginOk, len(r.entries))
	}
	dense(t, "the new device", r.entries, from, r.entries[len(r.entries)-1].GetSeq())
	since := time.Now().Add(-days * 24 * time.Hour).UnixMilli()
	notes := 0
	for _, e := range r.entries {
		if e.GetServerTimeMs() < since {
			t.Fatalf("entry %d is from %v, before the window", e.GetSeq(), time.UnixMilli(e.GetServerTimeMs()))
		}
		if e.GetMessage() != nil {
			notes++
		}
	}
	if notes != days*perDay {
		t.Fatalf("the new device got %d messages, want the %d of the last %d days", notes, days*perDay, days)
	}
	if r.stats.GapPulls != 0 || r.stats.Duplicates != 0 {
		t.Fatalf("gap pulls %d, duplicates %d: want none", r.stats.GapPulls, r.stats.Duplicates)
	}
}
