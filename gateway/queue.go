package gateway

import (
	"crypto/tls"
	"math"
	"net"
	"slices"
	"sync"
	"time"
)

// maxBatchBytes is roughly how much one write call takes from the queue:
// frames are batched into one writev up to this size (at least one frame).
const maxBatchBytes = 64 << 10

// outQueue is the write side of one connection: a queue of encoded
// WebSocket frames, bounded in frames and in bytes, and a writer goroutine that exists only while
// there is something to write. Frames go out in the order they were
// accepted, several per writev when several are waiting; an idle
// connection holds neither a goroutine nor a buffer for writing.
//
// The close frame is always the last thing queued: once close is called,
// nothing more is accepted, and once the close frame is written the write
// half of the socket is shut down.
//
// Methods are safe for concurrent use and never block on the network.
type outQueue struct {
	// Set at creation, then read-only.
	nc           net.Conn
	max          int           // frames waiting, held ones included
	maxBytes     int64         // their bytes, the batch being written included
	writeTimeout time.Duration // for one batch
	spawn        func(func())  // starts the writer goroutine (the server's WaitGroup.Go)
	join         bool          // nc has no writev (TLS): join a batch into one write
	stats        *counters

	mu      sync.Mutex
	idle    sync.Cond // L is &mu; signalled when the writer goroutine stops
	frames  [][]byte  // to write, in order
	held    [][]byte  // accepted while gated, to follow the Login reply
	size    int64     // bytes in frames and held
	inBatch int64     // bytes of the batch being written
	gated   bool      // the Login reply is not queued yet
	writing bool      // the writer goroutine runs
	closing bool      // the close frame is queued; nothing more is accepted
	dead    bool      // nothing more will be written (close frame out, failure, stop)
	closeAt time.Time // once closing: when the session ends at the latest
	batchAt time.Time // write deadline of the batch being written

	// The read side's deadline is the earlier of readAt (the login
	// deadline, the close deadline, now after a failed write) and frameAt
	// (the frame in progress, goroutine transport). onDeadline, if set
	// (epoll transport), is told every change of it.
	readAt     time.Time
	frameAt    time.Time
	onDeadline func(time.Time)
}

func (q *outQueue) init(nc net.Conn, max int, writeTimeout time.Duration, spawn func(func()), stats *counters) {
	q.nc, q.max, q.writeTimeout, q.spawn, q.stats = nc, max, writeTimeout, spawn, stats
	q.maxBytes = math.MaxInt64
	_, q.join = nc.(*tls.Conn) // one TLS record per 16 KiB, not per frame
	q.idle.L = &q.mu
	q.gated = true
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
	if len(q.frames)+len(q.held)+len(frames) > q.max || n > q.maxBytes-q.size-q.inBatch {
		return false, true
	}
	q.size += n
	if deliver && q.gated {
		q.held = append(q.held, frames...)
		return true, false
	}
	q.frames = append(q.frames, frames...)
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
	q.frames = append(q.frames, reply)
	q.size += int64(len(reply))
	if keep {
		q.frames = append(q.frames, q.held...)
	} else {
		q.size -= sizeOf(q.held)
	}
	q.held, q.gated = nil, false
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
	if drop {
		q.frames, q.size = nil, 0
	} else {
		q.frames = append(q.frames, q.held...)
	}
	q.held, q.gated = nil, false
	q.frames = append(q.frames, tail...)
	q.size += sizeOf(tail)
	q.closing, q.closeAt = true, deadline
	q.readAt = deadline
	q.applyReadDeadline()
	if q.writing && deadline.Before(q.batchAt) {
		_ = q.nc.SetWriteDeadline(deadline)
	}
	q.startWriter()
	return true
}

// stop ends the write side at once: nothing queued is written any more.
// The caller closes the socket to interrupt a write in progress.
func (q *outQueue) stop() {
	q.mu.Lock()
	q.dead, q.frames, q.held, q.size = true, nil, nil, 0
	q.mu.Unlock()
}

// wait blocks until the writer goroutine (if any) has stopped. It returns
// at the latest after the current batch's write deadline.
func (q *outQueue) wait() {
	q.mu.Lock()
	for q.writing {
		q.idle.Wait()
	}
	q.mu.Unlock()
}

// setReadDeadline sets the read side's deadline unless the queue is
// closing (its close deadline must stay).
func (q *outQueue) setReadDeadline(t time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closing && !q.dead {
		q.readAt = t
		q.applyReadDeadline()
	}
}

// frameDeadline bounds the frame in progress (the zero time: none).
func (q *outQueue) frameDeadline(t time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.frameAt = t
	q.applyReadDeadline()
}

// watchDeadline makes fn hear of the read side's deadline, now and at
// every change.
func (q *outQueue) watchDeadline(fn func(time.Time)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.onDeadline = fn
	q.applyReadDeadline()
}

// applyReadDeadline puts the earlier of readAt and frameAt on the socket.
// q.mu must be held.
func (q *outQueue) applyReadDeadline() {
	t := q.readAt
	if !q.frameAt.IsZero() && (t.IsZero() || q.frameAt.Before(t)) {
		t = q.frameAt
	}
	// Deadline errors are only possible on a closed conn; the session
	// ends then anyway.
	_ = q.nc.SetReadDeadline(t)
	if q.onDeadline != nil {
		q.onDeadline(t)
	}
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
	if q.writing || q.dead || len(q.frames) == 0 {
		return
	}
	q.writing = true
	q.spawn(q.write)
}

// write is the writer goroutine: it writes batches until the queue is
// empty, then exits.
func (q *outQueue) write() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.dead && len(q.frames) > 0 {
		batch, size := q.frames, 0
		for i, b := range batch {
			size += len(b)
			if size >= maxBatchBytes && i+1 < len(batch) {
				batch = batch[: i+1 : i+1]
				break
			}
		}
		q.frames = q.frames[len(batch):]
		if len(q.frames) == 0 {
			q.frames = nil // let the backing array go with the batch
		}
		q.inBatch = int64(size) // still held until written
		q.size -= q.inBatch
		last := q.closing && q.frames == nil // the batch ends with the close frame
		q.batchAt = time.Now().Add(q.writeTimeout)
		if q.closing && q.closeAt.Before(q.batchAt) {
			q.batchAt = q.closeAt
		}
		_ = q.nc.SetWriteDeadline(q.batchAt)
		q.mu.Unlock()

		data := 0
		for _, b := range batch {
			if b[0]&0x08 == 0 { // not a control opcode
				data++
			}
		}
		bufs := net.Buffers(batch)
		if q.join && len(batch) > 1 {
			bufs = net.Buffers{slices.Concat(batch...)}
		}
		_, err := bufs.WriteTo(q.nc)

		q.mu.Lock()
		q.inBatch = 0
		if err != nil {
			if !q.dead { // not stopped by the session itself
				q.stats.writeErrors.Add(1)
				// Wake the reader: a peer we cannot write to is gone.
				q.readAt = time.Now()
				q.applyReadDeadline()
			}
			q.dead, q.frames, q.held, q.size = true, nil, nil, 0
			break
		}
		q.stats.framesOut.Add(uint64(data))
		if last {
			q.dead = true // the close frame is out: nothing may follow
			if tc, ok := q.nc.(interface{ CloseWrite() error }); ok {
				_ = tc.CloseWrite() // FIN after the close frame
			}
		}
	}
	q.writing = false
	q.idle.Broadcast()
}
