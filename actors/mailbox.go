package actors

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// leanMailbox is an unbounded mailbox that holds no queue while it is
// empty. protoactor's default (actor.Unbounded) keeps, for every actor
// for as long as it lives, a ring of 10 slots, the ring's two headers and
// a lock-free queue with its stub node for system messages: ≈ 0.4 KiB,
// more than the rest of an idle user's activation. Here both queues are
// slices made on demand and dropped when drained (a lone user message
// needs none: first), behind one mutex (the default's ring takes a mutex
// per message too).
//
// The processing is the default mailbox's: system messages first,
// SuspendMailbox/ResumeMailbox handled in the mailbox, user messages
// only while not suspended, a Gosched after every Throughput messages, a
// panic escalated to the actor's supervisor with the message that caused
// it, and MessageBatch unpacked as the default does. No mailbox
// middlewares.
type leanMailbox struct {
	mu sync.Mutex
	// User messages: first, then user[head:]. A message to an empty
	// mailbox goes into first — most of an actor's messages find it empty,
	// and a slice made for each and dropped when drained was eight
	// allocations per login; the 16 bytes take the mailbox from the 96- to
	// the 112-byte class.
	first any
	user  []any
	// system messages (an actor's Started, a Stop): made on demand and
	// dropped once drained — a pointer, not a slice header, in each of a
	// million idle actors' mailboxes.
	system *[]any

	running   atomic.Bool  // scheduled on the dispatcher, or processing
	waiting   atomic.Int32 // user messages waiting
	sysWait   atomic.Int32 // system messages waiting
	suspended atomic.Bool
	head      int32 // with the 4-byte fields: the mailbox fits 112 bytes, not 128

	invoker    actor.MessageInvoker
	dispatcher actor.Dispatcher
}

var _ actor.Mailbox = (*leanMailbox)(nil)

// newLeanMailbox is an actor.MailboxProducer.
func newLeanMailbox() actor.Mailbox { return &leanMailbox{} }

// PostUserMessage implements actor.Mailbox.
func (m *leanMailbox) PostUserMessage(msg any) {
	// As the default mailbox: a batch's messages are posted one by one,
	// then the batch itself.
	if b, ok := msg.(actor.MessageBatch); ok {
		for _, each := range b.GetMessages() {
			m.PostUserMessage(each)
		}
	}
	if env, ok := msg.(*actor.MessageEnvelope); ok {
		if b, ok := env.Message.(actor.MessageBatch); ok {
			for _, each := range b.GetMessages() {
				m.PostUserMessage(each)
			}
		}
	}
	m.mu.Lock()
	if m.first == nil && len(m.user) == 0 {
		m.first = msg
	} else {
		m.user = append(m.user, msg)
	}
	m.mu.Unlock()
	m.waiting.Add(1)
	m.schedule()
}

// PostSystemMessage implements actor.Mailbox.
func (m *leanMailbox) PostSystemMessage(msg any) {
	m.mu.Lock()
	if m.system == nil {
		m.system = new([]any)
	}
	*m.system = append(*m.system, msg)
	m.mu.Unlock()
	m.sysWait.Add(1)
	m.schedule()
}

// RegisterHandlers implements actor.Mailbox.
func (m *leanMailbox) RegisterHandlers(invoker actor.MessageInvoker, dispatcher actor.Dispatcher) {
	m.invoker, m.dispatcher = invoker, dispatcher
}

// Start implements actor.Mailbox.
func (m *leanMailbox) Start() {}

// UserMessageCount implements actor.Mailbox.
func (m *leanMailbox) UserMessageCount() int { return int(m.waiting.Load()) }

func (m *leanMailbox) schedule() {
	if m.running.CompareAndSwap(false, true) {
		m.dispatcher.Schedule(m.process)
	}
}

func (m *leanMailbox) process() {
	for {
		m.run()
		m.running.Store(false)
		// Messages posted after run found the queues empty, but before
		// running was cleared, scheduled nothing: look again.
		if m.sysWait.Load() == 0 && (m.suspended.Load() || m.waiting.Load() == 0) {
			return
		}
		if !m.running.CompareAndSwap(false, true) {
			return // a post scheduled another run
		}
	}
}

func (m *leanMailbox) run() {
	var msg any
	defer func() {
		if r := recover(); r != nil {
			m.invoker.EscalateFailure(r, msg)
		}
	}()
	for i, t := 0, m.dispatcher.Throughput(); ; i++ {
		if i > t {
			i = 0
			runtime.Gosched()
		}
		if msg = m.popSystem(); msg != nil {
			m.sysWait.Add(-1)
			switch msg.(type) {
			case *actor.SuspendMailbox:
				m.suspended.Store(true)
			case *actor.ResumeMailbox:
				m.suspended.Store(false)
			default:
				m.invoker.InvokeSystemMessage(msg)
			}
			continue
		}
		if m.suspended.Load() {
			return
		}
		if msg = m.popUser(); msg == nil {
			return
		}
		m.waiting.Add(-1)
		m.invoker.InvokeUserMessage(msg)
	}
}

func (m *leanMailbox) popSystem() any {
	if m.sysWait.Load() == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.system == nil || len(*m.system) == 0 {
		return nil
	}
	q := *m.system
	msg := q[0]
	q[0] = nil
	if len(q) == 1 {
		m.system = nil
	} else {
		*m.system = q[1:]
	}
	return msg
}

func (m *leanMailbox) popUser() any {
	if m.waiting.Load() == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if msg := m.first; msg != nil {
		m.first = nil
		return msg
	}
	if int(m.head) == len(m.user) {
		return nil
	}
	msg := m.user[m.head]
	m.user[m.head] = nil
	m.head++
	if int(m.head) == len(m.user) {
		// Drained: drop the slice, so an idle actor holds no queue.
		m.user, m.head = nil, 0
	}
	return msg
}
