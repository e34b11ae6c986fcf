package actors

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

const (
	maxHistoryLimit = 100
	// historyScanBudget bounds the log entries one HistoryRequest reads
	// (the log is per user, not per conversation) once it found a message:
	// past it the page ends with has_more and the client continues from its
	// oldest message. A page with nothing found yet scans on (it has no
	// message to continue from). Neither holds the mailbox: the scan runs
	// off it (scanHistory), and it starts at the conversation's last
	// message, so an empty conversation reads nothing and an old one starts
	// where its messages are.
	historyScanBudget = 5000
)

// historyScan collects, scanning the log backwards from before (exclusive),
// up to limit messages of conversation k newer than cleared. read returns
// the entries after a seq (the store's forward read).
func historyScan(k string, cleared, before persistence.Seq, limit int, read func(after persistence.Seq, n int) ([]*wire.Entry, error)) ([]*wire.Message, bool, error) {
	var out []*wire.Message
	scanned := 0
	hi := before // exclusive
	// Collect one more than asked: whether it exists is has_more.
	for hi > 1 && hi-1 > cleared && len(out) <= limit {
		if scanned >= historyScanBudget && len(out) > 0 {
			return out[:min(len(out), limit)], true, nil // the client continues from its oldest message
		}
		lo := persistence.Seq(0)
		if hi > pageLimit+1 {
			lo = hi - pageLimit - 1
		}
		lo = max(lo, cleared)
		page, err := read(lo, int(hi-1-lo))
		if err != nil {
			return nil, false, err
		}
		scanned += len(page)
		for i := len(page) - 1; i >= 0 && len(out) <= limit; i-- {
			e := page[i]
			if m := e.GetMessage(); m != nil && e.GetSeq() < uint64(hi) && convKey(m.GetConversation()) == k {
				out = append(out, m)
			}
		}
		if len(page) == 0 && lo == cleared {
			break
		}
		hi = lo + 1
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// historyQuery is what one HistoryRequest scans: the log backwards from
// before (exclusive) down to cleared (exclusive), for up to limit messages
// of conversation conv.
type historyQuery struct {
	conv    string
	cleared persistence.Seq
	before  persistence.Seq
	limit   int
}

// empty: the range holds no entry, so nothing needs reading.
func (q historyQuery) empty() bool { return q.before <= q.cleared+1 }

// historyQuery validates h and returns the range to scan. A conversation
// has no message after its state's last_seq (the state is written with
// every message entry), so the scan starts there: a conversation without
// one (no state, or only ops) has an empty range.
func (s *userState) historyQuery(h *wire.HistoryRequest) (historyQuery, wire.Code, error) {
	before, code, err := s.historyStart(h)
	if err != nil {
		return historyQuery{}, code, err
	}
	limit := int(h.GetLimit())
	if limit <= 0 || limit > maxHistoryLimit {
		limit = maxHistoryLimit
	}
	q := historyQuery{conv: convKey(h.GetConversation()), limit: limit}
	cs := s.convs[q.conv]
	if cs.GetLastSeq() == 0 {
		return q, 0, nil // before 0: empty
	}
	q.cleared = persistence.Seq(cs.GetClearedSeq())
	q.before = min(before, persistence.Seq(cs.GetLastSeq())+1)
	return q, 0, nil
}

// historyStart returns the seq to page history from (exclusive) for a
// request: the log's end, or the seq of before_message_id.
func (s *userState) historyStart(h *wire.HistoryRequest) (persistence.Seq, wire.Code, error) {
	if code, err := checkConversation(h.GetConversation()); err != nil {
		return 0, code, err
	}
	id := h.GetBeforeMessageId()
	if id == "" {
		return s.committed + 1, 0, nil
	}
	e, err := s.rd.entryByKey(s.user, "m:"+id)
	if err != nil {
		return 0, wire.CodeUnavailable, fmt.Errorf("storage unavailable; retry")
	}
	if e.GetMessage() == nil || convKey(e.GetMessage().GetConversation()) != convKey(h.GetConversation()) {
		return 0, wire.CodeNotFound, fmt.Errorf("no message %s in this conversation", truncate(id, 40))
	}
	return persistence.Seq(e.GetSeq()), 0, nil
}

func historyFrame(reqID uint64, msgs []*wire.Message, more bool) *wire.Frame {
	return &wire.Frame{Id: reqID, Body: &wire.Frame_HistoryPage{HistoryPage: &wire.HistoryPage{Messages: msgs, HasMore: more}}}
}

// historyRead is a history page scanned off the mailbox, for the
// requester key (a session, or the server API) and its request ID.
type historyRead struct {
	key   sessionKey
	reqID uint64
	msgs  []*wire.Message
	more  bool
	err   error
}

// Limits on history scans of one activation: at most maxHistoryScans run
// at a time (each on its own goroutine); up to maxHistoryWaiting more wait
// in order; more than that are refused as RATE_LIMITED.
const (
	maxHistoryScans   = 2
	maxHistoryWaiting = 64
)

// historyScans runs history scans with the limits above. Only the actor's
// goroutine touches it.
type historyScans struct {
	running int
	waiting []func()
}

// start runs scan now, or queues it; false: too many are waiting.
func (h *historyScans) start(scan func()) bool {
	if h.running < maxHistoryScans {
		h.running++
		scan()
		return true
	}
	if len(h.waiting) >= maxHistoryWaiting {
		return false
	}
	h.waiting = append(h.waiting, scan)
	return true
}

// done ends a running scan and starts the next waiting one.
func (h *historyScans) done() {
	h.running--
	if len(h.waiting) > 0 {
		next := h.waiting[0]
		h.waiting[0] = nil
		h.waiting = h.waiting[1:]
		h.running++
		next()
	}
}

// scanHistory scans the log for q on a goroutine; the actor answers when
// the page comes back. The user's other requests are served meanwhile.
func (a *userActor) scanHistory(ctx actor.Context, key sessionKey, reqID uint64, q historyQuery) {
	lr := a.logRead()
	if !a.aside().history.start(func() {
		a.readOff(func() readDone {
			msgs, more, err := historyScan(q.conv, q.cleared, q.before, q.limit, lr.read)
			return historyRead{key: key, reqID: reqID, msgs: msgs, more: more, err: err}
		})
	}) {
		a.perform(ctx, []effect{a.st.replyErr(key, reqID, wire.CodeRateLimited, "too many history requests in progress; retry")})
	}
}

func (m historyRead) apply(ctx actor.Context, a *userActor) {
	if a.x != nil { // set by scanHistory until its scans are done
		a.x.history.done()
		a.tidy()
	}
	if m.err != nil {
		a.log().Error("history read failed", "err", m.err)
		a.perform(ctx, []effect{a.st.replyErr(m.key, m.reqID, wire.CodeUnavailable, "storage unavailable; retry")})
		return
	}
	a.perform(ctx, []effect{a.st.reply(m.key, historyFrame(m.reqID, m.msgs, m.more))})
}
