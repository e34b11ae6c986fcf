package cluster

import (
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// A kind built with NewKindSpawnedBy is spawned by its own function; other
// props by protoactor's default spawner; and the registration goes with
// the props, so a node runtime the function holds is not kept for good.
func TestKindSpawnerForgottenWithProps(t *testing.T) {
	count := func() (n int) {
		spawners.Range(func(any, any) bool { n++; return true })
		return n
	}
	before := count()
	called := 0
	props := actor.PropsFromFunc(func(actor.Context) {})
	NewKindSpawnedBy("k", props, func(*actor.ActorSystem, string, *actor.Props, actor.SpawnerContext) (*actor.PID, error) {
		called++
		return nil, nil
	})
	if _, err := spawnerOf(props)(nil, "x", props, nil); err != nil || called != 1 {
		t.Fatalf("the kind's spawner was not the one registered (called %d times)", called)
	}
	other := actor.PropsFromFunc(func(actor.Context) {})
	if reflect.ValueOf(spawnerOf(other)).Pointer() != reflect.ValueOf(actor.DefaultSpawner).Pointer() {
		t.Fatal("props without a registration are not spawned by protoactor's default spawner")
	}
	if count() != before+1 {
		t.Fatalf("%d registrations, want %d", count(), before+1)
	}
	runtime.KeepAlive(props)
	props = nil
	for deadline := time.Now().Add(5 * time.Second); count() != before; {
		if time.Now().After(deadline) {
			t.Fatalf("the registration outlived its props: %d, want %d", count(), before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
