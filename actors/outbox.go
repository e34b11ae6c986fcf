package actors

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// outbox is the fan-out bookkeeping of one user or group actor: the outbox
// rule of DESIGN.md §3, one implementation for both kinds (ADR 0005).
//
// Messages — a user's one-to-one message, a group's message — write no
// outbox record: the log entry is itself the "fan-out pending" record,
// and the store keeps one fan-out mark per actor, "every fan-out of an
// entry up to seq Done is confirmed; later ones may not be". The mark is
// written when the first fan-out of an idle period is appended (in the
// same append as its entry), moved lazily on ticks while fan-outs go on,
// and cleared once none is left: amortised, never once per message. A
// stale mark only re-drives deliveries the recipients de-duplicate by
// message ID. While it is pending, Store.OutboxUsers lists the actor, so a
// node re-drives it after a crash without waiting for it to come back.
//
// The rare fan-outs whose payload the log entry does not carry (recalls,
// edits, group membership events) keep one stored outbox item per
// recipient, as before: they are few, and their items hold the payload.
//
// Only the owning actor's goroutine touches it.
type outbox struct {
	// The deliveries in flight and what the re-sends learn from them:
	// nil until the actor's first fan-out (live). Most of a million
	// online users never send, and this is most of the outbox's size.
	*fanouts

	// The two flags side by side: a word less in each of a million users'
	// states.
	scanning    bool // see scanned
	markPending bool // see markDone

	// The activation's re-drive of entries after the stored mark reads
	// the log in pages; until it is through, the mark stays at or behind
	// scanned, the last seq it looked at.
	scanned persistence.Seq
	scanTo  persistence.Seq // the activation's last seq: later entries are this activation's

	// The mark as last submitted (appends apply in order, so this is the
	// stored mark once they commit).
	markDone persistence.Seq
}

// fanouts is the part of an outbox that exists once the actor fans out.
type fanouts struct {
	items map[itemKey]*outboxEntry        // every delivery not yet confirmed, but
	bulks map[persistence.Seq]*bulkFanout // group messages' (bulk.go)
	done  []persistence.OutboxRef         // stored items confirmed, not yet deleted

	// Fan-outs of log entries: unconfirmed deliveries per entry, and the
	// entries' seqs in ascending order (the front is popped once
	// confirmed). Registered when the entry is submitted, so the mark
	// never passes an entry whose fan-out has not started.
	open map[persistence.Seq]int
	seqs []persistence.Seq

	latency ackLatency // how long fan-outs take to be confirmed
	// Confirmations come roughly in send order (one queue per node and
	// store), so an unconfirmed delivery is re-sent only once a later one
	// was confirmed (it was overtaken: probably lost) or confirmations
	// stopped (stalled). A long queue — a big group's fan-out — is not
	// re-sent just for being long.
	lastAck     int64 // when the last confirmation came, Unix ns (0: none yet)
	ackedSentAt int64 // the latest send time among confirmed deliveries, Unix ns

	// tick scans the items only from nextScan on (zero: at the next tick):
	// the earliest an item can be due with the delays of the last scan, or
	// confirmations stall. Items due but waiting to be overtaken (the
	// oldest sent at blockedSentAt; 0: none) make a confirmation that
	// overtakes them clear it, as do delays that shrink.
	nextScan      time.Time
	blockedSentAt int64
	scanDelay     time.Duration // the first re-send delay nextScan assumed
}

// live returns the outbox's fan-out state, made on first use. Methods that
// only read check o.fanouts for nil instead.
func (o *outbox) live() *fanouts {
	if o.fanouts == nil {
		o.fanouts = &fanouts{}
	}
	return o.fanouts
}

// itemCount is how many item deliveries (not bulk fan-outs) wait for
// their confirmation.
func (o *outbox) itemCount() int {
	if o.fanouts == nil {
		return 0
	}
	return len(o.items)
}

// doneCount is how many confirmed stored items wait for their deletion.
func (o *outbox) doneCount() int {
	if o.fanouts == nil {
		return 0
	}
	return len(o.done)
}

// itemKey names a delivery in the outbox without building a string (a big
// group's fan-out puts and confirms a million of them): outboxRef's
// fields, the key's two parts kept apart.
type itemKey struct {
	seq persistence.Seq
	to  string
	id  string
}

func keyOfItem(it *actorpb.OutboxItem) itemKey {
	return itemKey{originSeq(it), it.GetToUser(), itemMessageID(it)}
}

type outboxEntry struct {
	item     *actorpb.OutboxItem
	logged   bool // a log entry's fan-out (no stored item)
	sentAt   time.Time
	attempts int
}

func newOutbox() outbox {
	return outbox{} // the maps are made on first use: most actors never fan out
}

// activated sets the stored mark and the log's last seq: a pending mark
// starts the re-drive scan of the log after it (effRedrive).
func (o *outbox) activated(m persistence.FanoutMark, last persistence.Seq) []effect {
	o.markPending, o.markDone = m.Pending, m.Done
	o.scanning, o.scanned, o.scanTo = m.Pending && m.Done < last, m.Done, last
	if !o.scanning {
		return nil
	}
	return []effect{effRedrive{}}
}

// put records a new entry's fan-out in req (the entry's append) and c (its
// commit): items of entry seq, sent once the append is durable. Logged
// fan-outs write at most the mark; others write one item each.
func (o *outbox) put(req *persistence.AppendRequest, c *commit, seq persistence.Seq, items []*actorpb.OutboxItem, logged bool) {
	if len(items) == 0 {
		return
	}
	c.fanout, c.logged = append(c.fanout, items...), logged
	if !logged {
		for _, it := range items {
			req.OutboxPut = append(req.OutboxPut, outboxPut(it))
		}
		return
	}
	o.openLogged(req, seq, len(items))
}

// openLogged registers n deliveries of entry seq's logged fan-out, and
// writes the mark in req if none is pending.
func (o *outbox) openLogged(req *persistence.AppendRequest, seq persistence.Seq, n int) {
	o.live()
	if !o.markPending {
		done := o.watermark(seq - 1)
		req.Fanout = &persistence.FanoutMark{Done: done, Pending: true}
		o.markPending, o.markDone = true, done
	}
	if o.open[seq] == 0 {
		o.seqs = append(o.seqs, seq)
	}
	setIn(&o.open, seq, o.open[seq]+n)
}

// sent starts deliveries (an append became durable, or the activation
// re-drives them) and returns the effects that send them.
func (o *outbox) sent(items []*actorpb.OutboxItem, logged bool, now time.Time) []effect {
	if len(items) == 0 {
		return nil
	}
	o.live()
	effs := make([]effect, 0, len(items))
	entries := make([]outboxEntry, len(items)) // one allocation for a fan-out's entries
	for i, it := range items {
		entries[i] = outboxEntry{item: it, logged: logged, sentAt: now, attempts: 1}
		setIn(&o.items, keyOfItem(it), &entries[i])
		effs = append(effs, effDeliver{item: it})
	}
	o.scanBy(now)
	return effs
}

// scanBy makes the next tick that comes a first re-send delay after now
// (or later) scan: deliveries were sent at now.
func (o *outbox) scanBy(now time.Time) {
	if due := now.Add(o.latency.redriveDelay(1)); !o.nextScan.IsZero() && due.Before(o.nextScan) {
		o.nextScan = due
	}
}

// redrive starts the deliveries of an entry the activation found after the
// stored mark (its fan-out was not confirmed when the last activation
// ended, as far as the mark knows).
func (o *outbox) redrive(seq persistence.Seq, items []*actorpb.OutboxItem, now time.Time) []effect {
	if len(items) == 0 {
		return nil
	}
	o.live()
	var fresh []*actorpb.OutboxItem
	for _, it := range items {
		if o.items[keyOfItem(it)] == nil {
			fresh = append(fresh, it)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	o.openRedriven(seq, len(fresh))
	return o.sent(fresh, true, now)
}

// openRedriven registers n re-driven deliveries of entry seq.
func (o *outbox) openRedriven(seq persistence.Seq, n int) {
	o.live()
	if o.open[seq] == 0 {
		o.seqs = append(o.seqs, seq)
		slices.Sort(o.seqs) // pages come in seq order, but new sends may be open already
		o.seqs = slices.Compact(o.seqs)
	}
	setIn(&o.open, seq, o.open[seq]+n)
}

// scannedTo records how far the re-drive scan has read; through ends it.
func (o *outbox) scannedTo(seq persistence.Seq, through bool) {
	o.scanned = max(o.scanned, seq)
	if through {
		o.scanning = false
	}
}

// ack records a confirmation; it reports whether it was one this outbox
// waited for.
func (o *outbox) ack(a *actorpb.DeliverAck, now time.Time) bool {
	if o.fanouts == nil {
		return false // nothing in flight: a repeat, or not ours
	}
	k := itemKey{persistence.Seq(a.GetOriginSeq()), a.GetToUser(), a.GetMessageId()}
	e := o.items[k]
	if e == nil {
		return o.ackBulk(a, now) // or a repeat, or not ours
	}
	o.confirmed(e.sentAt, e.attempts, now)
	deleteIn(&o.items, k)
	if !e.logged {
		o.done = append(o.done, outboxRef(e.item))
		return true
	}
	o.closeLogged(k.seq)
	return true
}

// closeLogged counts one delivery of entry seq's logged fan-out confirmed.
func (o *outbox) closeLogged(seq persistence.Seq) {
	if n := o.open[seq] - 1; n > 0 {
		o.open[seq] = n
	} else {
		deleteIn(&o.open, seq)
	}
}

// confirmed learns from a confirmation of a delivery sent at sentAt (on
// its attempts-th send) that came at now (zero: learns nothing).
func (o *outbox) confirmed(sentAt time.Time, attempts int, now time.Time) {
	if now.IsZero() {
		return
	}
	if attempts == 1 {
		o.latency.observe(now.Sub(sentAt))
	}
	o.lastAck = now.UnixNano()
	o.ackedSentAt = max(o.ackedSentAt, sentAt.UnixNano())
	// nextScan assumed the delays of the last scan: scan again at the
	// next tick when they shrank by a quarter, or when a delivery
	// waiting to be overtaken was (and is still due).
	d := o.latency.redriveDelay(1)
	if b := o.blockedSentAt; d < o.scanDelay*3/4 || (b != 0 && o.ackedSentAt > b+int64(overtaken) && time.Duration(now.UnixNano()-b) >= d) {
		o.nextScan, o.blockedSentAt = time.Time{}, 0
	}
}

// watermark is the highest seq through which every logged fan-out is
// confirmed, given that entries up to last exist.
func (o *outbox) watermark(last persistence.Seq) persistence.Seq {
	w := last
	if f := o.fanouts; f != nil {
		for len(f.seqs) > 0 && f.open[f.seqs[0]] == 0 {
			f.seqs = f.seqs[1:]
		}
		if len(f.seqs) > 0 {
			w = min(w, f.seqs[0]-1)
		}
	}
	if o.scanning {
		w = min(w, o.scanned)
	}
	return w
}

// pending reports whether some logged fan-out may be unconfirmed.
func (o *outbox) pending(last persistence.Seq) bool {
	o.watermark(last) // pops confirmed seqs
	return o.scanning || (o.fanouts != nil && len(o.seqs) > 0)
}

// markStale reports whether the stored mark is behind what is known.
func (o *outbox) markStale(last persistence.Seq) bool {
	p := o.pending(last)
	return p != o.markPending || (p && o.watermark(last) > o.markDone)
}

// needsFlush reports whether a flush would write anything.
func (o *outbox) needsFlush(last persistence.Seq) bool {
	return o.doneCount() > 0 || o.markStale(last)
}

// flush puts the confirmed items' deletions and the moved mark into req.
func (o *outbox) flush(req *persistence.AppendRequest, last persistence.Seq) {
	if o.fanouts != nil {
		req.OutboxDone = append(req.OutboxDone, o.done...)
		o.done = nil
	}
	if !o.markStale(last) {
		return
	}
	p, w := o.pending(last), o.watermark(last)
	req.Fanout = &persistence.FanoutMark{Done: w, Pending: p}
	o.markPending, o.markDone = p, w
}

// overtaken is how much later a confirmed delivery must have been sent
// for an unconfirmed one to count as overtaken.
const overtaken = time.Second

// tick re-sends deliveries not confirmed in time, with back-off: once
// overtaken by a later confirmed one, or when confirmations stalled.
func (o *outbox) tick(now time.Time) []effect {
	if o.fanouts == nil || now.Before(o.nextScan) {
		return nil // nothing can be due: a big fan-out is not scanned every tick
	}
	var effs []effect
	sc := resendScan{now: now, stalled: time.Duration(now.UnixNano()-o.lastAck) >= o.latency.redriveDelay(1), blocked: math.MaxInt64}
	for _, e := range o.items {
		if o.resend(&sc, &e.sentAt, &e.attempts) {
			effs = append(effs, effDeliver{item: e.item})
		}
	}
	for _, b := range o.bulks {
		if o.resend(&sc, &b.sentAt, &b.attempts) {
			effs = append(effs, effDeliverBulk{b: b, idx: b.pendingIdx()})
		}
	}
	next, blocked := sc.next, sc.blocked
	if blocked != math.MaxInt64 {
		// Confirmations that stop stall no later than this; one that
		// overtakes the blocked items clears nextScan (ack).
		if stall := time.Unix(0, o.lastAck).Add(o.latency.redriveDelay(1)); next.IsZero() || stall.Before(next) {
			next = stall
		}
	} else {
		blocked = 0
	}
	o.nextScan, o.blockedSentAt, o.scanDelay = next, blocked, o.latency.redriveDelay(1)
	return effs
}

// resendScan is one tick's pass over the deliveries.
type resendScan struct {
	now     time.Time
	stalled bool      // no confirmation for a first re-send delay
	next    time.Time // the earliest a delivery not due now can be
	blocked int64     // the oldest send among those due but waiting to be overtaken (MaxInt64: none)
}

// resend reports whether a delivery — an item, or a bulk fan-out's
// unconfirmed members — sent at *sentAt on its *attempts-th send goes
// again now, and if so counts the send.
func (o *outbox) resend(sc *resendScan, sentAt *time.Time, attempts *int) bool {
	again := false
	if sc.now.Sub(*sentAt) >= o.latency.redriveDelay(*attempts) {
		if !sc.stalled && sentAt.Add(overtaken).UnixNano() >= o.ackedSentAt {
			sc.blocked = min(sc.blocked, sentAt.UnixNano()) // waits to be overtaken, or for a stall
			return false
		}
		*sentAt, *attempts, again = sc.now, *attempts+1, true
	}
	if due := sentAt.Add(o.latency.redriveDelay(*attempts)); sc.next.IsZero() || due.Before(sc.next) {
		sc.next = due
	}
	return again
}

// busy reports whether deliveries are in flight or the re-drive scan is
// not through.
func (o *outbox) busy() bool {
	return o.scanning || (o.fanouts != nil && (len(o.items) > 0 || len(o.bulks) > 0))
}

// storedItems decodes the stored outbox items an activation re-drives,
// skipping the fan-out mark.
func storedItems(items []persistence.OutboxItem, decode func([]byte) (*actorpb.OutboxItem, error)) ([]*actorpb.OutboxItem, error) {
	out := make([]*actorpb.OutboxItem, 0, len(items))
	for _, it := range items {
		if persistence.IsFanoutMark(it.Seq, it.Key) {
			continue
		}
		oi, err := decode(it.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, oi)
	}
	return out, nil
}

// mentionedIn reports whether reader is mentioned by a message with this
// mention list and mention-all flag.
func mentionedIn(all bool, list []string, reader string) bool {
	return all || slices.Contains(list, reader)
}

// effRedrive asks the shell to read the next page of the log for the
// activation's re-drive (a self-message: the mailbox is not held for the
// whole scan).
type effRedrive struct{}

func (effRedrive) isEffect() {}

// redriveStep is the self-message of effRedrive.
type redriveStep struct{}

// redrivePage is the page size of the activation's re-drive scan.
const redrivePage = 256

// redriveEntries re-drives the fan-outs of entries (a page read after the
// scan position; full reports whether the page was full) with fanoutOf
// naming an entry's deliveries, and asks for the next page unless the scan
// reached last.
func (o *outbox) redriveEntries(entries []*wire.Entry, full bool, fanoutOf func(*wire.Entry) ([]*actorpb.OutboxItem, *bulkFanout), now time.Time) []effect {
	if !o.scanning {
		return nil
	}
	last := o.scanTo
	var effs []effect
	end := o.scanned
	for _, e := range entries {
		seq := persistence.Seq(e.GetSeq())
		if seq <= o.scanned {
			continue
		}
		end = max(end, seq)
		if seq > last {
			break // appended by this activation: its own fan-out runs
		}
		items, bulk := fanoutOf(e)
		effs = append(effs, o.redrive(seq, items, now)...)
		effs = append(effs, o.redriveBulk(bulk, now)...)
	}
	through := !full || end >= last
	if through {
		end = max(end, last)
	}
	o.scannedTo(end, through)
	if !through {
		effs = append(effs, effRedrive{})
	}
	return effs
}

func decodeOutboxItem(b []byte) (*actorpb.OutboxItem, error) {
	var oi actorpb.OutboxItem
	if err := proto.Unmarshal(b, &oi); err != nil {
		return nil, fmt.Errorf("decode outbox item: %w", err)
	}
	return &oi, nil
}

// readRedrivePage reads one page of user's log after the re-drive
// position; full reports whether it had the page's worth.
func readRedrivePage(rt *Runtime, user string, after persistence.Seq) ([]*wire.Entry, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.RequestTimeout)
	defer cancel()
	es, err := rt.store.Read(ctx, user, after, redrivePage)
	if err != nil {
		return nil, false, fmt.Errorf("read %q after %d: %w", user, after, err)
	}
	out, err := decodeEntries(es)
	return out, len(es) >= redrivePage, err
}

// retryRedriveAfter is how long a failed re-drive read waits.
const retryRedriveAfter = time.Second

func retryRedrive(rt *Runtime, self *actor.PID) {
	root := rt.sys.Root
	time.AfterFunc(retryRedriveAfter, func() { root.Send(self, redriveStep{}) })
}
