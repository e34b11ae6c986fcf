//go:build !race

package actors_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// pairSessions is the gateway for BenchmarkActorDirect: it releases a
// sender's window slot on each SendAck and counts the messages pushed to
// the receivers.
type pairSessions struct {
	acks      []chan struct{} // by session id - 1: senders are 1..pairs
	pairs     uint64
	delivered atomic.Int64
}

func (p *pairSessions) Deliver(sid uint64, frames []*wire.Frame) bool {
	for _, f := range frames {
		switch {
		case f.GetSendAck() != nil && sid >= 1 && sid <= p.pairs:
			p.acks[sid-1] <- struct{}{}
		case f.GetPush() != nil && sid > p.pairs:
			for _, e := range f.GetPush().GetEntries() {
				if e.GetMessage() != nil {
					p.delivered.Add(1)
				}
			}
		}
	}
	return true
}

func (p *pairSessions) Kick(uint64, *wire.Kick) bool { return true }

// BenchmarkActorDirect: durable one-to-one messages through real user
// actors on badger (fsync on), no sockets: pairs senders each keep window
// sends in flight to their own receiver; an op is one message, sent, acked
// after the sender's commit, appended to the receiver's log and pushed to
// its session. It isolates the actors and the store from the gateway and
// the clients. Run:
//
//	go test -run x -bench ActorDirect -benchtime 40000x -count 5 ./actors/
func BenchmarkActorDirect(b *testing.B) {
	const pairs, window = 10, 32
	ps := &pairSessions{pairs: pairs}
	for range pairs {
		ps.acks = append(ps.acks, make(chan struct{}, window))
	}
	_, m, sys := startBenchNode(b, ps)
	run := fmt.Sprint(time.Now().UnixNano())
	ref := func(sid uint64) *actorpb.SessionRef {
		return &actorpb.SessionRef{GatewayAddress: sys.Address(), GatewayId: actors.GatewayActorName, SessionId: sid}
	}
	user := func(kind string, i int) string { return fmt.Sprintf("%s%d-%s", kind, i, run) }
	for i := range pairs {
		for j, u := range []string{user("s", i), user("r", i)} {
			sid := uint64(i + 1 + j*pairs)
			res, err := m.Cluster().Request(u, actors.UserKind, &actorpb.LoginRequest{
				Session: ref(sid), UserId: u,
				Login: &wire.Login{DeviceId: "d", Platform: "ios", HasCursor: true},
			}, pcluster.WithTimeout(10*time.Second))
			if r, ok := res.(*actorpb.LoginResult); err != nil || !ok || !r.GetOk() {
				b.Fatalf("login %s: %v %v", u, res, err)
			}
		}
	}
	// Let the login pages settle: the receivers are live before sends.
	time.Sleep(200 * time.Millisecond)

	b.ReportAllocs()
	n := b.N
	start := time.Now()
	var wg sync.WaitGroup
	for i := range pairs {
		share := n / pairs
		if i < n%pairs {
			share++
		}
		pid := m.Cluster().Get(user("s", i), actors.UserKind)
		wg.Go(func() {
			inflight := 0
			for k := range share {
				if inflight == window {
					<-ps.acks[i]
					inflight--
				}
				f := &wire.Frame{Id: uint64(k + 1), Body: &wire.Frame_Send{Send: &wire.Send{
					ClientMessageId: fmt.Sprintf("c%d", k),
					Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: user("r", i)},
					Type:            1,
					Content:         make([]byte, 100),
					FirstAttempt:    true,
				}}}
				sys.Root.Send(pid, &actorpb.ClientFrame{Session: ref(uint64(i + 1)), Frame: f})
				inflight++
			}
			for ; inflight > 0; inflight-- {
				<-ps.acks[i]
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for ps.delivered.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	if got := ps.delivered.Load(); got != int64(n) {
		b.Fatalf("%d of %d messages pushed to the receivers", got, n)
	}
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
}
