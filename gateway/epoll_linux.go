//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"io"
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
// connection has no goroutine and no read buffer, only its registration
// (EPOLLONESHOT, so one worker at a time reads it) and the state of a
// frame that arrived in part. A poller goroutine hands readable
// connections to a fixed pool of workers, which read what is there
// without blocking, hand complete messages to the session and re-arm the
// registration. A frame cut short keeps only the reader's own state (at
// most a header, a control payload or the message being assembled) and
// must be completed within Config.FrameTimeout.
//
// Blocking Handler calls (Login, Logout) run on a goroutine of their own
// (session.park) while the connection is not re-armed, so that a slow
// login cannot pin a worker. The end of a session (session.finish, which
// waits for its writes) runs on a goroutine of its own too. Writes are
// the outQueue's, as for the goroutine transport, through the runtime's
// own poller. Only the socket's fd is used: no dup is made.
type epollTransport struct {
	srv   *Server
	epfd  int
	wake  int // eventfd: tells the poller to stop
	queue chan *pconn

	mu    sync.RWMutex
	conns map[uint64]*pconn // by session id, which is never reused

	stopOnce sync.Once
	stopped  atomic.Bool // set by stop before it wakes the poller
}

func newEpollTransport(srv *Server) (transport, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("gateway: eventfd: %w", err)
	}
	// The wake fd's event carries id 0, which no session has.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("gateway: epoll_ctl wake fd: %w", err)
	}
	t := &epollTransport{
		srv:   srv,
		epfd:  epfd,
		wake:  wake,
		queue: make(chan *pconn, 4096),
		conns: make(map[uint64]*pconn),
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

// pconn is the epoll transport's side of one session.
type pconn struct {
	t  *epollTransport
	s  *session
	rc syscall.RawConn
	id uint64

	// busy: a worker (or a parked call, or the end) owns the read side;
	// readiness and wake-ups then only set again. While not busy the
	// registration is armed. done: the read side is over for good.
	busy  atomic.Bool
	again atomic.Bool
	done  atomic.Bool

	// Only the owner of busy.
	src      pollSource
	draining bool        // the session gave up on the stream: discard until the end
	parked   func()      // a blocking call session.park asked for
	deadline time.Time   // the session's read deadline (from outQueue)
	timer    *time.Timer // wakes the connection at the earlier deadline
	timerAt  time.Time
	mu       sync.Mutex // guards deadline, timer, timerAt
}

// serve registers s and returns; the workers read it from then on.
func (t *epollTransport) serve(s *session) {
	sc, ok := s.nc.(syscall.Conn)
	var rc syscall.RawConn
	var err error
	if ok {
		rc, err = sc.SyscallConn()
	}
	if !ok || err != nil {
		// Not a socket of ours (cannot happen with the server's listener):
		// read it the portable way.
		goroutineTransport{}.serve(s)
		return
	}
	c := &pconn{t: t, s: s, rc: rc, id: s.id}
	c.src.c = c
	if len(s.early) > 0 {
		early := s.early // at most gobwas' read buffer, about ours
		c.src.buf, c.src.w = &early, len(early)
		s.early = nil
	}
	s.rd.src = &c.src
	s.rd.deadline = nil // frame deadlines are checked per turn, not set on the socket
	s.park = c.park
	c.busy.Store(true) // ours until registered
	t.mu.Lock()
	t.conns[c.id] = c
	t.mu.Unlock()
	s.out.watchDeadline(c.setDeadline)

	var cerr error
	err = rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(t.epfd, unix.EPOLL_CTL_ADD, int(fd), c.event())
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		t.srv.log.Warn("epoll register", "session_id", s.id, "err", err)
		c.end(err)
		return
	}
	// Bytes may have come with the handshake: look at once.
	c.turn()
}

func (c *pconn) event() *unix.EpollEvent {
	return &unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd:     int32(uint32(c.id)),
		Pad:    int32(uint32(c.id >> 32)),
	}
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
// ready connections for the workers.
func (t *epollTransport) poll() {
	defer func() {
		close(t.queue)
		_ = unix.Close(t.epfd)
		_ = unix.Close(t.wake)
	}()
	events := make([]unix.EpollEvent, pollEvents)
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
			id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if id == 0 && t.stopped.Load() {
				return // stop
			}
			t.mu.RLock()
			c := t.conns[id]
			t.mu.RUnlock()
			if c != nil {
				c.schedule()
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
	if c.done.Load() || !c.busy.CompareAndSwap(false, true) {
		return
	}
	c.t.enqueue(c)
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
		if s.rd.frameExpired(time.Now()) {
			c.fail(&closeError{ws.StatusPolicyViolation, errFrameTimeout})
			return
		}
		m, err := s.rd.next()
		if err == errWouldBlock {
			c.src.idle()
			s.rd.idle()
			c.release()
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
			c.src.idle()
			c.t.srv.wg.Go(func() {
				fn()
				c.turn()
			})
			return
		}
	}
	// More may be waiting: to the back of the queue, still owned.
	c.t.enqueue(c)
}

// park is session.park: the call runs after the current message, on a
// goroutine of its own, and the turn goes on after it.
func (c *pconn) park(fn func()) { c.parked = fn }

// release gives up ownership and re-arms the registration, or takes the
// connection again if something happened meanwhile.
func (c *pconn) release() {
	c.armWake(c.s.rd.frameAt)
	c.busy.Store(false)
	var cerr error
	err := c.rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(c.t.epfd, unix.EPOLL_CTL_MOD, int(fd), c.event())
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		// The socket is closed: the session is ending (a write failed and
		// closed it, or the end is under way); take it to its end.
		if c.busy.CompareAndSwap(false, true) {
			c.fail(err)
		}
		return
	}
	if c.again.Load() && c.busy.CompareAndSwap(false, true) {
		c.t.enqueue(c)
	}
}

// fail ends the read side after err, as the goroutine transport does:
// a violation gets its close code and the input is drained meanwhile.
func (c *pconn) fail(err error) {
	s := c.s
	s.rd.release()
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
		_, err := c.src.discard()
		switch {
		case err == errWouldBlock:
			c.src.idle()
			c.release()
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
	if c.done.Swap(true) {
		return
	}
	c.src.idle()
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	c.t.mu.Lock()
	delete(c.t.conns, c.id)
	c.t.mu.Unlock()
	abort := err != nil && !c.draining
	c.t.srv.wg.Go(func() { c.s.finish(abort) })
}

// setDeadline is told the session's read deadline (outQueue.watchDeadline);
// it may be called under the queue's lock, from any goroutine.
func (c *pconn) setDeadline(t time.Time) {
	c.mu.Lock()
	old := c.deadline
	c.deadline = t
	if t.IsZero() && c.timer != nil && c.timerAt.Equal(old) {
		// The deadline it was set for is gone (a login met it).
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	if !t.IsZero() {
		c.armWake(time.Time{})
	}
}

// armWake sets the wake-up timer for the earlier of the session's read
// deadline and frameAt, the deadline of the frame in progress (only its
// owner knows it; others pass the zero time).
func (c *pconn) armWake(frameAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done.Load() {
		return
	}
	at := c.deadline
	if !frameAt.IsZero() && (at.IsZero() || frameAt.Before(at)) {
		at = frameAt
	}
	if at.IsZero() || (c.timer != nil && !c.timerAt.After(at)) {
		return // none, or an earlier wake-up is set already
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timerAt = at
	c.timer = time.AfterFunc(time.Until(at)+time.Millisecond, c.woken)
}

// woken runs at a deadline: the turn finds what expired (a read past the
// socket's deadline fails; the frame timeout is checked first).
func (c *pconn) woken() {
	c.mu.Lock()
	c.timer = nil
	c.mu.Unlock()
	c.schedule()
}

// pollSource is what the session's msgReader reads from under the epoll
// transport: non-blocking reads of the socket into a buffer borrowed
// while there are bytes, errWouldBlock when there are none.
type pollSource struct {
	c    *pconn
	buf  *[]byte
	r, w int
}

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

func (p *pollSource) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if p.r == p.w {
		if err := p.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(b, (*p.buf)[:cap(*p.buf)][p.r:p.w])
	p.r += n
	return n, nil
}

// fill reads what the socket has into the buffer (which is empty).
func (p *pollSource) fill() error {
	if p.buf == nil {
		p.buf = readBufPool.Get().(*[]byte)
	}
	p.r, p.w = 0, 0
	var n int
	var rerr error
	err := p.c.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), (*p.buf)[:cap(*p.buf)])
			if rerr != unix.EINTR {
				return true // never wait: that is the poller's job
			}
		}
	})
	switch {
	case err != nil: // closed, or past the read deadline
		return err
	case rerr == unix.EAGAIN:
		return errWouldBlock
	case rerr != nil:
		return os.NewSyscallError("read", rerr)
	case n == 0:
		return io.EOF
	}
	p.w = n
	return nil
}

// discard drops what the socket has.
func (p *pollSource) discard() (int, error) {
	p.r = p.w
	if err := p.fill(); err != nil {
		return 0, err
	}
	n := p.w
	p.r = p.w
	return n, nil
}

// idle gives the buffer back once everything in it has been read.
func (p *pollSource) idle() {
	if p.buf != nil && p.r == p.w {
		if cap(*p.buf) == readBufSize { // not the handshake's leftover
			readBufPool.Put(p.buf)
		}
		p.buf, p.r, p.w = nil, 0, 0
	}
}
