package client

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// Pending is a send waiting for its SendAck. A stored send stays pending
// across reconnects (resent with the same client message ID, so the
// server answers the original ids with duplicate set) until it is acked,
// refused with an Error, or the client stops. A transient send is never
// resent: if its connection drops it fails with ErrConnectionLost.
type Pending struct {
	// Set at creation, then read-only.
	id        uint64
	msg       *wire.Send
	transient bool
	done      chan struct{}
	once      sync.Once

	// Written once, before done is closed.
	ack *wire.SendAck
	err error

	// Guarded by Client.mu: the session it was last written on, and
	// whether it was written on an earlier one.
	sess   *session
	resent bool
}

func (p *Pending) finish(ack *wire.SendAck, err error) {
	p.once.Do(func() {
		p.ack, p.err = ack, err
		close(p.done)
	})
}

// ClientMessageID is the send's idempotency key.
func (p *Pending) ClientMessageID() string { return p.msg.GetClientMessageId() }

// Done is closed once the send is acked or failed.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Result is the outcome once Done is closed: the ack, or an *Error from
// the server, ErrConnectionLost (transient), or why the client stopped.
func (p *Pending) Result() (*wire.SendAck, error) {
	select {
	case <-p.done:
		return p.ack, p.err
	default:
		return nil, fmt.Errorf("client: send %s still pending", p.ClientMessageID())
	}
}

// Wait blocks until the send is acked or failed, or ctx ends (the send
// then stays pending).
func (p *Pending) Wait(ctx context.Context) (*wire.SendAck, error) {
	select {
	case <-p.done:
		return p.ack, p.err
	case <-ctx.Done():
		return nil, fmt.Errorf("client: send %s: %w", p.ClientMessageID(), ctx.Err())
	}
}

// Send sends m and waits for its SendAck. See SendAsync; if ctx ends
// first the send stays pending and may still be delivered.
func (c *Client) Send(ctx context.Context, m *wire.Send) (*wire.SendAck, error) {
	return c.SendAsync(m).Wait(ctx)
}

// SendAsync writes m (or queues it while reconnecting) and returns at
// once; many sends may be in flight. An empty m.ClientMessageId is filled
// in with a random one, and the first write then says first_attempt (the
// server skips its store lookup for de-duplication); set m.FirstAttempt
// yourself only for a client message ID that no process ever sent before.
// Resends after a reconnect never carry it. m belongs to the client from
// now on: don't modify it. Sends from one goroutine are written in call
// order.
func (c *Client) SendAsync(m *wire.Send) *Pending {
	if m.GetClientMessageId() == "" {
		m.ClientMessageId = NewClientMessageID()
		m.FirstAttempt = true
	}
	p := &Pending{
		id:        c.newID(),
		msg:       m,
		transient: m.GetOptions().GetTransient(),
		done:      make(chan struct{}),
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		p.finish(nil, err)
		return p
	}
	c.sends[p.id] = p
	s := c.sess
	if s == nil || !s.flushed {
		// Reconnecting, or older sends are being resent first:
		// housekeep writes it.
		c.mu.Unlock()
		return p
	}
	p.sess = s
	c.mu.Unlock()
	if err := s.writeAsync(sendFrame(p, false)); err != nil {
		// Not encodable, or the connection is gone: the send is resent
		// after the reconnect.
		c.log.Debug("send not written", "client_message_id", m.GetClientMessageId(), "err", err)
	}
	return p
}

// sendFrame is p's frame; a resend does not claim to be a first attempt.
// Only the writing goroutine reads p.resent, after setting it.
func sendFrame(p *Pending, resent bool) *wire.Frame {
	m := p.msg
	if resent && m.GetFirstAttempt() {
		m = proto.CloneOf(m)
		m.FirstAttempt = false
	}
	return &wire.Frame{Id: p.id, Body: &wire.Frame_Send{Send: m}}
}

// flushSends writes, in the order they were made, the sends not yet
// written on s, then lets SendAsync write directly. Only housekeep calls
// it.
func (c *Client) flushSends(s *session) {
	for {
		c.mu.Lock()
		if c.sess != s || s.flushed {
			c.mu.Unlock()
			return
		}
		var batch []*Pending
		for _, p := range c.sends {
			if p.sess != s {
				batch = append(batch, p)
			}
		}
		if len(batch) == 0 {
			s.flushed = true
			c.mu.Unlock()
			return
		}
		slices.SortFunc(batch, func(a, b *Pending) int { return cmp.Compare(a.id, b.id) })
		resent := 0
		again := make([]bool, len(batch))
		for i, p := range batch {
			if p.sess != nil {
				resent++
				p.resent = true
			}
			again[i] = p.resent
			p.sess = s
		}
		c.mu.Unlock()
		c.st.resent.Add(uint64(resent))
		for i, p := range batch {
			if err := s.write(sendFrame(p, again[i])); err != nil {
				return // dropped: the next session resends them
			}
		}
	}
}

// NewClientMessageID returns a random, practically unique client message
// ID (26 base32 characters, 130 bits).
func NewClientMessageID() string { return rand.Text() }

// tokenSubject reads the "sub" claim of a JWT without verifying it; "" if
// token is not a readable JWT.
func tokenSubject(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(b, &claims) != nil {
		return ""
	}
	return claims.Sub
}
