package cluster

import (
	"cmp"
	"slices"

	pcluster "github.com/asynkron/protoactor-go/cluster"
)

// view is one immutable snapshot of the cluster topology as this node sees
// it, with what placement needs precomputed. A view is never modified after
// newView returns, so it may be shared by any number of goroutines; the
// lookup swaps whole views atomically.
type view struct {
	hash  uint64              // protoactor's topology hash of the member set
	self  string              // this node's remote address
	list  []*pcluster.Member  // as given; read-only
	addrs map[string]struct{} // remote addresses of all members
	kinds map[string][]node   // members supporting each kind, sorted
}

// node is one member as seen by rendezvous hashing.
type node struct {
	addr string // remote address, host:port
	id   string // protoactor member ID, tie-break only
	seed uint64 // hash of addr
}

// newView builds a snapshot from a protoactor topology. The owner of an
// identity depends only on the set of members (their addresses and kinds),
// never on the order they are listed in.
func newView(self string, hash uint64, members []*pcluster.Member) *view {
	v := &view{
		hash:  hash,
		self:  self,
		list:  members,
		addrs: make(map[string]struct{}, len(members)),
		kinds: make(map[string][]node),
	}
	for _, m := range members {
		addr := m.Address()
		v.addrs[addr] = struct{}{}
		n := node{addr: addr, id: m.Id, seed: mix64(hashString(fnvOffset, addr))}
		for _, k := range m.Kinds {
			v.kinds[k] = append(v.kinds[k], n)
		}
	}
	for _, ns := range v.kinds {
		slices.SortFunc(ns, func(a, b node) int {
			return cmp.Or(cmp.Compare(a.addr, b.addr), cmp.Compare(a.id, b.id))
		})
	}
	return v
}

// members returns the members the view was built from.
func (v *view) members() []*pcluster.Member { return v.list }

// has reports whether addr is the remote address of a member.
func (v *view) has(addr string) bool {
	_, ok := v.addrs[addr]
	return ok
}

// owner returns the remote address of the member that owns identity of
// kind: the member supporting kind with the highest rendezvous score. It
// returns "" when no member supports kind.
func (v *view) owner(kind, identity string) string {
	ns := v.kinds[kind]
	switch len(ns) {
	case 0:
		return ""
	case 1:
		return ns[0].addr
	}
	key := keyHash(kind, identity)
	best, bestScore := 0, score(key, ns[0].seed)
	for i := 1; i < len(ns); i++ {
		// Ties (equal addresses only) keep the first in sorted order.
		if s := score(key, ns[i].seed); s > bestScore {
			best, bestScore = i, s
		}
	}
	return ns[best].addr
}

// others returns the addresses of the members other than this node that
// support kind: the nodes an activation must probe.
func (v *view) others(kind string) []string {
	ns := v.kinds[kind]
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		if n.addr != v.self && (len(out) == 0 || out[len(out)-1] != n.addr) {
			out = append(out, n.addr)
		}
	}
	return out
}

// score is the rendezvous weight of a key on a node: a bijective mix of
// both hashes, so every node ranks keys independently and uniformly.
func score(key, seed uint64) uint64 { return mix64(key ^ seed) }

func keyHash(kind, identity string) uint64 {
	h := hashString(fnvOffset, kind)
	h = (h ^ '/') * fnvPrime
	return mix64(hashString(h, identity))
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// hashString continues a 64-bit FNV-1a hash over s without allocating.
func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 is the splitmix64 finalizer: a bijection with full avalanche,
// which FNV alone lacks on short, similar strings.
func mix64(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	z ^= z >> 31
	return z
}
