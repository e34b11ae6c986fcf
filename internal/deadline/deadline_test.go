package deadline

import (
	"context"
	"testing"
	"time"
)

// Every context Shared hands out ends between Timeout and Timeout plus
// Slack from when it was asked for; one serves many calls.
func TestShared(t *testing.T) {
	d := Shared{Timeout: 200 * time.Millisecond}
	first := d.Get()
	distinct := map[any]bool{}
	end := time.Now().Add(1500 * time.Millisecond)
	calls := 0
	for time.Now().Before(end) {
		asked := time.Now()
		ctx := d.Get()
		got := time.Now()
		calls++
		checkWithin(t, ctx, asked, got, d.Timeout, DefaultSlack)
		distinct[ctx] = true
		time.Sleep(time.Millisecond)
	}
	if len(distinct) < 2 || len(distinct) > 3 || calls < 100 {
		t.Fatalf("%d contexts for %d calls over 1.5 s, want 2 or 3 (one per second or so)", len(distinct), calls)
	}
	time.Sleep(d.Timeout + DefaultSlack)
	if first.Err() == nil {
		t.Fatal("the first context is not done after its deadline")
	}
}

// A Set keeps one Shared per timeout, with a tenth of it as slack, and
// past its bound makes a context per call that its cancel ends.
func TestSet(t *testing.T) {
	var s Set
	for _, timeout := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond, 5 * time.Second} {
		asked := time.Now()
		a, cancelA := s.Get(timeout)
		b, cancelB := s.Get(timeout)
		got := time.Now()
		checkWithin(t, a, asked, got, timeout, SlackOf(timeout))
		checkWithin(t, b, asked, got, timeout, SlackOf(timeout))
		cancelA()
		cancelB()
		if a.Err() != nil {
			t.Fatalf("timeout %v: a shared context ended by a caller's cancel", timeout)
		}
		if a != b && time.Since(asked) < SlackOf(timeout)/2 {
			t.Fatalf("timeout %v: two calls %v apart got two contexts", timeout, got.Sub(asked))
		}
	}
	if got := SlackOf(5 * time.Second); got != 500*time.Millisecond {
		t.Fatalf("slack of 5 s: %v, want 500 ms", got)
	}
	if got := SlackOf(time.Minute); got != DefaultSlack {
		t.Fatalf("slack of a minute: %v, want %v", got, DefaultSlack)
	}
	if got := SlackOf(time.Microsecond); got != time.Millisecond {
		t.Fatalf("slack of 1 µs: %v, want 1 ms", got)
	}

	// Past maxTimeouts distinct timeouts: a context per call, ended by
	// its cancel.
	for i := range maxTimeouts {
		s.Get(time.Hour + time.Duration(i)*time.Millisecond)
	}
	ctx, cancel := s.Get(2 * time.Hour)
	if ctx.Err() != nil {
		t.Fatal("a fresh context is done")
	}
	cancel()
	if ctx.Err() != context.Canceled {
		t.Fatalf("past the bound, cancel left the context at %v, want context.Canceled", ctx.Err())
	}
	if n := len(*s.m.Load()); n != maxTimeouts {
		t.Fatalf("%d timeouts kept, want %d", n, maxTimeouts)
	}

	// The rest of a caller's deadline (not whole milliseconds) takes no
	// slot: a context of its own, ended by its cancel.
	ctx, cancel = s.Get(3*time.Second + 123*time.Nanosecond)
	cancel()
	if ctx.Err() != context.Canceled {
		t.Fatalf("a timeout of %v got a shared context", 3*time.Second+123*time.Nanosecond)
	}

	// A timeout of zero or less is over at once, as context.WithTimeout's.
	ctx, cancel = s.Get(0)
	defer cancel()
	if ctx.Err() == nil {
		t.Fatal("a zero timeout gave a live context")
	}
}

func checkWithin(t *testing.T, ctx context.Context, asked, got time.Time, timeout, slack time.Duration) {
	t.Helper()
	dl, ok := ctx.Deadline()
	if !ok || dl.Sub(asked) < timeout || dl.Sub(got) > timeout+slack {
		t.Fatalf("asked at %v, deadline %v (%v later): want within [%v, %v]", asked, dl, dl.Sub(asked), timeout, timeout+slack)
	}
	if ctx.Err() != nil {
		t.Fatalf("handed out a context already done: %v", ctx.Err())
	}
}
