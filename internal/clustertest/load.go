package clustertest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/proto/wire"
)

// Load runs sender→receiver pairs of users against a cluster and keeps an
// ack ledger: every send the server acknowledged, with the seq and time of
// its ack. Verify then checks the ledger through another path (fresh
// devices on a node the caller picks). Each user has one device, dialled
// with every node's URL, starting at a different node so the devices
// spread; the client library moves them when a node goes away.
type Load struct {
	t     testing.TB
	pairs int

	senders   []*loadDevice
	receivers []*loadDevice

	mu     sync.Mutex
	ledger []Ack
	errs   int // sends that failed or timed out (not acked: no promise made)

	stop chan struct{}
	wg   sync.WaitGroup
}

// Ack is one acknowledged send.
type Ack struct {
	From, To  string
	ClientID  string
	MessageID string
	Seq       uint64 // in the sender's log
	Sent      time.Time
	Acked     time.Time
}

type loadDevice struct {
	user string
	c    *client.Client

	mu       sync.Mutex
	received map[string]int // message ID → deliveries to OnEntry
}

// NewLoad connects pairs sender and receiver devices (users "<prefix>-s<i>"
// and "<prefix>-r<i>") to urls; token mints login tokens.
func NewLoad(t testing.TB, prefix string, pairs int, urls []string, token func(user string) string) *Load {
	t.Helper()
	l := &Load{t: t, pairs: pairs, stop: make(chan struct{})}
	dial := func(user string, i int) *loadDevice {
		d := &loadDevice{user: user, received: map[string]int{}}
		rot := append(slices.Clone(urls[i%len(urls):]), urls[:i%len(urls)]...)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Options{
			URLs: rot, Token: token(user), DeviceID: "load", Platform: "linux", Reconnect: true,
			BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
			OnEntry: func(e *wire.Entry) {
				if m := e.GetMessage(); m != nil {
					d.mu.Lock()
					d.received[m.GetMessageId()]++
					d.mu.Unlock()
				}
			},
		})
		if err != nil {
			t.Fatalf("load: dial %s: %v", user, err)
		}
		t.Cleanup(func() { c.Close() })
		d.c = c
		return d
	}
	for i := range pairs {
		l.senders = append(l.senders, dial(fmt.Sprintf("%s-s%d", prefix, i), i))
		l.receivers = append(l.receivers, dial(fmt.Sprintf("%s-r%d", prefix, i), i+1))
	}
	return l
}

// Start makes every sender send to its receiver, one message at a time
// (each waits for its ack, at most 30 s), until Stop.
func (l *Load) Start() {
	for i, s := range l.senders {
		to := l.receivers[i].user
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				cmid := fmt.Sprintf("%s-%d", s.user, n)
				sent := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				ack, err := s.c.Send(ctx, &wire.Send{
					ClientMessageId: cmid,
					Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: to},
					Type:            int32(wire.MessageType_TEXT),
					Content:         []byte(cmid),
				})
				cancel()
				l.mu.Lock()
				if err != nil {
					l.errs++
				} else {
					l.ledger = append(l.ledger, Ack{From: s.user, To: to, ClientID: cmid, MessageID: ack.GetMessageId(),
						Seq: ack.GetSeq(), Sent: sent, Acked: time.Now()})
				}
				l.mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
}

// Stop ends the senders and waits for them.
func (l *Load) Stop() {
	close(l.stop)
	l.wg.Wait()
}

// Ledger returns a copy of the acks so far.
func (l *Load) Ledger() []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ledger)
}

// Failed returns how many sends failed or timed out.
func (l *Load) Failed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs
}

// Stats summarises the ledger around a fault at time at.
type Stats struct {
	Acked int
	// LongestGap is the longest time any sender waited between two acks
	// (or from at to its first ack after it).
	LongestGap time.Duration
	// GapSender and GapEnd say whose gap it was and when it ended.
	GapSender string
	GapEnd    time.Time
	// FirstAckAfter is, per sender, the time from at to its first ack
	// sent after at, sorted; Max is the slowest sender's.
	FirstAckAfter []time.Duration
}

// MaxFirstAck is the slowest sender's recovery.
func (s Stats) MaxFirstAck() time.Duration {
	if len(s.FirstAckAfter) == 0 {
		return 0
	}
	return s.FirstAckAfter[len(s.FirstAckAfter)-1]
}

// Stats computes gap figures around at (zero: no fault).
func (l *Load) Stats(at time.Time) Stats {
	led := l.Ledger()
	by := map[string][]Ack{}
	for _, a := range led {
		by[a.From] = append(by[a.From], a)
	}
	st := Stats{Acked: len(led)}
	for _, acks := range by {
		sort.Slice(acks, func(i, j int) bool { return acks[i].Acked.Before(acks[j].Acked) })
		for i := 1; i < len(acks); i++ {
			if d := acks[i].Acked.Sub(acks[i-1].Acked); d > st.LongestGap {
				st.LongestGap, st.GapSender, st.GapEnd = d, acks[i].From, acks[i].Acked
			}
		}
		if !at.IsZero() {
			for _, a := range acks {
				if a.Sent.After(at) {
					st.FirstAckAfter = append(st.FirstAckAfter, a.Acked.Sub(at))
					break
				}
			}
		}
	}
	slices.Sort(st.FirstAckAfter)
	return st
}

// Verify checks the ledger through a different path: a fresh device of
// every user logs in at wsURL without a cursor (the compensation window
// covers the test) and reads the user's whole log. Every acked message is
// in its sender's log at the acked seq and in its receiver's log, each
// exactly once; every log is dense from 1. It also checks that every
// receiver's own device got every acked message addressed to it, without
// a duplicate delivery. It returns the number of acked messages checked.
func (l *Load) Verify(t testing.TB, wsURL string, token func(user string) string) int {
	t.Helper()
	led := l.Ledger()
	logs := map[string]map[string]uint64{} // user → message ID → seq
	read := func(user string) map[string]uint64 {
		if m, ok := logs[user]; ok {
			return m
		}
		entries, err := ReadLog(wsURL, token(user), user)
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		m := map[string]uint64{}
		for i, e := range entries {
			if e.GetSeq() != uint64(i+1) {
				t.Fatalf("verify: %s's log: entry %d has seq %d, want %d (a hole or a duplicate)", user, i, e.GetSeq(), i+1)
			}
			if msg := e.GetMessage(); msg != nil {
				if _, dup := m[msg.GetMessageId()]; dup {
					t.Fatalf("verify: %s's log has message %s twice", user, msg.GetMessageId())
				}
				m[msg.GetMessageId()] = e.GetSeq()
			}
		}
		logs[user] = m
		return m
	}
	for _, a := range led {
		if seq, ok := read(a.From)[a.MessageID]; !ok || seq != a.Seq {
			t.Errorf("acked message %s (%s→%s, acked seq %d) in the sender's log at seq %d (present %v)", a.MessageID, a.From, a.To, a.Seq, seq, ok)
		}
	}
	// A receiver's copy is written by the fan-out after the sender's ack
	// (the outbox rule): re-read a receiver's log while copies are still
	// on their way, for a bounded time.
	start := time.Now()
	for {
		var missing []Ack
		for _, a := range led {
			if _, ok := read(a.To)[a.MessageID]; !ok {
				missing = append(missing, a)
			}
		}
		if len(missing) == 0 {
			if d := time.Since(start); d > time.Second {
				t.Logf("verify: the last receivers' copies arrived %v after the load stopped", d)
			}
			break
		}
		if time.Since(start) > 30*time.Second {
			for _, a := range missing {
				t.Errorf("acked message %s (%s→%s) missing from the receiver's log", a.MessageID, a.From, a.To)
			}
			t.FailNow()
		}
		time.Sleep(500 * time.Millisecond)
		for _, a := range missing {
			delete(logs, a.To)
		}
	}
	// The receivers' own devices, across every reconnect.
	byTo := map[string][]Ack{}
	for _, a := range led {
		byTo[a.To] = append(byTo[a.To], a)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range l.receivers {
		for {
			r.mu.Lock()
			missing, dups := 0, 0
			for _, a := range byTo[r.user] {
				switch r.received[a.MessageID] {
				case 0:
					missing++
				case 1:
				default:
					dups++
				}
			}
			r.mu.Unlock()
			if dups > 0 {
				t.Fatalf("%s's device delivered %d messages twice", r.user, dups)
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's device is missing %d of %d acked messages", r.user, missing, len(byTo[r.user]))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return len(led)
}

// ReadLog reads user's whole log through a fresh device (no cursor: the
// compensation window, which covers a test) at wsURL, with tok, and
// returns the entries in seq order.
func ReadLog(wsURL, tok, user string) ([]*wire.Entry, error) {
	var mu sync.Mutex
	var entries []*wire.Entry
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		URL: wsURL, Token: tok, DeviceID: fmt.Sprintf("verify-%d", time.Now().UnixNano()), Platform: "web",
		KeepEntries: -1,
		OnEntry: func(e *wire.Entry) {
			mu.Lock()
			entries = append(entries, e)
			mu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", user, wsURL, err)
	}
	defer c.Close()
	if err := c.WaitCaughtUp(ctx); err != nil {
		return nil, fmt.Errorf("catch-up of %s: %w", user, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(entries), nil
}
