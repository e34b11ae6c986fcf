package cluster

import (
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/leakcheck"
)

// TestMain fails the run if a goroutine of ours outlives the tests.
// protoactor and gRPC leave goroutines behind after a member stops; only
// the provider's own are checked.
func TestMain(m *testing.M) { leakcheck.Main(m, 2*time.Second, "tandem/cluster.(*Provider)") }
