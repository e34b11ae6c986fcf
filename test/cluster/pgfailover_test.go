//go:build !race

package cluster_test

import (
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/clustertest"
	"github.com/tandem-im/tandem/internal/pgtest"
)

// TestPostgresFailover: a primary with a synchronous streaming standby,
// 3 nodes reaching both through one multi-host URL
// (target_session_attrs=read-write), load running; kill -9 the primary,
// promote the standby. The nodes reconnect to the new primary and carry
// on; every acked message is there afterwards.
func TestPostgresFailover(t *testing.T) {
	primary := pgtest.Start(t)
	primary.CreateDB(t, "failover")
	standby := pgtest.StartStandby(t, primary)
	url := pgtest.URLs("failover", primary, standby)
	c := clustertest.Start(t, clustertest.Config{
		Nodes: 3,
		Flags: func(int) []string { return []string{"--store", url, "--store-pool-size", "8"} },
	})
	pairs := faultPairs()
	load := clustertest.NewLoad(t, "pgfo", pairs, c.WSURLs(), c.Token)
	load.Start()
	time.Sleep(faultTime(3 * time.Second))
	before := len(load.Ledger())
	killed := time.Now()
	primary.Kill()
	time.Sleep(500 * time.Millisecond)
	standby.Promote(t)
	promoted := time.Since(killed)
	time.Sleep(faultTime(8 * time.Second))
	load.Stop()

	st := load.Stats(killed)
	if len(st.FirstAckAfter) != pairs {
		t.Fatalf("only %d of %d senders got an ack after the failover (%d acked before the kill, %d in all, %d failed)",
			len(st.FirstAckAfter), pairs, before, st.Acked, load.Failed())
	}
	n := load.Verify(t, c.Node(1).WSURL(), c.Token)
	t.Logf("PostgreSQL failover: %d acked (%d before the kill), %d sends failed/timed out (never acked); promoted %v after the kill; kill → first ack per sender %v; longest send→ack gap %v; 0 lost",
		n, before, load.Failed(), promoted, st.FirstAckAfter, st.LongestGap)
}
