package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// source says where entries came from.
type source uint8

const (
	fromPush    source = iota
	fromCatchUp        // unsolicited SyncPage after login
	fromPull           // SyncPage answering a gap pull
	fromAck            // own stored send, built from its SendAck
)

// readLoop reads s until it fails. Only run calls it.
func (c *Client) readLoop(s *session) error {
	for {
		f, err := s.readFrame()
		if err != nil {
			if de := (*decodeError)(nil); errors.As(err, &de) {
				c.onError(err)
				continue
			}
			return err
		}
		if f.GetId() != 0 {
			c.handleReply(s, f)
		} else {
			c.handleUnsolicited(s, f)
		}
	}
}

func (c *Client) handleUnsolicited(s *session, f *wire.Frame) {
	switch b := f.GetBody().(type) {
	case *wire.Frame_SyncPage:
		p := b.SyncPage
		c.accept(s, fromCatchUp, p.GetEntries(), p.GetHasMore(), p.GetLastSeq())
	case *wire.Frame_Push:
		if es := b.Push.GetEntries(); len(es) > 0 {
			c.accept(s, fromPush, es, false, 0)
		}
		if ts := b.Push.GetTransient(); len(ts) > 0 {
			for _, m := range ts {
				if c.opts.OnTransient != nil {
					c.opts.OnTransient(m)
				}
			}
			c.mu.Lock()
			c.transients.push(ts...)
			c.notifyLocked()
			c.mu.Unlock()
		}
	case *wire.Frame_Kick:
		c.mu.Lock()
		s.kick = b.Kick
		c.kick = b.Kick
		c.mu.Unlock()
		c.log.Info("kicked", "reason", b.Kick.GetReason().String(), "close_code", b.Kick.GetCloseCode(),
			"may_reconnect", b.Kick.GetMayReconnect())
		if c.opts.OnKick != nil && !(b.Kick.GetMayReconnect() && c.opts.Reconnect) {
			// A kick that allows reconnecting is part of a reconnect
			// (OnReconnect), not news for the app.
			c.opts.OnKick(b.Kick)
		}
	case *wire.Frame_Error:
		c.onError(fmt.Errorf("client: server error frame: %w", &Error{b.Error}))
	case *wire.Frame_Pong, *wire.Frame_Ok:
	default:
		if c.opts.OnFrame != nil {
			c.opts.OnFrame(f)
		}
	}
}

func (c *Client) handleReply(s *session, f *wire.Frame) {
	id := f.GetId()
	c.mu.Lock()
	if p := c.sends[id]; p != nil {
		delete(c.sends, id)
		c.mu.Unlock()
		c.sendReply(s, p, f)
		return
	}
	if cl := c.calls[id]; cl != nil {
		delete(c.calls, id)
		c.mu.Unlock()
		cl.finish(f, nil)
		return
	}
	if id == s.pingID {
		s.pingID = 0
		c.mu.Unlock()
		return
	}
	if id == c.pullID {
		c.pullID = 0
		c.mu.Unlock()
		c.pullReply(s, f)
		return
	}
	c.mu.Unlock()
	switch b := f.GetBody().(type) {
	case *wire.Frame_Ok: // a CursorAck's answer
	case *wire.Frame_Error:
		c.onError(fmt.Errorf("client: error answering request %d: %w", id, &Error{b.Error}))
	default:
		c.log.Debug("reply to no pending request", "id", id, "body", fmt.Sprintf("%T", b))
	}
}

func (c *Client) sendReply(s *session, p *Pending, f *wire.Frame) {
	switch b := f.GetBody().(type) {
	case *wire.Frame_SendAck:
		ack := b.SendAck
		c.st.acks.Add(1)
		if ack.GetDuplicate() {
			c.st.duplicateAcks.Add(1)
		}
		if !p.transient && ack.GetSeq() > 0 {
			// The server acks the sending session instead of pushing it the
			// entry: the ack fills that seq. A copy of the entry arriving
			// too is dropped by seq.
			c.accept(s, fromAck, []*wire.Entry{c.ownEntry(p.msg, ack)}, false, 0)
		}
		p.finish(ack, nil)
	case *wire.Frame_Error:
		p.finish(nil, &Error{b.Error})
	default:
		p.finish(nil, fmt.Errorf("client: send: unexpected reply %T", b))
	}
}

func (c *Client) pullReply(s *session, f *wire.Frame) {
	switch b := f.GetBody().(type) {
	case *wire.Frame_SyncPage:
		p := b.SyncPage
		c.accept(s, fromPull, p.GetEntries(), p.GetHasMore(), p.GetLastSeq())
	case *wire.Frame_Error:
		err := &Error{b.Error}
		if err.Code() == wire.CodeCursorTooOld {
			// The gap was trimmed by retention. Log in again: the server
			// answers cursor_too_old with the compensation window.
			c.onError(fmt.Errorf("client: gap pull: %w; logging in again", err))
			s.close()
			return
		}
		c.mu.Lock()
		c.pullNotBefore = time.Now().Add(time.Second)
		c.mu.Unlock()
		c.onError(fmt.Errorf("client: gap pull: %w", err))
	default:
		c.onError(fmt.Errorf("client: gap pull: unexpected reply %T", b))
	}
}

// accept feeds entries to the seq buffer, pulls a gap if one shows, and
// delivers what became contiguous. Only the reader goroutine calls it.
func (c *Client) accept(s *session, src source, es []*wire.Entry, hasMore bool, lastSeq uint64) {
	now := time.Now()
	c.mu.Lock()
	if c.sess != s || (src == fromAck && !c.seq.based) {
		c.mu.Unlock()
		return
	}
	if !c.seq.based && src == fromCatchUp && len(es) == 0 && !hasMore {
		// No cursor and nothing to compensate: start after the newest seq.
		c.seq.setBase(max(lastSeq, s.loginOk.GetLastSeq()))
		c.delivered, c.acked = c.seq.cursor, c.seq.cursor
	}
	before := c.seq.cursor
	ready, dups, _ := c.seq.add(es, nil)
	if src == fromCatchUp || src == fromPull {
		c.seq.saw(lastSeq)
	}
	caughtUp := false
	if !s.caughtUp && ((src == fromCatchUp && !hasMore) || src == fromPush) {
		// A push means the server finished the catch-up.
		s.caughtUp = true
		caughtUp = true
	}
	if src == fromPull && !hasMore && c.seq.cursor == before {
		// The page filled nothing: don't hammer the server.
		c.pullNotBefore = now.Add(pullRetryDelay)
	}
	pull := c.startPullLocked(s, now)
	c.mu.Unlock()

	c.st.duplicates.Add(uint64(dups))
	c.writePull(s, pull)
	c.deliver(s, ready)
	if caughtUp {
		close(s.caught)
	}
}

// deliver hands ready entries to OnEntry, then moves the cursor.
func (c *Client) deliver(s *session, ready []*wire.Entry) {
	if len(ready) == 0 {
		return
	}
	if c.opts.OnEntry != nil {
		for _, e := range ready {
			c.opts.OnEntry(e)
		}
	}
	c.st.delivered.Add(uint64(len(ready)))
	c.mu.Lock()
	c.delivered = ready[len(ready)-1].GetSeq()
	c.entries.push(ready...)
	c.notifyLocked()
	ack := c.delivered-c.acked >= uint64(c.opts.AckEvery)
	c.mu.Unlock()
	if ack {
		c.flushAck(s)
	}
}

// ownEntry builds the log entry of this device's own stored send. The
// content is what was sent; Sender is the token's subject ("" if the token
// is not a readable JWT), Mentioned is false.
func (c *Client) ownEntry(m *wire.Send, ack *wire.SendAck) *wire.Entry {
	c.mu.Lock()
	sender := c.sender
	c.mu.Unlock()
	return &wire.Entry{
		Seq:          ack.GetSeq(),
		ServerTimeMs: ack.GetServerTimeMs(),
		Kind: &wire.Entry_Message{Message: &wire.Message{
			MessageId:       ack.GetMessageId(),
			ClientMessageId: m.GetClientMessageId(),
			Sender:          sender,
			SenderDevice:    c.opts.DeviceID,
			Conversation:    m.GetConversation(),
			Type:            m.GetType(),
			Content:         m.GetContent(),
			Attributes:      m.GetAttributes(),
			MentionList:     m.GetMentionList(),
			MentionAll:      m.GetMentionAll(),
			Options:         m.GetOptions(),
			ServerTimeMs:    ack.GetServerTimeMs(),
		}},
	}
}

// ---------------------------------------------------------------- waiting

// Entries returns the most recently delivered entries still kept
// (Options.KeepEntries), oldest first. Treat them as read-only.
func (c *Client) Entries() []*wire.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	es, _ := c.entries.since(0)
	return es
}

// WaitEntry returns the first kept or future delivered entry for which
// match is true. It fails when ctx ends or the client stops.
func (c *Client) WaitEntry(ctx context.Context, match func(*wire.Entry) bool) (*wire.Entry, error) {
	return waitRing(ctx, c, func() *ring[*wire.Entry] { return &c.entries }, match)
}

// WaitTransient is WaitEntry for transient messages.
func (c *Client) WaitTransient(ctx context.Context, match func(*wire.Message) bool) (*wire.Message, error) {
	return waitRing(ctx, c, func() *ring[*wire.Message] { return &c.transients }, match)
}

// WaitCursor waits until the delivered cursor reaches seq.
func (c *Client) WaitCursor(ctx context.Context, seq uint64) error {
	for {
		c.mu.Lock()
		d, ch, err := c.delivered, c.changed, c.err
		c.mu.Unlock()
		if d >= seq {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("client: waiting for cursor %d (at %d): %w", seq, d, ctx.Err())
		}
	}
}

func waitRing[T any](ctx context.Context, c *Client, r func() *ring[T], match func(T) bool) (T, error) {
	var next uint64
	for {
		c.mu.Lock()
		vs, total := r().since(next)
		ch, err := c.changed, c.err
		c.mu.Unlock()
		for _, v := range vs {
			if match(v) {
				return v, nil
			}
		}
		next = total
		var zero T
		if err != nil {
			return zero, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return zero, fmt.Errorf("client: waiting: %w", ctx.Err())
		}
	}
}

// notifyLocked wakes the waiters; c.mu held.
func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// ring keeps the last n values pushed.
type ring[T any] struct {
	buf   []T
	n     int
	total uint64 // values ever pushed
}

func newRing[T any](n int) ring[T] { return ring[T]{n: max(n, 0)} }

func (r *ring[T]) push(vs ...T) {
	for _, v := range vs {
		if r.n > 0 {
			if len(r.buf) < r.n {
				r.buf = append(r.buf, v)
			} else {
				r.buf[r.total%uint64(r.n)] = v
			}
		}
		r.total++
	}
}

// since returns the kept values numbered from `from` on, oldest first, and
// the number the next value will get.
func (r *ring[T]) since(from uint64) ([]T, uint64) {
	first := r.total - uint64(len(r.buf))
	from = max(from, first)
	out := make([]T, 0, r.total-from)
	for i := from; i < r.total; i++ {
		out = append(out, r.buf[i%uint64(r.n)])
	}
	return out, r.total
}
