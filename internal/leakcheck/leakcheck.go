// Package leakcheck finds goroutines that outlive a package's tests. Each
// package names its own goroutines (by a substring of their stacks), since
// libraries such as protoactor and gRPC leave theirs behind on purpose.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests, then fails the run if, within wait, goroutines whose
// stacks contain any of marks are still alive. Use it as TestMain's body.
func Main(m *testing.M, wait time.Duration, marks ...string) {
	code := m.Run()
	if code == 0 {
		if left := Wait(wait, marks...); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n\n%s\n", strings.Join(left, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// Wait polls until no goroutine other than the caller's runs code matching
// one of marks (test functions excluded), or wait passes; it returns the
// stacks still matching.
func Wait(wait time.Duration, marks ...string) []string {
	deadline := time.Now().Add(wait)
	for {
		left := Matching(marks...)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Matching returns the stacks of goroutines other than the caller's that
// contain one of marks, test runners excluded.
func Matching(marks ...string) []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 || strings.Contains(g, "testing.tRunner") || strings.Contains(g, "testing.(*M)") {
			continue // i == 0 is the calling goroutine
		}
		for _, mark := range marks {
			if strings.Contains(g, mark) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
