// Package hashmap is a map keyed by a 64-bit hash of its keys, for the
// node's tables of a million entries (the cluster's index of local
// activations, the actors' presence table).
//
// A Map holds each value by its key's hash, the value naming its key (the
// Keyer): a slot is the value and eight bytes, and the map's growth
// rehashes integers, never a key's bytes (a cache miss per entry moved
// with string keys). The rare key whose hash another key holds already
// goes into a small map by key.
package hashmap

import "iter"

// Keyer tells the key a value names. Its zero value is used.
type Keyer[K, V any] interface{ Key(V) K }

// Map is a map from K to V by the hash of K, which the caller computes
// (one hash for its shard and the map). The zero value is empty. Not safe
// for concurrent use.
type Map[K comparable, V any, F Keyer[K, V]] struct {
	m     map[uint64]V
	clash map[K]V // keys whose hash m holds for another key
}

func (x *Map[K, V, F]) key(v V) K {
	var f F
	return f.Key(v)
}

// Get returns k's value; h is k's hash.
func (x *Map[K, V, F]) Get(h uint64, k K) (V, bool) {
	if v, ok := x.m[h]; ok && x.key(v) == k {
		return v, true
	}
	v, ok := x.clash[k]
	return v, ok
}

// Put sets k's value (h its hash) and reports whether k is new.
func (x *Map[K, V, F]) Put(h uint64, k K, v V) bool {
	switch old, ok := x.m[h]; {
	case ok && x.key(old) == k:
		x.m[h] = v
		return false
	case !ok:
		if _, had := x.clash[k]; had { // its slot was freed since: it stays where it is
			x.clash[k] = v
			return false
		}
		if x.m == nil {
			x.m = make(map[uint64]V)
		}
		x.m[h] = v
		return true
	}
	_, had := x.clash[k]
	if x.clash == nil {
		x.clash = make(map[K]V)
	}
	x.clash[k] = v
	return !had
}

// Delete removes k (h its hash) if its value passes match, and reports
// whether it did.
func (x *Map[K, V, F]) Delete(h uint64, k K, match func(V) bool) bool {
	if v, ok := x.m[h]; ok && x.key(v) == k {
		if !match(v) {
			return false
		}
		delete(x.m, h)
		return true
	}
	if v, ok := x.clash[k]; ok && match(v) {
		delete(x.clash, k)
		if len(x.clash) == 0 {
			x.clash = nil
		}
		return true
	}
	return false
}

// Len is the number of keys.
func (x *Map[K, V, F]) Len() int { return len(x.m) + len(x.clash) }

// Values yields every value, in no order. The map must not change meanwhile.
func (x *Map[K, V, F]) Values() iter.Seq[V] {
	return func(yield func(V) bool) {
		for _, v := range x.m {
			if !yield(v) {
				return
			}
		}
		for _, v := range x.clash {
			if !yield(v) {
				return
			}
		}
	}
}
