// Package webhook tells the app backend about online status and device
// sessions (SPEC.md "Device sessions and kick policy", DESIGN.md §8): it
// POSTs signed JSON events to one configured URL, retrying with back-off.
//
// # Where it sits
//
// The user actors decide logins, logouts, heartbeat timeouts and kicks;
// they (or the node wiring that observes them) call Publish with
//
//   - user.online when a user's first session begins and user.offline
//     when the last one ends;
//   - device.login and device.logout for every session, the logout reason
//     saying why (logout, heartbeat timeout, lost connection);
//   - device.kicked when a session is ended by a newer login, an admin or
//     the policy, with the wire Kick.Reason name as reason and, for a login
//     conflict, the new device in kicked_by.
//
// The node owns the Sender: it builds it with New from its config, runs
// Run(ctx) for the node's lifetime, and exports Stats as metrics. The app
// backend receives the events; it can check them with Verify. A body:
//
//	{"id":"5f0c3a9e8b7d41c2a6e4f1b093d7c285","type":"device.kicked",
//	 "user_id":"alice",
//	 "device":{"device_id":"ipad-1","platform":"pad","tag":"","login_id":"l-17",
//	           "since_ms":1767225600000,"login_ext":"","app_version":"3.2.0"},
//	 "kicked_by":{"device_id":"ipad-2","platform":"pad","tag":"","login_id":"l-18",
//	           "since_ms":1767229200000,"login_ext":"Alice's new iPad","app_version":"3.3.0"},
//	 "reason":"LOGIN_CONFLICT","at_ms":1767229200123,"node":"node-a"}
//
// # Signature
//
// Every attempt carries
//
//	Content-Type: application/json
//	X-Tandem-Event-Id: <the body's id>
//	X-Tandem-Timestamp: <Unix seconds of this attempt>
//	X-Tandem-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
// The timestamp is signed with the body, so a captured request cannot be
// replayed outside the receiver's skew window; each retry is signed
// afresh with its own timestamp. The event ID is the same on every retry
// of an event: receivers de-duplicate on the body's "id" (the header copy
// is not signed). Verify checks the signature in constant time, then the
// skew.
//
// # Delivery
//
// A 2xx answer delivers the event. 5xx, 429, 408, network errors and
// attempts longer than Config.Timeout are retried, waiting BackoffMin
// doubled per attempt up to BackoffMax, with jitter (a Retry-After header
// is honoured up to BackoffMax), until MaxAttempts attempts have been
// made; then the event is counted Failed. Any other status (other 4xx;
// 3xx, as redirects are not followed) is counted Rejected at once.
// Delivery is at least once: a receiver that times out after acting on
// an event sees it again.
//
// # Ordering
//
// The queue is split into Config.Workers shards, each drained in order by
// one worker goroutine; a user's events always hash to the same shard. So
// one node delivers a user's events in Publish order. The chosen
// trade-off: an event being retried holds back every later event of its
// shard (other users' too) until it is delivered or given up, rather than
// letting newer events overtake it; a receiver that is down for one event
// is usually down for all, and the bounded queue turns a long outage into
// counted drops instead of memory growth. An event that is given up
// leaves a gap, and events published from two nodes (a user actor that
// moved) may interleave: receivers that need status should order by
// at_ms and treat the latest as the truth.
//
// # Concurrency contract
//
// Publish and Stats may be called concurrently from any goroutine, before,
// during or after Run. Publish never blocks and never touches the
// network: it copies the event into a bounded queue shard
// (Config.QueueSize in all), or drops and counts it when the shard is full
// or the Sender has stopped (logging the 1st, 2nd, 4th, 8th... drop). Run may
// be called once; it owns the worker goroutines. When its context ends it
// stops accepting events, lets the workers deliver what is queued or in
// flight for at most Config.DrainTimeout, cancels and counts as Abandoned
// whatever is left, and returns only after every goroutine it started has
// exited. A Sender with an empty URL, or a nil *Sender, is disabled:
// Publish returns false and Run just waits for its context.
package webhook
