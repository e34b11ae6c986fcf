package actors

import (
	"fmt"
	"testing"
)

// One PID per gateway or relay name, shared; past the bound, a PID of its
// own per call (still the right one).
func TestNamedPIDsShared(t *testing.T) {
	var p namedPIDs
	a, b := p.get("10.0.0.1:7402", "gateway"), p.get(copyOf("10.0.0.1:7402"), copyOf("gateway"))
	if a != b || a.Address != "10.0.0.1:7402" || a.Id != "gateway" {
		t.Fatalf("two gets of one name: %v and %v, want one shared PID", a, b)
	}
	if c := p.get("10.0.0.2:7402", "gateway"); c == a || c.Address != "10.0.0.2:7402" {
		t.Fatalf("another address got %v", c)
	}
	for i := range maxNamedPIDs {
		p.get(fmt.Sprint("10.1.0.", i, ":7402"), "gateway")
	}
	x, y := p.get("10.9.9.9:7402", "gateway"), p.get("10.9.9.9:7402", "gateway")
	if x == y || x.Address != "10.9.9.9:7402" || y.Id != "gateway" {
		t.Fatalf("past the bound: %v, %v; want two right PIDs of their own", x, y)
	}
	if n := p.n.Load(); n != maxNamedPIDs {
		t.Fatalf("%d names kept, want the bound %d", n, maxNamedPIDs)
	}
	if again := p.get("10.0.0.1:7402", "gateway"); again != a {
		t.Fatal("a name kept before the bound is no longer shared")
	}
}
