//go:build !race

// Package e2e runs real nodes (in-process, and as separate processes) and
// talks to them over loopback WebSockets with the Go client. It starts
// protoactor cluster members, so it stays out of the race run (protoactor
// has data races of its own).
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

const (
	adminKey  = "e2e-admin-key"
	jwtSecret = "e2e-jwt-secret-0123456789"
)

type testNode struct {
	*node.Node
	dir string
}

func (n *testNode) wsURL() string  { return "ws://" + n.WSAddr() + "/ws" }
func (n *testNode) apiURL() string { return "http://" + n.APIAddr() }

// startNode starts an in-process node on dir with loopback ports chosen by
// the kernel; it is stopped at cleanup unless stopped before.
func startNode(t *testing.T, dir string) *testNode {
	t.Helper()
	return startNodeWith(t, dir, func(*node.Config) {})
}

// startNodeWith is startNode with a hook to change the configuration.
func startNodeWith(t testing.TB, dir string, edit func(*node.Config)) *testNode {
	t.Helper()
	cfg := node.Config{
		DataDir:    dir,
		WSAddr:     "127.0.0.1:0",
		APIAddr:    "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0",
		RemoteAddr: "127.0.0.1:0",
		AdminKey:   adminKey,
		JWTSecret:  jwtSecret,
	}
	edit(&cfg)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := node.Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() { n.Stop() })
	return &testNode{Node: n, dir: dir}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func token(t testing.TB, apiURL, user string) string {
	t.Helper()
	tok, err := client.MintToken(context.Background(), apiURL, adminKey, user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// device is a client that records every entry it delivers, in order.
type device struct {
	*client.Client
	mu         sync.Mutex
	entries    []*wire.Entry
	transients []*wire.Message
}

func (d *device) allTransient() []*wire.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*wire.Message(nil), d.transients...)
}

func (d *device) all() []*wire.Entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*wire.Entry(nil), d.entries...)
}

type devOpts struct {
	platform  string
	hasCursor bool
	cursor    uint64
	json      bool
	reconnect bool
}

func dial(t *testing.T, wsURL, apiURL, user, deviceID string, o devOpts) *device {
	t.Helper()
	if o.platform == "" {
		o.platform = "ios"
	}
	d := &device{}
	c, err := client.Dial(ctxT(t, 15*time.Second), client.Options{
		URL: wsURL, Token: token(t, apiURL, user), DeviceID: deviceID, Platform: o.platform,
		HasCursor: o.hasCursor, Cursor: o.cursor, JSON: o.json, Reconnect: o.reconnect,
		KeepEntries: -1,
		OnEntry: func(e *wire.Entry) {
			d.mu.Lock()
			d.entries = append(d.entries, e)
			d.mu.Unlock()
		},
		OnTransient: func(m *wire.Message) {
			d.mu.Lock()
			d.transients = append(d.transients, m)
			d.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("dial %s/%s: %v", user, deviceID, err)
	}
	t.Cleanup(func() { c.Close() })
	d.Client = c
	if err := c.WaitCaughtUp(ctxT(t, 15*time.Second)); err != nil {
		t.Fatalf("%s/%s catch-up: %v", user, deviceID, err)
	}
	return d
}

// msgs returns the message entries the device delivered, in order.
func (d *device) msgs() []*wire.Entry {
	var out []*wire.Entry
	for _, e := range d.all() {
		if e.GetMessage() != nil {
			out = append(out, e)
		}
	}
	return out
}

// waitMessages waits until the device has delivered n message entries.
func (d *device) waitMessages(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(d.msgs()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("device has %d messages, want %d: %s", len(d.msgs()), n, fmtEntries(d.all()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSeq waits until the device has delivered every entry up to seq.
func (d *device) waitSeq(t *testing.T, seq uint64) {
	t.Helper()
	if err := d.WaitCursor(ctxT(t, 20*time.Second), seq); err != nil {
		t.Fatalf("waiting for seq %d (cursor %d): %v", seq, d.Cursor(), err)
	}
}

func text(peer, cmid, body string) *wire.Send {
	return &wire.Send{
		ClientMessageId: cmid,
		Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
		Type:            int32(wire.MessageType_TEXT),
		Content:         []byte(body),
	}
}

// messages returns the message entries, checking that seqs are dense from
// first and that no message ID appears twice.
func messages(t *testing.T, who string, es []*wire.Entry, first uint64) map[string]*wire.Entry {
	t.Helper()
	out := map[string]*wire.Entry{}
	for i, e := range es {
		if want := first + uint64(i); e.GetSeq() != want {
			t.Fatalf("%s: entry %d has seq %d, want %d (seqs must be dense)", who, i, e.GetSeq(), want)
		}
		if m := e.GetMessage(); m != nil {
			if _, dup := out[m.GetMessageId()]; dup {
				t.Fatalf("%s: message %s appears twice", who, m.GetMessageId())
			}
			out[m.GetMessageId()] = e
		}
	}
	return out
}

func fmtEntries(es []*wire.Entry) string {
	s := ""
	for _, e := range es {
		if m := e.GetMessage(); m != nil {
			s += fmt.Sprintf("%d:%s ", e.GetSeq(), m.GetMessageId())
		} else {
			s += fmt.Sprintf("%d:%s ", e.GetSeq(), e.GetDevice().GetKind())
		}
	}
	return s
}
