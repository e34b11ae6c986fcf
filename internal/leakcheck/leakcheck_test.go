package leakcheck

import (
	"testing"
	"time"
)

func parked(stop chan struct{}) { <-stop }

func TestWaitFindsAndForgets(t *testing.T) {
	stop := make(chan struct{})
	go parked(stop)
	if left := Wait(50*time.Millisecond, "leakcheck.parked"); len(left) != 1 {
		t.Fatalf("found %d parked goroutines, want 1", len(left))
	}
	close(stop)
	if left := Wait(2*time.Second, "leakcheck.parked"); len(left) != 0 {
		t.Fatalf("still %d after it ended", len(left))
	}
	if left := Matching("leakcheck.TestWaitFindsAndForgets"); len(left) != 0 {
		t.Fatal("the calling goroutine and test runners must not count")
	}
}
