package actors

import (
	"slices"
	"testing"
)

// Sessions whose actor lived on a member that left are handed out once;
// the others stay; closed sessions and sessions homed on this node are
// not kept.
func TestSessionHomesOrphaned(t *testing.T) {
	var h sessionHomes
	const self = "10.0.0.9:7402"
	h.set(1, "10.0.0.1:7402", self)
	h.set(2, "10.0.0.2:7402", self)
	h.set(3, "10.0.0.1:7402", self)
	h.set(4, "10.0.0.3:7402", self)
	h.set(5, self, self)
	h.set(6, "10.0.0.1:7402", self)
	h.drop(3)                       // closed before the member left
	h.set(2, "10.0.0.1:7402", self) // logged in again, now homed elsewhere
	h.set(6, self, self)            // logged in again, now homed here
	if len(h.m) != 3 {
		t.Fatalf("%d sessions kept, want 3 (1, 2, 4): those homed here are not (%v)", len(h.m), h.m)
	}

	got := h.orphaned(map[string]bool{"10.0.0.1:7402": true})
	slices.Sort(got)
	if !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("orphaned = %v, want [1 2]", got)
	}
	if again := h.orphaned(map[string]bool{"10.0.0.1:7402": true}); len(again) != 0 {
		t.Fatalf("orphaned twice: %v", again)
	}
	if rest := h.orphaned(map[string]bool{"10.0.0.2:7402": true, "10.0.0.3:7402": true}); !slices.Equal(rest, []uint64{4}) {
		t.Fatalf("left = %v, want [4]", rest)
	}
}
