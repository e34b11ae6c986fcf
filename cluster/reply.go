package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// replies answers requests to activations on this node without a
// protoactor future each. A future registers a process of its own in the
// process registry, starts a timer and removes both when done: measured on
// a storm of a million activations, 11 % of the node's CPU, and the
// registry's maps, churned by one insert and one delete per request, grew
// slower for every actor. Here one process, registered once under
// replyName, receives every answer; a request's sender is a PID with that
// ID and its own RequestId (a PID field protoactor carries but does not
// use itself), which names the waiting caller. The caller waits on its own
// context: no timer per request.
//
// Local only: a remote member would answer over the wire, where protoactor
// routes by the PID's ID alone but its remote does not promise to keep the
// RequestId. Requests to other members keep protoactor's futures.
type replies struct {
	self   *actor.PID // replyName on this node; callers copy it with a RequestId
	next   atomic.Uint32
	shards [replyShards]replyShard
}

const (
	replyName   = "$tandem-reply"
	replyShards = 64
)

type replyShard struct {
	mu sync.Mutex
	m  map[uint32]chan replyResult
}

type replyResult struct {
	msg any
	err error
}

var errReplyTaken = errors.New("the reply process's name is taken in this actor system")

// replyChans are channels of answered requests, for the next requests: a
// channel whose request timed out is not reused (its answer may still come).
var replyChans = sync.Pool{New: func() any { return make(chan replyResult, 1) }}

// startReplies registers the replies process in sys.
func startReplies(sys *actor.ActorSystem) (*replies, error) {
	r := &replies{}
	pid, ok := sys.ProcessRegistry.Add(r, replyName)
	if !ok {
		return nil, errReplyTaken
	}
	r.self = pid
	return r, nil
}

// request sends message to pid, which must be on this node, from sender
// with the request's reply PID as its sender, and waits for the answer
// until ctx is done: the answer, actor.ErrDeadLetter if pid is gone,
// actor.ErrTimeout if ctx ended first.
func (r *replies) request(ctx context.Context, sender actor.SenderContext, pid *actor.PID, message any) (any, error) {
	id, ch := r.register()
	sender.RequestWithCustomSender(pid, message, &actor.PID{Address: r.self.Address, Id: r.self.Id, RequestId: id})
	select {
	case res := <-ch:
		replyChans.Put(ch)
		return res.msg, res.err
	case <-ctx.Done():
		if r.take(id) != nil {
			replyChans.Put(ch) // no answer can come now
		}
		return nil, actor.ErrTimeout
	}
}

// register takes a RequestId not in use (0 is never one: a PID without a
// RequestId is not a reply's) and a channel for its answer.
func (r *replies) register() (uint32, chan replyResult) {
	ch := replyChans.Get().(chan replyResult)
	for {
		id := r.next.Add(1)
		if id == 0 {
			continue
		}
		s := &r.shards[id%replyShards]
		s.mu.Lock()
		if _, used := s.m[id]; used { // 2³² requests later, one still waits
			s.mu.Unlock()
			continue
		}
		if s.m == nil {
			s.m = make(map[uint32]chan replyResult)
		}
		s.m[id] = ch
		s.mu.Unlock()
		return id, ch
	}
}

// take removes the request id and returns its channel, or nil if it was
// answered or given up already.
func (r *replies) take(id uint32) chan replyResult {
	s := &r.shards[id%replyShards]
	s.mu.Lock()
	ch, ok := s.m[id]
	if ok {
		delete(s.m, id)
	}
	s.mu.Unlock()
	return ch
}

// SendUserMessage delivers an answer (or a dead letter's notice) to the
// request its PID names; the first answer counts, later ones are dropped.
func (r *replies) SendUserMessage(pid *actor.PID, message any) {
	ch := r.take(pid.GetRequestId())
	if ch == nil {
		return
	}
	_, msg, _ := actor.UnwrapEnvelope(message)
	if _, dead := msg.(*actor.DeadLetterResponse); dead {
		ch <- replyResult{err: actor.ErrDeadLetter}
		return
	}
	ch <- replyResult{msg: msg}
}

// SendSystemMessage: nothing watches a reply PID.
func (r *replies) SendSystemMessage(*actor.PID, any) {}

// Stop: the process lives as long as the actor system.
func (r *replies) Stop(*actor.PID) {}
