//go:build !race

// These tests start real protoactor members on 127.0.0.1. protoactor has
// data races of its own (block list, member list, gossip), so they are
// left out of -race runs; the pure code is race-tested elsewhere.

package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const echoKind = "echo"

// registry counts activations of the echo kind across all members.
type registry struct {
	mu      sync.Mutex
	live    map[string][]string // identity → remote addresses running it
	total   map[string]int      // identity → activations ever
	doubles []string            // "identity: started on X while live on Y"
	errs    []string            // what the actors saw that was wrong
}

func (r *registry) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, msg)
}

// check fails t if an actor reported a problem.
func (r *registry) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		t.Errorf("actors reported: %v", r.errs)
	}
}

func newRegistry() *registry {
	return &registry{live: map[string][]string{}, total: map[string]int{}}
}

func (r *registry) started(id, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.live[id]) > 0 {
		r.doubles = append(r.doubles, fmt.Sprintf("%s: started on %s while live on %v", id, addr, r.live[id]))
	}
	r.live[id] = append(r.live[id], addr)
	r.total[id]++
}

func (r *registry) stopped(id, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := slices.Index(r.live[id], addr); i >= 0 {
		r.live[id] = slices.Delete(r.live[id], i, i+1)
	}
}

func (r *registry) snapshot() (live map[string][]string, total map[string]int, doubles []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	live = map[string][]string{}
	for k, v := range r.live {
		live[k] = slices.Clone(v)
	}
	total = map[string]int{}
	for k, v := range r.total {
		total[k] = v
	}
	return live, total, slices.Clone(r.doubles)
}

// echo answers "identity@address"; "passivate" makes it poison itself.
type echo struct {
	reg      *registry
	id, addr string
}

func (e *echo) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		if e.id != "" {
			e.reg.fail(fmt.Sprintf("Started after ClusterInit for %s", e.id))
		}
	case *pcluster.ClusterInit:
		if e.id != "" {
			e.reg.fail(fmt.Sprintf("a second ClusterInit (%s) for %s", msg.Identity.Identity, e.id))
		}
		e.id = msg.Identity.Identity
		e.addr = ctx.ActorSystem().Address()
		e.reg.started(e.id, e.addr)
	case *actor.Stopped:
		if e.addr != "" {
			e.reg.stopped(e.id, e.addr)
		}
	case *wrapperspb.StringValue:
		ctx.Respond(wrapperspb.String(e.id + "@" + e.addr))
		if msg.Value == "passivate" {
			ctx.Poison(ctx.Self())
		}
	}
}

func testLogger() *slog.Logger {
	lvl := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn}
	l, ok := lvl[os.Getenv("CLUSTER_TEST_LOG")]
	if !ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// testKey is the cluster key of the test members: gossip is encrypted
// and the remote runs over mutual TLS, as in production.
var testKey = []byte("tandem-test-cluster-key-32-bytes")

// startMember starts a member with the echo kind on 127.0.0.1, ports
// picked by the kernel, keyed with testKey; cleanup stops it if the test
// has not.
func startMember(t *testing.T, reg *registry, seeds ...string) *Member {
	t.Helper()
	m, err := tryStartMember(reg, func(o *Options) { o.Seeds = seeds })
	if err != nil {
		t.Fatalf("start member: %v", err)
	}
	cleanupMember(t, reg, m)
	return m
}

// tryStartMember starts a member like startMember after edit has changed
// its options; the caller stops it.
func tryStartMember(reg *registry, edit func(*Options)) (*Member, error) {
	log := testLogger()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(LoggerFactory(log)))
	kind := NewKind(echoKind, actor.PropsFromProducer(func() actor.Actor { return &echo{reg: reg} }))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	o := Options{
		RemoteAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0",
		Keys:       [][]byte{testKey},
		Logger:     log,
	}
	edit(&o)
	return Start(ctx, sys, o, kind)
}

// cleanupMember stops m at cleanup if the test has not.
func cleanupMember(t *testing.T, reg *registry, m *Member) {
	t.Cleanup(func() {
		if err := m.Stop(true); err != nil {
			t.Logf("stop %s: %v", m.Address(), err)
		}
		reg.check(t)
	})
}

// startMembers starts the first member, then the others in parallel
// with it as their seed.
func startMembers(t *testing.T, reg *registry, n int) []*Member {
	t.Helper()
	first := startMember(t, reg)
	ms := make([]*Member, n)
	ms[0] = first
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() { ms[i] = startMember(t, reg, first.GossipAddress()) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitMembers(t, ms, n)
	return ms
}

// waitMembers waits until every member of ms sees n members.
func waitMembers(t *testing.T, ms []*Member, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d members everywhere", n), func() bool {
		for _, m := range ms {
			if len(m.lookup.view().addrs) != n {
				return false
			}
		}
		return true
	})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// ask requests identity through m's protoactor cluster and returns the
// address of the activation that answered.
func ask(m *Member, identity string, timeout time.Duration) (string, error) {
	res, err := m.Cluster().Request(identity, echoKind, wrapperspb.String("hi"), pcluster.WithTimeout(timeout))
	if err != nil {
		return "", err
	}
	s, ok := res.(*wrapperspb.StringValue)
	if !ok {
		return "", fmt.Errorf("answer %T", res)
	}
	id, addr, _ := strings.Cut(s.Value, "@")
	if id != identity {
		return "", fmt.Errorf("asked %s, %s answered", identity, id)
	}
	return addr, nil
}

// askAll requests every identity from every member, all concurrently,
// and returns which address answered each (the same from everyone).
func askAll(t *testing.T, ms []*Member, ids []string) map[string]string {
	t.Helper()
	var mu sync.Mutex
	where := map[string]string{}
	var wg sync.WaitGroup
	for _, m := range ms {
		for w := range 3 {
			order := slices.Clone(ids)
			rand.New(rand.NewPCG(uint64(w), 1)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			wg.Go(func() {
				for _, id := range order {
					addr, err := ask(m, id, 3*time.Second)
					if err != nil {
						t.Errorf("%s from %s: %v", id, m.Address(), err)
						return
					}
					mu.Lock()
					if prev, ok := where[id]; ok && prev != addr {
						t.Errorf("%s answered from %s and from %s", id, prev, addr)
					}
					where[id] = addr
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return where
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func TestSingleMember(t *testing.T) {
	reg := newRegistry()
	start := time.Now()
	m := startMember(t, reg)
	t.Logf("member started in %v at %s (gossip %s)", time.Since(start), m.Address(), m.GossipAddress())
	if strings.HasSuffix(m.Address(), ":0") || strings.HasSuffix(m.GossipAddress(), ":0") {
		t.Fatalf("port 0 advertised: remote %s, gossip %s", m.Address(), m.GossipAddress())
	}

	all := ids("single", 300)
	where := askAll(t, []*Member{m}, all)
	_, total, doubles := reg.snapshot()
	for _, id := range all {
		if where[id] != m.Address() || total[id] != 1 {
			t.Fatalf("%s: answered from %q, activated %d times", id, where[id], total[id])
		}
	}
	if len(doubles) > 0 {
		t.Fatalf("double activations: %v", doubles)
	}

	// Member.Request and Send take a context.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := m.Request(ctx, "single-0", echoKind, wrapperspb.String("hi"))
	if err != nil || res.(*wrapperspb.StringValue).Value != "single-0@"+m.Address() {
		t.Fatalf("Member.Request: %v, %v", res, err)
	}
	if err := m.Send(ctx, "single-1", echoKind, wrapperspb.String("hi")); err != nil {
		t.Fatalf("Member.Send: %v", err)
	}

	// Passivation: the actor poisons itself; the next request activates
	// it again.
	if _, err := m.Request(ctx, "single-2", echoKind, wrapperspb.String("passivate")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "passivation", func() bool { live, _, _ := reg.snapshot(); return len(live["single-2"]) == 0 })
	if _, err := ask(m, "single-2", time.Second); err != nil {
		t.Fatalf("after passivation: %v", err)
	}
	if _, total, _ := reg.snapshot(); total["single-2"] != 2 {
		t.Fatalf("single-2 activated %d times, want 2", total["single-2"])
	}

	// RemovePid stops a local activation; the next request starts anew.
	pid, err := m.PID(ctx, "single-3", echoKind)
	if err != nil {
		t.Fatal(err)
	}
	m.Cluster().IdentityLookup.RemovePid(pcluster.NewClusterIdentity("single-3", echoKind), pid)
	waitFor(t, 2*time.Second, "RemovePid", func() bool { live, _, _ := reg.snapshot(); return len(live["single-3"]) == 0 })
	if _, err := ask(m, "single-3", time.Second); err != nil {
		t.Fatalf("after RemovePid: %v", err)
	}

	// The caller's timeout bounds a lookup that cannot succeed.
	begin := time.Now()
	_, err = m.Cluster().Request("x", "no-such-kind", wrapperspb.String("hi"), pcluster.WithTimeout(300*time.Millisecond))
	if took := time.Since(begin); !errors.Is(err, ErrTimeout) || took > 600*time.Millisecond {
		t.Fatalf("unknown kind: %v after %v, want ErrTimeout after about 300ms", err, took)
	}

	begin = time.Now()
	if err := m.Stop(true); err != nil {
		t.Fatalf("stop: %v", err)
	}
	live, _, _ := reg.snapshot()
	for id, at := range live {
		if len(at) > 0 {
			t.Fatalf("%s still live on %v after Stop", id, at)
		}
	}
	t.Logf("graceful stop took %v", time.Since(begin))
	if _, err := m.Request(context.Background(), "single-0", echoKind, wrapperspb.String("hi")); !errors.Is(err, ErrStopped) {
		t.Fatalf("request after stop: %v, want ErrStopped", err)
	}
}

// TestRequestActivatesLocally: a request to an identity this member owns
// and has no PID for goes to its placement actor with the message, which
// starts the activation and hands the message over (one request instead of
// a lookup and a request). Concurrent first requests of one identity all
// reach its one activation; the placement caches the PID as a lookup
// would; after the activation stopped, the stale cached PID gets a dead
// letter and the retry activates anew.
func TestRequestActivatesLocally(t *testing.T) {
	reg := newRegistry()
	m := startMember(t, reg)
	defer m.Stop(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	request := func(id, what string) (string, error) {
		res, err := m.Request(ctx, id, echoKind, wrapperspb.String(what))
		if err != nil {
			return "", err
		}
		return res.(*wrapperspb.StringValue).Value, nil
	}
	var wg sync.WaitGroup
	answers := make([]string, 64)
	errs := make([]error, 64)
	for i := range answers {
		wg.Go(func() { answers[i], errs[i] = request("local-0", "hi") })
	}
	for i := range 200 {
		wg.Go(func() {
			if got, err := request(fmt.Sprint("local-many-", i), "hi"); err != nil || got != fmt.Sprint("local-many-", i, "@", m.Address()) {
				reg.fail(fmt.Sprintf("local-many-%d: %q, %v", i, got, err))
			}
		})
	}
	wg.Wait()
	reg.check(t)
	for i, a := range answers {
		if errs[i] != nil || a != "local-0@"+m.Address() {
			t.Fatalf("concurrent first request %d: %q, %v", i, a, errs[i])
		}
	}
	_, total, doubles := reg.snapshot()
	if total["local-0"] != 1 || len(doubles) > 0 {
		t.Fatalf("local-0 activated %d times (doubles %v), want once", total["local-0"], doubles)
	}
	for i := range 200 {
		if n := total[fmt.Sprint("local-many-", i)]; n != 1 {
			t.Fatalf("local-many-%d activated %d times, want once", i, n)
		}
	}
	l := m.Cluster().IdentityLookup.(*Lookup)
	if n := l.forwarded.Load(); n < 201 {
		t.Fatalf("%d requests went through the placement with their message, want at least 201 (every new identity's first)", n)
	}
	pid, ok := l.Cached("local-0", echoKind)
	if !ok || pid.Address != m.Address() {
		t.Fatalf("the PID cache after a local activation: %v, %v", pid, ok)
	}
	// Answered from the placement's index; the topology's cache holds
	// remote PIDs only.
	if c, ok := l.cur.Load().pids.load(idKey{echoKind, "local-0"}); ok {
		t.Fatalf("a local activation in the remote PID cache: %v", c.pid)
	}
	if n := l.local.len(); n != 201 {
		t.Fatalf("%d activations in the placement's index, want 201", n)
	}
	// The only member is every identity's home, activated or not.
	for _, id := range []string{"local-0", "never-activated"} {
		if addr, ok := l.Home(id, echoKind); !ok || addr != m.Address() {
			t.Fatalf("Home(%s) on a single member = %q, %v; want %q", id, addr, ok, m.Address())
		}
	}

	if _, err := request("local-0", "passivate"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "passivation", func() bool { live, _, _ := reg.snapshot(); return len(live["local-0"]) == 0 })
	waitFor(t, 2*time.Second, "the index to forget local-0", func() bool { _, ok := l.local.get(idKey{echoKind, "local-0"}); return !ok })
	if pid, ok := l.Cached("local-0", echoKind); ok {
		t.Fatalf("a passivated activation still handed out: %v", pid)
	}
	if got, err := request("local-0", "hi"); err != nil || got != "local-0@"+m.Address() {
		t.Fatalf("request after passivation: %q, %v", got, err)
	}
	if _, total, _ := reg.snapshot(); total["local-0"] != 2 {
		t.Fatalf("local-0 activated %d times, want 2", total["local-0"])
	}
}

// TestGetCachesLiveActivations checks Lookup.Get's cache: a second Get of a
// live activation answers the same PID without activating again, and after
// the activation passivated Get hands out a new one, never the dead PID.
func TestGetCachesLiveActivations(t *testing.T) {
	reg := newRegistry()
	m := startMember(t, reg)
	defer m.Stop(true)
	c := m.Cluster()
	first := c.Get("cache-0", echoKind)
	if first == nil {
		t.Fatal("Get: nil")
	}
	for range 100 {
		if pid := c.Get("cache-0", echoKind); !pid.Equal(first) {
			t.Fatalf("Get again: %v, want %v", pid, first)
		}
	}
	waitFor(t, 2*time.Second, "the activation", func() bool { live, _, _ := reg.snapshot(); return len(live["cache-0"]) == 1 })
	if _, total, _ := reg.snapshot(); total["cache-0"] != 1 {
		t.Fatalf("cache-0 activated %d times, want 1", total["cache-0"])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := m.Request(ctx, "cache-0", echoKind, wrapperspb.String("passivate")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "passivation", func() bool { live, _, _ := reg.snapshot(); return len(live["cache-0"]) == 0 })
	second := c.Get("cache-0", echoKind)
	if second == nil || second.Equal(first) {
		t.Fatalf("Get after passivation: %v, the passivated PID was %v", second, first)
	}
	res, err := c.ActorSystem.Root.RequestFuture(second, wrapperspb.String("hi"), time.Second).Result()
	if err != nil || res.(*wrapperspb.StringValue).Value != "cache-0@"+m.Address() {
		t.Fatalf("request to the new PID: %v, %v", res, err)
	}
	if _, total, _ := reg.snapshot(); total["cache-0"] != 2 {
		t.Fatalf("cache-0 activated %d times, want 2", total["cache-0"])
	}
}

// TestGetRemoteCacheRefreshedByRequest: a member caches the PID of an
// activation on another member for a short while (it learns nothing when
// that activation stops); a request that finds it gone drops the entry and
// caches the successor, which the next Get hands out.
func TestGetRemoteCacheRefreshedByRequest(t *testing.T) {
	reg := newRegistry()
	ms := startMembers(t, reg, 2)
	a, b := ms[0], ms[1]
	id := ""
	for _, cand := range ids("far", 50) {
		if a.Owner(cand, echoKind) == b.Address() {
			id = cand
			break
		}
	}
	if id == "" {
		t.Fatal("no identity placed on the second member")
	}
	first := a.Cluster().Get(id, echoKind)
	if first == nil || first.Address != b.Address() {
		t.Fatalf("Get from the first member: %v, want a PID on %s", first, b.Address())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := b.Request(ctx, id, echoKind, wrapperspb.String("passivate")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "passivation", func() bool { live, _, _ := reg.snapshot(); return len(live[id]) == 0 })
	// The stopped activation's PID may still be cached on a (for up to
	// remoteTTL): that is the cost of not asking every time. A request
	// (a login, in the actors) reaches the successor.
	if _, err := a.Request(ctx, id, echoKind, wrapperspb.String("hi")); err != nil {
		t.Fatal(err)
	}
	second := a.Cluster().Get(id, echoKind)
	if second == nil || second.Equal(first) {
		t.Fatalf("Get after Forget: %v, the stopped activation was %v", second, first)
	}
	res, err := a.Cluster().ActorSystem.Root.RequestFuture(second, wrapperspb.String("hi"), time.Second).Result()
	if err != nil || res.(*wrapperspb.StringValue).Value != id+"@"+b.Address() {
		t.Fatalf("request to the new PID: %v, %v", res, err)
	}
}

// TestLonelySeeds starts a member whose seeds are itself and an address
// nobody answers on: it must form a cluster of one.
func TestLonelySeeds(t *testing.T) {
	gossip, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dead, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	reg := newRegistry()
	log := testLogger()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(LoggerFactory(log)))
	kind := NewKind(echoKind, actor.PropsFromProducer(func() actor.Actor { return &echo{reg: reg} }))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := Start(ctx, sys, Options{
		RemoteAddr: "127.0.0.1:0",
		GossipAddr: fmt.Sprint("127.0.0.1:", gossip),
		Seeds:      []string{fmt.Sprint("127.0.0.1:", gossip), fmt.Sprint("127.0.0.1:", dead)},
		Keys:       [][]byte{testKey},
		Logger:     log,
	}, kind)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Stop(false); err != nil {
			t.Error(err)
		}
		reg.check(t)
	}()
	if addr, err := ask(m, "lonely", time.Second); err != nil || addr != m.Address() {
		t.Fatalf("lonely member: %q, %v", addr, err)
	}
}

func TestThreeMembers(t *testing.T) {
	reg := newRegistry()
	begin := time.Now()
	ms := startMembers(t, reg, 3)
	a, b, c := ms[0], ms[1], ms[2]
	t.Logf("3 members up in %v", time.Since(begin))

	// Every identity activated exactly once while all three race, placed
	// where every member's view says.
	all := ids("tri", 300)
	where := askAll(t, ms, all)
	_, total, doubles := reg.snapshot()
	perNode := map[string]int{}
	for _, id := range all {
		perNode[where[id]]++
		if total[id] != 1 {
			t.Errorf("%s activated %d times", id, total[id])
		}
		for _, m := range ms {
			if o := m.Owner(id, echoKind); o != where[id] {
				t.Errorf("%s runs on %s but %s places it on %s", id, where[id], m.Address(), o)
			}
		}
	}
	if len(doubles) > 0 {
		t.Errorf("double activations: %v", doubles)
	}
	t.Logf("placement: %v", perNode)
	want := []string{a.Address(), b.Address(), c.Address()}
	slices.Sort(want)
	for _, m := range ms {
		if got := m.Members(); !slices.Equal(got, want) {
			t.Errorf("%s: Members() = %v, want %v", m.Address(), got, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// A node that does not own an identity refuses to activate it.
	var notOurs string
	for i := 0; notOurs == ""; i++ {
		if id := fmt.Sprint("refuse-", i); a.Owner(id, echoKind) == a.Address() {
			notOurs = id
		}
	}
	req := &pcluster.ActivationRequest{ClusterIdentity: pcluster.NewClusterIdentity(notOurs, echoKind)}
	res, err := a.sys.Root.RequestFuture(placementPID(b.Address()), req, time.Second).Result()
	if resp, ok := res.(*pcluster.ActivationResponse); err != nil || !ok || !resp.Failed || resp.Pid != nil {
		t.Fatalf("non-owner activation request: %v, %v; want Failed", res, err)
	}
	if _, total, _ := reg.snapshot(); total[notOurs] != 0 {
		t.Fatalf("non-owner activated %s", notOurs)
	}

	// Graceful leave of c: its identities answer from a and b.
	owned := func(addr string) []string {
		var out []string
		for _, id := range all {
			if where[id] == addr {
				out = append(out, id)
			}
		}
		return out
	}
	failover := func(gone *Member, survivors []*Member, stop func()) time.Duration {
		t.Helper()
		moved := owned(gone.Address())
		begin := time.Now()
		var wg sync.WaitGroup
		wg.Go(stop)
		defer wg.Wait()
		waitFor(t, 15*time.Second, "identities of "+gone.Address()+" on survivors", func() bool {
			for i, id := range moved {
				addr, err := ask(survivors[i%len(survivors)], id, 500*time.Millisecond)
				if err != nil || addr == gone.Address() {
					return false
				}
				where[id] = addr
			}
			return true
		})
		return time.Since(begin)
	}
	movedFromC := len(owned(c.Address()))
	took := failover(c, []*Member{a, b}, func() {
		begin := time.Now()
		if err := c.Stop(true); err != nil {
			t.Errorf("graceful stop: %v", err)
		}
		t.Logf("graceful Stop of the leaving member took %v", time.Since(begin))
	})
	t.Logf("graceful leave: %d identities answered by survivors %v after Stop began", movedFromC, took)
	if took > 5*time.Second {
		t.Errorf("graceful failover took %v", took)
	}
	_, _, doubles = reg.snapshot()
	if len(doubles) > 0 {
		t.Errorf("double activations around the leave: %v", doubles)
	}

	// Crash of b: no leave; a notices by probing.
	took = failover(b, []*Member{a}, func() {
		if err := b.Stop(false); err != nil {
			t.Errorf("crash stop: %v", err)
		}
	})
	t.Logf("crash: identities answered by the survivor %v after the crash", took)
	if took > 8*time.Second {
		t.Errorf("crash failover took %v", took)
	}
	if got := len(a.lookup.view().addrs); got != 1 {
		t.Errorf("survivor sees %d members", got)
	}

	begin = time.Now()
	if err := a.Stop(true); err != nil {
		t.Errorf("stop survivor: %v", err)
	}
	t.Logf("survivor's graceful stop after the crash took %v", time.Since(begin))
}

func TestJoinKeepsSingleActivation(t *testing.T) {
	reg := newRegistry()
	ms := startMembers(t, reg, 2)
	a, b := ms[0], ms[1]
	steady := ids("steady", 64)
	before := askAll(t, ms, steady)

	// Keep traffic on every steady identity from both nodes while c
	// joins, and from c once it is up.
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		requests atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
		cm       atomic.Pointer[Member]
	)
	worker := func(m func() *Member, seed uint64) {
		askUntil(stop, m, steady, seed, 2*time.Second, &requests, func(mm *Member, id string, err error) {
			failures.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Sprintf("%s from %s: %v", id, mm.Address(), err))
		})
	}
	for i, m := range []*Member{a, a, b, b} {
		wg.Go(func() { worker(func() *Member { return m }, uint64(i)) })
	}
	for i := range 2 {
		wg.Go(func() { worker(cm.Load, uint64(10+i)) })
	}

	time.Sleep(300 * time.Millisecond)
	c := startMember(t, reg, a.GossipAddress())
	cm.Store(c)
	ms = append(ms, c)
	waitMembers(t, ms, 3)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	_, total, doubles := reg.snapshot()
	moved := 0
	for _, id := range steady {
		if c.Owner(id, echoKind) == c.Address() {
			moved++
		}
		if total[id] != 1 {
			t.Errorf("%s activated %d times", id, total[id])
		}
	}
	t.Logf("join: %d requests (%d failed), %d of %d identities now owned by the new member, %d double activations",
		requests.Load(), failures.Load(), moved, len(steady), len(doubles))
	if len(doubles) > 0 {
		t.Errorf("double activations during the join: %v", doubles)
	}
	if failures.Load() > 0 {
		t.Errorf("requests failed during the join, first: %v", firstErr.Load())
	}
	if moved == 0 {
		t.Errorf("no steady identity moved to the new member: the join did not exercise a handover")
	}
	// The old activations keep serving, also for the new member.
	for _, id := range steady {
		addr, err := ask(c, id, 2*time.Second)
		if err != nil || addr != before[id] {
			t.Errorf("%s: answered from %q (%v), was %s", id, addr, err, before[id])
		}
	}

	// A member that the cluster blocks learns it.
	a.Cluster().Remote.BlockList().Block(c.ID())
	select {
	case <-c.Blocked():
	case <-time.After(5 * time.Second):
		t.Errorf("blocked member was not told")
	}
	waitFor(t, 5*time.Second, "a to drop the blocked member", func() bool { return !a.lookup.view().has(c.Address()) })

	var sw sync.WaitGroup
	for _, m := range ms {
		sw.Go(func() {
			if err := m.Stop(true); err != nil {
				t.Errorf("stop %s: %v", m.Address(), err)
			}
		})
	}
	sw.Wait()
}

// TestRepeatedJoinsKeepSingleActivation: a member joins under load and
// leaves again, 20 times in a row (5 with -short); no identity is ever
// live on two members at once.
func TestRepeatedJoinsKeepSingleActivation(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	reg := newRegistry()
	ms := startMembers(t, reg, 2)
	steady := ids("rejoin", 64)
	askAll(t, ms, steady)

	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		requests atomic.Int64
		cm       atomic.Pointer[Member]
	)
	worker := func(m func() *Member, seed uint64) {
		// Failures while a member leaves are retried by the caller; what
		// this test holds is single activation.
		askUntil(stop, m, steady, seed, time.Second, &requests, nil)
	}
	for i, m := range []*Member{ms[0], ms[0], ms[1], ms[1]} {
		wg.Go(func() { worker(func() *Member { return m }, uint64(i)) })
	}
	wg.Go(func() { worker(cm.Load, 99) })
	defer func() {
		close(stop)
		wg.Wait()
	}()

	moved := 0
	for round := range rounds {
		c := startMember(t, reg, ms[0].GossipAddress())
		cm.Store(c)
		waitMembers(t, append(slices.Clone(ms), c), 3)
		time.Sleep(300 * time.Millisecond)
		live, _, doubles := reg.snapshot()
		if len(doubles) > 0 {
			t.Fatalf("round %d: double activations: %v", round, doubles)
		}
		for id, where := range live {
			if len(where) > 1 {
				t.Fatalf("round %d: %s live on %v", round, id, where)
			}
		}
		for _, id := range steady {
			if c.Owner(id, echoKind) == c.Address() {
				moved++
			}
		}
		cm.Store(nil)
		if err := c.Stop(true); err != nil {
			t.Errorf("round %d: stop the joiner: %v", round, err)
		}
		waitMembers(t, ms, 2)
	}
	_, _, doubles := reg.snapshot()
	if len(doubles) > 0 {
		t.Fatalf("double activations: %v", doubles)
	}
	if moved == 0 {
		t.Fatal("no identity was ever owned by a joiner: the joins did not exercise a handover")
	}
	t.Logf("%d joins under load (%d requests): 0 double activations; identities owned by the joiner, summed over rounds: %d", rounds, requests.Load(), moved)
}

// askUntil asks random identities of ids through the member m returns
// (nil: none yet) until stop is closed, counting requests; onErr, if set,
// hears every failure.
func askUntil(stop <-chan struct{}, m func() *Member, ids []string, seed uint64, timeout time.Duration,
	requests *atomic.Int64, onErr func(mm *Member, id string, err error)) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for {
		select {
		case <-stop:
			return
		default:
		}
		mm := m()
		if mm == nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		id := ids[rng.IntN(len(ids))]
		requests.Add(1)
		if _, err := ask(mm, id, timeout); err != nil && onErr != nil {
			onErr(mm, id, err)
		}
	}
}

// TestLeaveKeepsSurvivorsCache: when a member leaves, the others keep the
// PIDs they cached for activations on the members that remain (under
// rendezvous hashing those owners do not change) and drop those on the
// member that left; the kept PIDs still answer, and the identities the
// leaver owned are activated again on survivors.
func TestLeaveKeepsSurvivorsCache(t *testing.T) {
	reg := newRegistry()
	ms := startMembers(t, reg, 3)
	a, b, c := ms[0], ms[1], ms[2]
	all := ids("leave", 90)
	where := map[string]string{}
	for _, id := range all {
		addr, err := ask(a, id, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		where[id] = addr
	}
	cached := func() map[string]string {
		out := map[string]string{}
		for _, id := range all {
			if pid, ok := a.lookup.local.get(idKey{echoKind, id}); ok {
				out[id] = pid.Address // a's own activations: its placement's index
			} else if v, ok := a.lookup.cur.Load().pids.load(idKey{echoKind, id}); ok {
				out[id] = v.pid.Address
			}
		}
		return out
	}
	before := cached()
	for id, addr := range before {
		if got, ok := a.lookup.Home(id, echoKind); addr == a.Address() && (!ok || got != addr) {
			t.Fatalf("Home(%s) on a = %q, %v; want a's own address %q (its activation is there)", id, got, ok, addr)
		}
	}
	byAddr := map[string]int{}
	for _, addr := range before {
		byAddr[addr]++
	}
	if byAddr[a.Address()] == 0 || byAddr[b.Address()] == 0 || byAddr[c.Address()] == 0 {
		t.Fatalf("a's cache before the leave holds PIDs on %v; want some on each of the 3 members", byAddr)
	}
	if err := c.Stop(true); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, ms[:2], 2)
	after := cached()
	for _, id := range all {
		switch addr, ok := after[id]; {
		case before[id] == c.Address() && ok:
			t.Errorf("%s: still cached on %s, which left", id, addr)
		case before[id] != "" && before[id] != c.Address() && (!ok || addr != before[id]):
			t.Errorf("%s: cached on %s before the leave, %q after; want it kept", id, before[id], addr)
		}
	}
	// Every identity answers again: survivors' from the same activation,
	// the leaver's from a new one on a survivor.
	for _, id := range all {
		addr, err := ask(a, id, 5*time.Second)
		if err != nil {
			t.Fatalf("%s after the leave: %v", id, err)
		}
		if where[id] != c.Address() && addr != where[id] {
			t.Errorf("%s answered from %s after the leave, before from %s", id, addr, where[id])
		}
		if addr == c.Address() {
			t.Errorf("%s answered from %s, which left", id, addr)
		}
	}
}

// Request on the caller's context: with a deadline it goes through the
// lookup on that context (no context of its own); without one it is the
// cluster's c.Request; a context already past its deadline fails at once
// with ErrTimeout instead of waiting out the cluster's request timeout.
func TestRequestOnCallersContext(t *testing.T) {
	reg := newRegistry()
	m := startMember(t, reg)
	defer m.Stop(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range []context.Context{ctx, context.Background()} {
		res, err := Request(c, m.Cluster(), "callers-ctx", echoKind, wrapperspb.String("hi"))
		if err != nil || res.(*wrapperspb.StringValue).Value != "callers-ctx@"+m.Address() {
			t.Fatalf("Request: %v, %v", res, err)
		}
	}
	past, cancelPast := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelPast()
	start := time.Now()
	if _, err := Request(past, m.Cluster(), "callers-ctx-2", echoKind, wrapperspb.String("hi")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Request past its deadline: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Request past its deadline took %v", d)
	}
	reg.check(t)
}
