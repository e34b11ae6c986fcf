package gateway

import (
	"bytes"
	"io"
	"net"
)

// transport is the read side of upgraded connections: how the process
// waits for a connection's bytes, and what the session's socket is. It is
// the only part of the gateway that depends on that. The session
// (protocol rules, close), its outQueue (writes, with a writer goroutine
// only while there is something to write) and the session table do not
// care.
//
// goroutineTransport, one goroutine per connection blocked in Read on the
// net.Conn, is the portable one. epollTransport (epoll_linux.go,
// DESIGN.md §7) takes the socket's file descriptor out of the net.Conn,
// registers it, reads frames non-blocking on readiness into
// per-connection partial-frame state (held only while a frame is
// incomplete, and timed out), passes complete messages to session.handle
// from a bounded worker pool, one at a time per session, writes with
// non-blocking writev (waiting for writability on epoll too), and ends
// like serve below does.
type transport interface {
	// attach makes nc the socket of s (s.out.sock), before s is
	// registered; nc belongs to the transport from then on, even if
	// attach fails.
	attach(s *session, nc net.Conn) error
	// serve takes over the read side of s, starting with early (bytes
	// the client sent behind its upgrade request), and, once reading is
	// over, calls s.finish exactly once. It may return before that (an
	// epoll transport does); whatever it starts, the Server's WaitGroup
	// covers.
	serve(s *session, early []byte)
	// park runs fn, a blocking Handler call of the message being handled,
	// off the read side's worker if the transport has workers to spare:
	// the session reads nothing more until fn has returned. It returns
	// false if the caller must run fn itself, in place.
	park(s *session, fn func()) bool
	// stop ends whatever the transport runs besides its sessions; Serve
	// calls it once every session has ended.
	stop()
}

// goroutineTransport reads each connection on the goroutine that accepted
// it, with blocking reads through the session's msgReader.
type goroutineTransport struct{}

func (goroutineTransport) stop() {}

func (goroutineTransport) park(*session, func()) bool { return false }

func (goroutineTransport) attach(s *session, nc net.Conn) error {
	s.out.sock = newNetSocket(nc)
	s.rd = s.newReader(nc)
	s.rd.deadline = s.out.frameDeadline
	return nil
}

func (goroutineTransport) serve(s *session, early []byte) {
	nc := s.out.sock.(*netSocket).nc // as attach made it
	if len(early) > 0 {
		s.rd.src = io.MultiReader(bytes.NewReader(early), nc)
	}
	var err error
	for {
		var m message
		if m, err = s.rd.next(); err != nil {
			break
		}
		if !s.handle(m) {
			break // the peer's close frame
		}
	}
	s.rd.release()
	switch {
	case err == nil:
		s.finish(false) // let our close frame (or echo) go out
	case s.readFailed(err):
		drain(nc) // until the peer leaves or the close deadline
		s.finish(false)
	default:
		s.finish(true)
	}
}
