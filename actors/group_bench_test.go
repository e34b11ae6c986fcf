//go:build !race

package actors_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// pushClock records when each message reached how many sessions.
type pushClock struct {
	mu      sync.Mutex
	members int
	seen    map[string]int
	last    map[string]time.Time
	acks    chan struct{}
}

func (p *pushClock) Deliver(_ uint64, frames []*wire.Frame) bool {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range frames {
		if f.GetSendAck() != nil {
			select {
			case p.acks <- struct{}{}:
			default:
			}
		}
		for _, e := range f.GetPush().GetEntries() {
			if m := e.GetMessage(); m != nil {
				p.seen[m.GetClientMessageId()]++
				if p.seen[m.GetClientMessageId()] == p.members {
					p.last[m.GetClientMessageId()] = now
				}
			}
		}
	}
	return true
}
func (p *pushClock) Kick(uint64, *wire.Kick) bool { return true }

// BenchmarkGroupFanout: messages into a group whose members are all online
// (one session each, through the gateway actor, no sockets), on badger with
// fsync on. The group sends each message to the node's relay as one batch
// (relay.go). Reports messages/s, member-log entries/s and send→last
// member push percentiles. Run (bench/README.md, "Groups"):
//
//	go test -run x -bench GroupFanout -benchtime 20x ./actors/
func BenchmarkGroupFanout(b *testing.B) {
	for _, size := range []int{200, 2000, 10000} {
		for _, window := range []int{1, 8} {
			b.Run(fmt.Sprintf("members=%d/window=%d", size, window), func(b *testing.B) { benchGroup(b, size, window) })
		}
	}
}

// benchGroup keeps up to window group sends unacked (window 1: each send
// waits for its ack, so the latencies are one message's; window 8, as of
// several senders: the ack waits for two commits — the group's log, then
// the sender's — so one at a time measures commit latency, not fan-out,
// and the latencies include the queue of the messages ahead).
func benchGroup(b *testing.B, size, window int) {
	clock := &pushClock{members: size, seen: map[string]int{}, last: map[string]time.Time{}, acks: make(chan struct{}, window)}
	rt, m, sys := startBenchNode(b, clock)

	var members []string
	for i := range size {
		members = append(members, fmt.Sprintf("u%05d", i))
	}
	ctx := context.Background()
	if _, _, werr, err := rt.GroupOp(ctx, "bench", "create", "u00000", "bench", members); err != nil || werr != nil {
		b.Fatalf("create: %v %v", err, werr)
	}
	ref := func(sid uint64) *actorpb.SessionRef {
		return &actorpb.SessionRef{GatewayAddress: sys.Address(), GatewayId: actors.GatewayActorName, SessionId: sid}
	}
	for i, u := range members {
		res, err := m.Cluster().Request(u, actors.UserKind, &actorpb.LoginRequest{Session: ref(uint64(i + 1)),
			Login: &wire.Login{DeviceId: "d", Platform: "web", HasCursor: true, Cursor: 1 << 40}, UserId: u}, pcluster.WithTimeout(10*time.Second))
		if r, ok := res.(*actorpb.LoginResult); err != nil || !ok || !r.GetOk() {
			b.Fatalf("login %s: %v %v", u, res, err)
		}
	}
	// Catch-up done: sessions live. And past the members' first seconds:
	// a message minted within clockSkew (5 s) of a member's activation is
	// checked against the store's dedup index (it might be a re-delivery
	// from before the activation); members online for longer skip that read.
	time.Sleep(6 * time.Second)
	group := m.Cluster().Get("bench", actors.GroupKind)
	sent := map[string]time.Time{}
	start := time.Now()
	n, inFlight := 0, 0
	for b.Loop() {
		for inFlight >= window {
			select {
			case <-clock.acks:
				inFlight--
			case <-time.After(30 * time.Second):
				b.Fatal("no ack in 30 s")
			}
		}
		cmid := fmt.Sprint("b", n)
		n++
		inFlight++
		sent[cmid] = time.Now()
		sys.Root.Send(group, &actorpb.ClientFrame{Session: ref(1), UserId: "u00000", Frame: &wire.Frame{Id: uint64(n),
			Body: &wire.Frame_Send{Send: &wire.Send{ClientMessageId: cmid, Type: 1, Content: []byte("x"),
				Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "bench"}}}}})
	}
	for ; inFlight > 0; inFlight-- {
		select {
		case <-clock.acks:
		case <-time.After(30 * time.Second):
			b.Fatal("no ack in 30 s")
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		clock.mu.Lock()
		done := len(clock.last)
		clock.mu.Unlock()
		if done == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages reached all %d members", done, n, size)
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start)
	var lat []time.Duration
	clock.mu.Lock()
	for id, t := range clock.last {
		lat = append(lat, t.Sub(sent[id]))
	}
	clock.mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(n*size)/el.Seconds(), "entries/s")
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
}
