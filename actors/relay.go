package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// RelayActorName is the name of the per-node relay actor: a group's
// message reaches the members a node owns as one DeliverBatch to that
// node's relay (DESIGN.md §4, "fan-out is batched per destination node"),
// not one cluster send per member.
const RelayActorName = "relay"

// relayActor hands a DeliverBatch's deliveries to the local member actors
// (its workers look each member up — a local PID, or an activation — and
// send, in chunks, so one slow activation does not hold the others, and
// nothing of a batch is dropped by a full courier queue) and answers the group
// with batched DeliverBatchAcks as the members confirm: at once when the
// batch is complete or the sender confirmed (the sender's SendAck waits
// for it), otherwise every relayFlush. Deliveries not confirmed are the
// group's to re-send (its outbox tracks every member), so the relay keeps
// nothing durable and forgets a batch after relayForget.
//
// Only the actor's goroutine touches its fields.
type relayActor struct {
	rt      *Runtime
	self    *actor.PID
	batches map[string]*relayBatch // message ID → batch
	armed   bool
	work    chan relayChunk // to the workers; bounded: a full queue drops (the group re-sends)
	wg      sync.WaitGroup
}

// relayChunk is up to relayChunkSize deliveries of one batch.
type relayChunk struct {
	members []string
	plain   *actorpb.Deliver // for members not mentioned
	mention *actorpb.Deliver // for mentioned members (nil: none)
	isMent  func(string) bool
}

const (
	relayWorkers   = 8
	relayChunkSize = 256
	relayQueue     = 4096 // chunks: a million deliveries
)

func (r *relayActor) worker() {
	for c := range r.work {
		for _, u := range c.members {
			d := c.plain
			if c.mention != nil && c.isMent(u) {
				d = c.mention
			}
			pid := r.rt.cl.Get(u, UserKind)
			if pid == nil {
				r.rt.metrics.courierDrops.Inc() // re-sent by the group
				continue
			}
			r.rt.sys.Root.Send(pid, d)
		}
	}
}

type relayBatch struct {
	group     *actor.PID // where acks go
	sender    string     // the message's sender: its ack is reported at once
	originSeq uint64
	waiting   map[string]bool // members not confirmed yet
	members   []string        // confirmed, not yet reported
	seqs      []uint64
	since     time.Time
}

const (
	relayFlush  = 50 * time.Millisecond
	relayForget = time.Minute
)

type relayTick struct{}

func (r *relayActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.self = ctx.Self()
		r.batches = map[string]*relayBatch{}
		r.work = make(chan relayChunk, relayQueue)
		for range relayWorkers {
			r.wg.Go(r.worker)
		}
	case *actor.Stopping:
		close(r.work)
		r.wg.Wait()
	case *actorpb.DeliverBatch:
		r.deliver(ctx, m)
	case *actorpb.DeliverAck:
		r.ack(ctx, m)
	case relayTick:
		r.armed = false
		now := time.Now()
		for id, b := range r.batches {
			r.report(ctx, id, b)
			if len(b.waiting) == 0 || now.Sub(b.since) > relayForget {
				delete(r.batches, id)
			}
		}
	}
	if len(r.batches) > 0 && !r.armed {
		r.armed = true
		self, root := r.self, r.rt.sys.Root
		time.AfterFunc(relayFlush, func() { root.Send(self, relayTick{}) })
	}
}

func (r *relayActor) deliver(ctx actor.Context, m *actorpb.DeliverBatch) {
	msg := m.GetMessage()
	id := msg.GetMessageId()
	if id == "" || ctx.Sender() == nil || !ValidID(m.GetGroupId()) {
		return // malformed: nothing to deliver, nobody to answer
	}
	b := r.batches[id]
	if b == nil {
		b = &relayBatch{sender: msg.GetSender(), originSeq: m.GetOriginSeq(), waiting: map[string]bool{}, since: time.Now()}
		r.batches[id] = b
	}
	b.group = ctx.Sender()
	// Members get one of two shared Delivers (mentioned or not): user
	// actors never change a delivered message in place.
	plain := proto.Clone(msg).(*wire.Message)
	plain.Mentioned = false
	deliver := func(msg *wire.Message) *actorpb.Deliver {
		return &actorpb.Deliver{FromUser: msg.GetSender(), Message: msg, OriginSeq: m.GetOriginSeq(), ViaGroup: m.GetGroupId(), RelayAddress: r.self.Address,
			MessageWire: mustMarshal(msg)}
	}
	isMent := func(u string) bool {
		return u != msg.GetSender() && mentionedIn(msg.GetMentionAll(), msg.GetMentionList(), u)
	}
	var mention *actorpb.Deliver
	if msg.GetMentionAll() || len(msg.GetMentionList()) > 0 {
		mm := proto.Clone(plain).(*wire.Message)
		mm.Mentioned = true
		mention = deliver(mm)
	}
	c := relayChunk{plain: deliver(plain), mention: mention, isMent: isMent}
	members := m.GetMembers()
	for len(members) > 0 {
		n := min(len(members), relayChunkSize)
		c.members = members[:n:n]
		members = members[n:]
		select {
		case r.work <- c:
			for _, u := range c.members {
				b.waiting[u] = true
			}
		default:
			r.rt.metrics.courierDrops.Add(float64(n)) // the group re-sends them
		}
	}
}

func (r *relayActor) ack(ctx actor.Context, a *actorpb.DeliverAck) {
	b := r.batches[a.GetMessageId()]
	if b == nil || !b.waiting[a.GetToUser()] {
		return // forgotten (the group re-sends), or a repeat
	}
	delete(b.waiting, a.GetToUser())
	b.members = append(b.members, a.GetToUser())
	b.seqs = append(b.seqs, a.GetSeq())
	if len(b.waiting) == 0 || a.GetToUser() == b.sender {
		r.report(ctx, a.GetMessageId(), b)
	}
	if len(b.waiting) == 0 {
		delete(r.batches, a.GetMessageId())
	}
}

// report sends the group the confirmations gathered since the last one.
func (r *relayActor) report(ctx actor.Context, id string, b *relayBatch) {
	if len(b.members) == 0 {
		return
	}
	ctx.Send(b.group, &actorpb.DeliverBatchAck{MessageId: id, OriginSeq: b.originSeq, Members: b.members, Seqs: b.seqs})
	b.members, b.seqs = nil, nil
}

// ownerOf returns the address of the node that owns identity of kind, if
// the cluster's lookup can tell.
func (r *Runtime) ownerOf(identity, kind string) string {
	o, ok := r.cl.Config.IdentityLookup.(interface {
		Owner(identity, kind string) string
	})
	if !ok {
		return ""
	}
	return o.Owner(identity, kind)
}

// sendGroupDeliveries sends a group's message deliveries (items of one
// perform, Deliver via the group) as one DeliverBatch per message and
// owning node; it returns the items it could not batch (no owner known),
// for the courier.
func (r *Runtime) sendGroupDeliveries(ctx actor.Context, group string, items []*actorpb.OutboxItem) []*actorpb.OutboxItem {
	type key struct {
		id   string
		node string
	}
	var order []key
	batches := map[key]*actorpb.DeliverBatch{}
	var rest []*actorpb.OutboxItem
	for _, it := range items {
		d := it.GetDeliver()
		node := r.ownerOf(it.GetToUser(), UserKind)
		if node == "" {
			rest = append(rest, it)
			continue
		}
		k := key{d.GetMessage().GetMessageId(), node}
		b := batches[k]
		if b == nil {
			b = &actorpb.DeliverBatch{GroupId: group, Message: d.GetMessage(), OriginSeq: d.GetOriginSeq()}
			batches[k] = b
			order = append(order, k)
		}
		b.Members = append(b.Members, it.GetToUser())
	}
	for _, k := range order {
		ctx.Request(actor.NewPID(k.node, RelayActorName), batches[k])
	}
	return rest
}
