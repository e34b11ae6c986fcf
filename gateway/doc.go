// Package gateway is the node's WebSocket edge: it accepts client
// connections, upgrades them, checks WebSocket framing and the few
// protocol rules that need no business knowledge, and holds the node's
// session table.
//
// # Data flow
//
//	client ──ws──▶ Server ──Handler.Login/Frame/Logout/Closed──▶ node ▶ user actors
//	   ▲                                                              │
//	   └──── write queue ◀── Server.Deliver / Server.Kick ◀───────────┘
//
// A connection is upgraded with gobwas' zero-copy ws.Upgrader on the raw
// net.Conn (no net/http). The subprotocol fixes the session's encoding:
// "tandem.v1" (binary protobuf wire.Frame, the default) or
// "tandem.v1.json" (protobuf canonical JSON in text messages). It decides
// how inbound messages are decoded, not their opcode: a text message on
// tandem.v1 is refused, a binary one on tandem.v1.json is read as JSON.
// Outbound frames always use the session's encoding.
//
// With Config.TLS set the server speaks wss://: TLS is terminated in the
// process, on the goroutine transport. The TLS handshake runs at the
// start of the upgrade, so HandshakeTimeout bounds it too; a client that
// fails it (an untrusting one, garbage, a plain ws:// client, which gets
// a 400 saying to use wss://) counts as a handshake failure. At most
// Config.MaxHandshakes connections are in their handshake (TLS and
// upgrade) at once; while they are, Accept is not called and new clients
// wait in the kernel's listen backlog. For a million connections, put a
// TLS-terminating proxy in front and keep the epoll transport.
//
// Each session gets a node-local id (never reused within the process). The
// gateway enforces "Login first, and once", answers the wire Ping with
// Pong itself (before Login too: it is a keep-alive), and turns Logout into Handler.Logout, Ok and a 1000 close.
// Every other client frame goes to Handler.Frame; replies and pushes come
// back through Server.Deliver. Framing violations close the connection
// with 1002 or 1007 (RFC 6455); undecodable frames, oversize frames and
// rule violations are answered with an Error frame, carrying the
// request's id whenever it could be read, and the connection stays. Error codes and close codes come from package wire.
//
// Inbound flow control (admission.go): every message a session sends but
// its close takes a token from the session's bucket (Config.MaxFrameRate
// a second, bursts of a second's worth). A request that finds none is
// answered RATE_LIMITED with its id and the time until one is free, and
// goes no further; a wire Ping, a WebSocket ping or a pong is ignored; a
// message that is no request the rate could refuse (undecodable,
// oversize, id 0) gets its usual answer.
//
// # Concurrency
//
// Serve runs the server until its context is done and returns only after
// every goroutine it started has exited. The read side is a transport
// (Config.Transport): on Linux by default epoll readiness and a fixed
// pool of workers (epoll_linux.go) — after the upgrade the connection is
// only its file descriptor (the net.Conn is closed), an idle connection
// has no goroutine and no buffer, a frame that arrives in part keeps only
// its own state and must be complete within Config.FrameTimeout, Login
// and Logout run on a goroutine of their own so that they never hold a
// worker — elsewhere, and for TLS, one goroutine per connection blocked
// in Read on its net.Conn. A connection's writer goroutine exists only
// while it has something to write (on the epoll transport it writes
// non-blocking and, when the socket is full, waits for writability on
// epoll, not in a syscall); the handshake runs on a goroutine that ends
// with it. What an idle session keeps is what it needs: its reader's
// state, its write queue's bookkeeping and its sends in flight exist only
// while in use.
//
// Heartbeats run on one timing wheel per Server (wheel.go), driven by one
// goroutine that Serve starts and waits for, not on a timer per
// connection: reading any message or control frame stores the wheel's
// coarse clock in the session (one atomic store, no lock); Login puts the
// session on the wheel and its end takes it off (O(1), under the wheel's
// lock). Once per tick (HeartbeatTimeout/32) the wheel goroutine looks at
// the sessions due in that tick's slot: one that was active moves to the
// slot of its new expiry, one silent for longer than HeartbeatTimeout is
// closed from that goroutine as a Kick does it (Kick{HEARTBEAT_TIMEOUT},
// wire.CloseHeartbeatTimeout, then Handler.Closed from its read side). A
// session's end and its expiry may race: whichever starts the close
// first wins, and Closed is called once either way.
//
// Handler methods for one session are called from one goroutine at a
// time, in order: Login at most once (a failed login closes the session,
// and nothing else is called for it); after a successful one, Frame and
// Logout any number of times, and at the end Closed, unless a Logout
// succeeded (a Logout that returns an error is answered UNAVAILABLE and
// leaves the session open). Login and Logout may block (their
// context is bounded by Config.CallTimeout and canceled when the session
// closes); Frame and Closed must not block. A frame passed to the Handler
// belongs to it.
//
// Deliver, Kick, Sessions and Stats may be called from any goroutine at
// any time, including from inside Handler methods, and never block on
// the network: a session's write queue is bounded (Config.WriteQueue
// frames and Config.WriteQueueBytes bytes, frames delivered before the
// Login reply included) and a session that overflows it is closed as a
// slow consumer. Frames passed
// to Deliver and Kick are encoded before the call returns and not
// retained.
package gateway
