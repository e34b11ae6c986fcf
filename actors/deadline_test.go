package actors

import (
	"testing"
	"time"
)

// Every context storeDeadline hands out ends between timeout and timeout
// plus deadlineSlack from when it was asked for; one serves many calls.
func TestStoreDeadline(t *testing.T) {
	d := storeDeadline{timeout: 200 * time.Millisecond}
	first := d.get()
	distinct := map[any]bool{}
	end := time.Now().Add(1500 * time.Millisecond)
	calls := 0
	for time.Now().Before(end) {
		asked := time.Now()
		ctx := d.get()
		got := time.Now()
		calls++
		dl, ok := ctx.Deadline()
		if !ok || dl.Sub(asked) < d.timeout || dl.Sub(got) > d.timeout+deadlineSlack {
			t.Fatalf("asked at %v, deadline %v (%v later): want within [%v, %v]", asked, dl, dl.Sub(asked), d.timeout, d.timeout+deadlineSlack)
		}
		if ctx.Err() != nil {
			t.Fatalf("handed out a context already done: %v", ctx.Err())
		}
		distinct[ctx] = true
		time.Sleep(time.Millisecond)
	}
	if len(distinct) < 2 || len(distinct) > 3 || calls < 100 {
		t.Fatalf("%d contexts for %d calls over 1.5 s, want 2 or 3 (one per second or so)", len(distinct), calls)
	}
	time.Sleep(d.timeout + deadlineSlack)
	if first.Err() == nil {
		t.Fatal("the first context is not done after its deadline")
	}
}
