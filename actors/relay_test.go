package actors_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// ackSink is a gateway without sockets that keeps the SendAcks.
type ackSink struct {
	mu   sync.Mutex
	acks []*wire.Frame
}

func (s *ackSink) Deliver(_ uint64, frames []*wire.Frame) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range frames {
		if f.GetSendAck() != nil {
			s.acks = append(s.acks, f)
		}
	}
	return true
}
func (s *ackSink) Kick(uint64, *wire.Kick) bool { return true }

func (s *ackSink) snapshot() []*wire.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wire.Frame(nil), s.acks...)
}

// TestGroupBatchedFanout: group messages reach every member's log once,
// through the node's relay (one DeliverBatch per message and node); each
// send gets exactly one SendAck, whose seq is the message's seq in the
// sender's own log — checked by reading that log from the store — and the
// group's fan-out mark is cleared once every member confirmed.
func TestGroupBatchedFanout(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	store, err := persistence.OpenBadger(t.TempDir(), persistence.BadgerOptions{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	sink := &ackSink{}
	rt := actors.NewRuntime(actors.Config{}, store, nil, nil, log)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(cluster.LoggerFactory(log)))
	m, err := cluster.Start(context.Background(), sys, cluster.Options{RemoteAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Logger: log}, rt.Kinds()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(true) })
	if err := rt.Start(m.Cluster(), sink, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Stop)

	const size, sends = 50, 20
	var members []string
	for i := range size {
		members = append(members, fmt.Sprintf("m%02d", i))
	}
	ctx := context.Background()
	if _, _, werr, err := rt.GroupOp(ctx, "g", "create", "m00", "g", members); err != nil || werr != nil {
		t.Fatalf("create: %v %v", err, werr)
	}
	group := m.Cluster().Get("g", actors.GroupKind)
	session := &actorpb.SessionRef{GatewayAddress: sys.Address(), GatewayId: actors.GatewayActorName, SessionId: 1}
	for i := range sends {
		from := members[i%3] // three senders
		sys.Root.Send(group, &actorpb.ClientFrame{Session: session, UserId: from, Frame: &wire.Frame{Id: uint64(i + 1),
			Body: &wire.Frame_Send{Send: &wire.Send{ClientMessageId: fmt.Sprint("c", i), Type: 1, Content: []byte(fmt.Sprint("hello ", i)),
				MentionList: []string{"m07"}, Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}}}}})
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(sink.snapshot()) < sends && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a second ack for one request would arrive by now
	acks := sink.snapshot()
	if len(acks) != sends {
		t.Fatalf("%d acks for %d sends", len(acks), sends)
	}
	byReq := map[uint64]*wire.SendAck{}
	for _, f := range acks {
		if byReq[f.GetId()] != nil {
			t.Fatalf("request %d acked twice", f.GetId())
		}
		byReq[f.GetId()] = f.GetSendAck()
	}

	readLog := func(user string) []*wire.Entry {
		es, err := store.Read(ctx, user, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]*wire.Entry, len(es))
		for i, e := range es {
			out[i] = &wire.Entry{}
			if err := proto.Unmarshal(e.Data, out[i]); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	// The ack's seq is the message's seq in the sender's log.
	for i := range sends {
		ack := byReq[uint64(i+1)]
		if ack == nil || ack.GetSeq() == 0 {
			t.Fatalf("request %d: ack %v", i+1, ack)
		}
		got := readLog(members[i%3])
		if int(ack.GetSeq()) > len(got) || got[ack.GetSeq()-1].GetMessage().GetMessageId() != ack.GetMessageId() {
			t.Fatalf("request %d: ack seq %d does not name message %s in %s's log", i+1, ack.GetSeq(), ack.GetMessageId(), members[i%3])
		}
	}
	// Every member's log has every message once (the fan-out completes
	// after the ack).
	for _, u := range members {
		for {
			count := map[string]int{}
			for _, e := range readLog(u) {
				if msg := e.GetMessage(); msg != nil {
					count[msg.GetMessageId()]++
					if msg.GetMentioned() != (u == "m07") {
						t.Fatalf("%s's copy mentioned=%v", u, msg.GetMentioned())
					}
				}
			}
			missing := 0
			for _, a := range byReq {
				switch count[a.GetMessageId()] {
				case 0:
					missing++
				case 1:
				default:
					t.Fatalf("%s has message %s %d times", u, a.GetMessageId(), count[a.GetMessageId()])
				}
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s misses %d messages", u, missing)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The group's mark is cleared once everything is confirmed (ticks).
	for {
		mk, err := store.FanoutMark(ctx, "#g:g")
		if err != nil {
			t.Fatal(err)
		}
		if !mk.Pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group's fan-out mark is still %+v", mk)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
