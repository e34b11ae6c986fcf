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
// fsync on. Reports messages/s, member-log entries/s and send→last member
// push percentiles. Run: go test -run x -bench GroupFanout -benchtime 20x ./actors/
func BenchmarkGroupFanout(b *testing.B) {
	for _, size := range []int{200, 2000} {
		b.Run(fmt.Sprint("members=", size), func(b *testing.B) { benchGroup(b, size) })
	}
}

func benchGroup(b *testing.B, size int) {
	clock := &pushClock{members: size, seen: map[string]int{}, last: map[string]time.Time{}, acks: make(chan struct{}, 1)}
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
	time.Sleep(500 * time.Millisecond) // catch-up done: sessions live
	group := m.Cluster().Get("bench", actors.GroupKind)
	sent := map[string]time.Time{}
	start := time.Now()
	n := 0
	for b.Loop() {
		cmid := fmt.Sprint("b", n)
		n++
		sent[cmid] = time.Now()
		sys.Root.Send(group, &actorpb.ClientFrame{Session: ref(1), UserId: "u00000", Frame: &wire.Frame{Id: uint64(n),
			Body: &wire.Frame_Send{Send: &wire.Send{ClientMessageId: cmid, Type: 1, Content: []byte("x"),
				Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "bench"}}}}})
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
