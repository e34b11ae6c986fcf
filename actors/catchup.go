package actors

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

// Reads off the mailbox. A catch-up page or a history scan is read by a
// goroutine, which posts the result back to the actor as a readDone; the
// actor then answers from its own goroutine. The store is safe for
// concurrent use, and the mailbox is never held while the store reads:
// sends, deliveries and acks of the same user go on meanwhile.

// readDone is the result of a read off the mailbox, applied by the actor.
type readDone interface {
	apply(ctx actor.Context, a *userActor)
}

// logRead reads one user's log with a per-read timeout. It holds copies,
// so a goroutine may use it while the actor goes on.
type logRead struct {
	store   Store
	user    string
	timeout time.Duration
}

func (a *userActor) logRead() logRead {
	return logRead{store: a.rt.store, user: a.user, timeout: a.st.cfg.RequestTimeout}
}

// read returns up to limit decoded entries after seq.
func (r logRead) read(after persistence.Seq, limit int) ([]*wire.Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	es, err := r.store.Read(ctx, r.user, after, limit)
	if err != nil {
		return nil, err
	}
	return decodeEntries(es)
}

// readOff runs read on a new goroutine and posts its result to the actor.
func (a *userActor) readOff(read func() readDone) {
	root, self := a.rt.sys.Root, a.self
	go func() { root.Send(self, read()) }()
}

// catchupRead is one catch-up read off the mailbox: the entries after
// after, read once every entry up to readAt (the actor's committed
// seq when the read began) was durable.
type catchupRead struct {
	key     sessionKey
	after   persistence.Seq
	readAt  persistence.Seq
	entries []*wire.Entry
	err     error
}

// catchupRead is how many entries one catch-up read takes: several
// pages, sent in one push (a page holds at most pageLimit). Fewer, larger
// reads cost less per entry, in the store and in messages between the
// reader, the actor and the gateway.
const catchupReadLimit = 5 * pageLimit

// catchupCommitWait bounds how long a catch-up read waits for appends
// that were in flight when it began (see readCatchup).
const catchupCommitWait = 100 * time.Millisecond

// readCatchup reads the entries after seq after for a catching-up
// session. One read per session is in flight at a time: the next starts
// when this one's pages are sent (catchupPageAt asks for it with
// effCatchup). If the read comes back short of seqs the actor had already
// assigned (appends in flight, e.g. the login's own device event or a
// delivery that raced the login), it reads again each millisecond until
// they are in, for up to catchupCommitWait: the device then gets them in
// its catch-up rather than as pushes right after it. Past the wait the
// session turns live and gets them as pushes; nothing is lost either way.
func (a *userActor) readCatchup(key sessionKey, after persistence.Seq) {
	lr, readAt, assigned := a.logRead(), a.st.committed, a.st.lastSeq
	a.readOff(func() readDone {
		entries, err := lr.read(after, catchupReadLimit)
		deadline := time.Now().Add(catchupCommitWait)
		for err == nil && len(entries) < catchupReadLimit && lastSeqOf(entries, after) < assigned && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			entries, err = lr.read(after, catchupReadLimit)
		}
		return catchupRead{key: key, after: after, readAt: readAt, entries: entries, err: err}
	})
}

// lastSeqOf returns the seq of the last entry, or after if there is none.
func lastSeqOf(entries []*wire.Entry, after persistence.Seq) persistence.Seq {
	if n := len(entries); n > 0 {
		return persistence.Seq(entries[n-1].GetSeq())
	}
	return after
}

func (m catchupRead) apply(ctx actor.Context, a *userActor) {
	sess := a.st.sessions.get(m.key)
	if sess == nil || sess.live || sess.next-1 != m.after {
		return // the session ended (or this read is not its next page)
	}
	if m.err != nil {
		a.log().Error("catch-up read failed", "err", m.err)
		a.perform(ctx, a.st.closed(m.key, false, a.rt.now()))
		a.perform(ctx, []effect{lostSession(m.key)})
		return
	}
	a.perform(ctx, a.st.catchupPageAt(m.key, m.entries, catchupReadLimit, m.readAt))
}
