//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// epollSupported: the epoll transport exists on Linux.
const epollSupported = true

// Tuning of the epoll transport.
const (
	// readBufSize is the buffer a connection borrows while it is read; it
	// goes back to the pool as soon as the socket has no more bytes.
	readBufSize = 4 << 10
	// turnMessages is how many messages one turn handles before the
	// connection goes to the back of the queue, so that a flooding peer
	// cannot keep a worker to itself.
	turnMessages = 64
	// pollEvents is how many readiness events one epoll_wait returns.
	pollEvents = 256
)

// epollTransport waits for client bytes with one epoll instance: an idle
// connection has no goroutine, no buffer and no net.Conn, only its file
// descriptor, its registration (EPOLLONESHOT, so one worker at a time
// reads it) and its session. A poller goroutine hands readable
// connections to a fixed pool of workers, which read what is there
// without blocking, hand complete messages to the session and re-arm the
// registration. A frame cut short keeps only the reader's own state (at
// most a header, a control payload or the message being assembled, in a
// msgReader borrowed from a pool while a message is in progress) and must
// be completed within Config.FrameTimeout.
//
// After the upgrade (on the net.Conn, as for the goroutine transport),
// attach takes the socket's file descriptor out of the net.Conn: it dups
// it (close-on-exec) and closes the net.Conn, so that exactly one
// descriptor per connection stays open and the runtime's netFD and poll
// descriptor are freed. That descriptor is the session's alone; fdRef
// guards its lifetime: every syscall on it holds a reference, and the
// close happens once the last one is given back, so that a number the
// next accept reuses is never read, written or re-armed by mistake. Events
// carry the session id, which is never reused, and are looked up in the
// server's session table.
//
// Writes are the outQueue's: its writer goroutine calls writeBuffers,
// which writes with non-blocking writev; when the socket's send buffer is
// full it arms EPOLLOUT on a second epoll instance (nested in the first,
// so that the same poller serves it) and waits, parked on a channel and
// not in a syscall, until the socket is writable, the write deadline
// passes or the socket is closed. The read registration is independent of
// it, so EPOLLONESHOT re-arming by the workers does not disturb it.
//
// Blocking Handler calls (Login, Logout) run on a goroutine of their own
// (transport.park) while the connection is not re-armed, so that a slow
// login cannot pin a worker. The end of a session (session.finish, which
// waits for its writes) runs on a goroutine of its own too.
type epollTransport struct {
	srv   *Server
	epfd  int // readiness of the connections, and of wrfd
	wrfd  int // writability of the connections whose writer waits
	wake  int // eventfd: tells the poller to stop
	queue chan *pconn

	stopOnce sync.Once
	stopped  atomic.Bool // set by stop before it wakes the poller
}

// Event ids that are not sessions': the wake fd's is 0, which no session
// has; wrfd's is the largest id, which no session reaches.
const (
	wakeEventID     = 0
	writableEventID = math.MaxUint64
)

func newEpollTransport(srv *Server) (transport, error) {
	t := &epollTransport{srv: srv, epfd: -1, wrfd: -1, wake: -1, queue: make(chan *pconn, 4096)}
	fail := func(what string, err error) (transport, error) {
		for _, fd := range []int{t.epfd, t.wrfd, t.wake} {
			if fd >= 0 {
				_ = unix.Close(fd) // never used
			}
		}
		return nil, fmt.Errorf("gateway: %s: %w", what, err)
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fail("epoll_create1", err)
	}
	t.epfd = fd
	if fd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail("epoll_create1", err)
	}
	t.wrfd = fd
	if fd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail("eventfd", err)
	}
	t.wake = fd
	if err := unix.EpollCtl(t.epfd, unix.EPOLL_CTL_ADD, t.wake, eventFor(unix.EPOLLIN, wakeEventID)); err != nil {
		return fail("epoll_ctl wake fd", err)
	}
	// Level-triggered: readable while any writer's socket is writable.
	if err := unix.EpollCtl(t.epfd, unix.EPOLL_CTL_ADD, t.wrfd, eventFor(unix.EPOLLIN, writableEventID)); err != nil {
		return fail("epoll_ctl write epoll", err)
	}
	workers := max(4, 4*runtime.GOMAXPROCS(0))
	if srv.cfg.epollWorkers > 0 {
		workers = srv.cfg.epollWorkers
	}
	srv.wg.Go(t.poll)
	for range workers {
		srv.wg.Go(t.work)
	}
	return t, nil
}

func eventFor(events uint32, id uint64) *unix.EpollEvent {
	return &unix.EpollEvent{Events: events, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
}

func eventID(e *unix.EpollEvent) uint64 {
	return uint64(uint32(e.Fd)) | uint64(uint32(e.Pad))<<32
}

// pconn is the epoll transport's side of one session, inside it
// (session.ep): the socket (as the session's socket and as the source of
// its msgReader) and the read side's scheduling. Its zero value is a
// session the transport did not take (the goroutine fallback).
type pconn struct {
	// Set by attach, then read-only.
	s  *session
	fd fdRef

	// busy: a worker (or a parked call, or the end) owns the read side;
	// readiness and wake-ups then only set again. While not busy the
	// registration is armed. Once the read side is over (end), busy stays
	// set for good.
	busy  atomic.Bool
	again atomic.Bool

	// Only the owner of busy.
	draining bool // the session gave up on the stream: discard until the end
	ended    bool // end was called (guarded by mu too: armWake reads it)
	// discardLeft is the reader's budget of oversize payload to throw
	// away (msgReader.discardLeft, at most maxDiscardBytes), kept here
	// while no reader is borrowed.
	discardLeft int32
	buf         *[]byte // read buffer, borrowed while it holds unread bytes
	r, w        int32   // unread bytes are (*buf)[r:w]
	parked      func()  // a blocking call transport.park was given

	// Deadlines, as monotonic instants (0: none). Any goroutine.
	readAt  atomic.Int64 // reads fail from then on (the outQueue's read deadline)
	writeAt atomic.Int64 // the write in progress fails then

	mu    sync.Mutex    // guards the fields below
	timer *wakeTimer    // wakes the connection at the earlier deadline
	ready chan struct{} // while the writer waits: poked when it should look again
}

// wakeTimer is a pconn's wake-up: a timer and when it fires.
type wakeTimer struct {
	*time.Timer
	at int64
}

// attach takes nc's file descriptor: one dup, close-on-exec, then nc is
// closed (which removes it from the runtime's poller).
func (t *epollTransport) attach(s *session, nc net.Conn) error {
	sc, ok := nc.(syscall.Conn)
	var rc syscall.RawConn
	var err error
	if ok {
		rc, err = sc.SyscallConn()
	}
	if !ok || err != nil {
		// Not a socket of ours (cannot happen with the server's listener):
		// read it the portable way.
		return goroutineTransport{}.attach(s, nc)
	}
	fd := -1
	var derr error
	err = rc.Control(func(sysfd uintptr) {
		fd, derr = unix.FcntlInt(sysfd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("gateway: dup the socket: %w", err)
	}
	if err := nc.Close(); err != nil {
		_ = unix.Close(fd) // never used
		return fmt.Errorf("gateway: close the socket's net.Conn: %w", err)
	}
	c := &s.ep
	c.s, c.fd.fd = s, int32(fd)
	c.discardLeft = maxDiscardBytes
	c.busy.Store(true) // ours until registered
	s.out.sock = c
	return nil
}

// serve registers s and returns; the workers read it from then on.
func (t *epollTransport) serve(s *session, early []byte) {
	c := &s.ep
	if c.s == nil {
		goroutineTransport{}.serve(s, early) // attach fell back
		return
	}
	if len(early) > 0 {
		c.buf, c.w = &early, int32(len(early)) // at most gobwas' read buffer, about ours
	}
	if err := c.ctl(t.epfd, unix.EPOLL_CTL_ADD, c.readEvent()); err != nil {
		t.srv.log.Warn("epoll register", "session_id", s.id, "err", err)
		c.end(err)
		return
	}
	// Bytes may have come with the handshake: look at once.
	c.turn()
}

// park is transport.park: the call runs after the current message, on a
// goroutine of its own, and the turn goes on after it.
func (t *epollTransport) park(s *session, fn func()) bool {
	if s.ep.s == nil {
		return false // the goroutine fallback
	}
	s.ep.parked = fn
	return true
}

func (c *pconn) tr() *epollTransport { return c.s.srv.tr.(*epollTransport) }

func (c *pconn) readEvent() *unix.EpollEvent {
	return eventFor(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLONESHOT, c.s.id)
}

// ctl is epoll_ctl on epfd for c's socket; net.ErrClosed if it is closed.
func (c *pconn) ctl(epfd, op int, ev *unix.EpollEvent) error {
	if !c.fd.acquire() {
		return net.ErrClosed
	}
	defer c.fd.release()
	if err := unix.EpollCtl(epfd, op, c.fd.int(), ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// stop ends the poller and the workers; every session has ended.
func (t *epollTransport) stop() {
	t.stopOnce.Do(func() {
		t.stopped.Store(true)
		var one [8]byte
		one[0] = 1 // eventfd counters are host-endian; any non-zero value wakes
		if _, err := unix.Write(t.wake, one[:]); err != nil {
			t.srv.log.Error("wake the epoll poller", "err", err)
		}
	})
}

// poll is the poller goroutine: it waits for readiness and queues the
// ready connections for the workers, and wakes the writers whose socket
// became writable.
func (t *epollTransport) poll() {
	defer func() {
		close(t.queue)
		_ = unix.Close(t.epfd)
		_ = unix.Close(t.wrfd)
		_ = unix.Close(t.wake)
	}()
	events := make([]unix.EpollEvent, pollEvents)
	writable := make([]unix.EpollEvent, pollEvents)
	for {
		n, err := unix.EpollWait(t.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			t.srv.log.Error("epoll_wait failed; the epoll transport stops reading", "err", err)
			return
		}
		for i := range n {
			switch id := eventID(&events[i]); id {
			case wakeEventID:
				if t.stopped.Load() {
					return
				}
			case writableEventID:
				m, err := unix.EpollWait(t.wrfd, writable, 0)
				if err != nil && !errors.Is(err, unix.EINTR) {
					t.srv.log.Error("epoll_wait on the write epoll failed; the epoll transport stops", "err", err)
					return
				}
				for j := range m {
					if s := t.srv.session(eventID(&writable[j])); s != nil {
						s.ep.pokeWriter()
					}
				}
			default:
				if s := t.srv.session(id); s != nil {
					s.ep.schedule()
				}
			}
		}
	}
}

// work is a worker goroutine.
func (t *epollTransport) work() {
	for c := range t.queue {
		c.turn()
	}
}

// schedule queues c for a turn unless someone owns it; then that owner
// looks again before it lets go.
func (c *pconn) schedule() {
	c.again.Store(true)
	if !c.busy.CompareAndSwap(false, true) {
		return
	}
	c.tr().enqueue(c)
}

func (t *epollTransport) enqueue(c *pconn) {
	select {
	case t.queue <- c:
	default:
		// Every worker is busy and the queue is full: do not block the
		// poller (or a worker) on it.
		t.srv.wg.Go(func() { t.queue <- c })
	}
}

// turn reads and handles what c has, as its owner, then lets go.
func (c *pconn) turn() {
	c.again.Store(false)
	s := c.s
	if c.draining {
		c.drain()
		return
	}
	for range turnMessages {
		if s.rd != nil && s.rd.frameExpired(time.Now()) {
			c.fail(&closeError{ws.StatusPolicyViolation, errFrameTimeout})
			return
		}
		m, err := c.reader().next()
		if err == errWouldBlock {
			c.idle()
			c.rearm()
			return
		}
		if err != nil {
			c.fail(err)
			return
		}
		if !s.handle(m) {
			s.rd.release()
			c.end(nil) // the peer's close frame
			return
		}
		if fn := c.parked; fn != nil {
			c.parked = nil
			c.idleBuffer()
			c.s.srv.wg.Go(func() {
				fn()
				c.turn()
			})
			return
		}
	}
	// More may be waiting: to the back of the queue, still owned.
	c.tr().enqueue(c)
}

// readerPool holds the msgReaders of the connections that are between
// messages.
var readerPool = sync.Pool{New: func() any { return new(msgReader) }}

// reader returns the session's msgReader, borrowing one if it has none.
func (c *pconn) reader() *msgReader {
	s := c.s
	if s.rd == nil {
		r := readerPool.Get().(*msgReader)
		r.init(c, s.srv.cfg.MaxFrameBytes)
		r.frameTimeout = s.srv.cfg.FrameTimeout // checked per turn, not set on the socket
		r.discardLeft = int64(c.discardLeft)
		s.rd = r
	}
	return s.rd
}

// idle gives back what the connection holds only while it has bytes to
// read: the read buffer, once it is empty, and the reader, if it is
// between messages.
func (c *pconn) idle() {
	c.idleBuffer()
	if r := c.s.rd; r != nil {
		r.idle()
		if r.atRest() {
			c.putReader()
		}
	}
}

func (c *pconn) putReader() {
	r := c.s.rd
	c.discardLeft = int32(r.discardLeft) // at most maxDiscardBytes
	*r = msgReader{}                     // a dropped frame's buffers go to the collector
	readerPool.Put(r)
	c.s.rd = nil
}

// rearm gives up ownership and re-arms the registration, or takes the
// connection again if something happened meanwhile.
func (c *pconn) rearm() {
	var frameAt int64
	if r := c.s.rd; r != nil {
		frameAt = instantOf(r.frameAt)
	}
	c.armWake(frameAt)
	c.busy.Store(false)
	if err := c.ctl(c.tr().epfd, unix.EPOLL_CTL_MOD, c.readEvent()); err != nil {
		// The socket is closed: the session is ending (the end is under
		// way); take it to its end.
		if c.busy.CompareAndSwap(false, true) {
			c.fail(err)
		}
		return
	}
	if c.again.Load() && c.busy.CompareAndSwap(false, true) {
		c.tr().enqueue(c)
	}
}

// fail ends the read side after err, as the goroutine transport does:
// a violation gets its close code and the input is drained meanwhile.
func (c *pconn) fail(err error) {
	s := c.s
	if s.rd != nil {
		s.rd.release()
	}
	if s.readFailed(err) {
		c.draining = true
		c.drain()
		return
	}
	c.end(err)
}

// drain discards input until the peer goes or the close deadline passes.
func (c *pconn) drain() {
	for {
		err := c.discard()
		switch {
		case err == errWouldBlock:
			c.idleBuffer()
			c.rearm()
			return
		case err != nil:
			c.end(nil)
			return
		}
	}
}

// end finishes the session on a goroutine of its own (its close may wait
// for writes). err == nil means a clean end (the close may complete).
func (c *pconn) end(err error) {
	if c.ended {
		return
	}
	c.r = c.w
	c.idleBuffer()
	if c.s.rd != nil {
		c.putReader()
	}
	c.mu.Lock()
	c.ended = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	abort := err != nil && !c.draining
	c.s.srv.wg.Go(func() { c.s.finish(abort) })
}

// setReadDeadline is socket.setReadDeadline (under the outQueue's lock,
// from any goroutine): reads fail from t on, and a wake-up makes the
// read side see it.
func (c *pconn) setReadDeadline(t time.Time) {
	at := instantOf(t)
	c.mu.Lock()
	old := c.readAt.Swap(at)
	if at == 0 && c.timer != nil && c.timer.at == old {
		// The deadline it was set for is gone (a login met it).
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	if at != 0 {
		c.armWake(0)
	}
}

// armWake sets the wake-up timer for the earlier of the read deadline and
// frameAt, the deadline of the frame in progress (only the read side's
// owner knows it; others pass 0).
func (c *pconn) armWake(frameAt int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	at := c.readAt.Load()
	if frameAt != 0 && (at == 0 || frameAt < at) {
		at = frameAt
	}
	if at == 0 || (c.timer != nil && c.timer.at <= at) {
		return // none, or an earlier wake-up is set already
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer = &wakeTimer{time.AfterFunc(time.Duration(at-nowInstant())+time.Millisecond, c.woken), at}
}

// woken runs at a deadline: the turn finds what expired (a read past the
// read deadline fails; the frame timeout is checked first).
func (c *pconn) woken() {
	c.mu.Lock()
	c.timer = nil
	c.mu.Unlock()
	c.schedule()
}

// The read side's source: c is its msgReader's io.Reader. It reads the
// socket non-blocking into a buffer borrowed while there are bytes, and
// returns errWouldBlock when there are none.

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

func (c *pconn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if c.r == c.w {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(b, (*c.buf)[:cap(*c.buf)][c.r:c.w])
	c.r += int32(n)
	return n, nil
}

// fill reads what the socket has into the buffer (which is empty).
func (c *pconn) fill() error {
	if at := c.readAt.Load(); at != 0 && nowInstant() >= at {
		return os.ErrDeadlineExceeded
	}
	if c.buf == nil {
		c.buf = readBufPool.Get().(*[]byte)
	}
	c.r, c.w = 0, 0
	if !c.fd.acquire() {
		return net.ErrClosed // a write failed and the end closed it
	}
	var n int
	var err error
	for {
		n, err = unix.Read(c.fd.int(), (*c.buf)[:cap(*c.buf)])
		if err != unix.EINTR {
			break // never wait: that is the poller's job
		}
	}
	c.fd.release()
	switch {
	case err == unix.EAGAIN:
		return errWouldBlock
	case err != nil:
		return os.NewSyscallError("read", err)
	case n == 0:
		return io.EOF
	}
	c.w = int32(n)
	return nil
}

// discard drops what the socket has.
func (c *pconn) discard() error {
	c.r = c.w
	if err := c.fill(); err != nil {
		return err
	}
	c.r = c.w
	return nil
}

// idleBuffer gives the buffer back once everything in it has been read.
func (c *pconn) idleBuffer() {
	if c.buf != nil && c.r == c.w {
		if cap(*c.buf) == readBufSize { // not the handshake's leftover
			readBufPool.Put(c.buf)
		}
		c.buf, c.r, c.w = nil, 0, 0
	}
}

// The write side: c is the session's socket (outQueue.sock).

// maxIovecs is how many buffers one writev takes (IOV_MAX on Linux).
const maxIovecs = 1024

func (c *pconn) writeBuffers(bufs [][]byte) error {
	waits := 0
	defer func() {
		if waits > 0 {
			c.writeDone()
		}
	}()
	for len(bufs) > 0 {
		if at := c.writeAt.Load(); at != 0 && nowInstant() >= at {
			return os.ErrDeadlineExceeded
		}
		if !c.fd.acquire() {
			return net.ErrClosed
		}
		var n int
		var err error
		if len(bufs) == 1 {
			n, err = unix.Write(c.fd.int(), bufs[0]) // the usual push; writev would allocate its iovec
		} else {
			n, err = unix.Writev(c.fd.int(), bufs[:min(len(bufs), maxIovecs)])
		}
		c.fd.release()
		for n > 0 { // consume what went out
			k := min(n, len(bufs[0]))
			bufs[0], n = bufs[0][k:], n-k
			if len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
		switch {
		case err == nil || err == unix.EINTR:
		case err == unix.EAGAIN:
			waits++
			if err := c.waitWritable(waits == 1); err != nil {
				return err
			}
		default:
			return os.NewSyscallError("writev", err)
		}
	}
	return nil
}

// waitWritable arms EPOLLOUT on the write epoll and waits until the
// socket may be writable (or something else changed: the deadline, the
// close), without holding an OS thread. It fails once the write deadline
// has passed or the socket is closed. first: the first wait of this write
// call, which registers the socket on wrfd (writeDone takes it off).
func (c *pconn) waitWritable(first bool) error {
	c.mu.Lock()
	if c.ready == nil {
		c.ready = make(chan struct{}, 1)
	}
	ready := c.ready
	c.mu.Unlock()
	op := unix.EPOLL_CTL_MOD
	if first {
		op = unix.EPOLL_CTL_ADD
	}
	// Arming polls the socket at once: a socket that became writable
	// since the writev is reported.
	if err := c.ctl(c.tr().wrfd, op, eventFor(unix.EPOLLOUT|unix.EPOLLONESHOT, c.s.id)); err != nil {
		return err
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if c.fd.closed() {
			return net.ErrClosed
		}
		var expired <-chan time.Time
		if at := c.writeAt.Load(); at != 0 {
			d := time.Duration(at - nowInstant())
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			expired = timer.C
		}
		select {
		case <-ready:
			return nil
		case <-expired:
		}
	}
}

// writeDone ends a write call: the writer no longer waits, and its
// registration on the write epoll goes.
func (c *pconn) writeDone() {
	c.mu.Lock()
	c.ready = nil
	c.mu.Unlock()
	// Fails only if the socket is closed, which took the registration,
	// or if registering it failed.
	_ = c.ctl(c.tr().wrfd, unix.EPOLL_CTL_DEL, nil)
}

// pokeWriter makes a waiting writer look again.
func (c *pconn) pokeWriter() {
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	if ready != nil {
		select {
		case ready <- struct{}{}:
		default: // poked already
		}
	}
}

func (c *pconn) setWriteDeadline(t time.Time) {
	c.writeAt.Store(instantOf(t))
	c.pokeWriter()
}

// closeWrite sends the FIN after the close frame.
func (c *pconn) closeWrite() {
	if c.fd.acquire() {
		_ = unix.Shutdown(c.fd.int(), unix.SHUT_WR) // best effort, as for a net.Conn
		c.fd.release()
	}
}

// close closes the socket once no syscall uses it any more; a waiting
// writer gives up at once.
func (c *pconn) close() error {
	if !c.fd.close() {
		return net.ErrClosed
	}
	c.pokeWriter()
	return nil
}

// fdRef guards the lifetime of a file descriptor that several goroutines
// use (the read side, the writer, the end): a syscall on it runs between
// acquire and release, and close closes it once no syscall is in
// progress. After close, acquire fails: a descriptor number is never used
// after it was closed, when the next accept may have got it.
type fdRef struct {
	fd    int32
	state atomic.Uint32 // references in use << 1 | 1 once closing
}

// acquire takes a reference; false if the descriptor is closing.
func (r *fdRef) acquire() bool {
	for {
		s := r.state.Load()
		if s&1 != 0 {
			return false
		}
		if r.state.CompareAndSwap(s, s+2) {
			return true
		}
	}
}

// release gives a reference back, closing the descriptor if it was the
// last one of a closing descriptor.
func (r *fdRef) release() {
	if r.state.Add(^uint32(1)) == 1 { // minus 2: no references left, closing
		r.closeNow()
	}
}

// close marks the descriptor closing and closes it if no reference is in
// use (else the last release does). It returns false if it was closing
// already.
func (r *fdRef) close() bool {
	for {
		s := r.state.Load()
		if s&1 != 0 {
			return false
		}
		if r.state.CompareAndSwap(s, s|1) {
			if s == 0 {
				r.closeNow()
			}
			return true
		}
	}
}

func (r *fdRef) closed() bool { return r.state.Load()&1 != 0 }

func (r *fdRef) int() int { return int(r.fd) }

func (r *fdRef) closeNow() {
	// close(2) on a socket fails only with EINTR or EIO, and the
	// descriptor is released even then (Linux): nothing to retry.
	_ = unix.Close(int(r.fd))
}
