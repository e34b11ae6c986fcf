//go:build !race

package actors_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// countingSessions is the gateway as the actors see it, without sockets.
type countingSessions struct{ frames, kicks atomic.Int64 }

func (c *countingSessions) Deliver(uint64, []*wire.Frame) bool { c.frames.Add(1); return true }
func (c *countingSessions) Kick(uint64, *wire.Kick) bool       { c.kicks.Add(1); return true }

// BenchmarkActorLoginKick: login+kick cycles through real user actors in a
// one-member cluster on badger (fsync on), no sockets. Each login of a
// user's mobile device kicks the previous one and durably logs KICKED and
// LOGGED_IN; devices log in with the last seq they saw, so catch-up is
// short. Run: go test -run x -bench ActorLoginKick -benchtime 5s ./actors/
func BenchmarkActorLoginKick(b *testing.B) {
	sessions := &countingSessions{}
	_, m, sys := startBenchNode(b, sessions)

	const users, callers = 64, 32
	var sid atomic.Uint64
	work := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var cursors [users]atomic.Uint64 // like a device: log in with the last seq seen
	for range callers {
		wg.Go(func() {
			for i := range work {
				u := fmt.Sprint("bench-", i%users)
				s := sid.Add(1)
				res, err := m.Cluster().Request(u, actors.UserKind, &actorpb.LoginRequest{
					Session: &actorpb.SessionRef{GatewayAddress: sys.Address(), GatewayId: actors.GatewayActorName, SessionId: s},
					Login:   &wire.Login{DeviceId: fmt.Sprint("phone-", s%2), Platform: "ios", HasCursor: true, Cursor: cursors[i%users].Load()},
					UserId:  u,
				}, pcluster.WithTimeout(10*time.Second))
				r, ok := res.(*actorpb.LoginResult)
				if err != nil || !ok || !r.GetOk() {
					failed.Add(1)
					continue
				}
				cursors[i%users].Store(r.GetReply().GetLoginOk().GetLastSeq())
			}
		})
	}
	b.ReportAllocs()
	start := time.Now()
	i := 0
	for b.Loop() {
		work <- i
		i++
	}
	close(work)
	wg.Wait()
	el := time.Since(start)
	if failed.Load() > 0 {
		b.Fatalf("%d logins failed", failed.Load())
	}
	b.ReportMetric(float64(i)/el.Seconds(), "logins/s")
	// Kicks reach the gateway actor asynchronously; most logins kick.
	b.ReportMetric(float64(sessions.kicks.Load())/float64(i), "kicks/login")
}

// startBenchNode runs the actors of one node — badger with fsync on, a
// one-member cluster, the runtime over sessions — and stops them when b
// ends.
func startBenchNode(b *testing.B, sessions actors.SessionTable) (*actors.Runtime, *cluster.Member, *actor.ActorSystem) {
	b.Helper()
	log := slog.New(slog.DiscardHandler)
	store, err := persistence.OpenBadger(b.TempDir(), persistence.BadgerOptions{}, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	rt := actors.NewRuntime(actors.Config{}, store, nil, nil, log)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(cluster.LoggerFactory(log)))
	m, err := cluster.Start(context.Background(), sys, cluster.Options{RemoteAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Logger: log}, rt.Kinds()...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Stop(true) })
	if err := rt.Start(m.Cluster(), sessions, m); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rt.Stop)
	return rt, m, sys
}
