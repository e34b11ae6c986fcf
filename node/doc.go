// Package node builds one tandem node from a validated Config and runs it:
// storage, the actor system and its cluster member, the user actors, the
// WebSocket gateway and the HTTP server API. It is the only package that
// imports every other; it checks the concrete types against the small
// interfaces their consumers declare.
//
// Start order: store → actor system + cluster member (with the user kind) →
// actors runtime (gateway actor, courier) → gateway and API listeners.
// Stop order is the reverse: listeners (sessions closed with a SHUTDOWN
// kick) → runtime → cluster member (graceful leave) → store (last, so every
// acknowledged write is flushed).
package node
