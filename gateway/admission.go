package gateway

import (
	"context"
	"fmt"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// Overload is refused at the edge, not absorbed: a Send is handed to the
// Handler only while the session, the node and the heap have room, and is
// otherwise answered at once with RATE_LIMITED and a retry hint. A send
// is "in flight" from the moment it is handed over until its SendAck or
// Error goes out (or its session ends). Bounding the sends in flight
// bounds everything behind them: actor mailboxes, the store's queue, the
// memory they hold and — by Little's law — how long a send waits.

// Retry hints.
const (
	sessionRetryAfter = 100 * time.Millisecond // acks are on their way: wait for some
	nodeRetryAfter    = 500 * time.Millisecond // the node is saturated
)

// heapPressure is the share of the memory limit (GOMEMLIMIT) the live heap
// may reach before new sends are refused.
const heapPressure = 0.7

// admission is the node's side of the bound; sessions keep their own.
type admission struct {
	maxNode  int64
	maxBytes int64
	inflight atomic.Int64 // sends
	bytes    atomic.Int64 // their payload bytes
	pressure atomic.Bool  // live heap above heapPressure × the memory limit
	refused  atomic.Uint64
}

type inflightSend struct {
	bytes int64
	at    int64 // unix nanoseconds it was handed on
}

// staleSend is how long a send may stay in flight before it no longer
// counts: a frame lost on its way to an actor (which a device resends)
// must not hold its place for the session's lifetime.
const staleSend = 60 * time.Second

// admitSend decides whether a Send frame of n payload bytes may be handed
// to the Handler. If not, it returns the error frame to answer with.
func (s *session) admitSend(id uint64, n int64) *wire.Frame {
	a := &s.srv.adm
	max := s.srv.cfg.MaxSessionSends
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.sends[id]; dup {
		return nil // the same id again: its answer answers both
	}
	var refuse *wire.Frame
	switch {
	case len(s.sends) >= max:
		refuse = rateLimited(id, "too many sends in flight on this session; wait for their acks", sessionRetryAfter)
	case a.pressure.Load():
		refuse = rateLimited(id, "the node is short of memory; retry later", nodeRetryAfter)
	case a.inflight.Load() >= a.maxNode || a.bytes.Load()+n > a.maxBytes:
		refuse = rateLimited(id, "the node is saturated; retry later", nodeRetryAfter)
	}
	if refuse != nil {
		a.refused.Add(1)
		return refuse
	}
	if s.sends == nil {
		s.sends = make(map[uint64]inflightSend)
	}
	s.sends[id] = inflightSend{bytes: n, at: time.Now().UnixNano()}
	a.inflight.Add(1)
	a.bytes.Add(n)
	return nil
}

// answered notes the frames going out to the session: a SendAck or an
// Error with the id of a send in flight ends it.
func (s *session) answered(frames []*wire.Frame) {
	for _, f := range frames {
		if f == nil || f.Id == 0 {
			continue
		}
		switch f.Body.(type) {
		case *wire.Frame_SendAck, *wire.Frame_Error:
			s.release(f.Id)
		}
	}
}

func (s *session) release(id uint64) {
	s.mu.Lock()
	e, ok := s.sends[id]
	if ok {
		delete(s.sends, id)
		if len(s.sends) == 0 {
			s.sends = nil // an idle session holds no map
		}
	}
	s.mu.Unlock()
	if ok {
		s.srv.adm.inflight.Add(-1)
		s.srv.adm.bytes.Add(-e.bytes)
	}
}

// releaseAll ends every send in flight of a session that is gone.
func (s *session) releaseAll() { s.releaseOlder(math.MaxInt64) }

// releaseOlder ends the sends in flight handed on before unix nanoseconds
// before.
func (s *session) releaseOlder(before int64) {
	s.mu.Lock()
	var k, n int64
	for id, e := range s.sends {
		if e.at < before {
			k++
			n += e.bytes
			delete(s.sends, id)
		}
	}
	if len(s.sends) == 0 {
		s.sends = nil
	}
	s.mu.Unlock()
	s.srv.adm.inflight.Add(-k)
	s.srv.adm.bytes.Add(-n)
}

// sweepSends releases, every period until ctx is done, the sends that
// have been in flight for longer than staleSend.
func (srv *Server) sweepSends(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := time.Now().Add(-staleSend).UnixNano()
		srv.mu.RLock()
		ss := make([]*session, 0, len(srv.sessions))
		for _, s := range srv.sessions {
			ss = append(ss, s)
		}
		srv.mu.RUnlock()
		for _, s := range ss {
			s.releaseOlder(before)
		}
	}
}

// Inbound flow control: a session may send Config.MaxFrameRate messages
// per second on average, in bursts of up to one second's worth. Every
// message but the close frame counts: data messages (oversize ones too),
// WebSocket pings and pongs. It bounds what one connection can make the
// node read, decode and answer, whatever the frames are; MaxSessionSends
// still bounds the Sends in flight on top of it.

// frameBucket is one session's token bucket, kept as GCRA (the generic
// cell rate algorithm): one number, the time at which the bucket would be
// full again if nothing more arrived.
type frameBucket struct {
	tat int64 // nanoseconds on clock; 0 before the first frame
}

// take takes a token at now (nanoseconds) for a rate of perSecond tokens a
// second and a burst of perSecond. If none is left it returns false and
// how long until one is.
func (b *frameBucket) take(now int64, perSecond int) (ok bool, wait time.Duration) {
	interval := int64(time.Second) / int64(perSecond)
	tolerance := int64(time.Second) - interval // the burst, less the token taken now
	tat := max(b.tat, now)
	if over := tat - now - tolerance; over > 0 {
		return false, time.Duration(over)
	}
	b.tat = tat + interval
	return true, 0
}

// clockBase makes the monotonic clock frameBucket runs on.
var clockBase = time.Now()

// admitFrame applies the session's frame rate to m, on the read side. It
// returns false if m was over the rate and has been dealt with: a request
// is answered RATE_LIMITED (with its id and the time until a token is
// free) and not handed on; a wire Ping, a WebSocket ping or a pong gets no
// answer. A message over the rate that is not a request the rate could
// refuse — undecodable, oversize, or with id 0 — is answered as it always
// is (BAD_FRAME, FRAME_TOO_LARGE, INVALID_ARGUMENT...), so that an Error
// with id 0 keeps its meaning.
func (s *session) admitFrame(m message) bool {
	perSecond := s.srv.cfg.MaxFrameRate
	if perSecond < 0 || m.kind == msgClose || s.closing.Load() {
		return true
	}
	ok, wait := s.rate.take(int64(time.Since(clockBase)), perSecond)
	if ok || m.kind == msgTooLarge {
		return true
	}
	if m.kind != msgData {
		s.srv.stats.framesRateLimited.Add(1)
		return false // a WebSocket ping or pong: no answer
	}
	s.srv.stats.framesIn.Add(1)
	f, err := s.codec.decodeFrame(m.op, m.payload)
	switch {
	case err == nil && f.GetPing() != nil:
		s.srv.stats.framesRateLimited.Add(1)
		return false // a keep-alive over the rate: no answer
	case err != nil || f.Id == 0:
		if err != nil && f == nil {
			f = &wire.Frame{Id: requestID(m.op, m.payload)}
		}
		s.frame(f, err) // refused there: it never reaches the Handler
		return false
	}
	s.srv.stats.framesRateLimited.Add(1)
	// Round up: retrying after retry_after_ms must find a token.
	wait = (wait + time.Millisecond - 1).Truncate(time.Millisecond)
	s.reply(rateLimited(f.Id, fmt.Sprintf("over %d frames per second on this session; slow down", perSecond), wait))
	return false
}

func rateLimited(id uint64, msg string, after time.Duration) *wire.Frame {
	f := wire.ErrFrame(id, wire.CodeRateLimited, msg)
	f.GetError().RetryAfterMs = uint32(after / time.Millisecond)
	return f
}

// watchHeap sets a.pressure while the live heap is above heapPressure of
// the memory limit, checking every period until ctx is done. Without a
// limit (GOMEMLIMIT unset) it does nothing.
func (a *admission) watchHeap(ctx context.Context, period time.Duration) {
	limit := debug.SetMemoryLimit(-1)
	if limit <= 0 || limit == math.MaxInt64 {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.pressure.Store(false)
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			a.pressure.Store(float64(sample[0].Value.Uint64()) > heapPressure*float64(limit))
		}
	}
}
