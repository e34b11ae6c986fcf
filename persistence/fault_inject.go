//go:build faultinject

package persistence

import (
	"fmt"
	"sync/atomic"
	"syscall"
)

// FailCommitsAfter makes b's commits fail as a failed fsync would (EIO),
// after n more commits succeed: the n+1st commit and any later one. Only
// in builds with the faultinject tag: tests of the store and the node use
// it to check that a failed sync is never retried into an ack.
func FailCommitsAfter(b *Local, n int) {
	var left atomic.Int64
	left.Store(int64(n))
	hook := func() error {
		if left.Add(-1) >= 0 {
			return nil
		}
		return fmt.Errorf("sync %s/*.mem (fault injected): %w", b.guard.dir, syscall.EIO)
	}
	b.commitHook.Store(&hook)
}
