package hashmap

import (
	"slices"
	"testing"
)

type named struct{ key, val string }

type byName struct{}

func (byName) Key(n named) string { return n.key }

// Keys whose hashes clash are kept apart, found, replaced and deleted as
// any others, and a key in the clash map stays there once its slot frees.
func TestClashingKeys(t *testing.T) {
	var x Map[string, named, byName]
	const h = 7 // every key's hash
	if !x.Put(h, "a", named{"a", "1"}) || !x.Put(h, "b", named{"b", "1"}) || x.Put(h, "b", named{"b", "2"}) {
		t.Fatal("Put: new keys not reported new, or a replaced one reported new")
	}
	if v, ok := x.Get(h, "b"); !ok || v.val != "2" || x.Len() != 2 {
		t.Fatalf("b = %v %v, %d keys", v, ok, x.Len())
	}
	if x.Delete(h, "a", func(v named) bool { return v.val == "other" }) {
		t.Fatal("deleted a value that did not match")
	}
	if !x.Delete(h, "a", func(named) bool { return true }) {
		t.Fatal("a not deleted")
	}
	if x.Put(h, "b", named{"b", "3"}) { // b is in the clash map; a's slot is free
		t.Fatal("b reported new")
	}
	if x.Put(h, "c", named{"c", "1"}) != true || x.Len() != 2 {
		t.Fatalf("c: %d keys, want b and c", x.Len())
	}
	var vals []string
	for v := range x.Values() {
		vals = append(vals, v.key+v.val)
	}
	slices.Sort(vals)
	if !slices.Equal(vals, []string{"b3", "c1"}) {
		t.Fatalf("values %v, want b3 c1 once each", vals)
	}
	if _, ok := x.Get(h, "a"); ok {
		t.Fatal("a still found")
	}
}
