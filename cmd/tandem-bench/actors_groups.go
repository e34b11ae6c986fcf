package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-im/tandem/api"
)

// The groups of `tandem-bench actors`: created before the chat through
// the group actors (node.Node.Groups, the server API's path), each a run
// of consecutive users packed around the users one after another, so
// every user is in a group once the sizes add up to the users.

// groupLayout is who is in which group. Read-only once built.
type groupLayout struct {
	users  int
	start  []int32   // group g's first member
	size   []int32   // and how many
	ofUser [][]int32 // the groups of each user
}

func vgroup(g int) string { return "g" + strconv.Itoa(g) }

// newGroupLayout packs groups of sizes[g % len] members around users.
func newGroupLayout(users, groups int, sizes []int) *groupLayout {
	l := &groupLayout{users: users, start: make([]int32, groups), size: make([]int32, groups)}
	if groups > 0 {
		l.ofUser = make([][]int32, users)
	}
	next := 0
	for g := range groups {
		n := sizes[g%len(sizes)]
		l.start[g], l.size[g] = int32(next), int32(n)
		for j := range n {
			u := (next + j) % users
			l.ofUser[u] = append(l.ofUser[u], int32(g))
		}
		next = (next + n) % users
	}
	return l
}

// of is user u's groups (none without groups).
func (l *groupLayout) of(u int) []int32 {
	if l.ofUser == nil {
		return nil
	}
	return l.ofUser[u]
}

// member is group g's j-th member (j < its size).
func (l *groupLayout) member(g, j int) int { return (int(l.start[g]) + j) % l.users }

func (l *groupLayout) isMember(g, u int) bool {
	return (u-int(l.start[g])+l.users)%l.users < int(l.size[g])
}

// members lists group g's user IDs.
func (l *groupLayout) members(g int) []string {
	out := make([]string, l.size[g])
	for j := range out {
		out[j] = vuser(l.member(g, j))
	}
	return out
}

// memberships is the sum of the group sizes.
func (l *groupLayout) memberships() uint64 {
	var n uint64
	for _, s := range l.size {
		n += uint64(s)
	}
	return n
}

// createGroups creates every group of the layout through groups, 4 at a
// time, and waits until the CREATED event reached every member device
// (or Drain passes). It returns the first failure.
func (r *actorsRun) createGroups(ctx context.Context, groups api.Groups) error {
	l := r.groups
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range min(4, len(l.size)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				g := int(next.Add(1) - 1)
				if g >= len(l.size) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
				_, members, werr, err := groups.GroupOp(cctx, vgroup(g), "create", "", "tandem-bench "+vgroup(g), l.members(g))
				cancel()
				if err == nil && werr != nil {
					err = fmt.Errorf("%s: %s", werr.GetName(), werr.GetMessage())
				}
				if err == nil && len(members) != int(l.size[g]) {
					err = fmt.Errorf("created with %d members, want %d", len(members), l.size[g])
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("create group %s of %d members: %w", vgroup(g), l.size[g], err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil || ctx.Err() != nil {
		return first
	}
	// The CREATED events go to every member's log and devices: wait for
	// them, so the chat does not start in the middle of that fan-out.
	want := l.memberships() * uint64(r.cfg.Devices)
	deadline := time.Now().Add(r.cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r.mu.Lock()
		got := r.groupEvents
		r.mu.Unlock()
		if got >= want {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil // counted short in the result (Groups.EventPushes)
}
