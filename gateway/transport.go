package gateway

import (
	"bytes"
	"io"
)

// transport is the read side of upgraded connections: how the process
// waits for a connection's bytes. It is the only part of the gateway that
// depends on that. The session (protocol rules, close), its outQueue
// (writes, with a writer goroutine only while there is something to
// write) and the session table do not care.
//
// goroutineTransport, one goroutine per connection blocked in Read, is the
// portable one. epollTransport (epoll_linux.go, DESIGN.md §7) registers
// the socket, reads frames non-blocking on readiness into per-connection
// partial-frame state (held only while a frame is incomplete, and timed
// out), passes complete messages to session.handle from a bounded worker
// pool, one at a time per session, and ends like serve below does.
type transport interface {
	// serve takes over the read side of s and, once reading is over,
	// calls s.finish exactly once. It may return before that (an epoll
	// transport does); whatever it starts, the Server's WaitGroup covers.
	serve(s *session)
	// stop ends whatever the transport runs besides its sessions; Serve
	// calls it once every session has ended.
	stop()
}

// goroutineTransport reads each connection on the goroutine that accepted
// it, with blocking reads through the session's msgReader.
type goroutineTransport struct{}

func (goroutineTransport) stop() {}

func (goroutineTransport) serve(s *session) {
	if len(s.early) > 0 {
		s.rd.src = io.MultiReader(bytes.NewReader(s.early), s.nc)
		s.early = nil
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
		drain(s.nc) // until the peer leaves or the close deadline
		s.finish(false)
	default:
		s.finish(true)
	}
}
