// Package client is a tandem device session for tests, benchmarks and Go
// programs: one Client is one device (one WebSocket at a time to the
// gateway, ws://HOST:7400/ws, or wss:// with Options.TLSConfig) that
// survives reconnects.
//
// # Data flow
//
// Dial connects with subprotocol "tandem.v1" (binary protobuf) or
// "tandem.v1.json" (Options.JSON), sends Login and returns after LoginOk.
// The server then streams the catch-up (unsolicited SyncPages until
// has_more is false; WaitCaughtUp) and pushes live entries. Every entry
// goes through one seq buffer: entries at or below the cursor are dropped
// as duplicates, an entry beyond cursor+1 is held while the gap is pulled
// with SyncRequest{after_seq: cursor, limit: 200} (repeated while
// has_more), and OnEntry sees the user's log in seq order, once per seq.
// The delivered cursor is acked with CursorAck at most every AckInterval,
// at once after AckEvery entries, and on Close and Logout.
//
// The server answers a device's own stored send with a SendAck and does
// not push that entry to the sending session (the user's other devices get
// it as a carbon). The ack fills its seq: the client builds the entry from
// the Send and the ack (Sender is the token's subject, Mentioned false)
// and delivers it in order; if the server's copy of that entry arrives as
// well (a catch-up page after a reconnect, a gap pull), whichever arrives
// first is delivered and the other dropped by seq.
//
// Sends are kept until acked. After a reconnect (Login with reconnect and
// the cursor) they are written again, in their original order, with the
// same client message ID; the server answers a resend with the original
// ids and duplicate set. Transient sends are never resent.
//
// # Endpoints and reconnects
//
// Options.URLs lists gateways of one cluster; any node serves any user,
// and the user's log, seqs and send de-duplication live in the cluster,
// not in the node. A device starts at a hashed offset in the list and
// moves to the next endpoint when a connection breaks or a dial fails; it
// logs in again on the same node after close code 4017 (session lost) and
// leaves a node that closes with 4015 SHUTDOWN (node draining) for
// another one. Moving is invisible to the app: the cursor, the seq buffer
// and the unacked sends carry over, so OnEntry goes on in seq order with
// no entry twice and every stored send is acked once (a resend's ack has
// duplicate set). OnReconnect reports the steps (endpoints.go, reconnect.go).
//
// # Concurrency
//
// A Client may be used from many goroutines. It owns two goroutines: run,
// the only reader (it also redials), and housekeep (resends, cursor acks,
// pings, retried gap pulls). Frames go out whole, in order, through one
// write queue per connection: the goroutine that finds no write in
// progress writes every queued frame with one writev (a burst of sends is
// one system call, not one each); SendAsync only queues its frame, and a
// short-lived goroutine writes the queue. Close stops both goroutines and
// returns after they exited.
//
// Callbacks in Options run on the reader goroutine, one at a time (except
// OnError, which housekeep may call too, and the first OnLogin and
// OnReconnect events of failed first attempts, which run before Dial
// returns). They must not block on the client: no Send,
// Request, Logout or Close from a callback (SendAsync is fine).
package client
