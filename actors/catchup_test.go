package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// gatedStore is a badger store whose log reads the test can hold: while
// armed, a Read of more than one entry (a catch-up page or a history
// scan; dedup lookups read one) records its range, reads, and then waits
// for release before it returns what it read.
type gatedStore struct {
	*persistence.Local
	mu      sync.Mutex
	armed   bool
	reads   []readCall    // every Read of more than one entry, in order
	entered chan struct{} // a gated read has read and waits
	release chan struct{} // closed: gated reads return
}

type readCall struct {
	after persistence.Seq
	limit int
}

func (g *gatedStore) Read(ctx context.Context, user string, after persistence.Seq, limit int) ([]persistence.Entry, error) {
	if limit > 1 {
		g.mu.Lock()
		g.reads = append(g.reads, readCall{after, limit})
		armed, release, entered := g.armed, g.release, g.entered
		g.mu.Unlock()
		es, err := g.Local.Read(ctx, user, after, limit)
		if armed {
			entered <- struct{}{}
			<-release
		}
		return es, err
	}
	return g.Local.Read(ctx, user, after, limit)
}

// arm makes the following reads wait until the returned release runs.
func (g *gatedStore) arm() (entered <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
	g.entered = make(chan struct{}, 64)
	g.release = make(chan struct{})
	rel := g.release
	var once sync.Once
	return g.entered, func() {
		once.Do(func() {
			g.mu.Lock()
			g.armed = false
			g.mu.Unlock()
			close(rel)
		})
	}
}

// readsSince returns the reads recorded after the first n.
func (g *gatedStore) readsSince(n int) []readCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]readCall(nil), g.reads[n:]...)
}

func (g *gatedStore) readCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.reads)
}

// fakeGateway stands in for a node's gateway actor: it records every
// frame pushed to its sessions, in arrival order.
type fakeGateway struct{ frames chan sessFrame }

// sessFrame is a frame for one session.
type sessFrame struct {
	sid uint64
	*wire.Frame
}

func (g *fakeGateway) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actorpb.SessionPush:
		for _, sid := range m.GetSessionIds() {
			for _, f := range m.GetFrames() {
				g.frames <- sessFrame{sid, f}
			}
		}
	case *actorpb.SessionKick:
		g.frames <- sessFrame{m.GetSessionId(), &wire.Frame{Body: &wire.Frame_Kick{Kick: m.GetKick()}}}
	}
}

// userHarness is one user actor on a bare actor system (no cluster) over a
// gated badger store, with a fake gateway.
type userHarness struct {
	t      *testing.T
	rt     *Runtime
	store  *gatedStore
	user   *actor.PID
	gw     *actor.PID
	frames chan sessFrame
	sid    uint64
}

func startUserHarness(t *testing.T, user string) *userHarness {
	t.Helper()
	return startUserHarnessWith(t, user, Config{RequestTimeout: 5 * time.Second})
}

func startUserHarnessWith(t *testing.T, user string, cfg Config) *userHarness {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	b, err := persistence.OpenBadger(t.TempDir(), persistence.BadgerOptions{NoSync: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	store := &gatedStore{Local: b}
	rt := NewRuntime(cfg, store, nil, nil, log)
	rt.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return log }))
	idleCtx, stopIdle := context.WithCancel(context.Background())
	idleDone := make(chan struct{})
	go func() { rt.idle.run(idleCtx, rt.sys.Root); close(idleDone) }() // Start runs it; this harness has no Start
	h := &userHarness{t: t, rt: rt, store: store, frames: make(chan sessFrame, 4096)}
	h.gw = rt.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &fakeGateway{frames: h.frames} }))
	h.user = rt.sys.Root.Spawn(rt.cells.props()) // a cell, as the cluster spawns users
	rt.sys.Root.Send(h.user, &pcluster.ClusterInit{
		Identity: &pcluster.ClusterIdentity{Identity: user, Kind: UserKind},
		Cluster:  &pcluster.Cluster{ActorSystem: rt.sys},
	})
	t.Cleanup(func() {
		_ = rt.sys.Root.StopFuture(h.user).Wait() // only a timeout can fail
		stopIdle()
		<-idleDone
		rt.sys.Shutdown()
		store.Close()
	})
	return h
}

func (h *userHarness) session(sid uint64) *actorpb.SessionRef {
	return &actorpb.SessionRef{GatewayAddress: h.gw.Address, GatewayId: h.gw.Id, SessionId: sid}
}

// login logs a device in on a new session and returns its session ID.
func (h *userHarness) login(l *wire.Login) uint64 {
	h.t.Helper()
	h.sid++
	res, err := h.rt.sys.Root.RequestFuture(h.user, &actorpb.LoginRequest{Session: h.session(h.sid), Login: l}, 10*time.Second).Result()
	if err != nil {
		h.t.Fatalf("login: %v", err)
	}
	if r, ok := res.(*actorpb.LoginResult); !ok || !r.GetOk() {
		h.t.Fatalf("login: %v", res)
	}
	return h.sid
}

func (h *userHarness) frame(sid uint64, f *wire.Frame) {
	h.rt.sys.Root.Send(h.user, &actorpb.ClientFrame{Session: h.session(sid), Frame: f})
}

func (h *userHarness) send(sid, id uint64, peer, body string) {
	h.frame(sid, &wire.Frame{Id: id, Body: &wire.Frame_Send{Send: &wire.Send{
		ClientMessageId: fmt.Sprint("c", id),
		Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
		Type:            int32(wire.MessageType_TEXT),
		Content:         []byte(body),
	}}})
}

// next returns the next frame the gateway got.
func (h *userHarness) next() sessFrame {
	h.t.Helper()
	select {
	case f := <-h.frames:
		return f
	case <-time.After(10 * time.Second):
		h.t.Fatal("no frame from the user actor")
		return sessFrame{}
	}
}

// until returns the frames up to and including the first that match
// accepts.
func (h *userHarness) until(match func(sessFrame) bool) []sessFrame {
	h.t.Helper()
	var out []sessFrame
	for {
		f := h.next()
		out = append(out, f)
		if match(f) {
			return out
		}
	}
}

func isReply(id uint64) func(sessFrame) bool {
	return func(f sessFrame) bool { return f.GetId() == id }
}

// caughtUp waits for the end of session sid's catch-up (its
// ConversationList) and returns the frames up to it, of every session.
func (h *userHarness) caughtUp(sid uint64) []sessFrame {
	h.t.Helper()
	return h.until(func(f sessFrame) bool { return f.sid == sid && f.GetConversationList() != nil && f.GetId() == 0 })
}

// deliverAll delivers n messages from another user into the log through
// the server API path (ApiDeliver: no fan-out to another actor), with
// contents m<first>…, one after the other.
func (h *userHarness) deliverAll(from string, first, n int) {
	h.t.Helper()
	for i := first; i < first+n; i++ {
		res, err := h.rt.sys.Root.RequestFuture(h.user, &actorpb.ApiDeliver{FromUser: from, Send: &wire.Send{
			ClientMessageId: fmt.Sprint("d", i),
			Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"},
			Type:            int32(wire.MessageType_TEXT),
			Content:         []byte(fmt.Sprint("m", i)),
		}}, 10*time.Second).Result()
		if err != nil {
			h.t.Fatalf("deliver %d: %v", i, err)
		}
		if r, ok := res.(*actorpb.ApiResult); !ok || r.GetReply().GetSendAck() == nil {
			h.t.Fatalf("deliver %d: %v", i, res)
		}
	}
}

// note sends a note to self from session sid (a send with no fan-out).
func (h *userHarness) note(sid, id uint64, body string) {
	h.send(sid, id, "alice", body)
}

// TestCatchupShortPageReadBeforeACommit: a catch-up page is read off the
// mailbox, so a message may commit between the read of the last (short)
// page and its handling — while the session is not live, so it is not
// pushed. The catch-up then reads on: the device gets every seq, in
// order, with no hole, and no push before its last page.
func TestCatchupShortPageReadBeforeACommit(t *testing.T) {
	h := startUserHarness(t, "alice")
	a := h.login(&wire.Login{DeviceId: "a-phone", Platform: "ios", HasCursor: true})
	h.caughtUp(a)
	h.deliverAll("bob", 1, 50)

	entered, release := h.store.arm()
	t.Cleanup(release)
	b := h.login(&wire.Login{DeviceId: "b-pad", Platform: "ipad", HasCursor: true})
	select {
	case <-entered: // b's first page is read and held
	case <-time.After(10 * time.Second):
		t.Fatal("the catch-up read never started")
	}
	// Committed while b's page is held: a gets the ack; b is not live.
	h.note(a, 900, "while b's page is held")
	var seen []sessFrame
	seen = append(seen, h.until(isReply(900))...)
	release()
	seen = append(seen, h.caughtUp(b)...)
	h.note(a, 901, "after the catch-up")
	ack := h.until(isReply(901))
	seen = append(seen, ack...)
	last := ack[len(ack)-1].GetSendAck().GetSeq()
	seen = append(seen, h.until(func(f sessFrame) bool {
		return f.sid == b && len(f.GetPush().GetEntries()) > 0 && f.GetPush().GetEntries()[0].GetSeq() == last
	})...)
	// b's frames: pages (the last with has_more false), then pushes.
	cursor, pagesDone := uint64(0), false
	for _, f := range seen {
		if f.sid != b {
			continue
		}
		var es []*wire.Entry
		switch {
		case f.GetSyncPage() != nil:
			if pagesDone {
				t.Fatalf("a catch-up page after the last one: %v", f)
			}
			es, pagesDone = f.GetSyncPage().GetEntries(), !f.GetSyncPage().GetHasMore()
		case f.GetPush() != nil:
			if !pagesDone {
				t.Fatalf("a push before the last catch-up page: %v", f)
			}
			es = f.GetPush().GetEntries()
		}
		for _, e := range es {
			if e.GetSeq() <= cursor {
				continue // paged and pushed: the device drops the copy
			}
			if e.GetSeq() != cursor+1 {
				t.Fatalf("b got seq %d after %d: a hole", e.GetSeq(), cursor)
			}
			cursor = e.GetSeq()
		}
	}
	if cursor != last {
		t.Fatalf("b reached seq %d, want %d", cursor, last)
	}
}
