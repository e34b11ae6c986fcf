package actors

import (
	"time"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// Receipts (one-to-one, when the sender asked): the recipient's actor
// remembers, per conversation, the newest receipt-requested message not yet
// reported delivered and not yet reported read. A cursor ack past it
// reports "delivered"; a mark-read past it reports "read". The sender's
// actor logs a ReceiptEvent for the sender's devices.

// wantReceipt records a receipt-requested message just delivered into
// this log (cs is its conversation).
func wantReceipt(cs *actorpb.ConvState, e *wire.Entry) {
	if m := e.GetMessage(); m.GetOptions().GetReceiptRequested() && m.GetConversation().GetType() == wire.Conversation_DIRECT {
		cs.ReceiptDeliveredSeq = e.GetSeq()
		cs.ReceiptReadSeq = e.GetSeq()
	}
}

// receiptsDelivered reports delivery of every pending receipt at or below
// a device's new cursor.
func (s *userState) receiptsDelivered(cursor persistence.Seq, now time.Time) []effect {
	var effs []effect
	var convs []persistence.Conv
	for _, cs := range s.convs {
		if seq := cs.GetReceiptDeliveredSeq(); seq != 0 && seq <= uint64(cursor) {
			cs.ReceiptDeliveredSeq = 0
			convs = append(convs, convRecord(cs))
			effs = append(effs, effTransientReceipt(cs, s.user, now.UnixMilli(), 0))
		}
	}
	if len(convs) > 0 {
		effs = append(effs, s.submit(persistence.AppendRequest{Convs: convs}, &commit{}))
	}
	return effs
}

// receiptRead reports "read" for cs if its pending receipt is at or below
// the new read position; the caller writes cs.
func (s *userState) receiptRead(cs *actorpb.ConvState, now time.Time) []effect {
	if seq := cs.GetReceiptReadSeq(); seq != 0 && seq <= cs.GetReadSeq() {
		cs.ReceiptReadSeq = 0
		if cs.GetReceiptDeliveredSeq() != 0 && cs.GetReceiptDeliveredSeq() <= cs.GetReadSeq() {
			cs.ReceiptDeliveredSeq = 0 // read implies delivered
		}
		return []effect{effTransientReceipt(cs, s.user, now.UnixMilli(), now.UnixMilli())}
	}
	return nil
}

func effTransientReceipt(cs *actorpb.ConvState, me string, deliveredAt, readAt int64) effect {
	return effReceipt{to: cs.GetConversation().GetId(), msg: &actorpb.ReceiptDeliver{
		FromUser: me, LastDeliveredAtMs: deliveredAt, LastReadAtMs: readAt,
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
	e := &wire.Entry{Kind: &wire.Entry_Receipt{Receipt: &wire.ReceiptEvent{
		Conversation:      &wire.Conversation{Type: wire.Conversation_DIRECT, Id: r.GetFromUser()},
		LastDeliveredAtMs: delivered,
		LastReadAtMs:      r.GetLastReadAtMs(),
	}}}
	e.ServerTimeMs = s.nextTime(now)
	s.lastSeq++
	e.Seq = uint64(s.lastSeq)
	return []effect{s.appendEntries([]*wire.Entry{e}, persistence.AppendRequest{})}
}
