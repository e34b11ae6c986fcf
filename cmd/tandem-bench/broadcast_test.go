package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// TestBroadcastPipeline is the CI-sized run of `tandem-bench broadcast`:
// a real node process, 2 client worker processes, 200 members, 5 group
// messages, on each transport the node binary can be asked for (only
// its default if it does not know --ws-transport). It checks that the run
// is sound (every member connection got every message exactly once,
// every send acked, nothing kicked or dropped) and that the CPU figures
// were measured; it asserts no speed.
func TestBroadcastPipeline(t *testing.T) {
	bin := testTandem(t) // the node of this tree: it knows --ws-transport
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	transports := []string{"epoll", "goroutine"}
	const members, messages = 200, 5
	cfg := BroadcastConfig{
		Members: members, Messages: messages, Interval: 100 * time.Millisecond, Transports: transports,
		Clients: 2, Batch: 64, // create, then 3 adds: batching exercised
		Tandem: bin, Quiet: 300 * time.Millisecond, Idle: 500 * time.Millisecond, Tail: 200 * time.Millisecond,
		Drain: 20 * time.Second, DataDir: dir, JSONPath: filepath.Join(dir, "broadcast.json"),
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := runBroadcast(ctx, cfg, log)
	if res != nil {
		var out strings.Builder
		res.print(&out)
		t.Log("\n" + out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != len(transports) {
		t.Fatalf("%d runs, want %d", len(res.Runs), len(transports))
	}
	for _, r := range res.Runs {
		if len(r.Problems) > 0 {
			t.Errorf("%s: not sound: %q", r.Transport, r.Problems)
		}
		k := r.Checks
		if r.Sent != messages || r.Acked != messages || r.PushesExpected != members*messages || r.PushesDelivered != members*messages {
			t.Errorf("%s: sent %d, acked %d, pushes %d of %d; want %d, %d, %d", r.Transport, r.Sent, r.Acked, r.PushesDelivered, r.PushesExpected, messages, messages, members*messages)
		}
		if k.Logins != members || k.OpenConns != members || k.Complete != members || k.Missing != 0 || k.Duplicates != 0 || k.Kicks+k.Drops+k.ServerCloses != 0 {
			t.Errorf("%s: checks %+v", r.Transport, k)
		}
		if r.Setup.GroupRequests-r.Setup.GroupRetries != 5 {
			t.Errorf("%s: %d group requests (%d tried again), want 5 (200 members, 64 a request, then the read back)", r.Transport, r.Setup.GroupRequests, r.Setup.GroupRetries)
		}
		w := r.Window
		// Measured, not judged: only that the figures exist.
		if w.NodeCPUSeconds <= 0 || w.NodeCPUPerPushMicros <= 0 || w.Seconds <= 0 || r.NodeGoroutines <= 0 {
			t.Errorf("%s: window %+v, %d goroutines", r.Transport, w, r.NodeGoroutines)
		}
		if l := r.Latency; l.LastPush.N != messages || l.Push.N != members*messages || l.Ack.N != messages || l.LastPush.P50 <= 0 {
			t.Errorf("%s: latency %+v", r.Transport, l)
		}
	}
	if err := writeJSONFile(cfg.JSONPath, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	var back BroadcastResult
	if err := json.Unmarshal(b, &back); err != nil || len(back.Runs) != len(transports) || back.Runs[0].Window.NodeCPUPerPushMicros <= 0 {
		t.Errorf("JSON: %d runs, %v", len(back.Runs), err)
	}
}

// TestBcastTracker: the tally finds missing, duplicate and foreign pushes
// and counts connections that were pushed nothing.
func TestBcastTracker(t *testing.T) {
	tr := newBcastTracker(bcastTrack{Group: "g", Messages: 3})
	a, b, c := &net.TCPConn{}, &net.TCPConn{}, &net.TCPConn{}
	sent := time.Unix(100, 0)
	push := func(nc net.Conn, group string, content []byte) {
		tr.frame(nc, &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{{
			Kind: &wire.Entry_Message{Message: &wire.Message{
				Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: group}, Content: content,
			}},
		}}}}})
	}
	for n := range 3 {
		push(a, "g", bcastContent(uint64(n), sent, 64))
	}
	push(b, "g", bcastContent(0, sent, 64))
	push(b, "g", bcastContent(0, sent, 64)) // duplicate
	push(b, "g", bcastContent(2, sent, 64))
	push(b, "other", bcastContent(1, sent, 64))                          // another conversation
	push(b, "g", bcastContent(7, sent, 64))                              // not a message of this run
	tr.frame(b, &wire.Frame{Body: &wire.Frame_Pong{Pong: &wire.Pong{}}}) // not a push
	r := tr.tally([]net.Conn{a, b, c})
	if r.Conns != 3 || r.Complete != 1 || r.Missing != 1+3 || r.Duplicates != 1 || r.Pushes != 6 || r.Other != 1 || r.Foreign != 1 {
		t.Errorf("%+v", r)
	}
	if got := r.Received; got[0] != 2 || got[1] != 1 || got[2] != 2 {
		t.Errorf("received %v", got)
	}
	h, err := r.Latency.hist()
	if err != nil || h.n != 5 {
		t.Errorf("latency: %v, %d values", err, h.n)
	}
}

func TestBcastContent(t *testing.T) {
	at := time.Unix(1_700_000_000, 123456789)
	c := bcastContent(42, at, 64)
	n, sent, ok := parseBcastContent(c)
	if len(c) != 64 || !ok || n != 42 || sent != at.UnixNano() {
		t.Errorf("%d bytes: %d %d %v", len(c), n, sent, ok)
	}
	if _, _, ok := parseBcastContent(c[:15]); ok {
		t.Error("parsed a short content")
	}
}

func TestHistDataRoundTrip(t *testing.T) {
	var h hist
	for _, d := range []time.Duration{0, 5, 300, 1e6, 2e9} {
		h.record(d)
	}
	b, err := json.Marshal(h.export())
	if err != nil {
		t.Fatal(err)
	}
	var d histData
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	back, err := d.hist()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []float64{0, 0.5, 0.99, 1} {
		if back.quantile(q) != h.quantile(q) {
			t.Errorf("q %v: %v, want %v", q, back.quantile(q), h.quantile(q))
		}
	}
	d.N++
	if _, err := d.hist(); err == nil {
		t.Error("no error for a count the buckets do not hold")
	}
}

func TestBroadcastFlags(t *testing.T) {
	c, err := parseBroadcastFlags([]string{"-members", "500", "-transports", "epoll, default", "-interval", "50ms", "-node-flags", "--log-level info"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Members != 500 || strings.Join(c.Transports, "|") != "epoll|default" || c.Interval != 50*time.Millisecond || len(c.NodeFlags) != 2 {
		t.Errorf("%+v", c)
	}
	if err := c.Validate(20000); err != nil {
		t.Error(err)
	}
	for _, bad := range []BroadcastConfig{
		{Members: 10_001}, // over the server's group limit
		{Members: 100, Transports: []string{"nbio"}},
		{Members: 100, Size: 8}, // no room for the number and the time
		{Members: 100, Heartbeat: time.Second},
		{Members: 19_500, Clients: 1}, // over the fd limit (and the group limit)
	} {
		if err := bad.Validate(20000); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
