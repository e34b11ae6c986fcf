package actors

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// copyOf returns a string equal to s in memory of its own, as a decoded
// message's field would be.
func copyOf(s string) string { return string([]byte(s)) }

func sameMemory(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

func TestInternSharesAndIsBounded(t *testing.T) {
	a, b := copyOf("127.0.0.1:7001"), copyOf("127.0.0.1:7001")
	if sameMemory(a, b) {
		t.Fatal("copies share memory: the test proves nothing")
	}
	ia, ib := intern(a), intern(b)
	if ia != a || ib != b || !sameMemory(ia, ib) {
		t.Fatalf("intern(%q), intern(%q): equal values must come back as one string", a, b)
	}
	k := sessionKey{addr: copyOf("127.0.0.1:7001"), id: copyOf("gateway"), sid: 9}.interned()
	if k.addr != a || !sameMemory(k.addr, ia) || k.id != "gateway" || k.sid != 9 {
		t.Fatalf("interned key %+v", k)
	}
	long := strings.Repeat("v", internMaxLen+1)
	if got := intern(long); !sameMemory(got, long) {
		t.Fatal("a value longer than internMaxLen was replaced")
	}
	if intern("") != "" {
		t.Fatal("empty string")
	}
	// Fill the table: past internMax a new value comes back as it came
	// and is not stored; values stored earlier are still shared.
	for i := 0; interned.n.Load() < internMax; i++ {
		intern(fmt.Sprintf("fill-%d", i))
	}
	x := copyOf("after-the-bound")
	if got := intern(x); !sameMemory(got, x) {
		t.Fatal("a value past the bound was not returned as it came")
	}
	if _, ok := interned.m.Load("after-the-bound"); ok {
		t.Fatal("the table grew past internMax")
	}
	if got := intern(copyOf("127.0.0.1:7001")); !sameMemory(got, ia) {
		t.Fatal("a value stored before the bound is no longer shared")
	}
	if n := interned.n.Load(); n != internMax {
		t.Fatalf("table holds %d values, want %d", n, internMax)
	}
}

// A user actor's busy part exists only while something waits in it.
func TestUserAsideDroppedWhenEmpty(t *testing.T) {
	a := &userActor{}
	a.tidy()
	if a.x != nil {
		t.Fatal("tidy made the busy part")
	}
	x := a.aside()
	if a.aside() != x {
		t.Fatal("aside made a second busy part")
	}
	for name, fill := range map[string]func(){
		"waiting catch-up": func() { x.waitingCatchup = []waitingCatchup{{until: 1}} },
		"API waiter":       func() { x.api.pids = map[uint64]*actor.PID{1: nil} },
		"history running":  func() { x.history.running = 1 },
		"history waiting":  func() { x.history.waiting = []func(){func() {}} },
	} {
		*x = userAside{}
		fill()
		a.x = x
		a.tidy()
		if a.x == nil {
			t.Errorf("%s: dropped while it waits", name)
		}
	}
	*x = userAside{api: apiWaiters{pids: map[uint64]*actor.PID{}}}
	a.tidy()
	if a.x != nil {
		t.Error("an empty busy part was kept")
	}
}

// Without a publisher of session events the state builds none (a nil
// effect the shell skips); with one, a first login builds device.login and
// user.online.
func TestNoSessionEventsWithoutPublisher(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		cfg := testConfig(Config{})
		cfg.noEvents = quiet
		st := newUserState("u", cfg, &fakeLog{}, NewMessageID)
		st.activated(1, 0, 0, nil, t0)
		req := &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "phone", Platform: "ios"}}
		reply, effs := st.login(sk(1), req, t0, 1, 1)
		if reply.GetLoginOk() == nil {
			t.Fatalf("noEvents %v: login refused: %v", quiet, reply)
		}
		got := fmt.Sprint(notifications(effs))
		if want := map[bool]string{false: "[device.login:phone: user.online:phone:]", true: "[]"}[quiet]; got != want {
			t.Errorf("noEvents %v: events %s, want %s", quiet, got, want)
		}
		if len(appends(effs)) != 1 {
			t.Errorf("noEvents %v: %d appends, want the LOGGED_IN one", quiet, len(appends(effs)))
		}
	}
}

// API tokens are never reused, even by an actor whose waiters were
// dropped and made again.
func TestAPITokensNotReused(t *testing.T) {
	a := &userActor{}
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	var tokens []uint64
	var kept bool
	done := make(chan struct{}) // protoactor's futures race under -race: wait on our own channel
	probe := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*wire.Ping); !ok {
			return
		}
		for range 3 {
			tok := a.aside().api.wait(ctx)
			tokens = append(tokens, tok)
			a.x.api.answer(ctx, []uint64{tok}, &wire.Pong{})
			a.tidy()
			kept = kept || a.x != nil
		}
		close(done)
	}))
	sink := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {})) // the API caller the answers go to
	sys.Root.RequestWithCustomSender(probe, &wire.Ping{}, sink)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the probe actor did not run")
	}
	if kept {
		t.Error("waiters kept after the last answer")
	}
	if len(tokens) != 3 || tokens[0] == tokens[1] || tokens[1] == tokens[2] || tokens[0] == tokens[2] {
		t.Fatalf("tokens %v: want 3 different ones", tokens)
	}
}

// A runtime's user states share one environment (config, reader, ID
// source) instead of carrying it, and a state fits the 288-byte size
// class (320 with the environment inline): a million idle users pay for
// every word of it.
func TestUserStateSharesEnvironment(t *testing.T) {
	r := NewRuntime(Config{}, nil, nil, nil, slog.New(slog.DiscardHandler))
	a, b := newUserStateIn("a", r.env), newUserStateIn("b", r.env)
	if a.stateEnv != b.stateEnv || a.cfg != &r.cfg || a.rd != r.reader {
		t.Fatal("two users' states do not share the runtime's environment")
	}
	if a.policy != &r.cfg.Policy {
		t.Fatal("a new state's policy is not the runtime's")
	}
	if size := unsafe.Sizeof(userState{}); size > 288 {
		t.Fatalf("userState is %d bytes, past the 288-byte size class", size)
	}
}

// A lone session is held in its own array, and the set never keeps an
// array of a session it no longer has.
func TestSessionSetHoldsNoStaleSession(t *testing.T) {
	a, b, a2 := &session{key: sk(1)}, &session{key: sk(2)}, &session{key: sk(1)}
	var ss sessionSet
	ss.put(a)
	if len(ss) != 1 || &ss[0] != &a.self[0] {
		t.Fatal("a lone session is not held in its own array")
	}
	ss.put(b)
	if len(ss) != 2 || ss[0] != a || ss[1] != b || &ss[0] == &a.self[0] {
		t.Fatal("a second session did not copy the set out of the first's array")
	}
	ss.del(sk(1))
	if len(ss) != 1 || ss[0] != b || ss.get(sk(1)) != nil {
		t.Fatalf("after deleting a: %d sessions", len(ss))
	}
	ss.del(sk(2))
	if ss != nil {
		t.Fatal("an empty set keeps an array")
	}
	ss.put(a)
	ss.put(a2) // replaces a: a's array must not hold a2
	if len(ss) != 1 || ss[0] != a2 || &ss[0] != &a2.self[0] {
		t.Fatal("a replaced lone session's array is still the set's")
	}
	ss.del(sk(1))
	if ss != nil {
		t.Fatal("deleting the lone session keeps its array")
	}
}
