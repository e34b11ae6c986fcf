package actors

import (
	"fmt"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

const (
	maxHistoryLimit = 100
	// historyScanBudget bounds the log entries one HistoryRequest reads
	// (the log is per user, not per conversation) once it found a message:
	// past it the page ends with has_more and the client continues from its
	// oldest message. A page with nothing found yet scans on (it has no
	// message to continue from): a per-conversation index in the store will
	// bound that too.
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
	e, err := s.rd.entryByKey("m:" + id)
	if err != nil {
		return 0, wire.CodeUnavailable, fmt.Errorf("storage unavailable; retry")
	}
	if e.GetMessage() == nil || convKey(e.GetMessage().GetConversation()) != convKey(h.GetConversation()) {
		return 0, wire.CodeNotFound, fmt.Errorf("no message %s in this conversation", truncate(id, 40))
	}
	return persistence.Seq(e.GetSeq()), 0, nil
}

func (s *userState) clearedSeq(c *wire.Conversation) persistence.Seq {
	if cs := s.convs[convKey(c)]; cs != nil {
		return persistence.Seq(cs.GetClearedSeq())
	}
	return 0
}
