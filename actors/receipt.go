package actors

import (
	"time"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// Receipts (one-to-one, when the sender asked): the recipient's actor
// remembers, per conversation, the receipt-requested messages from the
// peer not yet reported read (ConvState.pending_receipts, oldest first).
// Whenever a device's cursor ack passes some not yet reported delivered,
// the peer gets a "delivered" receipt; whenever the read position passes
// some, a "read" receipt (read implies delivered). A receipt names the
// newest message it covers (message ID, seq in the sender's log): it holds
// for that one and every earlier one. The sender's actor logs a
// ReceiptEvent for the sender's devices.

// maxPendingReceipts bounds the pending list of one conversation (it is
// written with every append to it). Past the bound the second-oldest is
// dropped: the oldest stays, so the first move past any of them still
// reports, and a later receipt covers the dropped ones.
const maxPendingReceipts = 32

// wantReceipt records a receipt-requested message just delivered into
// this log (cs is its conversation; originSeq its seq in the sender's log,
// 0 if unknown).
func wantReceipt(cs *actorpb.ConvState, e *wire.Entry, originSeq uint64) {
	m := e.GetMessage()
	if !m.GetOptions().GetReceiptRequested() || m.GetConversation().GetType() != wire.Conversation_DIRECT {
		return
	}
	upgradeReceipts(cs)
	cs.PendingReceipts = append(cs.PendingReceipts, &actorpb.PendingReceipt{
		Seq: e.GetSeq(), MessageId: m.GetMessageId(), OriginSeq: originSeq,
	})
	if len(cs.PendingReceipts) > maxPendingReceipts {
		cs.PendingReceipts = append(cs.PendingReceipts[:1], cs.PendingReceipts[2:]...)
	}
}

// upgradeReceipts turns the single pending seqs of a record written before
// pending_receipts into a list entry (no message ID or sender seq known).
func upgradeReceipts(cs *actorpb.ConvState) {
	if seq := cs.GetReceiptReadSeq(); seq != 0 {
		cs.PendingReceipts = append([]*actorpb.PendingReceipt{{Seq: seq, Delivered: cs.GetReceiptDeliveredSeq() == 0}}, cs.PendingReceipts...)
	}
	cs.ReceiptReadSeq, cs.ReceiptDeliveredSeq = 0, 0
}

// receiptsDelivered reports delivery of every pending receipt at or below
// a device's new cursor: one receipt per conversation, up to the newest.
func (s *userState) receiptsDelivered(cursor persistence.Seq, now time.Time) []effect {
	var effs []effect
	var convs []persistence.Conv
	for _, cs := range s.convs {
		if cs.GetReceiptReadSeq() == 0 && len(cs.GetPendingReceipts()) == 0 {
			continue
		}
		upgradeReceipts(cs)
		var newest *actorpb.PendingReceipt
		for _, p := range cs.GetPendingReceipts() {
			if p.GetSeq() > uint64(cursor) {
				break
			}
			if !p.GetDelivered() {
				p.Delivered, newest = true, p
			}
		}
		if newest != nil {
			convs = append(convs, convRecord(cs))
			effs = append(effs, effTransientReceipt(cs, s.user, newest, now.UnixMilli(), 0))
		}
	}
	if len(convs) > 0 {
		effs = append(effs, s.submit(persistence.AppendRequest{Convs: convs}, &commit{}))
	}
	return effs
}

// receiptRead reports "read" for cs if its read position passed pending
// receipts (they are dropped); the caller writes cs.
func (s *userState) receiptRead(cs *actorpb.ConvState, now time.Time) []effect {
	upgradeReceipts(cs)
	pending := cs.GetPendingReceipts()
	n := 0
	for n < len(pending) && pending[n].GetSeq() <= cs.GetReadSeq() {
		n++
	}
	if n == 0 {
		return nil
	}
	newest := pending[n-1]
	cs.PendingReceipts = pending[n:]
	if len(cs.PendingReceipts) == 0 {
		cs.PendingReceipts = nil
	}
	return []effect{effTransientReceipt(cs, s.user, newest, now.UnixMilli(), now.UnixMilli())}
}

func effTransientReceipt(cs *actorpb.ConvState, me string, upTo *actorpb.PendingReceipt, deliveredAt, readAt int64) effect {
	return effReceipt{to: cs.GetConversation().GetId(), msg: &actorpb.ReceiptDeliver{
		FromUser: me, LastDeliveredAtMs: deliveredAt, LastReadAtMs: readAt,
		UpToMessageId: upTo.GetMessageId(), UpToOriginSeq: upTo.GetOriginSeq(),
	}}
}

// effReceipt sends a receipt to the sender's actor.
type effReceipt struct {
	to  string
	msg *actorpb.ReceiptDeliver
}

func (effReceipt) isEffect() {}

// receipt logs a ReceiptEvent in the sender's log (pushed to the sender's
// devices).
func (s *userState) receipt(r *actorpb.ReceiptDeliver, now time.Time) []effect {
	if !ValidID(r.GetFromUser()) || (r.GetLastDeliveredAtMs() == 0 && r.GetLastReadAtMs() == 0) {
		return nil
	}
	delivered := r.GetLastDeliveredAtMs()
	if delivered == 0 {
		delivered = r.GetLastReadAtMs() // read implies delivered
	}
	upTo := r.GetUpToMessageId()
	if len(upTo) > 64 {
		upTo = "" // not one of our IDs: do not log it
	}
	e := &wire.Entry{Kind: &wire.Entry_Receipt{Receipt: &wire.ReceiptEvent{
		Conversation:      &wire.Conversation{Type: wire.Conversation_DIRECT, Id: r.GetFromUser()},
		LastDeliveredAtMs: delivered,
		LastReadAtMs:      r.GetLastReadAtMs(),
		UpToMessageId:     upTo,
		UpToSenderSeq:     r.GetUpToOriginSeq(),
	}}}
	e.ServerTimeMs = s.nextTime(now)
	s.lastSeq++
	e.Seq = uint64(s.lastSeq)
	return []effect{s.appendEntries([]*wire.Entry{e}, persistence.AppendRequest{})}
}
