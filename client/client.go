package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// Client is one device session that survives reconnects. Create it with
// Dial; it is safe for concurrent use.
type Client struct {
	// Set by Dial, then read-only.
	opts      Options
	log       *slog.Logger
	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // run and housekeep
	wake      chan struct{}  // cap 1: housekeep has a new session to flush
	done      chan struct{}  // closed when the client stopped for good
	closeOnce sync.Once

	// Only the goroutine that connects: Dial's caller, then run.
	eps *endpoints
	cur int // index of the endpoint of the latest session

	nextID atomic.Uint64
	st     counters

	mu sync.Mutex
	// sess is the logged-in connection, nil while (re)connecting; up is
	// closed while sess is set and replaced when it drops.
	sess *session
	up   chan struct{}
	url  string // endpoint of the latest session
	// In-flight requests by frame id. sends survive reconnects (resent
	// with the same client message ID); calls fail when their session
	// drops.
	sends map[uint64]*Pending
	calls map[uint64]*call
	// Receive side: only the reader goroutine changes seq and delivered.
	seq           *seqBuffer
	delivered     uint64 // highest seq OnEntry returned for, contiguous
	acked         uint64 // highest seq sent in a CursorAck
	pullID        uint64 // outstanding gap pull, 0 if none
	pullAt        time.Time
	pullNotBefore time.Time
	sender        string // the token's subject, for entries of own sends
	loginOk       *wire.LoginOk
	kick          *wire.Kick
	stopping      bool  // Close or Logout began: a drop is not reconnected
	err           error // why the client stopped; set once, with done
	entries       ring[*wire.Entry]
	transients    ring[*wire.Message]
	changed       chan struct{} // closed and replaced when the rings grow
}

// Stats are counters since Dial.
type Stats struct {
	Reconnects    uint64 // successful automatic reconnects
	Delivered     uint64 // entries handed to OnEntry
	Duplicates    uint64 // entries dropped because their seq was delivered or held already
	GapPulls      uint64 // SyncRequests sent to fill gaps
	Resent        uint64 // Send frames written again on a new connection
	Acks          uint64 // SendAcks received
	DuplicateAcks uint64 // SendAcks with duplicate set
	CursorAcks    uint64 // CursorAck frames written
}

type counters struct {
	reconnects, delivered, duplicates, gapPulls, resent, acks, duplicateAcks, cursorAcks atomic.Uint64
}

// call is an in-flight Request.
type call struct {
	sess  *session
	done  chan struct{}
	reply *wire.Frame
	err   error
}

func (cl *call) finish(f *wire.Frame, err error) {
	cl.reply, cl.err = f, err
	close(cl.done)
}

// Dial connects, logs in and returns after LoginOk; the catch-up pages
// then arrive in the background (WaitCaughtUp). ctx bounds the first
// connection only; the client lives until Close, Logout, or a reason to
// stop (Err).
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts:       opts,
		log:        opts.Logger.With("device_id", opts.DeviceID),
		ctx:        cctx,
		cancel:     cancel,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		up:         make(chan struct{}),
		sends:      make(map[uint64]*Pending),
		calls:      make(map[uint64]*call),
		seq:        newSeqBuffer(maxHeld),
		entries:    newRing[*wire.Entry](opts.KeepEntries),
		transients: newRing[*wire.Message](opts.KeepEntries),
		changed:    make(chan struct{}),
	}
	if opts.HasCursor {
		c.seq.setBase(opts.Cursor)
		c.delivered, c.acked = opts.Cursor, opts.Cursor
	}
	c.eps = newEndpoints(opts.URLs, startIndex(&opts, len(opts.URLs)))
	s, ok, err := c.dialFirst(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	c.install(s, ok)
	if c.opts.OnLogin != nil {
		c.opts.OnLogin(ok)
	}
	c.wg.Go(func() { c.run(s) })
	c.wg.Go(c.housekeep)
	return c, nil
}

// dialFirst makes the first login, trying each endpoint once from the
// device's start index until one accepts. A login the server refuses for
// good (a bad token) ends it at once.
func (c *Client) dialFirst(ctx context.Context) (*session, *wire.LoginOk, error) {
	var errs []error
	for attempt := 1; attempt <= len(c.eps.urls); attempt++ {
		i := c.eps.pick(time.Now())
		s, ok, err := c.connect(ctx, c.eps.urls[i], false)
		if err == nil {
			c.cur = i
			return s, ok, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil || c.fatalLogin(err) || attempt == len(c.eps.urls) {
			break
		}
		if goingAwayCode(closeCode(nil, err)) {
			c.eps.goingAway(i, time.Now())
		}
		c.onReconnect(ReconnectEvent{Kind: ReconnectFailed, URL: c.eps.urls[i], Attempt: attempt, Err: err})
	}
	if len(errs) == 1 {
		return nil, nil, errs[0]
	}
	return nil, nil, errors.Join(errs...)
}

// Close ends the client without a Logout: it acks the cursor, closes the
// socket (abruptly, like a dropped device: the server fires the will),
// stops every goroutine and fails what is still in flight with ErrClosed.
// It must not be called from a callback. It is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.stopping = true
		s := c.sess
		c.mu.Unlock()
		if s != nil {
			c.flushAck(s)
			s.close()
		}
		c.cancel()
		c.wg.Wait()
		c.finish(ErrClosed)
	})
	return nil
}

// Logout acks the cursor, sends Logout (the server discards the will and
// answers Ok, then closes), and closes the client.
func (c *Client) Logout(ctx context.Context) error {
	defer c.Close()
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	s, err := c.waitSession(ctx)
	if err != nil {
		return fmt.Errorf("client: logout: %w", err)
	}
	c.flushAck(s)
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	if _, err := c.requestOn(ctx, s, &wire.Frame{Body: &wire.Frame_Logout{Logout: &wire.Logout{}}}); err != nil {
		return fmt.Errorf("client: logout: %w", err)
	}
	return nil
}

// Request sends f with a fresh id (f.Id is overwritten) and waits for the
// reply. An Error reply is returned as the frame and an *Error. If the
// client is reconnecting, Request waits for the connection; if it drops
// before the reply, Request fails with ErrConnectionLost (it is not
// resent). Without a deadline in ctx, RequestTimeout applies.
func (c *Client) Request(ctx context.Context, f *wire.Frame) (*wire.Frame, error) {
	ctx, cancel := c.requestContext(ctx)
	defer cancel()
	s, err := c.waitSession(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: request: %w", err)
	}
	return c.requestOn(ctx, s, f)
}

// Ping sends a Ping and waits for the Pong.
func (c *Client) Ping(ctx context.Context) (*wire.Pong, error) {
	f, err := c.Request(ctx, &wire.Frame{Body: &wire.Frame_Ping{Ping: &wire.Ping{}}})
	if err != nil {
		return nil, err
	}
	p := f.GetPong()
	if p == nil {
		return nil, fmt.Errorf("client: ping: unexpected reply %T", f.GetBody())
	}
	return p, nil
}

// LoginOk is the answer to the latest successful login.
func (c *Client) LoginOk() *wire.LoginOk {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loginOk
}

// WaitCaughtUp returns once the current connection's catch-up is over (the
// SyncPage with has_more false arrived and its entries were delivered).
// While the client reconnects it waits for the next connection's.
func (c *Client) WaitCaughtUp(ctx context.Context) error {
	for {
		c.mu.Lock()
		s, up, err := c.sess, c.up, c.err
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if s == nil {
			select {
			case <-up:
			case <-c.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		select {
		case <-s.caught:
			return nil
		case <-s.gone:
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Cursor is the highest seq delivered contiguously to OnEntry (or given as
// Options.Cursor, or set by the server's compensation window).
func (c *Client) Cursor() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.delivered
}

// URL is the endpoint of the current connection (the last one while
// reconnecting).
func (c *Client) URL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.url
}

// Connected reports whether a logged-in connection is up.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil
}

// Unacked is the number of sends waiting for their SendAck.
func (c *Client) Unacked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sends)
}

// Kicked is the last Kick the server sent (one that allowed a reconnect
// included), or nil.
func (c *Client) Kicked() *wire.Kick {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kick
}

// Done is closed when the client stopped for good (see Err).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the client stopped: ErrClosed, a *KickError, the login
// *Error that ended reconnecting, or ErrConnectionLost (wrapped) without
// Options.Reconnect. Nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	return Stats{
		Reconnects:    c.st.reconnects.Load(),
		Delivered:     c.st.delivered.Load(),
		Duplicates:    c.st.duplicates.Load(),
		GapPulls:      c.st.gapPulls.Load(),
		Resent:        c.st.resent.Load(),
		Acks:          c.st.acks.Load(),
		DuplicateAcks: c.st.duplicateAcks.Load(),
		CursorAcks:    c.st.cursorAcks.Load(),
	}
}

// ---------------------------------------------------------------- connection

// connect dials url and logs in. It runs on Dial's caller, then on run.
func (c *Client) connect(ctx context.Context, url string, reconnect bool) (*session, *wire.LoginOk, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	token := c.opts.Token
	if c.opts.TokenFunc != nil {
		t, err := c.opts.TokenFunc(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("client: get token: %w", err)
		}
		token = t
	}
	s, err := dialSession(ctx, url, c.opts.JSON, c.opts.TLSConfig, c.opts.RequestTimeout)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, s.close)
	c.mu.Lock()
	hasCursor, cursor := c.seq.based, c.seq.cursor
	c.mu.Unlock()
	login := &wire.Frame{Id: c.newID(), Body: &wire.Frame_Login{Login: &wire.Login{
		Token:      token,
		DeviceId:   c.opts.DeviceID,
		Platform:   c.opts.Platform,
		Tag:        c.opts.Tag,
		HasCursor:  hasCursor,
		Cursor:     cursor,
		Reconnect:  reconnect,
		NoKick:     c.opts.NoKick,
		LoginExt:   c.opts.LoginExt,
		AppVersion: c.opts.AppVersion,
	}}}
	f, err := c.loginExchange(s, login)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		s.close()
		return nil, nil, fmt.Errorf("client: login: %w", err)
	}
	switch b := f.GetBody().(type) {
	case *wire.Frame_LoginOk:
		c.mu.Lock()
		c.sender = tokenSubject(token)
		c.mu.Unlock()
		return s, b.LoginOk, nil
	case *wire.Frame_Error:
		s.close()
		return nil, nil, fmt.Errorf("client: login: %w", &Error{b.Error})
	default:
		s.close()
		return nil, nil, fmt.Errorf("client: login: unexpected reply %T", b)
	}
}

func (c *Client) loginExchange(s *session, login *wire.Frame) (*wire.Frame, error) {
	if err := s.write(login); err != nil {
		return nil, err
	}
	return s.readFrame()
}

// install makes s the live session after its LoginOk. It reports false if
// the client is stopping.
func (c *Client) install(s *session, ok *wire.LoginOk) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return false
	}
	s.loginOk = ok
	s.pingAt = time.Now()
	c.loginOk = ok
	c.seq.reset()
	if from := ok.GetCompensationFromSeq(); from > 0 {
		// No cursor, or one the server can't serve: the log restarts at
		// the compensation window for this device.
		c.seq.setBase(from - 1)
		c.delivered, c.acked = from-1, from-1
	}
	c.pullID = 0
	c.pullNotBefore = time.Time{}
	c.sess = s
	c.url = s.url
	close(c.up)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

// drop forgets s after its reader stopped and fails what can't survive it.
func (c *Client) drop(s *session) *wire.Kick {
	s.close()
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
		c.up = make(chan struct{})
	}
	var calls []*call
	for id, cl := range c.calls {
		if cl.sess == s {
			delete(c.calls, id)
			calls = append(calls, cl)
		}
	}
	var lost []*Pending
	for id, p := range c.sends {
		if p.transient && p.sess == s { // never retried
			delete(c.sends, id)
			lost = append(lost, p)
		}
	}
	c.pullID = 0
	kick := s.kick
	c.mu.Unlock()
	for _, cl := range calls {
		cl.finish(nil, ErrConnectionLost)
	}
	for _, p := range lost {
		p.finish(nil, ErrConnectionLost)
	}
	return kick
}

// finish stops the client for good with err and fails what is in flight.
func (c *Client) finish(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	c.stopping = true
	sends, calls := c.sends, c.calls
	c.sends, c.calls = make(map[uint64]*Pending), make(map[uint64]*call)
	close(c.done)
	c.notifyLocked()
	c.mu.Unlock()
	c.log.Debug("client stopped", "err", err)
	for _, p := range sends {
		p.finish(nil, err)
	}
	for _, cl := range calls {
		cl.finish(nil, err)
	}
}

// waitSession returns the live session, waiting while reconnecting.
func (c *Client) waitSession(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, up, err, stopping := c.sess, c.up, c.err, c.stopping
		c.mu.Unlock()
		switch {
		case err != nil:
			return nil, err
		case s != nil:
			return s, nil
		case stopping:
			return nil, ErrClosed
		}
		select {
		case <-up:
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Client) requestOn(ctx context.Context, s *session, f *wire.Frame) (*wire.Frame, error) {
	f.Id = c.newID()
	cl := &call{sess: s, done: make(chan struct{})}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	if c.sess != s {
		c.mu.Unlock()
		return nil, ErrConnectionLost
	}
	c.calls[f.Id] = cl
	c.mu.Unlock()
	if err := s.write(f); err != nil {
		c.forgetCall(f.Id)
		return nil, fmt.Errorf("client: request: %w", err)
	}
	select {
	case <-cl.done:
		if cl.err != nil {
			return nil, cl.err
		}
		if e := cl.reply.GetError(); e != nil {
			return cl.reply, &Error{e}
		}
		return cl.reply, nil
	case <-ctx.Done():
		c.forgetCall(f.Id)
		return nil, fmt.Errorf("client: request: %w", ctx.Err())
	}
}

func (c *Client) forgetCall(id uint64) {
	c.mu.Lock()
	delete(c.calls, id)
	c.mu.Unlock()
}

func (c *Client) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.opts.RequestTimeout)
}

func (c *Client) newID() uint64 { return c.nextID.Add(1) }

func (c *Client) onError(err error) {
	c.log.Warn("client problem", "err", err)
	if c.opts.OnError != nil {
		c.opts.OnError(err)
	}
}

// ---------------------------------------------------------------- housekeeping

// housekeep writes on the current session what nobody else would: resends
// after a reconnect, batched cursor acks, pings, retried gap pulls.
func (c *Client) housekeep() {
	t := time.NewTicker(c.opts.AckInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.done:
			return
		case <-c.wake:
		case <-t.C:
		}
		c.mu.Lock()
		s := c.sess
		c.mu.Unlock()
		if s == nil {
			continue
		}
		c.flushSends(s)
		c.flushAck(s)
		c.tickPull(s)
		c.tickPing(s)
	}
}

// flushAck acks the delivered cursor if it moved.
func (c *Client) flushAck(s *session) {
	c.mu.Lock()
	d := c.delivered
	if !c.seq.based || d <= c.acked {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if err := s.write(&wire.Frame{Id: c.newID(), Body: &wire.Frame_CursorAck{CursorAck: &wire.CursorAck{Seq: d}}}); err != nil {
		c.log.Debug("cursor ack not written", "err", err)
		return
	}
	c.st.cursorAcks.Add(1)
	c.mu.Lock()
	c.acked = max(c.acked, d)
	c.mu.Unlock()
}

func (c *Client) tickPing(s *session) {
	now := time.Now()
	var (
		f    *wire.Frame
		dead bool
	)
	c.mu.Lock()
	interval := c.pingInterval(s)
	switch {
	case c.sess != s || interval < 0:
	case s.pingID != 0:
		dead = now.Sub(s.pingAt) > c.opts.RequestTimeout
	case now.Sub(s.pingAt) >= interval:
		s.pingID = c.newID()
		s.pingAt = now
		f = &wire.Frame{Id: s.pingID, Body: &wire.Frame_Ping{Ping: &wire.Ping{}}}
	}
	c.mu.Unlock()
	if dead {
		err := fmt.Errorf("client: no pong within %s, dropping the connection", c.opts.RequestTimeout)
		c.mu.Lock()
		s.why = err
		c.mu.Unlock()
		c.log.Info("connection dead", "url", s.url, "err", err)
		s.close()
		return
	}
	if f != nil {
		if err := s.write(f); err != nil {
			c.log.Debug("ping not written", "err", err)
		}
	}
}

// pingInterval; c.mu held.
func (c *Client) pingInterval(s *session) time.Duration {
	if c.opts.PingInterval != 0 {
		return c.opts.PingInterval
	}
	if hb := s.loginOk.GetHeartbeatSeconds(); hb > 0 {
		return time.Duration(hb) * time.Second / 2
	}
	return DefaultPingInterval
}

func (c *Client) tickPull(s *session) {
	now := time.Now()
	c.mu.Lock()
	if c.pullID != 0 && now.Sub(c.pullAt) > c.opts.RequestTimeout {
		c.pullID = 0 // unanswered: try again
	}
	f := c.startPullLocked(s, now)
	c.mu.Unlock()
	c.writePull(s, f)
}

// startPullLocked returns the SyncRequest to send if a gap needs pulling
// now, and records it as in flight. c.mu held.
func (c *Client) startPullLocked(s *session, now time.Time) *wire.Frame {
	if c.sess != s || !s.caughtUp || c.pullID != 0 || !c.seq.gap() || now.Before(c.pullNotBefore) {
		return nil
	}
	c.pullID = c.newID()
	c.pullAt = now
	return &wire.Frame{Id: c.pullID, Body: &wire.Frame_Sync{Sync: &wire.SyncRequest{AfterSeq: c.seq.cursor, Limit: syncLimit}}}
}

func (c *Client) writePull(s *session, f *wire.Frame) {
	if f == nil {
		return
	}
	c.st.gapPulls.Add(1)
	if err := s.write(f); err != nil {
		c.log.Debug("gap pull not written", "err", err)
	}
}
