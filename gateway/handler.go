package gateway

import (
	"context"

	"github.com/tandem-im/tandem/proto/wire"
)

// Handler is what the gateway needs from the layers behind it (node wires
// the actors' frontend in). The gateway itself holds no business rules: it
// checks framing, answers Ping, enforces "Login first, once", and hands
// every other frame over.
type Handler interface {
	// Login is called with a session's Login frame, from that connection's
	// goroutine; it may block (it asks the user's actor). reply is written
	// to the client (LoginOk or Error, with the frame's id). If ok is false
	// the gateway closes the connection after writing reply, and Closed is
	// not called: a layer that registered the session anyway (its answer
	// was lost to a timeout) learns it is gone when Server.Deliver returns
	// false for it.
	Login(ctx context.Context, sessionID uint64, f *wire.Frame) (reply *wire.Frame, user string, ok bool)

	// Frame hands over one post-login client frame (never Login, Ping,
	// Logout, nor a body only servers send). It must not block for long:
	// replies reach the client later through Server.Deliver.
	Frame(sessionID uint64, user string, f *wire.Frame)

	// Logout is a planned end: the gateway then writes Ok and closes with
	// 1000, and Closed is not called for that session afterwards. If Logout
	// fails, the client gets UNAVAILABLE, the session stays open, and
	// Closed is called when it ends later.
	Logout(ctx context.Context, sessionID uint64, user string) error

	// Closed reports that a logged-in session ended any other way (socket
	// error, close frame, protocol error, kick, shutdown). Must not block.
	Closed(sessionID uint64, user string)
}
