// Package cluster runs a tandem node as a protoactor-go cluster member:
// membership from hashicorp/memberlist (Provider), placement of virtual
// actors (user, group) by our own identity lookup (Lookup), and a small
// builder (Start, Member) that wires both with remoting.
//
// # Data flow
//
// Gateways and actors address a user or group by identity and kind
// (Member.Request, Member.Send, or protoactor's Cluster.Request). The
// caller's node hashes the identity over the members that support the kind
// (rendezvous hashing) and asks the owner's placement actor for the PID;
// the owner activates the identity if no member has it yet. memberlist
// tells the Provider who is alive; the Provider hands protoactor the full
// member set, protoactor publishes a ClusterTopology, and the Lookup
// switches to the new view and purges the PID cache.
//
// # Placement guarantees
//
// The owner activates only after checking, under its current view, that it
// owns the identity, and after every other member supporting the kind has
// confirmed it holds no activation and sees the owner as a member. Hence
// no identity is activated twice unless a member's view dropped another
// live member (partition, false failure detection); the store's epoch
// fence keeps a user's log single-writer in that case. An activation whose
// node stops owning it after a join keeps serving until it passivates.
// When its member leaves or dies, the next request activates it on the
// new owner.
//
// # Security and readiness
//
// Cluster keys (Options.Keys, ParseKeys; auth.go) authenticate all
// traffic between members: memberlist encrypts and authenticates gossip
// with them (keyring: the first key encrypts, all decrypt), and the actor
// remote runs over mutual TLS whose CA is derived from each key and the
// cluster name (HKDF → ed25519); each member issues itself a short-lived
// leaf from its primary key's CA and accepts peers whose leaf chains to
// the CA of any of its keys. Without keys both listeners must be on
// loopback and Seeds must be empty (Options.Validate).
//
// Member.Ready says whether a member is in the cluster it was configured
// for: one with seeds is not ready until a compatible peer has been in its
// topology. Start fails (ErrRefused) when a reachable seed keeps refusing
// the gossip handshake (another key or cluster name), and (ErrMismatch)
// when at its first join at least as many peers disagree on Options.Agree
// (e.g. the JWT secret; only fingerprints travel in the node meta) as
// agree; members always leave a member that disagrees out of their
// topology.
//
// # Activations
//
// Kinds are built with NewKind (this package's, not protoactor's). A
// kind's actor receives *cluster.ClusterInit (protoactor's) as its first
// message after Started; its Identity field is the actor's identity
// (protoactor's cluster.GetClusterIdentity(ctx) does not work here: no
// context extension is set). To passivate, an actor stops itself
// (ctx.Poison(ctx.Self()) or ctx.Stop): its node's placement actor, its
// parent, forgets it on Terminated, and the node's PID cache with it.
//
// # Concurrency
//
// Member, Provider and Lookup methods may be called concurrently (Ready
// never blocks); Start and Stop block (about 1 s and 2 s, protoactor
// sleeps; a Start refused by its seeds about 3 s). Member.Request,
// Member.PID and Lookup.GetContext block up to their deadline and must
// not be called from memberlist callbacks. Provider callbacks from
// memberlist never block and never call into protoactor: they signal one
// goroutine that the Provider owns and waits for on Shutdown, as it does
// for its join goroutine. The placement actor never blocks: its probes
// complete through ReenterAfter. Options.OnBlocked runs on the Provider's
// goroutine and must not block.
package cluster
