package client

import (
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/tandem-im/tandem/proto/wire"
)

// drainAvoid is how long an endpoint that said it is going away is passed
// over while another one is available.
const drainAvoid = 30 * time.Second

// endpoints chooses which gateway URL to dial next. It is pure (the
// caller passes the time) and owned by the goroutine that connects: Dial's
// caller, then Client.run.
type endpoints struct {
	urls  []string
	next  int         // index picked next, unless it is avoided
	avoid []time.Time // per endpoint: pass it over until then
}

func newEndpoints(urls []string, start int) *endpoints {
	return &endpoints{urls: urls, next: start % len(urls), avoid: make([]time.Time, len(urls))}
}

// pick returns the index of the endpoint to try now: the next one in
// rotation that is not avoided (the next one anyway if all are), and moves
// the rotation past it.
func (e *endpoints) pick(now time.Time) int {
	i := e.next
	for k := range len(e.urls) {
		j := (e.next + k) % len(e.urls)
		if !now.Before(e.avoid[j]) {
			i = j
			break
		}
	}
	e.next = (i + 1) % len(e.urls)
	return i
}

// again makes i the next one picked (the node is fine; only the session
// ended).
func (e *endpoints) again(i int) { e.next = i }

// goingAway records that endpoint i said it is draining or stopping: it
// is passed over until now+drainAvoid while another one is available.
func (e *endpoints) goingAway(i int, now time.Time) {
	e.avoid[i] = now.Add(drainAvoid)
	if e.next == i {
		e.next = (i + 1) % len(e.urls)
	}
}

// startIndex is where a device starts in a list of n endpoints: a hash of
// its device ID and static token, so devices spread and one device starts
// at the same place every time; at random without a static token.
func startIndex(o *Options, n int) int {
	if n <= 1 {
		return 0
	}
	if o.Token == "" {
		return rand.N(n)
	}
	h := fnv.New64a()
	h.Write([]byte(o.DeviceID))
	h.Write([]byte{0})
	h.Write([]byte(o.Token))
	return int(h.Sum64() % uint64(n))
}

// closeCode is the WebSocket close code a session ended with: the Kick's,
// else the server's close frame's, else 0 (the connection just broke).
func closeCode(kick *wire.Kick, err error) int {
	if c := kick.GetCloseCode(); c != 0 {
		return int(c)
	}
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		return int(ce.Code)
	}
	return 0
}

// goingAwayCode: the node is draining or stopping; reconnect elsewhere.
func goingAwayCode(code int) bool {
	return code == wire.CloseShutdown
}

// sameNodeCode: the node is fine but dropped this session's state (its
// user actor moved, restarted, or missed our heartbeats): log in again
// there first.
func sameNodeCode(code int) bool {
	return code == wire.CloseSessionLost || code == wire.CloseHeartbeatTimeout
}
