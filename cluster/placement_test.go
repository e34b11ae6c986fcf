package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
)

func TestPlacementSingleMemberSpawns(t *testing.T) {
	v := newView("a:1", 1, members(userKinds, "a:1"))
	s := newPlacementState(nil)
	ci := pcluster.NewClusterIdentity("alice", "user")
	caller := actor.NewPID("x:1", "future$1")
	d := s.activate(v, ci, caller)
	if d.verdict != verdictSpawn || !slices.Equal(d.waiters, []*actor.PID{caller}) {
		t.Fatalf("alone: %+v, want spawn for the caller", d)
	}
	pid := actor.NewPID("a:1", activationPrefix+"user/alice$1")
	s.spawned(ci, pid)
	if d := s.activate(v, ci, caller); d.verdict != verdictReply || d.pid != pid {
		t.Fatalf("active: %+v, want the existing PID", d)
	}
	// An earlier activation's PID (same name, another $n) is not this one.
	if _, ok := s.terminated(actor.NewPID("a:1", activationPrefix+"user/alice$0")); ok {
		t.Fatal("terminated an activation that is not the live one")
	}
	if got, ok := s.terminated(pid); !ok || got.Identity != "alice" || got.Kind != "user" {
		t.Fatalf("terminated: %v %v", got, ok)
	}
	if s.active.len() != 0 {
		t.Fatalf("index not empty after termination: %v", s.active.pids())
	}
	if _, ok := s.terminated(pid); ok {
		t.Fatal("terminated twice")
	}
}

// ownedBy returns an identity of kind user that v places on addr.
func ownedBy(t *testing.T, v *view, addr string) *pcluster.ClusterIdentity {
	t.Helper()
	for i := range 1000 {
		id := fmt.Sprint("u", i)
		if v.owner("user", id) == addr {
			return pcluster.NewClusterIdentity(id, "user")
		}
	}
	t.Fatalf("no identity owned by %s", addr)
	return nil
}

func TestPlacementRefusesWhenNotOwner(t *testing.T) {
	v := newView("a:1", 1, members(userKinds, "a:1", "b:1"))
	s := newPlacementState(nil)
	ci := ownedBy(t, v, "b:1")
	if d := s.activate(v, ci, actor.NewPID("b:1", "f")); d.verdict != verdictRefuse {
		t.Fatalf("non-owner: %+v, want refuse", d)
	}
	// But an activation it still has (from an older topology) is served.
	pid := actor.NewPID("a:1", activationPrefix+ci.AsKey()+"$1")
	s.spawned(ci, pid)
	if d := s.activate(v, ci, actor.NewPID("b:1", "f")); d.verdict != verdictReply || d.pid != pid {
		t.Fatalf("non-owner with activation: %+v, want its PID", d)
	}
}

func TestPlacementProbeRound(t *testing.T) {
	v := newView("a:1", 1, members(userKinds, "a:1", "b:1", "c:1"))
	ci := ownedBy(t, v, "a:1")
	key := ci.AsKey()
	c1, c2 := actor.NewPID("b:1", "f1"), actor.NewPID("c:1", "f2")
	none := &pcluster.ActivationResponse{}

	t.Run("all none: spawn for every waiter", func(t *testing.T) {
		s := newPlacementState(nil)
		d := s.activate(v, ci, c1)
		if d.verdict != verdictProbe || !slices.Equal(d.targets, []string{"b:1", "c:1"}) {
			t.Fatalf("%+v, want probes to b and c", d)
		}
		if d := s.activate(v, ci, c2); d.verdict != verdictWait {
			t.Fatalf("second request: %+v, want wait", d)
		}
		if d := s.probed(v, key, none, nil); d.verdict != verdictWait {
			t.Fatalf("first answer: %+v", d)
		}
		d = s.probed(v, key, none, nil)
		if d.verdict != verdictSpawn || !slices.Equal(d.waiters, []*actor.PID{c1, c2}) {
			t.Fatalf("last answer: %+v, want spawn for both", d)
		}
	})
	t.Run("found elsewhere: hand it out", func(t *testing.T) {
		s := newPlacementState(nil)
		s.activate(v, ci, c1)
		elsewhere := actor.NewPID("c:1", "old")
		s.probed(v, key, &pcluster.ActivationResponse{Pid: elsewhere}, nil)
		d := s.probed(v, key, none, nil)
		if d.verdict != verdictReply || d.pid != elsewhere {
			t.Fatalf("%+v, want the other node's PID", d)
		}
		if s.active.len() != 0 {
			t.Fatal("recorded a remote activation as local")
		}
	})
	t.Run("silent member: refuse", func(t *testing.T) {
		s := newPlacementState(nil)
		s.activate(v, ci, c1)
		s.probed(v, key, none, nil)
		if d := s.probed(v, key, nil, actor.ErrTimeout); d.verdict != verdictRefuse {
			t.Fatalf("%+v, want refuse", d)
		}
		if len(s.pending) != 0 {
			t.Fatal("pending round left behind")
		}
	})
	t.Run("members changed: probe again", func(t *testing.T) {
		s := newPlacementState(nil)
		s.activate(v, ci, c1)
		v2 := newView("a:1", 2, members(userKinds, "a:1", "b:1", "c:1", "z:1"))
		if v2.owner(ci.Kind, ci.Identity) != "a:1" {
			t.Skip("identity moved to the new member")
		}
		s.probed(v2, key, none, nil)
		d := s.probed(v2, key, none, nil)
		if d.verdict != verdictProbe || len(d.targets) != 3 {
			t.Fatalf("%+v, want a new round to b, c, z", d)
		}
	})
}

func TestPlacementAnswersProbes(t *testing.T) {
	v := newView("b:1", 1, members(userKinds, "a:1", "b:1"))
	s := newPlacementState(nil)
	ci := pcluster.NewClusterIdentity("alice", "user")
	if r := s.probe(v, ci, "z:1"); !r.Failed {
		t.Error("answered a prober outside its view")
	}
	if r := s.probe(v, ci, "a:1"); r.Failed || r.Pid != nil {
		t.Errorf("nothing here: %v", r)
	}
	pid := actor.NewPID("b:1", activationPrefix+ci.AsKey()+"$1")
	s.spawned(ci, pid)
	if r := s.probe(v, ci, "a:1"); r.Pid != pid {
		t.Errorf("active here: %v", r)
	}
}

// The simulation below runs the pure placement protocol on several nodes
// whose views change at different moments, with messages delivered in
// random order, and checks that no identity is ever active on two nodes.

type simKind int

const (
	simActivate    simKind = iota // requester → owner
	simAnswer                     // owner → requester
	simProbe                      // owner → other member
	simProbeAnswer                // other member → owner
)

type simMsg struct {
	kind   simKind
	from   string
	to     string
	ci     *pcluster.ClusterIdentity
	caller *actor.PID
	resp   *pcluster.ActivationResponse
}

type simNode struct {
	addr string
	v    *view
	st   placementState
	down bool
}

type sim struct {
	t       *testing.T
	rng     *rand.Rand
	nodes   map[string]*simNode
	queue   []simMsg
	retry   []*pcluster.ClusterIdentity // refused requests, retried later
	answers map[string]*actor.PID       // key → last PID handed to a requester
	spawns  int
	seq     int
}

func newSim(t *testing.T, seed uint64) *sim {
	return &sim{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), nodes: map[string]*simNode{}, answers: map[string]*actor.PID{}}
}

func (s *sim) setView(addr string, members ...string) {
	ms := members
	n := s.nodes[addr]
	if n == nil {
		n = &simNode{addr: addr, st: newPlacementState(nil)}
		s.nodes[addr] = n
	}
	h := uint64(0)
	for _, m := range slices.Sorted(slices.Values(ms)) {
		h = hashString(h*31+1, m)
	}
	n.v = newView(addr+":1", h, simMembers(ms))
}

func simMembers(addrs []string) []*pcluster.Member {
	var ms []*pcluster.Member
	for _, a := range addrs {
		ms = append(ms, &pcluster.Member{Id: "id-" + a, Host: a, Port: 1, Kinds: []string{"user"}})
	}
	return ms
}

// request starts a lookup of ci at node from.
func (s *sim) request(from string, ci *pcluster.ClusterIdentity) {
	n := s.nodes[from]
	owner := n.v.owner(ci.Kind, ci.Identity)
	if owner == "" {
		s.retry = append(s.retry, ci)
		return
	}
	s.seq++
	caller := actor.NewPID(from+":1", fmt.Sprint("future$", s.seq))
	s.queue = append(s.queue, simMsg{kind: simActivate, from: from, to: owner[:len(owner)-2], ci: ci, caller: caller})
}

func (s *sim) step() {
	i := s.rng.IntN(len(s.queue))
	m := s.queue[i]
	s.queue = slices.Delete(s.queue, i, i+1)
	n := s.nodes[m.to]
	if n == nil || n.down {
		// Undeliverable: the sender's future times out.
		switch m.kind {
		case simActivate:
			s.retry = append(s.retry, m.ci)
		case simProbe:
			s.perform(s.nodes[m.from], m.ci, s.nodes[m.from].st.probed(s.nodes[m.from].v, m.ci.AsKey(), nil, actor.ErrTimeout))
		}
		return
	}
	switch m.kind {
	case simActivate:
		s.perform(n, m.ci, n.st.activate(n.v, m.ci, m.caller))
	case simProbe:
		s.queue = append(s.queue, simMsg{kind: simProbeAnswer, from: n.addr, to: m.from, ci: m.ci, resp: n.st.probe(n.v, m.ci, m.from+":1")})
	case simProbeAnswer:
		s.perform(n, m.ci, n.st.probed(n.v, m.ci.AsKey(), m.resp, nil))
	case simAnswer:
		if m.resp.Failed {
			s.retry = append(s.retry, m.ci)
		} else {
			s.answers[m.ci.AsKey()] = m.resp.Pid
		}
	}
}

func (s *sim) perform(n *simNode, ci *pcluster.ClusterIdentity, d decision) {
	answer := func(pid *actor.PID) {
		for _, w := range d.waiters {
			to := w.Address[:len(w.Address)-2]
			s.queue = append(s.queue, simMsg{kind: simAnswer, from: n.addr, to: to, ci: ci,
				resp: &pcluster.ActivationResponse{Pid: pid, Failed: pid == nil}})
		}
	}
	switch d.verdict {
	case verdictReply:
		answer(d.pid)
	case verdictRefuse:
		answer(nil)
	case verdictProbe:
		for _, tgt := range d.targets {
			s.queue = append(s.queue, simMsg{kind: simProbe, from: n.addr, to: tgt[:len(tgt)-2], ci: ci})
		}
	case verdictSpawn:
		s.spawns++
		pid := actor.NewPID(n.addr+":1", fmt.Sprint(ci.AsKey(), "$", s.spawns))
		s.check(ci.AsKey(), n.addr)
		n.st.spawned(ci, pid)
		answer(pid)
	}
}

// check fails the test if key is active on a live node other than at.
func (s *sim) check(key, at string) {
	s.t.Helper()
	for _, n := range s.nodes {
		if _, ok := activeByKey(n.st, key); ok && !n.down && n.addr != at {
			s.t.Fatalf("%s activated on %s while active on %s", key, at, n.addr)
		}
	}
}

// run delivers messages, injecting requests and firing view changes at
// random moments, then drains every request to completion.
func (s *sim) run(keys int, requests int, changes []func()) {
	live := func() []string {
		var out []string
		for a, n := range s.nodes {
			if !n.down {
				out = append(out, a)
			}
		}
		slices.Sort(out)
		return out
	}
	ci := func() *pcluster.ClusterIdentity {
		return pcluster.NewClusterIdentity(fmt.Sprint("u", s.rng.IntN(keys)), "user")
	}
	for i := 0; i < requests || len(changes) > 0; i++ {
		if len(changes) > 0 && s.rng.IntN(requests/len(changes)+1) == 0 {
			changes[0]()
			changes = changes[1:]
		}
		ns := live()
		s.request(ns[s.rng.IntN(len(ns))], ci())
		for range s.rng.IntN(4) {
			if len(s.queue) > 0 {
				s.step()
			}
		}
	}
	for rounds := 0; len(s.queue)+len(s.retry) > 0; rounds++ {
		if rounds > 100000 {
			s.t.Fatalf("requests never settle: %d queued, %d to retry", len(s.queue), len(s.retry))
		}
		if len(s.queue) == 0 {
			ns := live()
			for _, r := range s.retry {
				s.request(ns[s.rng.IntN(len(ns))], r)
			}
			s.retry = nil
			continue
		}
		s.step()
	}
}

func TestPlacementSimJoin(t *testing.T) {
	for seed := range uint64(300) {
		s := newSim(t, seed)
		s.setView("a", "a", "b")
		s.setView("b", "a", "b")
		s.run(40, 200, nil) // steady state
		// c and then d join; every node learns at its own moment.
		s.run(40, 600, []func(){
			func() { s.setView("c", "a", "b", "c") },
			func() { s.setView("a", "a", "b", "c") },
			func() { s.setView("d", "a", "b", "c", "d") },
			func() { s.setView("b", "a", "b", "c") },
			func() { s.setView("c", "a", "b", "c", "d") },
			func() { s.setView("b", "a", "b", "c", "d") },
			func() { s.setView("a", "a", "b", "c", "d") },
		})
		// Every identity asked for is answered with its one activation.
		for k, pid := range s.answers {
			owner := s.nodes[pid.Address[:len(pid.Address)-2]]
			if a, ok := activeByKey(owner.st, k); !ok || a != pid {
				t.Fatalf("seed %d: %s answered with %v, not a live activation", seed, k, pid)
			}
		}
	}
}

func TestPlacementSimCrash(t *testing.T) {
	for seed := range uint64(200) {
		s := newSim(t, seed)
		for _, n := range []string{"a", "b", "c"} {
			s.setView(n, "a", "b", "c")
		}
		s.run(30, 150, nil)
		s.run(30, 400, []func(){
			func() { s.nodes["c"].down = true },
			func() { s.setView("a", "a", "b") },
			func() { s.setView("b", "a", "b") },
		})
		for k, pid := range s.answers {
			n := s.nodes[pid.Address[:len(pid.Address)-2]]
			if n.down {
				continue // answered before the crash
			}
			if _, ok := activeByKey(n.st, k); !ok {
				t.Fatalf("seed %d: %s answered with %v, not a live activation", seed, k, pid)
			}
		}
	}
}

func TestPlacementProbeErrorIsUnsure(t *testing.T) {
	v := newView("a:1", 1, members(userKinds, "a:1", "b:1"))
	ci := ownedBy(t, v, "a:1")
	s := newPlacementState(nil)
	s.activate(v, ci, actor.NewPID("b:1", "f"))
	d := s.probed(v, ci.AsKey(), nil, errors.New("dead letter"))
	if d.verdict != verdictRefuse {
		t.Fatalf("%+v, want refuse", d)
	}
}

// activeByKey looks key ("kind/identity") up in s's index.
func activeByKey(s placementState, key string) (*actor.PID, bool) {
	kind, identity, _ := strings.Cut(key, "/")
	return s.active.get(idKey{kind, identity})
}
