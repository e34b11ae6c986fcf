package cluster

import (
	"fmt"
	"slices"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

// The index answers each identity with its own activation, also when
// keys' hashes clash (every key hashing alike here, or two of them), and
// forgets an activation only when asked with its own PID.
func TestLocalIndexClashes(t *testing.T) {
	for name, hash := range map[string]func(idKey) uint64{
		"real hash":   nil,
		"all clash":   func(idKey) uint64 { return 7 },
		"pairs clash": func(k idKey) uint64 { return uint64(len(k.identity)) },
	} {
		t.Run(name, func(t *testing.T) {
			x := &localIndex{hash: hash}
			pid := func(kind, id string, n int) *actor.PID {
				return actor.NewPID("a:1", fmt.Sprintf("%s%s/%s$%d", activationPrefix, kind, id, n))
			}
			want := map[idKey]*actor.PID{}
			for i := range 50 {
				for _, kind := range []string{"user", "group"} {
					k := idKey{kind, fmt.Sprint("id-", i)}
					want[k] = pid(kind, k.identity, i)
					x.put(k, want[k])
				}
			}
			check := func(when string) {
				t.Helper()
				if x.len() != len(want) {
					t.Fatalf("%s: len %d, want %d", when, x.len(), len(want))
				}
				for k, p := range want {
					if got, ok := x.get(k); !ok || got != p {
						t.Fatalf("%s: get(%v) = %v, %v; want %v", when, k, got, ok, p)
					}
				}
				if got, ok := x.get(idKey{"user", "never"}); ok {
					t.Fatalf("%s: a key never put answered %v", when, got)
				}
				all := x.pids()
				if len(all) != len(want) {
					t.Fatalf("%s: pids() has %d, want %d", when, len(all), len(want))
				}
				for _, p := range want {
					if !slices.Contains(all, p) {
						t.Fatalf("%s: pids() lacks %v", when, p)
					}
				}
			}
			check("after the puts")

			// A stale PID does not remove the live one; the live one does.
			k0, k1 := idKey{"user", "id-0"}, idKey{"group", "id-1"}
			if x.del(k0, pid("user", "id-0", 999)) {
				t.Fatal("del with another activation's PID removed the entry")
			}
			for _, k := range []idKey{k0, k1} {
				if !x.del(k, want[k]) {
					t.Fatalf("del(%v) with its own PID did nothing", k)
				}
				delete(want, k)
			}
			if x.del(k0, pid("user", "id-0", 0)) {
				t.Fatal("a second del of the same entry reported a removal")
			}
			check("after two dels")

			// Replaced (a new activation of the same identity), and put back.
			k2 := idKey{"user", "id-2"}
			want[k2] = pid("user", "id-2", 1000)
			x.put(k2, want[k2])
			want[k0] = pid("user", "id-0", 1001)
			x.put(k0, want[k0])
			check("after a replace and a put again")
		})
	}
}
