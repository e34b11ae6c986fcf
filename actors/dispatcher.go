package actors

import (
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// workerDispatcher runs mailboxes on a pool of long-lived goroutines
// instead of protoactor's default, which starts a goroutine every time an
// idle mailbox gets a message. A fresh goroutine starts on a small stack
// and grows it (copying) on the way down a user actor's receive path; at
// a few thousand messages a second that was ~9 % of the node's CPU.
//
// Schedule hands fn to a worker waiting for work, or starts a new worker
// when none waits, so a run is never queued behind another: as many
// mailboxes run at once as with the default dispatcher. A worker that
// has waited idleTimeout for work exits, so the pool shrinks back after a
// burst.
type workerDispatcher struct {
	throughput  int
	idleTimeout time.Duration
	work        chan func()  // unbuffered: a send succeeds only into a waiting worker
	workers     atomic.Int64 // running or waiting
	idle        atomic.Int64 // waiting for work
}

var _ actor.Dispatcher = (*workerDispatcher)(nil)

func newWorkerDispatcher(throughput int, idleTimeout time.Duration) *workerDispatcher {
	return &workerDispatcher{throughput: throughput, idleTimeout: idleTimeout, work: make(chan func())}
}

// Schedule implements actor.Dispatcher.
func (d *workerDispatcher) Schedule(fn func()) {
	select {
	case d.work <- fn:
	default:
		d.workers.Add(1)
		go d.worker(fn)
	}
}

// Throughput implements actor.Dispatcher: messages a mailbox processes
// before it yields.
func (d *workerDispatcher) Throughput() int { return d.throughput }

func (d *workerDispatcher) worker(fn func()) {
	defer d.workers.Add(-1)
	idle := time.NewTimer(d.idleTimeout)
	defer idle.Stop()
	for {
		fn() // the mailbox recovers what its actor panics with
		idle.Reset(d.idleTimeout)
		d.idle.Add(1)
		select {
		case fn = <-d.work:
			d.idle.Add(-1)
		case <-idle.C:
			d.idle.Add(-1)
			return
		}
	}
}
