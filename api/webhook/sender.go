package webhook

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrRunTwice is returned by a second call of Run.
var ErrRunTwice = errors.New("webhook: Run called more than once")

// maxResponse is how much of a response body is read (and thrown away)
// so that the connection can be reused.
const maxResponse = 64 << 10

// Sender delivers events to one URL. Publish may be called concurrently
// from any goroutine and never blocks; Run owns the delivery goroutines.
// A nil *Sender is a disabled one.
type Sender struct {
	// Set by New, then read-only.
	cfg       Config
	client    *http.Client
	ownClient bool         // client built by New: Run closes its idle connections
	shards    []chan Event // one per worker; a user's events always go to the same one

	// Publish holds mu shared while it enqueues; Run holds it exclusively
	// to start and to close the shards, so no send races a close.
	mu      sync.RWMutex
	started bool
	closed  bool

	// Any goroutine.
	published, delivered, retried, dropped atomic.Uint64
	failed, rejected, abandoned            atomic.Uint64
}

// Stats counts what happened to events since New. Each counter is read
// atomically on its own, not all at once as one snapshot. After Run has
// returned, Published == Delivered + Rejected + Failed + Abandoned.
type Stats struct {
	Published uint64 // accepted by Publish
	Delivered uint64 // answered with 2xx
	Retried   uint64 // attempts after the first (one event can count several times)
	Dropped   uint64 // refused by Publish: its queue shard was full, or the sender had stopped
	Failed    uint64 // given up after MaxAttempts retryable failures
	Rejected  uint64 // given up at once: a status other than 2xx that is not retryable (other 4xx, 3xx)
	Abandoned uint64 // still queued or being retried when Run's drain bound ran out
	Queued    int    // waiting in the queue now
}

// New returns a Sender for cfg; it delivers nothing until Run is called.
// An empty cfg.URL gives a disabled Sender.
func New(cfg Config) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Sender{cfg: cfg, client: cfg.Client}
	if cfg.URL == "" {
		return s, nil
	}
	if s.client == nil {
		s.client = defaultClient(cfg.Workers)
		s.ownClient = true
	}
	per := max(1, cfg.QueueSize/cfg.Workers)
	s.shards = make([]chan Event, cfg.Workers)
	for i := range s.shards {
		s.shards[i] = make(chan Event, per)
	}
	return s, nil
}

func defaultClient(workers int) *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   workers,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		// A redirected POST would turn into a GET: report the 3xx
		// instead (it counts as rejected).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Enabled reports whether s delivers events (it has a URL).
func (s *Sender) Enabled() bool { return s != nil && s.shards != nil }

// Publish queues ev for delivery and reports whether it was queued. It
// never blocks: when the user's queue shard is full, or Run has stopped,
// the event is dropped and counted. A disabled Sender returns false and
// counts nothing. Publish fills an empty ID, a zero AtMS (now) and an
// empty Node (Config.Node). ev is copied; it holds no references.
func (s *Sender) Publish(ev Event) bool {
	if !s.Enabled() {
		return false
	}
	if ev.ID == "" {
		ev.ID = newID()
	}
	if ev.AtMS == 0 {
		ev.AtMS = time.Now().UnixMilli()
	}
	if ev.Node == "" {
		ev.Node = s.cfg.Node
	}
	q := s.shards[shardOf(ev.UserID, len(s.shards))]

	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed {
		// Counted before the send so that Delivered never passes it.
		s.published.Add(1)
		select {
		case q <- ev:
			return true
		default:
			s.published.Add(^uint64(0))
		}
	}
	// Log the 1st, 2nd, 4th, 8th... drop: visible, but never a flood.
	if n := s.dropped.Add(1); n&(n-1) == 0 {
		s.cfg.Logger.Warn("webhook: event dropped", "reason", dropReason(s.closed),
			"dropped_total", n, "event_id", ev.ID, "type", ev.Type, "user_id", ev.UserID)
	}
	return false
}

func dropReason(closed bool) string {
	if closed {
		return "sender stopped"
	}
	return "queue full"
}

// shardOf maps a user to a shard with 32-bit FNV-1a.
func shardOf(user string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(user); i++ {
		h ^= uint32(user[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// Stats returns the counters.
func (s *Sender) Stats() Stats {
	if s == nil {
		return Stats{}
	}
	st := Stats{
		Published: s.published.Load(),
		Delivered: s.delivered.Load(),
		Retried:   s.retried.Load(),
		Dropped:   s.dropped.Load(),
		Failed:    s.failed.Load(),
		Rejected:  s.rejected.Load(),
		Abandoned: s.abandoned.Load(),
	}
	for _, q := range s.shards {
		st.Queued += len(q)
	}
	return st
}

// Run delivers queued events until ctx is done. Then it stops accepting
// events, keeps delivering what is queued or in flight for at most
// Config.DrainTimeout, abandons (and counts) the rest, and returns after
// every goroutine it started has exited. On a disabled Sender it only
// waits for ctx. It may be called once; it returns nil or ErrRunTwice.
func (s *Sender) Run(ctx context.Context) error {
	if !s.Enabled() {
		<-ctx.Done()
		return nil
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return ErrRunTwice
	}
	s.started = true
	s.mu.Unlock()

	// Deliveries outlive ctx by up to the drain bound.
	dctx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	var wg sync.WaitGroup
	for _, q := range s.shards {
		wg.Go(func() { s.work(dctx, q) })
	}

	<-ctx.Done()
	s.mu.Lock()
	s.closed = true
	for _, q := range s.shards {
		close(q) // workers finish what is queued, then exit
	}
	s.mu.Unlock()
	t := time.AfterFunc(s.cfg.DrainTimeout, abandon)
	wg.Wait()
	t.Stop()

	if s.ownClient {
		s.client.CloseIdleConnections()
	}
	if n := s.abandoned.Load(); n > 0 {
		s.cfg.Logger.Warn("webhook: events abandoned at shutdown", "abandoned", n, "drain_timeout", s.cfg.DrainTimeout)
	}
	return nil
}

// work delivers the events of one shard in order until it is closed.
func (s *Sender) work(ctx context.Context, q <-chan Event) {
	for ev := range q {
		if ctx.Err() != nil {
			s.abandoned.Add(1)
			continue
		}
		s.deliver(ctx, ev)
	}
}

// deliver tries ev until it is delivered, rejected, out of attempts, or
// ctx (the drain bound) ends.
func (s *Sender) deliver(ctx context.Context, ev Event) {
	body, err := json.Marshal(ev)
	if err != nil {
		s.failed.Add(1)
		s.logEvent(slog.LevelError, "webhook: encode event", ev, "err", err)
		return
	}
	for attempt := 1; ; attempt++ {
		status, hint, err := s.post(ctx, ev.ID, body)
		switch {
		case err == nil && status/100 == 2:
			s.delivered.Add(1)
			return
		case err == nil && !retryable(status):
			s.rejected.Add(1)
			s.logEvent(slog.LevelWarn, "webhook: event rejected", ev, "status", status, "attempt", attempt)
			return
		case ctx.Err() != nil:
			s.abandoned.Add(1)
			return
		case attempt >= s.cfg.MaxAttempts:
			s.failed.Add(1)
			s.logEvent(slog.LevelWarn, "webhook: giving up on event", ev, "status", status, "attempt", attempt, "err", err)
			return
		}
		wait := backoff(s.cfg.BackoffMin, s.cfg.BackoffMax, attempt, hint)
		s.logEvent(slog.LevelDebug, "webhook: will retry", ev, "status", status, "attempt", attempt, "wait", wait, "err", err)
		if !sleep(ctx, wait) {
			s.abandoned.Add(1)
			return
		}
		s.retried.Add(1)
	}
}

// post makes one signed attempt. It returns the status and the server's
// Retry-After hint, or the transport error (a timeout included).
func (s *Sender) post(ctx context.Context, id string, body []byte) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, fmt.Errorf("webhook: build request: %w", err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tandem-webhook/1")
	req.Header.Set(HeaderEventID, id)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, sigPrefix+hex.EncodeToString(mac(s.cfg.Secret, ts, body)))
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse)); err != nil {
		// The status is in; an unread body only costs the connection.
		s.cfg.Logger.Debug("webhook: read response body", "event_id", id, "err", err)
	}
	return resp.StatusCode, retryAfter(resp.Header, time.Now()), nil
}

// retryable reports whether a non-2xx status is worth another attempt:
// server errors, 429 Too Many Requests and 408 Request Timeout.
func retryable(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
}

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs > 0 {
		return time.Duration(min(secs, 1<<20)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff returns the wait before attempt+1: lo doubled per attempt made,
// capped at hi, with "equal jitter" (a uniform pick in [d/2, d]), so that
// many events failing together do not retry in lock-step. A Retry-After
// hint longer than that is honoured up to hi.
func backoff(lo, hi time.Duration, attempt int, hint time.Duration) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	d = d/2 + rand.N(d/2+1)
	if hint > d {
		d = min(hint, hi)
	}
	return d
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Sender) logEvent(level slog.Level, msg string, ev Event, args ...any) {
	if !s.cfg.Logger.Enabled(context.Background(), level) {
		return
	}
	args = append(args, "event_id", ev.ID, "type", ev.Type, "user_id", ev.UserID)
	s.cfg.Logger.Log(context.Background(), level, msg, args...)
}
