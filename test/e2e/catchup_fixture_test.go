//go:build !race

package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// catchupNode is an in-process node whose clock (node.Config.Now) is real
// time plus an offset the test moves, so entries can be written "days
// ago" through the node's own send path.
type catchupNode struct {
	*node.Node
	offset atomic.Int64 // nanoseconds added to time.Now
}

func (n *catchupNode) wsURL() string  { return "ws://" + n.WSAddr() + "/ws" }
func (n *catchupNode) apiURL() string { return "http://" + n.APIAddr() }

// setAgo sets the node's clock to d before real time.
func (n *catchupNode) setAgo(d time.Duration) { n.offset.Store(int64(-d)) }

func startCatchupNode(tb testing.TB, compensationDays int) *catchupNode {
	tb.Helper()
	n := &catchupNode{}
	n.Node = startNodeWith(tb, tb.TempDir(), func(c *node.Config) {
		c.CompensationDays = compensationDays
		c.Store = *catchupStore // "": the default
		c.MaxFrameRate = -1     // fillNotes loads backlogs faster than a device may send
		c.Now = func() time.Time { return time.Now().Add(time.Duration(n.offset.Load())) }
	}).Node
	return n
}

// fillNotes writes count messages into user's log through the node's send
// path: a device of the user sends notes to self (one entry each in the
// user's log, nothing elsewhere), window sends in flight. With ago (may
// be nil) send i is stored with the node's clock ago(i) in the past (the
// sends before a change are acked first; the filler's login is stored at
// ago(0)); the clock is left there. It returns the seq of the last one.
func fillNotes(tb testing.TB, n *catchupNode, user string, count, window int, ago func(i int) time.Duration) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if ago != nil {
		n.setAgo(ago(0))
	}
	c, err := client.Dial(ctx, client.Options{
		URL: n.wsURL(), Token: token(tb, n.apiURL(), user), DeviceID: "filler", Platform: "linux",
		HasCursor: true, Cursor: 0, KeepEntries: -1,
	})
	if err != nil {
		tb.Fatalf("dial filler: %v", err)
	}
	defer c.Close()
	if err := c.WaitCaughtUp(ctx); err != nil {
		tb.Fatalf("filler catch-up: %v", err)
	}
	body := make([]byte, 100)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	var (
		mu   sync.Mutex
		last uint64
		errs []error
		wg   sync.WaitGroup
	)
	slots := make(chan struct{}, window)
	for i := range count {
		if ago != nil && time.Duration(-n.offset.Load()) != ago(i) {
			wg.Wait() // every earlier send is stored at the earlier time
			n.setAgo(ago(i))
		}
		slots <- struct{}{}
		p := c.SendAsync(&wire.Send{
			ClientMessageId: fmt.Sprintf("fill-%d-%d", time.Now().UnixNano(), i),
			Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: user},
			Type:            int32(wire.MessageType_TEXT),
			Content:         body,
		})
		wg.Go(func() {
			defer func() { <-slots }()
			ack, err := p.Wait(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			last = max(last, ack.GetSeq())
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		tb.Fatalf("fill %s: %d sends failed, first: %v", user, len(errs), errs[0])
	}
	return last
}

// catchupResult is what one catch-up device saw.
type catchupResult struct {
	elapsed    time.Duration // Dial (login) → last catch-up page delivered
	login      time.Duration // Dial → LoginOk
	entries    []*wire.Entry // in delivery order
	loginOk    *wire.LoginOk
	stats      client.Stats
	caughtUpAt uint64 // the client's cursor when the catch-up ended
}

// catchUp logs a new device of user in (with cursor 0, or without a
// cursor: compensation) and waits for the end of its catch-up.
func catchUp(tb testing.TB, n *catchupNode, tok, user, deviceID string, hasCursor bool) catchupResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu  sync.Mutex
		res catchupResult
	)
	start := time.Now()
	c, err := client.Dial(ctx, client.Options{
		URL: n.wsURL(), Token: tok, DeviceID: deviceID, Platform: "ipad",
		HasCursor: hasCursor, Cursor: 0, KeepEntries: 0,
		OnEntry: func(e *wire.Entry) {
			mu.Lock()
			res.entries = append(res.entries, e)
			mu.Unlock()
		},
	})
	if err != nil {
		tb.Fatalf("dial %s/%s: %v", user, deviceID, err)
	}
	res.login = time.Since(start)
	defer c.Close()
	if err := c.WaitCaughtUp(ctx); err != nil {
		tb.Fatalf("%s/%s catch-up: %v", user, deviceID, err)
	}
	res.elapsed = time.Since(start)
	res.loginOk = c.LoginOk()
	res.caughtUpAt = c.Cursor()
	res.stats = c.Stats()
	mu.Lock()
	defer mu.Unlock()
	res.entries = append([]*wire.Entry(nil), res.entries...)
	return res
}
