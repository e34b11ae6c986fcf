// Package actors holds the user and group actors (protoactor cluster kinds
// "user" and "group") and what every node runs beside them: the gateway
// actor that hands pushes and kicks to the node's sessions, the presence
// actor that answers for the node's online users, the courier that sends
// to actors by identity, and the Frontend the gateway calls.
//
// # Where it sits
//
// gateway → Frontend → user actor (by identity, wherever the cluster placed
// it) → Store (appends) and → other user / group actors (Deliver, through
// the courier) → gateway actor of whichever node holds a session → device.
// The server API calls the Runtime's blocking methods. Each actor is a
// thin shell around a pure state (state.go, group.go) whose methods return
// effects the shell performs in order (DESIGN.md §3).
//
// Any node answers for any user (ADR 0003, presence.go): every node keeps
// a table of the users whose activation lives on it and has live sessions;
// OnlineStatus, Devices and Kick ask every member's presence actor and
// merge, failing with ErrUnavailable when a member does not answer;
// transient messages and kick policy changes go to every member's presence
// actor, which hands them to its local activations. Nothing of this
// activates an offline user. Session events go out through the Publisher
// port (node adapts it to the webhook sender).
//
// # Concurrency
//
// Runtime and Frontend methods may be called concurrently after Start.
// Those taking a context block (cluster requests) and are for non-actor
// callers only: gateway connection goroutines and HTTP handlers. An actor
// never blocks on another actor: between actors everything is sent, and
// answers arrive as messages (DeliverAck); store appends are pipelined and
// complete as messages. A state (userState, groupState) is touched only by
// its actor's goroutine; the presence table is safe for concurrent use and
// each entry is written only by the activation it describes. Messages that
// cross nodes are the proto types of proto/actorpb.
package actors
