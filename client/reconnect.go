package client

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// ReconnectEvent is one step of an automatic reconnect, for observability
// (Options.OnReconnect). None of them is an error the app must handle.
type ReconnectEvent struct {
	Kind ReconnectKind
	// URL is the endpoint concerned: the one that dropped, the one tried,
	// or the one now serving.
	URL string
	// Attempt counts the attempts since the drop, from 1 (ReconnectFailed
	// and Reconnected; 0 for ReconnectDropped).
	Attempt int
	// CloseCode is why the connection ended (ReconnectDropped, and
	// ReconnectFailed when a node refused with one): the Kick's close code,
	// else the server's close frame's, 0 if the connection just broke.
	CloseCode int
	// Kick is the Kick (may_reconnect true) that came before the close, if
	// any (ReconnectDropped).
	Kick *wire.Kick
	// Err says what happened (ReconnectDropped, ReconnectFailed).
	Err error
}

// ReconnectKind names the step.
type ReconnectKind uint8

const (
	// ReconnectDropped: the logged-in connection ended; reconnecting.
	ReconnectDropped ReconnectKind = iota + 1
	// ReconnectFailed: an attempt failed; the next one follows after a
	// back-off, on the next endpoint.
	ReconnectFailed
	// Reconnected: logged in again; resends and the catch-up follow.
	Reconnected
)

func (k ReconnectKind) String() string {
	switch k {
	case ReconnectDropped:
		return "dropped"
	case ReconnectFailed:
		return "failed"
	case Reconnected:
		return "reconnected"
	}
	return fmt.Sprintf("ReconnectKind(%d)", uint8(k))
}

func (c *Client) onReconnect(ev ReconnectEvent) {
	if c.opts.OnReconnect != nil {
		c.opts.OnReconnect(ev)
	}
}

// run owns the reading side: it reads s until it drops, then reconnects
// (or stops the client) and reads the next session.
func (c *Client) run(s *session) {
	flaps := 0 // sessions in a row that died young: back off from further
	for s != nil {
		start := time.Now()
		err := c.readLoop(s)
		kick := c.drop(s)
		if reason := c.stopReason(kick, err); reason != nil {
			c.finish(reason)
			return
		}
		if time.Since(start) < c.opts.BackoffMax {
			flaps++
		} else {
			flaps = 0
		}
		c.mu.Lock()
		if s.why != nil {
			err = s.why
		}
		c.mu.Unlock()
		code := closeCode(kick, err)
		switch {
		case goingAwayCode(code):
			c.eps.goingAway(c.cur, time.Now())
		case sameNodeCode(code):
			c.eps.again(c.cur)
		}
		c.log.Info("connection lost, reconnecting", "url", s.url, "close_code", code, "err", err)
		c.onReconnect(ReconnectEvent{Kind: ReconnectDropped, URL: s.url, CloseCode: code, Kick: kick, Err: err})
		s = c.redial(flaps)
	}
}

func (c *Client) stopReason(kick *wire.Kick, err error) error {
	c.mu.Lock()
	stopping := c.stopping
	c.mu.Unlock()
	switch {
	case stopping || c.ctx.Err() != nil:
		return ErrClosed
	case kick != nil && !kick.GetMayReconnect():
		return &KickError{Kick: kick}
	case !c.opts.Reconnect:
		return fmt.Errorf("%w: %w", ErrConnectionLost, err)
	}
	return nil
}

// redial reconnects with back-off, rotating through the endpoints; flaps
// raises the first delay. It returns nil if the client stopped meanwhile.
// The back-off grows once per round through the endpoints, so a node that
// is down costs one short delay before the next one is tried.
func (c *Client) redial(flaps int) *session {
	n := len(c.eps.urls)
	for attempt := 1; ; attempt++ {
		t := time.NewTimer(c.backoff(flaps + (attempt-1)/n))
		select {
		case <-c.ctx.Done():
			t.Stop()
			c.finish(ErrClosed)
			return nil
		case <-t.C:
		}
		i := c.eps.pick(time.Now())
		url := c.eps.urls[i]
		s, ok, err := c.connect(c.ctx, url, true)
		if err == nil {
			if !c.install(s, ok) {
				s.close()
				c.finish(ErrClosed)
				return nil
			}
			c.cur = i
			c.st.reconnects.Add(1)
			c.log.Info("reconnected", "url", url, "attempt", attempt, "last_seq", ok.GetLastSeq())
			c.onReconnect(ReconnectEvent{Kind: Reconnected, URL: url, Attempt: attempt})
			if c.opts.OnLogin != nil {
				c.opts.OnLogin(ok)
			}
			return s
		}
		if c.ctx.Err() != nil {
			c.finish(ErrClosed)
			return nil
		}
		if c.fatalLogin(err) {
			c.finish(err)
			return nil
		}
		code := closeCode(nil, err)
		if goingAwayCode(code) {
			c.eps.goingAway(i, time.Now())
		}
		c.log.Info("reconnect attempt failed", "url", url, "attempt", attempt, "err", err)
		c.onReconnect(ReconnectEvent{Kind: ReconnectFailed, URL: url, Attempt: attempt, CloseCode: code, Err: err})
	}
}

// fatalLogin: the server refused the login for a reason retrying won't fix
// (LOGIN_CONFLICT: the slot is taken and a reconnect never kicks).
func (c *Client) fatalLogin(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false // network, timeouts, a node going away
	}
	if e.Temporary() || (e.Code() == wire.CodeTokenExpired && c.opts.TokenFunc != nil) {
		return false
	}
	return true
}

// backoff is exponential from BackoffMin to BackoffMax with jitter
// (uniform in [d/2, d]).
func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.BackoffMin << min(attempt, 20)
	if d <= 0 || d > c.opts.BackoffMax {
		d = c.opts.BackoffMax
	}
	half := d / 2
	return half + rand.N(half+1)
}
