package actors

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"
)

// recorder keeps what it received; "panic" makes it panic.
type recorder struct {
	mu   *sync.Mutex
	got  *[]any
	done chan struct{}
	want int
}

func (r *recorder) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case string:
		if m == "panic" {
			panic("asked to")
		}
	case int:
	default:
		return // lifecycle messages
	}
	r.mu.Lock()
	*r.got = append(*r.got, ctx.Message())
	n := len(*r.got)
	r.mu.Unlock()
	if n == r.want {
		close(r.done)
	}
}

func leanSystem(t *testing.T) *actor.ActorSystem {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	t.Cleanup(sys.Shutdown)
	return sys
}

// Messages from many senders at once all arrive, each sender's in the
// order it sent them; the mailbox holds no queue once drained.
func TestLeanMailboxOrderAndDrain(t *testing.T) {
	sys := leanSystem(t)
	const senders, each = 8, 2000
	var mu sync.Mutex
	var got []any
	rec := &recorder{mu: &mu, got: &got, done: make(chan struct{}), want: senders * each}
	var mb *leanMailbox
	props := actor.PropsFromProducer(func() actor.Actor { return rec },
		actor.WithDispatcher(newWorkerDispatcher(300, time.Second)),
		actor.WithMailbox(func() actor.Mailbox { mb = newLeanMailbox().(*leanMailbox); return mb }))
	pid := sys.Root.Spawn(props)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				sys.Root.Send(pid, s*each+i)
			}
		})
	}
	wg.Wait()
	select {
	case <-rec.done:
	case <-time.After(20 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d messages arrived", len(got), senders*each)
	}
	last := make([]int, senders)
	for s := range last {
		last[s] = -1
	}
	mu.Lock()
	for _, m := range got {
		v := m.(int)
		s, i := v/each, v%each
		if i != last[s]+1 {
			mu.Unlock()
			t.Fatalf("sender %d: message %d after %d", s, i, last[s])
		}
		last[s] = i
	}
	mu.Unlock()
	// Drained: no queue kept (checked under the mailbox's own lock).
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.first != nil || mb.user != nil || mb.system != nil || mb.waiting.Load() != 0 {
		t.Fatalf("drained mailbox keeps first %v, user %d/%d, system queue %v, waiting %d", mb.first, len(mb.user), cap(mb.user), mb.system != nil, mb.waiting.Load())
	}
	// A million idle actors each have one: it stays in the 112-byte class.
	if size := unsafe.Sizeof(leanMailbox{}); size > 112 {
		t.Fatalf("leanMailbox is %d bytes, past the 112-byte size class", size)
	}
}

// A panic goes to the supervisor (the default one restarts the actor)
// and the messages after it are still processed, in order.
func TestLeanMailboxPanicRestarts(t *testing.T) {
	sys := leanSystem(t)
	var mu sync.Mutex
	var got []any
	rec := &recorder{mu: &mu, got: &got, done: make(chan struct{}), want: 3}
	props := actor.PropsFromProducer(func() actor.Actor { return rec },
		actor.WithDispatcher(newWorkerDispatcher(300, time.Second)), actor.WithMailbox(newLeanMailbox))
	pid := sys.Root.Spawn(props)
	sys.Root.Send(pid, 1)
	sys.Root.Send(pid, "panic")
	sys.Root.Send(pid, 2)
	sys.Root.Send(pid, 3)
	select {
	case <-rec.done:
	case <-time.After(10 * time.Second):
		t.Fatal("messages after the panic did not arrive")
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("got %v, want [1 2 3]", got)
	}
}

// Requests through the mailbox are answered; a stopped actor's mailbox
// processes its system messages (Stop, then Terminated to watchers).
func TestLeanMailboxStop(t *testing.T) {
	sys := leanSystem(t)
	props := actor.PropsFromFunc(func(ctx actor.Context) {
		if v, ok := ctx.Message().(int); ok {
			ctx.Respond(v * 2)
		}
	}, actor.WithDispatcher(newWorkerDispatcher(300, time.Second)), actor.WithMailbox(newLeanMailbox))
	pid := sys.Root.Spawn(props)
	res, err := sys.Root.RequestFuture(pid, 21, 5*time.Second).Result()
	if err != nil || res != 42 {
		t.Fatalf("request: %v, %v", res, err)
	}
	if err := sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
