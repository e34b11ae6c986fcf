package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/tandem-im/tandem/internal/deadline"
)

// requestContext replaces protoactor's DefaultContext (the cluster's
// ContextProducer), so that c.Request and c.RequestFuture:
//   - bound the lookup and every retry by the caller's timeout
//     (cluster.WithTimeout, else the cluster's RequestTimeout) in total,
//     instead of up to three full timeouts plus an unbounded lookup;
//   - back off between retries (protoactor's RetryAction sleeps
//     nanoseconds);
//   - keep no process-global state (protoactor's RequestFuture captures
//     the first cluster's options for the whole process);
//   - make no timer per request: requests with the same timeout share a
//     deadline (internal/deadline), so one may wait up to a tenth of its
//     timeout (at most a second) longer than asked.
//
// RetryCount and RetryAction options are ignored: requests retry on
// timeouts and dead letters until the deadline.
type requestContext struct {
	c         *pcluster.Cluster
	l         *Lookup
	deadlines deadline.Set // shared per timeout: no timer per request
}

var _ pcluster.Context = (*requestContext)(nil)

func (r *requestContext) Request(identity, kind string, message any, opts ...pcluster.GrainCallOption) (any, error) {
	// Without options, the defaults NewGrainCallOptions would make (an
	// object and a closure per request).
	timeout, sender := r.c.Config.RequestTimeoutTime, actor.SenderContext(r.c.ActorSystem.Root)
	if len(opts) > 0 {
		cfg := pcluster.NewGrainCallOptions(r.c)
		for _, o := range opts {
			o(cfg)
		}
		timeout, sender = cfg.Timeout, cfg.Context
	}
	ctx, cancel := r.deadlines.Get(timeout)
	defer cancel()
	return r.l.request(ctx, sender, pcluster.NewClusterIdentity(identity, kind), message)
}

// Request sends message to the activation of identity and waits for its
// answer until ctx is done, as c.Request does but on the caller's context:
// a caller that has a deadline already (a login, a frame) saves a timer
// and a context per request. Without a deadline, or on a cluster whose
// identity lookup is not this package's, it is c.Request with c's
// request timeout.
func Request(ctx context.Context, c *pcluster.Cluster, identity, kind string, message any) (any, error) {
	l, ok := c.Config.IdentityLookup.(*Lookup)
	if _, has := ctx.Deadline(); !ok || !has {
		return c.Request(identity, kind, message)
	}
	return l.request(ctx, c.ActorSystem.Root, pcluster.NewClusterIdentity(identity, kind), message)
}

// RequestFuture resolves the identity within the call timeout and sends
// one request; the future is not retried.
func (r *requestContext) RequestFuture(identity, kind string, message any, opts ...pcluster.GrainCallOption) (*actor.Future, error) {
	cfg := pcluster.NewGrainCallOptions(r.c)
	for _, o := range opts {
		o(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	pid, err := r.l.resolve(ctx, pcluster.NewClusterIdentity(identity, kind))
	if err != nil {
		return nil, err
	}
	return cfg.Context.RequestFuture(pid, message, cfg.Timeout), nil
}

// request sends message to ci and waits for the answer until ctx is done
// (ctx must carry a deadline), retrying on timeouts and dead letters: the
// activation may have passivated or its member died, and the next lookup
// finds its successor.
func (l *Lookup) request(ctx context.Context, sender actor.SenderContext, ci *pcluster.ClusterIdentity, message any) (any, error) {
	var last error
	for attempt := 0; ; attempt++ {
		if res, err, done := l.requestLocal(ctx, sender, ci, message); done {
			return res, err
		} else if err != nil {
			last = err
			if !l.pause(ctx, attempt) {
				return nil, fmt.Errorf("%w: request %s after %d attempts: %w", ErrTimeout, ci.AsKey(), attempt+1, last)
			}
			continue
		}
		pid, err := l.resolve(ctx, ci)
		if err != nil {
			return nil, err
		}
		remaining, err := remainingOf(ctx, ci)
		if err != nil {
			return nil, err
		}
		var res any
		if pid.Address == l.self {
			res, err = l.replies.request(ctx, sender, pid, message)
		} else {
			res, err = sender.RequestFuture(pid, message, remaining).Result()
		}
		if err == nil {
			return res, nil
		}
		if !retriable(err) {
			return nil, fmt.Errorf("cluster: request %s: %w", ci.AsKey(), err)
		}
		l.cur.Load().forget(ci, pid)
		last = err
		if !l.pause(ctx, attempt) {
			return nil, fmt.Errorf("%w: request %s after %d attempts: %w", ErrTimeout, ci.AsKey(), attempt+1, last)
		}
	}
}

// remainingOf is the time left of ctx (which carries a deadline) for a
// request to ci, or ErrTimeout if none is.
func remainingOf(ctx context.Context, ci *pcluster.ClusterIdentity) (time.Duration, error) {
	dl, _ := ctx.Deadline()
	if remaining := time.Until(dl); remaining > 0 {
		return remaining, nil
	}
	return 0, fmt.Errorf("%w: request %s: %w", ErrTimeout, ci.AsKey(), context.DeadlineExceeded)
}

// pause waits backoff(attempt) before a retry; false if ctx ended first.
func (l *Lookup) pause(ctx context.Context, attempt int) bool {
	timer := time.NewTimer(backoff(attempt))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// activateAndRequest asks this node's placement actor to find or start
// an activation of ci and hand it message as a request from the sender
// (a future): one request, and one wake-up of the caller, where a lookup
// and then a request take two. Local only: it never crosses the wire.
type activateAndRequest struct {
	ci      *pcluster.ClusterIdentity
	message any
}

// requestLocal is request's first try for an identity this node owns and
// has no cached PID for (an activation, typically): through the placement
// actor, which forwards message once it has the PID. done reports an
// answer or a final error; err without done is worth a retry (the
// placement refused — the topology moved — or the activation was gone).
func (l *Lookup) requestLocal(ctx context.Context, sender actor.SenderContext, ci *pcluster.ClusterIdentity, message any) (res any, err error, done bool) {
	if l.c == nil || l.closed.Load() {
		return nil, ErrStopped, true
	}
	t := l.cur.Load()
	if _, ok := l.cachedGet(t, ci); ok || t.v.owner(ci.Kind, ci.Identity) != l.self {
		return nil, nil, false
	}
	if _, err := remainingOf(ctx, ci); err != nil {
		return nil, err, true
	}
	l.forwarded.Add(1)
	res, err = l.replies.request(ctx, sender, l.placement, &activateAndRequest{ci: ci, message: message})
	switch r, refused := res.(*pcluster.ActivationResponse); {
	case err == nil && refused && r.Failed:
		return nil, fmt.Errorf("%w by this node", errRefused), false
	case err == nil:
		return res, nil, true
	case retriable(err):
		return nil, err, false
	}
	return nil, fmt.Errorf("cluster: request %s: %w", ci.AsKey(), err), true
}

// resolve returns the cached PID of ci (pidcache.go), or looks it up and
// caches it unless the topology changed meanwhile (the new topology has a
// cache of its own, and the answer may already be stale). Requests and Get
// share the cache: a request that finds an activation gone drops its entry
// and the retry caches the successor, which Get then hands out too.
func (l *Lookup) resolve(ctx context.Context, ci *pcluster.ClusterIdentity) (*actor.PID, error) {
	if l.c == nil || l.closed.Load() {
		return nil, ErrStopped
	}
	t := l.cur.Load()
	if pid, ok := l.cachedGet(t, ci); ok {
		return pid, nil
	}
	pid, err := l.GetContext(ctx, ci)
	if err != nil {
		return nil, err
	}
	if l.cur.Load() == t {
		l.cachePut(t, ci, pid)
	}
	return pid, nil
}

func retriable(err error) bool {
	return errors.Is(err, actor.ErrTimeout) || errors.Is(err, actor.ErrDeadLetter) ||
		errors.Is(err, remote.ErrTimeout) || errors.Is(err, remote.ErrDeadLetter)
}
