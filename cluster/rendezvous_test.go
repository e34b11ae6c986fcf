package cluster

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	pcluster "github.com/asynkron/protoactor-go/cluster"
)

func members(kinds []string, addrs ...string) []*pcluster.Member {
	var ms []*pcluster.Member
	for i, a := range addrs {
		host, port, err := splitPort(a)
		if err != nil {
			panic(err)
		}
		ms = append(ms, &pcluster.Member{Id: fmt.Sprintf("id-%d-%s", i, a), Host: host, Port: int32(port), Kinds: kinds})
	}
	return ms
}

var userKinds = []string{"user", "group"}

func TestOwnerIgnoresMemberOrder(t *testing.T) {
	ms := members(userKinds, "10.0.0.1:7402", "10.0.0.2:7402", "10.0.0.3:7402", "10.0.0.4:7402")
	v1 := newView("10.0.0.1:7402", 1, ms)
	rev := []*pcluster.Member{ms[3], ms[1], ms[0], ms[2]}
	v2 := newView("10.0.0.3:7402", 1, rev)
	for i := range 2000 {
		id := fmt.Sprintf("u%d", i)
		if a, b := v1.owner("user", id), v2.owner("user", id); a != b || a == "" {
			t.Fatalf("owner of %s: %q from one node, %q from another", id, a, b)
		}
	}
}

func TestOwnerSpreadsEvenly(t *testing.T) {
	addrs := []string{"10.0.0.1:7402", "10.0.0.2:7402", "10.0.0.3:7402"}
	v := newView(addrs[0], 1, members(userKinds, addrs...))
	const n = 30000
	count := map[string]int{}
	for i := range n {
		count[v.owner("user", fmt.Sprintf("user-%d", i))]++
	}
	for _, a := range addrs {
		share := float64(count[a]) / n
		if share < 0.30 || share > 0.37 {
			t.Errorf("%s owns %.3f of identities, want about 1/3 (%v)", a, share, count)
		}
	}
}

func TestJoinMovesOnlyToNewMember(t *testing.T) {
	old := []string{"10.0.0.1:7402", "10.0.0.2:7402", "10.0.0.3:7402"}
	before := newView(old[0], 1, members(userKinds, old...))
	after := newView(old[0], 2, members(userKinds, append(old, "10.0.0.9:7402")...))
	const n = 20000
	moved := 0
	for i := range n {
		id := fmt.Sprintf("g%d", i)
		a, b := before.owner("group", id), after.owner("group", id)
		if a != b {
			moved++
			if b != "10.0.0.9:7402" {
				t.Fatalf("%s moved from %s to %s, not to the new member", id, a, b)
			}
		}
	}
	if share := float64(moved) / n; share < 0.21 || share > 0.29 {
		t.Errorf("%.3f of identities moved, want about 1/4", share)
	}
}

func TestOwnerOnlyAmongKindMembers(t *testing.T) {
	ms := append(members([]string{"user"}, "10.0.0.1:1"), members([]string{"group"}, "10.0.0.2:1", "10.0.0.3:1")...)
	v := newView("10.0.0.1:1", 1, ms)
	for i := range 500 {
		id := fmt.Sprint(i)
		if o := v.owner("user", id); o != "10.0.0.1:1" {
			t.Fatalf("user %s owned by %s", id, o)
		}
		if o := v.owner("group", id); o == "10.0.0.1:1" || o == "" {
			t.Fatalf("group %s owned by %q", id, o)
		}
	}
	if o := v.owner("channel", "x"); o != "" {
		t.Errorf("unsupported kind owned by %q", o)
	}
	if got := v.others("group"); len(got) != 2 {
		t.Errorf("others(group) = %v", got)
	}
	if got := v.others("user"); len(got) != 0 {
		t.Errorf("others(user) from its only member = %v", got)
	}
	if !v.has("10.0.0.3:1") || v.has("10.0.0.4:1") {
		t.Error("has() wrong")
	}
}

// TestViewSwapConcurrent runs lookups against views swapped underneath,
// as the lookup does; run with -race.
func TestViewSwapConcurrent(t *testing.T) {
	var cur atomic.Pointer[view]
	all := []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"}
	cur.Store(newView(all[0], 0, members(userKinds, all[:2]...)))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v := cur.Load()
				if o := v.owner("user", fmt.Sprint(i)); !v.has(o) {
					t.Errorf("owner %q not a member", o)
					return
				}
			}
		})
	}
	for i := range 500 {
		n := 1 + rand.IntN(len(all))
		cur.Store(newView(all[0], uint64(i), members(userKinds, all[:n]...)))
	}
	close(stop)
	wg.Wait()
}

func BenchmarkOwner(b *testing.B) {
	v := newView("10.0.0.1:1", 1, members(userKinds, "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1", "10.0.0.5:1"))
	b.ReportAllocs()
	for b.Loop() {
		v.owner("user", "alice@example.com")
	}
}
