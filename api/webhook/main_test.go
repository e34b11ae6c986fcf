package webhook

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if a goroutine running this package's code (a
// worker, or a test server's handler) outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if gs := waitNoGoroutines(2 * time.Second); len(gs) > 0 {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n\n%s\n", strings.Join(gs, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// waitNoGoroutines waits up to d for packageGoroutines to be empty and
// returns what is left.
func waitNoGoroutines(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		gs := packageGoroutines("tandem/api/webhook.")
		if len(gs) == 0 || time.Now().After(deadline) {
			return gs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// packageGoroutines returns the stacks of goroutines other than the
// calling one that run code whose name contains pattern, test functions
// excluded.
func packageGoroutines(pattern string) []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 || !strings.Contains(g, pattern) {
			continue // i == 0 is the calling goroutine
		}
		if strings.Contains(g, "testing.tRunner") || strings.Contains(g, "testing.(*M)") {
			continue
		}
		out = append(out, g)
	}
	return out
}
