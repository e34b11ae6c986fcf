//go:build !race

package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/internal/fstest"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

const (
	dfAdminKey  = "diskfull-admin-key"
	dfJWTSecret = "diskfull-jwt-secret-0123456789"
)

// smallBadger: 1 MiB memtables, so the reserve is 8 MiB
// (persistence.DefaultDiskReserve) and a small tmpfs can fill.
func smallBadger(o *persistence.BadgerOptions) {
	o.MemTableSize, o.NumMemtables, o.NumLevelZeroTables, o.NumLevelZeroTablesStall = 1<<20, 2, 2, 3
	o.BaseTableSize, o.BlockCacheSize, o.IndexCacheSize = 1<<20, 1<<20, 1<<20
}

// smallPebble: 1 MiB memtables; the reserve is set to badger's 8 MiB.
func smallPebble(o *persistence.PebbleOptions) {
	o.MemTableSize, o.CacheSize, o.DiskReserve = 1<<20, 1<<20, 8<<20
}

func startDF(t *testing.T, dir string) *Node { return startDFOn(t, dir, "badger") }

// startDFOn starts a node on store (badger or pebble) with small
// memtables in dir.
func startDFOn(t *testing.T, dir, store string) *Node {
	t.Helper()
	cfg := Config{
		DataDir: dir, WSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", RemoteAddr: "127.0.0.1:0",
		AdminKey: dfAdminKey, JWTSecret: dfJWTSecret, badger: smallBadger, pebble: smallPebble, Store: store,
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	n, err := Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() { n.Stop() })
	return n
}

type dfDevice struct {
	*client.Client
	mu      sync.Mutex
	entries []*wire.Entry
}

func (d *dfDevice) messages() map[string]*wire.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]*wire.Message{}
	for _, e := range d.entries {
		if m := e.GetMessage(); m != nil {
			out[m.GetMessageId()] = m
		}
	}
	return out
}

func dfOptions(n *Node, user, device string, d *dfDevice) client.Options {
	return client.Options{
		URL: "ws://" + n.WSAddr() + "/ws", DeviceID: device, Platform: "web", KeepEntries: -1,
		TokenFunc: func(ctx context.Context) (string, error) {
			return client.MintToken(ctx, "http://"+n.APIAddr(), dfAdminKey, user, time.Hour)
		},
		OnEntry: func(e *wire.Entry) {
			d.mu.Lock()
			d.entries = append(d.entries, e)
			d.mu.Unlock()
		},
	}
}

func dfDial(t *testing.T, n *Node, user, device string) *dfDevice {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	d := &dfDevice{}
	c, err := client.Dial(ctx, dfOptions(n, user, device, d))
	if err != nil {
		t.Fatalf("dial %s/%s: %v", user, device, err)
	}
	t.Cleanup(func() { c.Close() })
	d.Client = c
	if err := c.WaitCaughtUp(ctx); err != nil {
		t.Fatalf("%s/%s catch-up: %v", user, device, err)
	}
	return d
}

// ackLedger records every acked send and every refused one.
type ackLedger struct {
	mu      sync.Mutex
	acked   map[string]*wire.SendAck // client message ID → ack
	refused map[string]bool
}

func newLedger() *ackLedger {
	return &ackLedger{acked: map[string]*wire.SendAck{}, refused: map[string]bool{}}
}

// send sends one message from d to peer and records the outcome.
func (l *ackLedger) send(t *testing.T, d *dfDevice, cmid, peer string) (*wire.SendAck, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ack, err := d.Send(ctx, &wire.Send{ClientMessageId: cmid, Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
		Type: 1, Content: []byte("diskfull " + cmid)})
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		if _, dup := l.acked[cmid]; dup {
			t.Errorf("%s acked twice", cmid)
		}
		l.acked[cmid] = ack
		delete(l.refused, cmid)
	} else {
		l.refused[cmid] = true
	}
	return ack, err
}

func httpGet(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func metric(t *testing.T, n *Node, name string) float64 {
	t.Helper()
	_, body, _ := httpGet(t, "http://"+n.APIAddr()+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("metric %s not exported", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countMessages is the number of message entries in user's log.
func countMessages(t *testing.T, n *Node, user string) int {
	t.Helper()
	es, err := n.ReadLog(t.Context(), user, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	c := 0
	for _, e := range es {
		var we wire.Entry
		if err := proto.Unmarshal(e.Data, &we); err != nil {
			t.Fatal(err)
		}
		if we.GetMessage() != nil {
			c++
		}
	}
	return c
}

// checkLogs reads user's log straight from the store and checks it: seqs
// 1..n consecutive, no message ID twice, and every message of want (acked
// sends, by message ID) in it; it returns the message IDs it holds.
func checkLogs(t *testing.T, n *Node, user string, want map[string]bool) map[string]bool {
	t.Helper()
	es, err := n.ReadLog(t.Context(), user, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, e := range es {
		if e.Seq != persistence.Seq(i+1) {
			t.Fatalf("%s's log: entry %d has seq %d (skipped or reused)", user, i, e.Seq)
		}
		var we wire.Entry
		if err := proto.Unmarshal(e.Data, &we); err != nil {
			t.Fatal(err)
		}
		if m := we.GetMessage(); m != nil {
			if seen[m.GetMessageId()] {
				t.Fatalf("%s's log holds message %s twice", user, m.GetMessageId())
			}
			seen[m.GetMessageId()] = true
		}
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("acked message %s missing from %s's log", id, user)
		}
	}
	return seen
}

// TestDiskFullWhileServing puts a node's data dir on a 48 MiB tmpfs with
// small memtables (an 8 MiB reserve), sends over real WebSockets, and
// fills the file system with a filler file: the node does not crash;
// sends are answered UNAVAILABLE with a retry hint, never acked; a login
// that must activate a user is refused the same way; /readyz says why and
// the metrics count; a fresh device of an active user still logs in and
// catches up, and reads history; once the filler is removed sends are
// acked again without a restart, and every acked message is in the logs
// once, seqs consecutive.
func TestDiskFullWhileServing(t *testing.T) { diskFullWhileServing(t, "badger") }

// TestDiskFullWhileServingPebble: the same on the pebble store.
func TestDiskFullWhileServingPebble(t *testing.T) { diskFullWhileServing(t, "pebble") }

func diskFullWhileServing(t *testing.T, store string) {
	mnt := fstest.Tmpfs(t, 48<<20)
	n := startDFOn(t, mnt, store)
	api := "http://" + n.APIAddr()
	if got := n.health.Disk().Reserve; got != 8<<20 {
		t.Fatalf("reserve %d, want 8 MiB", got)
	}
	alice := dfDial(t, n, "alice", "a1")
	bob := dfDial(t, n, "bob", "b1")
	carol := dfDial(t, n, "carol", "c1") // keeps carol's actor active
	l := newLedger()
	senders := map[string]*dfDevice{"alice": alice, "bob": bob}
	sendRound := func(tag string, k int) []error {
		var errs []error
		for name, d := range senders {
			for i := range k {
				if _, err := l.send(t, d, fmt.Sprintf("%s-%s-%d", name, tag, i), "carol"); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errs
	}
	if errs := sendRound("before", 20); len(errs) > 0 {
		t.Fatalf("sends before the fill: %v", errs)
	}

	filler := fstest.Fill(t, mnt, 4<<20)
	waitFor(t, 2*time.Second, "the node notices the full disk", func() bool { return n.health.WriteErr() != nil })
	code, body, _ := httpGet(t, api+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "disk full") || !strings.Contains(body, "reserve 8.0 MiB") ||
		!strings.Contains(body, mnt) {
		t.Fatalf("/readyz while full: %d %s", code, body)
	}
	errs := sendRound("full", 10)
	if len(errs) != 20 {
		t.Fatalf("%d of 20 sends refused while full, want all", len(errs))
	}
	for _, err := range errs {
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code() != wire.CodeUnavailable || ce.Wire.GetRetryAfterMs() != 1000 ||
			ce.Wire.GetMessage() != "storage full; retry" {
			t.Fatalf("send while full: %v (retry_after_ms %d), want UNAVAILABLE \"storage full; retry\" with retry_after_ms 1000",
				err, ce.Wire.GetRetryAfterMs())
		}
	}
	if !alice.Connected() || !bob.Connected() {
		t.Fatal("a refused send dropped its sender's session")
	}
	// A login that activates a user writes its epoch: refused, with the
	// reason, and at once also when it reaches an activation that has
	// already failed (the second login of each user: protoactor drops what
	// reaches a mailbox behind a stop, so that one must not stop at once),
	// and again once that activation has stopped and the next one fails.
	users := []string{"dave", "dave", "erin", "erin", "frank", "frank", "dave"}
	for i, user := range users {
		if i == len(users)-1 {
			time.Sleep(1200 * time.Millisecond) // past dave's first activation's linger (actors.deadLinger)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := client.Dial(ctx, dfOptions(n, user, "d1", &dfDevice{}))
		cancel()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code() != wire.CodeUnavailable || ce.Wire.GetRetryAfterMs() != 1000 {
			t.Fatalf("login of inactive %s while full after %s: %v, want UNAVAILABLE with retry_after_ms 1000",
				user, time.Since(start).Round(time.Millisecond), err)
		}
	}
	// Reads go on: a fresh device of carol logs in, catches up everything
	// acked to her (the compensation window), and reads history.
	carol2 := dfDial(t, n, "carol", "c2")
	got := carol2.messages()
	for cmid, ack := range l.acked {
		if got[ack.GetMessageId()] == nil {
			t.Errorf("fresh device caught up without acked %s", cmid)
		}
	}
	hctx, hcancel := context.WithTimeout(t.Context(), 5*time.Second)
	hist, err := carol2.Request(hctx, &wire.Frame{Body: &wire.Frame_History{History: &wire.HistoryRequest{
		Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"}, Limit: 100}}})
	hcancel()
	if err != nil || len(hist.GetHistoryPage().GetMessages()) != 20 {
		t.Fatalf("history while full: %d messages, %v; want 20", len(hist.GetHistoryPage().GetMessages()), err)
	}
	if v := metric(t, n, "tandem_store_write_refusals_total"); v < 20 {
		t.Errorf("tandem_store_write_refusals_total %v, want >= 20", v)
	}
	if v := metric(t, n, `tandem_store_state{state="disk_full"}`); v != 1 {
		t.Errorf(`tandem_store_state{state="disk_full"} %v, want 1`, v)
	}
	if free, resv := metric(t, n, "tandem_store_disk_free_bytes"), metric(t, n, "tandem_store_disk_reserve_bytes"); free >= resv {
		t.Errorf("disk free %v >= reserve %v while full", free, resv)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "ready again after the filler was removed", func() bool {
		code, _, _ := httpGet(t, api+"/readyz")
		return code == http.StatusOK
	})
	// The refused ones are retried with their IDs, then new ones.
	l.mu.Lock()
	var retry []string
	for cmid := range l.refused {
		retry = append(retry, cmid)
	}
	l.mu.Unlock()
	for _, cmid := range retry {
		d := senders[strings.SplitN(cmid, "-", 2)[0]]
		ack, err := l.send(t, d, cmid, "carol")
		if err != nil || ack.GetDuplicate() {
			t.Fatalf("retry of %s after recovery: %v (duplicate %v)", cmid, ack, err)
		}
	}
	if errs := sendRound("after", 10); len(errs) > 0 {
		t.Fatalf("sends after recovery: %v", errs)
	}
	if v := metric(t, n, `tandem_store_state{state="ok"}`); v != 1 {
		t.Errorf(`tandem_store_state{state="ok"} %v after recovery, want 1`, v)
	}

	// Every acked message is in carol's log and its sender's, once.
	want := map[string]map[string]bool{"carol": {}, "alice": {}, "bob": {}}
	for cmid, ack := range l.acked {
		want["carol"][ack.GetMessageId()] = true
		want[strings.SplitN(cmid, "-", 2)[0]][ack.GetMessageId()] = true
	}
	if len(l.acked) != 2*(20+10+10) {
		t.Fatalf("%d sends acked, want 80", len(l.acked))
	}
	waitFor(t, 5*time.Second, "every acked message delivered to carol's log", func() bool {
		return countMessages(t, n, "carol") >= 80
	})
	for user, w := range want {
		checkLogs(t, n, user, w)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(carol.messages()) < 80 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := carol.messages(); len(got) != 80 {
		t.Errorf("carol's first device has %d messages, want 80 (log: %d, c2: %d, connected %v)", len(got), countMessages(t, n, "carol"), len(carol2.messages()), carol.Connected())
	}
}

// TestDiskMetricsAlertRule: docs/operations.md's "disk 80 % full" rule,
// 1 - tandem_store_disk_free_bytes / tandem_store_disk_total_bytes > 0.80,
// evaluated on a real node's /metrics: false on an empty 64 MiB tmpfs,
// true once a filler leaves 12 MiB free (81 % used; still above the
// 8 MiB reserve, so writes go on), and the metrics agree with statfs.
func TestDiskMetricsAlertRule(t *testing.T) {
	mnt := fstest.Tmpfs(t, 64<<20)
	n := startDF(t, mnt)
	api := "http://" + n.APIAddr()
	metric := func(body, name string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("/metrics has no %s", name)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("%s %q: %v", name, m[1], err)
		}
		return v
	}
	used := func() (float64, float64) {
		_, body, _ := httpGet(t, api+"/metrics")
		free, total := metric(body, "tandem_store_disk_free_bytes"), metric(body, "tandem_store_disk_total_bytes")
		if total != 64<<20 {
			t.Fatalf("tandem_store_disk_total_bytes %.0f, want the tmpfs's %d", total, 64<<20)
		}
		return 1 - free/total, free
	}
	if u, _ := used(); u > 0.80 {
		t.Fatalf("the rule fires on an empty 64 MiB tmpfs: %.2f used", u)
	}
	fstest.Fill(t, mnt, 12<<20)
	var u, free float64
	waitFor(t, 2*time.Second, "the metric follows the filler (the guard looks every 250 ms)", func() bool {
		u, free = used()
		return u > 0.80
	})
	if real := float64(fstest.Free(t, mnt)); free < real-(1<<20) || free > real+(1<<20) {
		t.Errorf("tandem_store_disk_free_bytes %.0f, statfs says %.0f", free, real)
	}
	if n.health.WriteErr() != nil {
		t.Errorf("writes refused at %.0f bytes free, above the 8 MiB reserve: %v", free, n.health.WriteErr())
	}
	t.Logf("rule fires at %.1f %% used (%.1f MiB free)", 100*u, free/(1<<20))
}
