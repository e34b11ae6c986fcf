package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// Server is the WebSocket gateway of one node: it accepts connections,
// upgrades them, runs the sessions and holds the node's session table.
type Server struct {
	// Set by New, then read-only.
	cfg    Config
	cfgErr error
	h      Handler
	log    *slog.Logger
	tr     transport
	// wheel times the heartbeats of the logged-in sessions; nil if
	// Config.HeartbeatTimeout is negative (or the config invalid).
	wheel *wheel[*session]
	// handshakes holds a token per connection in its handshake (TLS and
	// WebSocket upgrade): Config.MaxHandshakes at most.
	handshakes chan struct{}

	// qcfg is what every session's write queue shares; set by New.
	qcfg queueConfig

	// Counters and ids; any goroutine.
	adm    admission // sends in flight (admission.go)
	stats  counters
	nextID atomic.Uint64

	// wg owns every goroutine the server starts: one per accepted
	// connection, the writers of the write queues and the wheel's.
	wg sync.WaitGroup

	// ctx is Serve's context; set before the first accept, then read-only.
	ctx context.Context

	mu       sync.RWMutex
	drained  sync.Cond             // on mu: a session or handshake ended
	sessions map[uint64]*session   // upgraded connections
	pending  map[net.Conn]struct{} // accepted, not upgraded yet
	ln       net.Listener
	serving  bool // Serve was called
	stopping bool // Serve is shutting down: new sessions close at once
}

// New returns a Server for cfg (zero fields mean defaults) handing frames
// to h. Serve reports an invalid cfg.
func New(cfg Config, h Handler) *Server {
	s := &Server{
		cfgErr:   cfg.Validate(),
		cfg:      cfg.withDefaults(),
		h:        h,
		ctx:      context.Background(),
		sessions: make(map[uint64]*session),
		pending:  make(map[net.Conn]struct{}),
	}
	s.log = s.cfg.Logger
	s.handshakes = make(chan struct{}, max(s.cfg.MaxHandshakes, 1))
	s.drained.L = &s.mu
	s.adm.maxNode, s.adm.maxBytes = int64(s.cfg.MaxNodeSends), s.cfg.MaxNodeSendBytes
	s.qcfg = queueConfig{
		max:          s.cfg.WriteQueue,
		maxBytes:     s.cfg.WriteQueueBytes,
		writeTimeout: s.cfg.WriteTimeout,
		spawn:        s.wg.Go,
		stats:        &s.stats,
	}
	if s.cfgErr == nil && s.cfg.HeartbeatTimeout > 0 {
		s.wheel = newWheel[*session](s.cfg.HeartbeatTimeout, s.cfg.HeartbeatTimeout/heartbeatTicks)
	}
	return s
}

// ListenAndServe listens on Config.Addr and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if s.cfgErr != nil {
		return s.cfgErr
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx is done (or ln fails), then
// shuts down: every session gets a Kick{SHUTDOWN} frame and a close with
// wire.CloseShutdown (Handler.Closed is called for the logged-in ones),
// connections still in their handshake are dropped, and Serve returns
// once every goroutine it started has exited: within about
// Config.CloseTimeout after ctx is done, plus whatever the Handler's calls
// take. It closes ln. It returns nil after ctx is done, or the error that
// stopped accepting. Serve may be called once. With Config.TLS it speaks
// TLS on the connections it accepts.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.start(ctx, ln); err != nil {
		if cerr := ln.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("gateway: close listener: %w", cerr))
		}
		return err
	}
	if s.cfg.TLS != nil {
		// The TLS handshake runs at the start of upgrade, under the
		// handshake deadline and holding a handshake slot.
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	stop := context.AfterFunc(ctx, func() {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Warn("close listener", "err", err)
		}
	})
	defer stop()
	// The wheel stops with the accept loop, whether ctx or ln ended it.
	wctx, stopWheel := context.WithCancel(ctx)
	defer stopWheel()
	if s.wheel != nil {
		s.wg.Go(func() { s.wheel.run(wctx, (*session).heartbeatTimeout) })
	}
	s.wg.Go(func() { s.adm.watchHeap(wctx, 100*time.Millisecond) })
	s.wg.Go(func() { s.sweepSends(wctx, 10*time.Second) })

	var err error
	backoff := time.Duration(0)
	for {
		// While MaxHandshakes connections are in their handshake, the
		// next ones wait in the listen backlog, not in the process.
		if !s.acquireHandshake(ctx) {
			break
		}
		nc, aerr := ln.Accept()
		if aerr != nil {
			s.releaseHandshake()
			if ctx.Err() != nil {
				break
			}
			if errors.Is(aerr, net.ErrClosed) {
				err = fmt.Errorf("gateway: accept: %w", aerr)
				break
			}
			// Out of file descriptors, aborted handshakes and the like:
			// back off as net/http does, and keep going.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", aerr, "retry_in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		s.stats.accepted.Add(1)
		s.mu.Lock()
		s.pending[nc] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() { s.serveConn(nc) })
	}

	stopWheel()
	s.shutdown()
	if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = fmt.Errorf("gateway: close listener: %w", cerr)
	}
	// The transport stops once the sessions it reads are over.
	s.mu.Lock()
	for len(s.sessions) > 0 || len(s.pending) > 0 {
		s.drained.Wait()
	}
	s.mu.Unlock()
	s.tr.stop()
	s.wg.Wait()
	return err
}

// acquireHandshake takes a handshake slot, waiting for one while they are
// all taken. It returns false if ctx is done first.
func (s *Server) acquireHandshake(ctx context.Context) bool {
	select {
	case s.handshakes <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	if ctx.Err() != nil {
		s.releaseHandshake()
		return false
	}
	return true
}

// releaseHandshake gives back the slot of a connection whose handshake
// is over, however it ended.
func (s *Server) releaseHandshake() { <-s.handshakes }

func (s *Server) start(ctx context.Context, ln net.Listener) error {
	if s.cfgErr != nil {
		return s.cfgErr
	}
	if s.h == nil {
		return errors.New("gateway: nil Handler")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		return errors.New("gateway: Serve called twice")
	}
	s.tr = goroutineTransport{}
	if s.cfg.Transport == TransportEpoll {
		tr, err := newEpollTransport(s)
		if err != nil {
			return err
		}
		s.tr = tr
	}
	s.serving, s.ln, s.ctx = true, ln, ctx
	return nil
}

// shutdown closes every session with CloseShutdown and aborts the
// handshakes in progress. Sessions that register later close themselves.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.stopping = true
	for nc := range s.pending {
		// Fails the handshake's I/O at once; only a closed conn refuses.
		_ = nc.SetDeadline(time.Now())
	}
	list := slices.Collect(maps.Values(s.sessions))
	s.mu.Unlock()
	for _, ss := range list {
		ss.shutdown()
	}
}

// serveConn runs one accepted connection to its end, on its own goroutine.
func (s *Server) serveConn(nc net.Conn) {
	// Under s.mu, so that shutdown's deadline cannot come before this one.
	s.mu.Lock()
	err := nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if s.stopping {
		err = errors.New("gateway: shutting down")
	}
	s.mu.Unlock()
	var c codec
	var early []byte
	if err == nil {
		c, early, err = s.upgrade(nc)
	}
	var ss *session
	if err == nil {
		// The transport takes nc over (the epoll transport keeps only its
		// file descriptor).
		ss = newSession(s, s.nextID.Add(1), c)
		if err = s.tr.attach(ss, nc); err != nil {
			s.log.Warn("attach connection", "remote_addr", nc.RemoteAddr().String(), "err", err)
		}
	}
	s.releaseHandshake()
	s.mu.Lock()
	delete(s.pending, nc)
	s.drained.Broadcast()
	if err != nil {
		s.mu.Unlock()
		s.stats.handshakeFailures.Add(1)
		s.log.Debug("handshake failed", "remote_addr", nc.RemoteAddr().String(), "err", err)
		if cerr := nc.Close(); cerr != nil && ss == nil {
			s.log.Debug("close connection", "err", cerr)
		}
		return
	}
	s.sessions[ss.id] = ss
	stopping := s.stopping
	s.mu.Unlock()

	s.stats.upgraded.Add(1)
	ss.out.setReadDeadline(time.Now().Add(s.cfg.LoginTimeout))
	if stopping {
		ss.shutdown()
	}
	s.tr.serve(ss, early)
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss.id)
	s.drained.Broadcast()
	s.mu.Unlock()
}

func (s *Server) session(id uint64) *session {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sessions[id]
}

// Addr is the listener's address once Serve has started, else nil.
func (s *Server) Addr() net.Addr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Deliver queues frames for a session, in order, after everything queued
// before; frames delivered while the session's Login is being decided go
// out after the Login reply. Each frame is encoded here, once, in the
// session's encoding; frames are not retained and may be shared between
// calls; nil entries are skipped. It returns false if nothing was queued:
// the session is unknown or closing, or its queue overflowed (it is then
// closed as a slow consumer: Kick{SLOW_CONSUMER}, close code
// wire.CloseSlowConsumer, what was still queued is dropped). All frames of
// a call are queued or none: a call with more than Config.WriteQueue
// frames, or more than Config.WriteQueueBytes encoded bytes, always
// overflows.
//
// Safe for concurrent use; never blocks on the network.
func (s *Server) Deliver(sessionID uint64, frames []*wire.Frame) bool {
	ss := s.session(sessionID)
	if ss == nil {
		return false
	}
	return ss.deliver(frames)
}

// Kick writes k to the session after everything already queued, then
// closes it with k.CloseCode (if that is not in 4000–4999, the code k's
// reason implies, which is then also put in the frame). Handler.Closed is
// called for it as for any other end. It returns false if the session is
// unknown or already closing. k is not retained or modified.
//
// Safe for concurrent use; never blocks on the network.
func (s *Server) Kick(sessionID uint64, k *wire.Kick) bool {
	ss := s.session(sessionID)
	if ss == nil {
		return false
	}
	if k == nil {
		k = &wire.Kick{}
	}
	if code := kickCloseCode(k); uint32(code) != k.GetCloseCode() {
		k = proto.CloneOf(k)
		k.CloseCode = uint32(code)
	}
	return ss.kick(k)
}

// Sessions is the number of upgraded connections, logged in or not.
func (s *Server) Sessions() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sessions)
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := s.stats.snapshot()
	st.Sessions = s.Sessions()
	s.mu.RLock()
	st.Handshakes = len(s.pending)
	s.mu.RUnlock()
	st.SendsInFlight, st.SendBytesInFlight = s.adm.inflight.Load(), s.adm.bytes.Load()
	st.SendsRefused, st.MemoryPressure = s.adm.refused.Load(), s.adm.pressure.Load()
	return st
}
