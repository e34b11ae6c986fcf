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

// BenchmarkActorLoginNew: the first login of a new user each time —
// activation (the store's epoch write), the durable LOGGED_IN entry, the
// session registered — through real user actors in a one-member cluster
// on badger (fsync on), 64 in flight, no sockets. This is the login
// storm of `tandem-bench actors` without the tool around it.
// Run: go test -run x -bench ActorLoginNew -benchtime 20000x ./actors/
func BenchmarkActorLoginNew(b *testing.B) {
	sessions := &countingSessions{}
	_, m, sys := startBenchNode(b, sessions)

	const callers = 64
	var sid atomic.Uint64
	work := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range callers {
		wg.Go(func() {
			for i := range work {
				u := fmt.Sprint("new-", i)
				s := sid.Add(1)
				res, err := m.Cluster().Request(u, actors.UserKind, &actorpb.LoginRequest{
					Session: &actorpb.SessionRef{GatewayAddress: sys.Address(), GatewayId: actors.GatewayActorName, SessionId: s},
					Login:   &wire.Login{DeviceId: "phone", Platform: "ios"},
					UserId:  u,
				}, pcluster.WithTimeout(10*time.Second))
				if r, ok := res.(*actorpb.LoginResult); err != nil || !ok || !r.GetOk() {
					failed.Add(1)
				}
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
}
