package actors

import (
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// A run that blocks must not hold up the next one: the dispatcher starts
// another worker rather than queueing behind it, as the default does.
func TestWorkerDispatcherNeverQueuesBehindABlockedRun(t *testing.T) {
	d := newWorkerDispatcher(300, time.Minute)
	release := make(chan struct{})
	started := make(chan struct{})
	d.Schedule(func() { close(started); <-release })
	<-started
	ran := make(chan struct{})
	d.Schedule(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the second run waited for the blocked first one")
	}
	close(release)
	if n := d.workers.Load(); n != 2 {
		t.Fatalf("workers = %d, want 2 (one per concurrent run)", n)
	}
}

// Idle workers are reused, and exit after the idle timeout.
func TestWorkerDispatcherReusesAndRetiresWorkers(t *testing.T) {
	d := newWorkerDispatcher(300, 200*time.Millisecond)
	for i := 0; i < 100; i++ {
		done := make(chan struct{})
		d.Schedule(func() { close(done) })
		<-done
		// Let the worker get back to waiting before the next run.
		deadline := time.Now().Add(5 * time.Second)
		for d.idle.Load() != 1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	if n := d.workers.Load(); n != 1 {
		t.Fatalf("after 100 sequential runs: %d workers, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.workers.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := d.workers.Load(); n != 0 {
		t.Fatalf("%d workers left after the idle timeout", n)
	}
}

// Actors spawned with the dispatcher process every message in order, and
// one that panics is restarted without losing the worker pool.
func TestWorkerDispatcherRunsActors(t *testing.T) {
	sys := actor.NewActorSystem()
	d := newWorkerDispatcher(10, time.Second)
	const actors, msgs = 50, 200
	var mu sync.Mutex
	got := make(map[int][]int)
	var wg sync.WaitGroup
	wg.Add(actors * msgs)
	pids := make([]*actor.PID, actors)
	for i := range pids {
		i := i
		pids[i] = sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
			if n, ok := c.Message().(int); ok {
				if n == -1 {
					panic("boom")
				}
				mu.Lock()
				got[i] = append(got[i], n)
				mu.Unlock()
				wg.Done()
			}
		}, actor.WithDispatcher(d)))
	}
	for n := 0; n < msgs; n++ {
		if n == msgs/2 {
			sys.Root.Send(pids[0], -1)
		}
		for _, pid := range pids {
			sys.Root.Send(pid, n)
		}
	}
	waitDone := make(chan struct{})
	go func() { wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(20 * time.Second):
		t.Fatal("messages not all processed")
	}
	for i := range pids {
		if len(got[i]) != msgs {
			t.Fatalf("actor %d got %d messages, want %d", i, len(got[i]), msgs)
		}
		for n, v := range got[i] {
			if v != n {
				t.Fatalf("actor %d: message %d is %d: out of order", i, n, v)
			}
		}
	}
}
