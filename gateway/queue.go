package gateway

import (
	"crypto/tls"
	"net"
	"slices"
	"sync"
	"time"
)

// maxBatchBytes is roughly how much one write call takes from the queue:
// frames are batched into one writev up to this size (at least one frame).
const maxBatchBytes = 64 << 10

// socket is what a session's write side needs of its connection. The
// goroutine transport's is a net.Conn (netSocket); the epoll transport's
// is the bare file descriptor (epollSocket, epoll_linux.go).
type socket interface {
	// writeBuffers writes all of bufs in order, or fails: the write
	// deadline passed, the socket was closed, the peer is gone. It may
	// block; it is called by one goroutine at a time.
	writeBuffers(bufs [][]byte) error
	// setWriteDeadline bounds the write in progress and the next ones.
	setWriteDeadline(t time.Time)
	// setReadDeadline makes reads fail from t on (the zero time: never).
	setReadDeadline(t time.Time)
	// closeWrite shuts the write half down (the FIN after a close frame).
	closeWrite()
	// close closes the socket; a write in progress fails soon after.
	// Only the first call has an effect.
	close() error
}

// netSocket is a net.Conn as a socket.
type netSocket struct {
	nc   net.Conn
	join bool // nc has no writev (TLS): join a batch into one write
}

func newNetSocket(nc net.Conn) *netSocket {
	_, join := nc.(*tls.Conn) // one TLS record per 16 KiB, not per frame
	return &netSocket{nc: nc, join: join}
}

func (s *netSocket) writeBuffers(bufs [][]byte) error {
	b := net.Buffers(bufs)
	if s.join && len(bufs) > 1 {
		b = net.Buffers{slices.Concat(bufs...)}
	}
	_, err := b.WriteTo(s.nc)
	return err
}

// Deadline errors are only possible on a closed conn; the session ends
// then anyway.
func (s *netSocket) setWriteDeadline(t time.Time) { _ = s.nc.SetWriteDeadline(t) }
func (s *netSocket) setReadDeadline(t time.Time)  { _ = s.nc.SetReadDeadline(t) }
func (s *netSocket) close() error                 { return s.nc.Close() }

func (s *netSocket) closeWrite() {
	if tc, ok := s.nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite() // best effort: the FIN after the close frame
	}
}

// queueConfig is what every outQueue of a server shares.
type queueConfig struct {
	max          int           // frames waiting, held ones included
	maxBytes     int64         // their bytes, the batch being written included
	writeTimeout time.Duration // for one batch
	spawn        func(func())  // starts the writer goroutine (the server's WaitGroup.Go)
	stats        *counters
}

// outQueue is the write side of one connection: a queue of encoded
// WebSocket frames, bounded in frames and in bytes, and a writer goroutine
// that exists only while there is something to write. Frames go out in
// the order they were accepted, several per writev when several are
// waiting; an idle connection holds neither a goroutine nor a buffer for
// writing, nor the queue's own bookkeeping (queueBusy), only its flags and
// its read deadline.
//
// The close frame is always the last thing queued: once close is called,
// nothing more is accepted, and once the close frame is written the write
// half of the socket is shut down.
//
// Methods are safe for concurrent use and never block on the network.
type outQueue struct {
	// Set at creation, then read-only.
	sock socket
	cfg  *queueConfig

	mu      sync.Mutex
	gated   bool // the Login reply is not queued yet
	writing bool // the writer goroutine runs
	closing bool // the close frame is queued; nothing more is accepted
	dead    bool // nothing more will be written (close frame out, failure, stop)
	// busy is the state of a queue that is not idle: frames waiting or
	// held, a writer running, a close under way. Nil when idle.
	busy *queueBusy

	// The read side's deadline is the earlier of readAt (the login
	// deadline, the close deadline, now after a failed write) and frameAt
	// (the frame in progress, goroutine transport); it is set on sock.
	// Monotonic instants (0: none).
	readAt  int64
	frameAt int64
}

// queueBusy is the part of an outQueue that an idle queue does not need.
type queueBusy struct {
	frames  [][]byte      // to write, in order
	held    [][]byte      // accepted while gated, to follow the Login reply
	size    int64         // bytes in frames and held
	inBatch int64         // bytes of the batch being written
	closeAt time.Time     // once closing: when the session ends at the latest
	batchAt time.Time     // write deadline of the batch being written
	stopped chan struct{} // if set, closed when the writer goroutine stops
}

func (q *outQueue) init(sock socket, cfg *queueConfig) {
	q.sock, q.cfg = sock, cfg
	q.gated = true
}

// busyPool holds the busy states of queues that are idle: a push to an
// idle connection borrows one until its writer is done.
var busyPool = sync.Pool{New: func() any { return new(queueBusy) }}

// b returns the busy state, borrowing one if the queue was idle. q.mu
// must be held.
func (q *outQueue) b() *queueBusy {
	if q.busy == nil {
		q.busy = busyPool.Get().(*queueBusy)
	}
	return q.busy
}

// tidy gives the busy state of a queue that has become idle back. q.mu
// must be held.
func (q *outQueue) tidy() {
	if b := q.busy; b != nil && !q.writing && !q.closing && len(b.frames) == 0 && len(b.held) == 0 {
		*b = queueBusy{}
		busyPool.Put(b)
		q.busy = nil
	}
}

// sizeOf is the bytes of frames.
func sizeOf(frames [][]byte) int64 {
	var n int64
	for _, b := range frames {
		n += int64(len(b))
	}
	return n
}

// enqueue accepts frames to be written after everything already
// accepted. Frames from Deliver (deliver true) that arrive before the
// Login reply are held back and follow it. It returns false if the frames
// were dropped: the queue is closing, or they do not fit, by count or by
// bytes (held frames and the batch being written count too; overflow
// true: the caller must close the session as a slow consumer).
func (q *outQueue) enqueue(frames [][]byte, deliver bool) (ok, overflow bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing || q.dead {
		return false, false
	}
	n := sizeOf(frames)
	var waiting, size, inBatch int64
	if b := q.busy; b != nil {
		waiting, size, inBatch = int64(len(b.frames)+len(b.held)), b.size, b.inBatch
	}
	if waiting+int64(len(frames)) > int64(q.cfg.max) || n > q.cfg.maxBytes-size-inBatch {
		return false, true
	}
	if len(frames) == 0 {
		return true, false
	}
	b := q.b()
	b.size += n
	if deliver && q.gated {
		b.held = append(b.held, frames...)
		return true, false
	}
	b.frames = append(b.frames, frames...)
	q.startWriter()
	return true, false
}

// openGate queues the Login reply, then (if keep) the frames delivered
// while the login was being decided, else drops them. It reports whether
// the reply was accepted.
func (q *outQueue) openGate(reply []byte, keep bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing || q.dead {
		return false
	}
	b := q.b()
	b.frames = append(b.frames, reply)
	b.size += int64(len(reply))
	if keep {
		b.frames = append(b.frames, b.held...)
	} else {
		b.size -= sizeOf(b.held)
	}
	b.held, q.gated = nil, false
	q.startWriter()
	return true
}

// close queues tail (whose last frame is the close frame) after what is
// queued, or instead of it if drop, and bounds the rest of the session:
// both the writes and the reads on the socket fail after deadline. It
// reports whether this call started the close.
func (q *outQueue) close(tail [][]byte, drop bool, deadline time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing || q.dead {
		return false
	}
	b := q.b()
	if drop {
		b.frames, b.size = nil, 0
	} else {
		b.frames = append(b.frames, b.held...)
	}
	b.held, q.gated = nil, false
	b.frames = append(b.frames, tail...)
	b.size += sizeOf(tail)
	q.closing, b.closeAt = true, deadline
	q.readAt = instantOf(deadline)
	q.applyReadDeadline()
	if q.writing && deadline.Before(b.batchAt) {
		q.sock.setWriteDeadline(deadline)
	}
	q.startWriter()
	return true
}

// stop ends the write side at once: nothing queued is written any more.
// The caller closes the socket to interrupt a write in progress.
func (q *outQueue) stop() {
	q.mu.Lock()
	q.dead = true
	if b := q.busy; b != nil {
		b.frames, b.held, b.size = nil, nil, 0
	}
	q.mu.Unlock()
}

// wait blocks until the writer goroutine (if any) has stopped. It returns
// at the latest after the current batch's write deadline.
func (q *outQueue) wait() {
	q.mu.Lock()
	if !q.writing {
		q.mu.Unlock()
		return
	}
	b := q.busy // not nil while writing
	if b.stopped == nil {
		b.stopped = make(chan struct{})
	}
	stopped := b.stopped
	q.mu.Unlock()
	<-stopped
}

// setReadDeadline sets the read side's deadline unless the queue is
// closing (its close deadline must stay).
func (q *outQueue) setReadDeadline(t time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closing && !q.dead {
		q.readAt = instantOf(t)
		q.applyReadDeadline()
	}
}

// frameDeadline bounds the frame in progress (the zero time: none).
func (q *outQueue) frameDeadline(t time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.frameAt = instantOf(t)
	q.applyReadDeadline()
}

// applyReadDeadline puts the earlier of readAt and frameAt on the socket.
// q.mu must be held.
func (q *outQueue) applyReadDeadline() {
	at := q.readAt
	if q.frameAt != 0 && (at == 0 || q.frameAt < at) {
		at = q.frameAt
	}
	q.sock.setReadDeadline(timeOf(at))
}

// state reports whether the queue is closing and whether the write side
// is over (closed and written, or failed).
func (q *outQueue) state() (closing, dead bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closing, q.dead
}

// startWriter starts the writer goroutine if there is work and none runs. q.mu
// must be held. The writer is started while the connection's reader still
// runs (the session stops the queue before its reader returns), so the
// server's WaitGroup count is never zero here.
func (q *outQueue) startWriter() {
	if q.writing || q.dead || q.busy == nil || len(q.busy.frames) == 0 {
		return
	}
	q.writing = true
	q.cfg.spawn(q.write)
}

// write is the writer goroutine: it writes batches until the queue is
// empty, then exits.
func (q *outQueue) write() {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.busy // not nil while writing
	for !q.dead && len(b.frames) > 0 {
		batch, size := b.frames, 0
		for i, f := range batch {
			size += len(f)
			if size >= maxBatchBytes && i+1 < len(batch) {
				batch = batch[: i+1 : i+1]
				break
			}
		}
		b.frames = b.frames[len(batch):]
		if len(b.frames) == 0 {
			b.frames = nil // let the backing array go with the batch
		}
		b.inBatch = int64(size) // still held until written
		b.size -= b.inBatch
		last := q.closing && b.frames == nil // the batch ends with the close frame
		b.batchAt = time.Now().Add(q.cfg.writeTimeout)
		if q.closing && b.closeAt.Before(b.batchAt) {
			b.batchAt = b.closeAt
		}
		q.sock.setWriteDeadline(b.batchAt)
		q.mu.Unlock()

		data := 0
		for _, f := range batch {
			if f[0]&0x08 == 0 { // not a control opcode
				data++
			}
		}
		err := q.sock.writeBuffers(batch)

		q.mu.Lock()
		b.inBatch = 0
		if err != nil {
			if !q.dead { // not stopped by the session itself
				q.cfg.stats.writeErrors.Add(1)
				// Wake the reader: a peer we cannot write to is gone.
				q.readAt = nowInstant()
				q.applyReadDeadline()
			}
			q.dead, b.frames, b.held, b.size = true, nil, nil, 0
			break
		}
		q.cfg.stats.framesOut.Add(uint64(data))
		if last {
			q.dead = true // the close frame is out: nothing may follow
			q.sock.closeWrite()
		}
	}
	q.writing = false
	if b.stopped != nil {
		close(b.stopped)
		b.stopped = nil
	}
	q.tidy()
}

// Monotonic instants: nanoseconds since clockBase, 0 for none. They take
// 8 bytes where a time.Time takes 24, which counts in what every idle
// connection keeps.

func instantOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(1, int64(t.Sub(clockBase)))
}

func timeOf(at int64) time.Time {
	if at == 0 {
		return time.Time{}
	}
	return clockBase.Add(time.Duration(at))
}

func nowInstant() int64 { return int64(time.Since(clockBase)) }
