package actors

import (
	"math/bits"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// bulkFanout is a group message's deliveries to its members, kept in the
// group's outbox as one record: the members, a bit per member still to
// confirm, and one send time and attempt count for all of them. A
// 2,000-member group with 400 messages in flight holds 400 records, not
// 800,000 items (about 180 bytes each, a map entry the collector scans
// every cycle, and a scan of all of them for every re-send check).
//
// The members of one send are re-sent together: they were sent at the
// same time, so they are due together, and a confirmation that overtakes
// one overtakes all (outbox.tick).
type bulkFanout struct {
	seq     persistence.Seq
	id      string           // the message ID
	group   string           // the group (Deliver.via_group)
	msg     *wire.Message    // mentioned false: the relay sets each member's flag
	members []string         // shared with the group state it was made from: never changed in place
	pos     map[string]int32 // member → index in members (shared likewise)

	pending  []uint64 // bit i: members[i] not confirmed yet
	left     int
	sentAt   time.Time
	attempts int

	plain, mention *actorpb.Deliver // for the courier, made on first use
}

// effDeliverBulk sends the deliveries of a bulk fan-out (idx nil: to every
// member, else to members[i] for each i).
type effDeliverBulk struct {
	b   *bulkFanout
	idx []int32
}

func (effDeliverBulk) isEffect() {}

// index returns member u's index.
func (b *bulkFanout) index(u string) (int, bool) {
	i, ok := b.pos[u]
	return int(i), ok
}

func (b *bulkFanout) isPending(i int) bool { return b.pending[i/64]&(1<<(i%64)) != 0 }

// start marks every member pending.
func (b *bulkFanout) start(now time.Time) {
	n := len(b.members)
	b.pending = make([]uint64, (n+63)/64)
	for i := range b.pending {
		b.pending[i] = ^uint64(0)
	}
	if r := n % 64; r != 0 {
		b.pending[len(b.pending)-1] = 1<<r - 1
	}
	b.left, b.sentAt, b.attempts = n, now, 1
}

// confirm clears member i; it reports whether i was pending.
func (b *bulkFanout) confirm(i int) bool {
	if !b.isPending(i) {
		return false
	}
	b.pending[i/64] &^= 1 << (i % 64)
	b.left--
	return true
}

// pendingIdx lists the members not confirmed yet.
func (b *bulkFanout) pendingIdx() []int32 {
	out := make([]int32, 0, b.left)
	for w, word := range b.pending {
		for word != 0 {
			i := w*64 + bits.TrailingZeros64(word)
			out = append(out, int32(i))
			word &= word - 1
		}
	}
	return out
}

// deliverFor is member u's Deliver (one of two shared ones: nothing
// changes a delivered message in place).
func (b *bulkFanout) deliverFor(u string) *actorpb.Deliver {
	m := b.msg
	if u != m.GetSender() && mentionedIn(m.GetMentionAll(), m.GetMentionList(), u) {
		if b.mention == nil {
			cp := proto.Clone(m).(*wire.Message)
			cp.Mentioned = true
			b.mention = &actorpb.Deliver{FromUser: m.GetSender(), Message: cp, OriginSeq: uint64(b.seq), ViaGroup: b.group}
		}
		return b.mention
	}
	if b.plain == nil {
		b.plain = &actorpb.Deliver{FromUser: m.GetSender(), Message: m, OriginSeq: uint64(b.seq), ViaGroup: b.group}
	}
	return b.plain
}

// item is member i's delivery as an outbox item.
func (b *bulkFanout) item(i int) *actorpb.OutboxItem {
	return &actorpb.OutboxItem{ToUser: b.members[i], Deliver: b.deliverFor(b.members[i])}
}

// sendBulk sends a bulk fan-out's deliveries (idx as in effDeliverBulk) as
// one DeliverBatch per owning node; members whose owner is not known go
// through the courier, one Deliver each.
func (r *Runtime) sendBulk(ctx actor.Context, b *bulkFanout, idx []int32) {
	batches := map[string]*actorpb.DeliverBatch{}
	var order []string
	visit := func(u string) {
		node := r.ownerOf(u, UserKind)
		if node == "" {
			r.courier.send(u, b.deliverFor(u))
			return
		}
		bt := batches[node]
		if bt == nil {
			bt = &actorpb.DeliverBatch{GroupId: b.group, Message: b.msg, OriginSeq: uint64(b.seq)}
			batches[node] = bt
			order = append(order, node)
		}
		bt.Members = append(bt.Members, u)
	}
	if idx == nil {
		for _, u := range b.members {
			visit(u)
		}
	} else {
		for _, i := range idx {
			visit(b.members[i])
		}
	}
	for _, n := range order {
		ctx.Request(actor.NewPID(n, RelayActorName), batches[n])
	}
}

// ---------------------------------------------------------------- outbox

// putBulk records a group message's fan-out in req (the entry's append:
// at most the fan-out mark) and c (its commit), like put of a logged
// fan-out.
func (o *outbox) putBulk(req *persistence.AppendRequest, c *commit, b *bulkFanout) {
	if b == nil || len(b.members) == 0 {
		return
	}
	c.bulk = b
	o.openLogged(req, b.seq, len(b.members))
}

// sentBulk starts a bulk fan-out's deliveries (its append became durable,
// or the activation re-drives it).
func (o *outbox) sentBulk(b *bulkFanout, now time.Time) []effect {
	if b == nil || len(b.members) == 0 {
		return nil
	}
	b.start(now)
	o.live()
	setIn(&o.bulks, b.seq, b)
	o.scanBy(now)
	return []effect{effDeliverBulk{b: b}}
}

// redriveBulk is redrive for a bulk fan-out: nothing if it is in flight.
func (o *outbox) redriveBulk(b *bulkFanout, now time.Time) []effect {
	if b == nil || len(b.members) == 0 || (o.fanouts != nil && o.bulks[b.seq] != nil) {
		return nil
	}
	o.openRedriven(b.seq, len(b.members))
	return o.sentBulk(b, now)
}

// ackBulk is ack for a member's confirmation of a bulk fan-out.
func (o *outbox) ackBulk(a *actorpb.DeliverAck, now time.Time) bool {
	if o.fanouts == nil {
		return false
	}
	seq := persistence.Seq(a.GetOriginSeq())
	b := o.bulks[seq]
	if b == nil || b.id != a.GetMessageId() {
		return false
	}
	i, ok := b.index(a.GetToUser())
	if !ok || !b.confirm(i) {
		return false // a repeat, or not a recipient
	}
	o.confirmed(b.sentAt, b.attempts, now)
	o.closeLogged(seq)
	if b.left == 0 {
		deleteIn(&o.bulks, seq)
	}
	return true
}

// inFlight counts the deliveries not confirmed yet.
func (o *outbox) inFlight() int {
	if o.fanouts == nil {
		return 0
	}
	n := len(o.items)
	for _, b := range o.bulks {
		n += b.left
	}
	return n
}
