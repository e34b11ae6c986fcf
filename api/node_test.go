package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/auth"
	"github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// realAPI is the server API over the real parts of a one-node cluster, as
// node wires them: a badger store in a temporary folder, the user and
// group actors on a protoactor cluster member (loopback), and auth's token
// minter. No gateway: nobody is online (the session table is empty).
type realAPI struct {
	h     http.Handler
	rt    *actors.Runtime
	store *countingStore
	keys  *auth.Keys
}

// countingStore is the badger store, counting the appends the actors
// submit and the ones completed, so a test can tell that a request wrote
// nothing and wait for the writes of one that did.
type countingStore struct {
	*persistence.Local
	submitted, completed atomic.Int64
}

func (c *countingStore) Append(req persistence.AppendRequest, done func(error)) {
	c.submitted.Add(1)
	c.Local.Append(req, func(err error) {
		c.completed.Add(1)
		done(err)
	})
}

// emptySessions is the session table of a node with no gateway.
type emptySessions struct{}

func (emptySessions) Deliver(uint64, []*wire.Frame) bool { return false }
func (emptySessions) Kick(uint64, *wire.Kick) bool       { return false }

// Fixture: users with stored logs and group g1 (alice, bob), created by
// startRealAPI through the API itself; g2 does not exist (refused creates
// name it). snapshot covers them all.
var (
	fixtureUsers  = []string{"alice", "bob", "carol", "dave"}
	fixtureGroups = []string{"g1", "g2"}
)

// startRealAPI starts the node's parts and the fixture; everything stops at
// cleanup.
func startRealAPI(tb testing.TB) *realAPI {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	b, err := persistence.OpenBadger(tb.TempDir(), persistence.BadgerOptions{}, log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	store := &countingStore{Local: b}
	rt := actors.NewRuntime(actors.Config{}, store, nil, nil, log)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(cluster.LoggerFactory(log)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := cluster.Start(ctx, sys, cluster.Options{RemoteAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Logger: log}, rt.Kinds()...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := m.Stop(true); err != nil {
			tb.Logf("stop cluster member: %v", err)
		}
	})
	if err := rt.Start(m.Cluster(), emptySessions{}, m); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rt.Stop)
	keys, err := auth.New("0123456789abcdef0123")
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{AdminKey: "adm", Minter: keys, Sessions: rt, Messages: rt, Groups: rt, ValidID: actors.ValidID, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	a := &realAPI{h: s.Handler(), rt: rt, store: store, keys: keys}

	for _, req := range []struct{ method, path, body string }{
		{"POST", "/v1/groups", `{"group_id":"g1","name":"one","owner":"alice","members":["alice","bob"]}`},
		{"POST", "/v1/messages", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"aGk=","client_message_id":"fixture-1","include_sender":true}`},
		{"POST", "/v1/messages", `{"from":"bob","conversation":{"type":"group","id":"g1"},"type":1,"content":"aGk=","client_message_id":"fixture-2"}`},
		{"POST", "/v1/messages", `{"from":"carol","conversation":{"type":"direct","id":"alice"},"type":1,"client_message_id":"fixture-3"}`},
	} {
		if code, body := a.do(req.method, req.path, req.body); code != http.StatusOK {
			tb.Fatalf("fixture %s %s: %d %s", req.method, req.path, code, body)
		}
		a.settle(tb)
	}
	return a
}

// do serves one admin request through the handler and returns the status
// and body.
func (a *realAPI) do(method, path, body string) (int, []byte) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer adm")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	a.h.ServeHTTP(rec, req)
	out, _ := io.ReadAll(rec.Result().Body) // a recorder's body cannot fail
	return rec.Code, out
}

// settle waits until every append submitted has completed and no fan-out
// is pending, so that the stored state no longer moves on its own.
func (a *realAPI) settle(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for quiet := 0; quiet < 3; {
		if time.Now().After(deadline) {
			tb.Fatalf("store not settled after 30s: %d appends submitted, %d completed", a.store.submitted.Load(), a.store.completed.Load())
		}
		before := a.store.submitted.Load()
		pending, err := a.store.OutboxUsers(context.Background(), "", 1)
		if err != nil {
			tb.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
		if n := a.store.submitted.Load(); n == before && n == a.store.completed.Load() && len(pending) == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
}

// snapshot digests what the store holds for the fixture (every log entry,
// outbox item, fan-out mark and conversation state of its users and
// groups) and the kick policy in force.
func (a *realAPI) snapshot(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	h := sha256.New()
	ids := slices.Clone(fixtureUsers)
	for _, g := range fixtureGroups {
		ids = append(ids, "#g:"+g) // actors' group namespace (actors/group.go)
	}
	for _, id := range ids {
		es, err := a.store.Read(ctx, id, 0, 100000)
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range es {
			fmt.Fprintf(h, "log %s %d %d %x\n", id, e.Seq, e.TimeMS, e.Data)
		}
		ob, err := a.store.Outbox(ctx, id)
		if err != nil {
			tb.Fatal(err)
		}
		for _, o := range ob {
			fmt.Fprintf(h, "outbox %s %+v\n", id, o)
		}
		fm, err := a.store.FanoutMark(ctx, id)
		if err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintf(h, "fanout %s %+v\n", id, fm)
		cs, err := a.store.Convs(ctx, id)
		if err != nil {
			tb.Fatal(err)
		}
		for _, c := range cs {
			fmt.Fprintf(h, "conv %s %s %x\n", id, c.Key, c.Data)
		}
	}
	mode, limits := a.rt.KickPolicy()
	fmt.Fprintf(h, "policy %s %v\n", mode, limits)
	return hex.EncodeToString(h.Sum(nil))
}

// groupMembers reads g's members from the store (the group actor's
// persisted state).
func (a *realAPI) groupMembers(tb testing.TB, g string) []string {
	tb.Helper()
	cs, err := a.store.Convs(context.Background(), "#g:"+g)
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range cs {
		if c.Key == "state" {
			var st actorpb.GroupState
			if err := proto.Unmarshal(c.Data, &st); err != nil {
				tb.Fatal(err)
			}
			return st.GetMembers()
		}
	}
	return nil
}
