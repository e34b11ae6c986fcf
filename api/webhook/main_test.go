package webhook

import (
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/leakcheck"
)

// TestMain fails the run if a goroutine running this package's code (a
// worker, or a test server's handler) outlives the tests.
func TestMain(m *testing.M) { leakcheck.Main(m, 2*time.Second, "tandem/api/webhook.") }
