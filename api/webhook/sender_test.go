package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/leakcheck"
)

const testSecret = "test-secret"

// testConfig is a config with test-sized back-offs for url.
func testConfig(url string) Config {
	return Config{
		URL:          url,
		Secret:       testSecret,
		Node:         "node-t",
		Timeout:      time.Second,
		BackoffMin:   time.Millisecond,
		BackoffMax:   5 * time.Millisecond,
		DrainTimeout: 2 * time.Second,
	}
}

// start runs a new Sender for cfg and returns it with a stop function
// that cancels Run, waits for it and returns how long that took. stop is
// idempotent and also registered as cleanup.
func start(t *testing.T, cfg Config) (*Sender, func() time.Duration) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var (
		once sync.Once
		took time.Duration
	)
	stop := func() time.Duration {
		once.Do(func() {
			begin := time.Now()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			took = time.Since(begin)
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return s, stop
}

// readVerified reads a request's body and checks its headers and
// signature; it reports problems with t.Errorf (safe from handlers).
func readVerified(t *testing.T, r *http.Request) (Event, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return Event{}, false // the client went away
	}
	if err := Verify(testSecret, r.Header, body, time.Now(), time.Minute); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if r.Method != http.MethodPost {
		t.Errorf("method %s, want POST", r.Method)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Errorf("body %s: %v", body, err)
	}
	if got := r.Header.Get(HeaderEventID); got != ev.ID || got == "" {
		t.Errorf("%s %q, body id %q", HeaderEventID, got, ev.ID)
	}
	return ev, true
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDeliverSigned(t *testing.T) {
	got := make(chan Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ev, ok := readVerified(t, r); ok {
			got <- ev
		}
	}))
	t.Cleanup(srv.Close)
	s, stop := start(t, testConfig(srv.URL))

	dev := Device{DeviceID: "ipad-1", Platform: "pad", LoginID: "l-1", SinceMS: 1767225600000, AppVersion: "3.2.0"}
	before := time.Now().UnixMilli()
	if !s.Publish(Event{Type: DeviceLogin, UserID: "alice", Device: dev}) {
		t.Fatal("Publish refused")
	}
	var ev Event
	select {
	case ev = <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("no delivery")
	}
	if len(ev.ID) != 32 || strings.Trim(ev.ID, "0123456789abcdef") != "" {
		t.Errorf("id %q, want 32 hex digits", ev.ID)
	}
	if ev.Type != DeviceLogin || ev.UserID != "alice" || ev.Device != dev || ev.Node != "node-t" {
		t.Errorf("got %+v", ev)
	}
	if ev.AtMS < before || ev.AtMS > time.Now().UnixMilli() {
		t.Errorf("at_ms %d not filled with the publish time", ev.AtMS)
	}
	stop()
	if st := s.Stats(); st != (Stats{Published: 1, Delivered: 1}) {
		t.Errorf("stats %+v", st)
	}
}

// The JSON shape is the contract with app backends.
func TestEventJSON(t *testing.T) {
	ev := Event{
		ID: "5f0c3a9e8b7d41c2a6e4f1b093d7c285", Type: DeviceKicked, UserID: "alice",
		Device:   Device{DeviceID: "ipad-1", Platform: "pad", LoginID: "l-17", SinceMS: 1767225600000, AppVersion: "3.2.0"},
		KickedBy: Device{DeviceID: "ipad-2", Platform: "pad", LoginID: "l-18", SinceMS: 1767229200000, LoginExt: "Alice's new iPad", AppVersion: "3.3.0"},
		Reason:   "LOGIN_CONFLICT", AtMS: 1767229200123, Node: "node-a",
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"5f0c3a9e8b7d41c2a6e4f1b093d7c285","type":"device.kicked","user_id":"alice",` +
		`"device":{"device_id":"ipad-1","platform":"pad","tag":"","login_id":"l-17","since_ms":1767225600000,"login_ext":"","app_version":"3.2.0"},` +
		`"kicked_by":{"device_id":"ipad-2","platform":"pad","tag":"","login_id":"l-18","since_ms":1767229200000,"login_ext":"Alice's new iPad","app_version":"3.3.0"},` +
		`"reason":"LOGIN_CONFLICT","at_ms":1767229200123,"node":"node-a"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	b, err = json.Marshal(Event{ID: "x", Type: UserOnline, UserID: "bob", AtMS: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"x","type":"user.online","user_id":"bob","at_ms":1}`; string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

// TestStatusHandling runs one event against receivers answering a
// scripted sequence of statuses (0 = drop the connection, -1 = hang past
// the attempt timeout).
func TestStatusHandling(t *testing.T) {
	tests := []struct {
		name     string
		script   []int // answers per attempt; the last repeats
		attempts int   // MaxAttempts
		want     Stats
		calls    int
	}{
		{"ok", []int{204}, 6, Stats{Published: 1, Delivered: 1}, 1},
		{"500 then ok", []int{500, 503, 200}, 6, Stats{Published: 1, Delivered: 1, Retried: 2}, 3},
		{"dropped connection then ok", []int{0, 200}, 6, Stats{Published: 1, Delivered: 1, Retried: 1}, 2},
		{"timeout then ok", []int{-1, 200}, 6, Stats{Published: 1, Delivered: 1, Retried: 1}, 2},
		{"429 then ok", []int{429, 200}, 6, Stats{Published: 1, Delivered: 1, Retried: 1}, 2},
		{"400 gives up", []int{400, 200}, 6, Stats{Published: 1, Rejected: 1}, 1},
		{"404 gives up", []int{404, 200}, 6, Stats{Published: 1, Rejected: 1}, 1},
		{"redirect not followed", []int{302, 200}, 6, Stats{Published: 1, Rejected: 1}, 1},
		{"out of attempts", []int{500}, 3, Stats{Published: 1, Retried: 2, Failed: 1}, 3},
		{"retry then 4xx", []int{502, 401}, 6, Stats{Published: 1, Retried: 1, Rejected: 1}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				calls int
				ids   = map[string]bool{}
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ev, ok := readVerified(t, r)
				if !ok {
					return
				}
				mu.Lock()
				calls++
				ids[ev.ID] = true
				answer := tt.script[min(calls, len(tt.script))-1]
				mu.Unlock()
				switch answer {
				case 0:
					c, _, err := http.NewResponseController(w).Hijack()
					if err != nil {
						t.Errorf("hijack: %v", err)
						return
					}
					c.Close()
				case -1:
					select {
					case <-r.Context().Done():
					case <-time.After(5 * time.Second):
						t.Errorf("attempt not cancelled at its timeout")
					}
				case 302:
					w.Header().Set("Location", "/elsewhere")
					w.WriteHeader(answer)
				default:
					w.WriteHeader(answer)
				}
			}))
			t.Cleanup(srv.Close)
			cfg := testConfig(srv.URL)
			cfg.MaxAttempts = tt.attempts
			cfg.Timeout = 200 * time.Millisecond
			s, stop := start(t, cfg)
			s.Publish(Event{Type: UserOnline, UserID: "alice"})
			waitFor(t, 3*time.Second, "the event to settle", func() bool {
				st := s.Stats()
				return st.Delivered+st.Rejected+st.Failed == 1
			})
			stop()
			if st := s.Stats(); st != tt.want {
				t.Errorf("stats %+v, want %+v", st, tt.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != tt.calls || len(ids) != 1 {
				t.Errorf("%d attempts with %d distinct ids, want %d attempts of one id", calls, len(ids), tt.calls)
			}
		})
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	var (
		mu    sync.Mutex
		times []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := readVerified(t, r); !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	cfg := testConfig(srv.URL)
	cfg.BackoffMax = 300 * time.Millisecond // caps the 1 s hint
	s, stop := start(t, cfg)
	s.Publish(Event{Type: UserOffline, UserID: "alice"})
	waitFor(t, 2*time.Second, "delivery", func() bool { return s.Stats().Delivered == 1 })
	stop()
	mu.Lock()
	defer mu.Unlock()
	if gap := times[1].Sub(times[0]); gap < 250*time.Millisecond || gap > time.Second {
		t.Errorf("retried after %v, want the Retry-After hint capped at 300ms", gap)
	}
}

func TestQueueFullDrops(t *testing.T) {
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := readVerified(t, r); !ok {
			return
		}
		entered <- struct{}{}
		<-release
	}))
	t.Cleanup(srv.Close)
	cfg := testConfig(srv.URL)
	cfg.Workers = 1
	cfg.QueueSize = 3
	cfg.Timeout = 5 * time.Second
	s, stop := start(t, cfg)

	if !s.Publish(Event{Type: DeviceLogin, UserID: "u0"}) {
		t.Fatal("first Publish refused")
	}
	<-entered // in flight, hanging
	for i := range 3 {
		if !s.Publish(Event{Type: DeviceLogin, UserID: fmt.Sprint("u", i+1)}) {
			t.Fatalf("Publish %d refused with room in the queue", i+1)
		}
	}
	begin := time.Now()
	for i := range 5 {
		if s.Publish(Event{Type: DeviceLogin, UserID: fmt.Sprint("v", i)}) {
			t.Fatalf("Publish accepted into a full queue")
		}
	}
	if d := time.Since(begin); d > 100*time.Millisecond {
		t.Errorf("refusing 5 events took %v: Publish blocked", d)
	}
	if st := s.Stats(); st != (Stats{Published: 4, Dropped: 5, Queued: 3}) {
		t.Errorf("stats %+v", st)
	}

	close(release)
	waitFor(t, 2*time.Second, "the backlog", func() bool { return s.Stats().Delivered == 4 })
	stop()
	if s.Publish(Event{Type: DeviceLogin, UserID: "late"}) {
		t.Error("Publish accepted after Run returned")
	}
	if st := s.Stats(); st != (Stats{Published: 4, Delivered: 4, Dropped: 6}) {
		t.Errorf("stats %+v", st)
	}
}

// A user's events arrive in publish order although some attempts fail
// and are retried, and several users share the workers.
func TestPerUserOrderUnderRetries(t *testing.T) {
	const users, perUser = 6, 25
	var (
		mu       sync.Mutex
		attempts = map[string]int{}
		got      = map[string][]int64{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, ok := readVerified(t, r)
		if !ok {
			return
		}
		mu.Lock()
		attempts[ev.ID]++
		n := attempts[ev.ID]
		seq := ev.AtMS
		switch {
		case seq%5 == 1 && n <= 2: // fails twice
			mu.Unlock()
			w.WriteHeader(http.StatusInternalServerError)
			return
		case seq%7 == 3 && n == 1: // connection dropped once
			mu.Unlock()
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			c.Close()
			return
		}
		got[ev.UserID] = append(got[ev.UserID], seq)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	cfg := testConfig(srv.URL)
	cfg.Workers = 3
	s, stop := start(t, cfg)

	for seq := range int64(perUser) {
		for u := range users {
			// AtMS carries the per-user sequence number (from 1).
			if !s.Publish(Event{Type: DeviceLogin, UserID: fmt.Sprint("user-", u), AtMS: seq + 1}) {
				t.Fatal("Publish refused")
			}
		}
	}
	waitFor(t, 3*time.Second, "all deliveries", func() bool { return s.Stats().Delivered == users*perUser })
	stop()

	mu.Lock()
	defer mu.Unlock()
	for u := range users {
		seqs := got[fmt.Sprint("user-", u)]
		if len(seqs) != perUser {
			t.Errorf("user-%d: %d deliveries, want %d", u, len(seqs), perUser)
		}
		for i, seq := range seqs {
			if seq != int64(i+1) {
				t.Errorf("user-%d: delivered out of order: %v", u, seqs)
				break
			}
		}
	}
	if st := s.Stats(); st.Retried == 0 || st.Failed != 0 || st.Rejected != 0 {
		t.Errorf("stats %+v: want retries and no losses", st)
	}
}

// On stop a healthy receiver gets the whole backlog.
func TestStopDeliversBacklog(t *testing.T) {
	var delivered atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := readVerified(t, r); ok {
			time.Sleep(5 * time.Millisecond)
			delivered.Add(1)
		}
	}))
	t.Cleanup(srv.Close)
	cfg := testConfig(srv.URL)
	cfg.Workers = 1
	s, stop := start(t, cfg)
	for i := range 20 {
		s.Publish(Event{Type: DeviceLogout, UserID: fmt.Sprint("u", i), Reason: "logout"})
	}
	stop()
	if st := s.Stats(); st.Delivered != 20 || st.Abandoned != 0 || delivered.Load() != 20 {
		t.Errorf("stats %+v, receiver saw %d; want the backlog delivered", st, delivered.Load())
	}
}

// On stop against a hanging receiver, Run returns at the drain bound,
// counts what it abandoned, and leaves no goroutine behind.
func TestStopBoundedAndNoLeak(t *testing.T) {
	release := make(chan struct{})
	var entered atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)

	cfg := testConfig(srv.URL)
	cfg.Timeout = 10 * time.Second
	cfg.DrainTimeout = 200 * time.Millisecond
	s, stop := start(t, cfg)
	for i := range 10 {
		s.Publish(Event{Type: DeviceKicked, UserID: fmt.Sprint("u", i), Reason: "ADMIN"})
	}
	waitFor(t, 2*time.Second, "both workers in flight", func() bool { return entered.Load() == 2 })

	took := stop()
	if took < cfg.DrainTimeout || took > cfg.DrainTimeout+time.Second {
		t.Errorf("Run returned %v after cancel, want about the %v drain bound", took, cfg.DrainTimeout)
	}
	st := s.Stats()
	if st.Abandoned != 10 || st.Published != st.Delivered+st.Rejected+st.Failed+st.Abandoned || st.Queued != 0 {
		t.Errorf("stats %+v: want all 10 abandoned", st)
	}
	unblock()
	srv.Close()
	if gs := leakcheck.Wait(2*time.Second, "tandem/api/webhook."); len(gs) > 0 {
		t.Errorf("goroutines left after Run returned:\n\n%s", strings.Join(gs, "\n\n"))
	}
}

func TestRunTwice(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	s, stop := start(t, testConfig(srv.URL))
	waitFor(t, time.Second, "Run to start", func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.started
	})
	if err := s.Run(context.Background()); !errors.Is(err, ErrRunTwice) {
		t.Errorf("second Run = %v, want ErrRunTwice", err)
	}
	stop()
}

func TestDisabled(t *testing.T) {
	for name, s := range map[string]*Sender{"empty url": mustNew(t, Config{}), "nil": nil} {
		t.Run(name, func(t *testing.T) {
			if s.Enabled() {
				t.Error("Enabled")
			}
			if s.Publish(Event{Type: UserOnline, UserID: "alice"}) {
				t.Error("Publish queued on a disabled sender")
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := s.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
			if st := s.Stats(); st != (Stats{}) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func mustNew(t *testing.T, cfg Config) *Sender {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none = valid
	}{
		{"zero is a disabled sender", Config{}, nil},
		{"https", Config{URL: "https://app.example/hooks", Secret: "k"}, nil},
		{"http with port", Config{URL: "http://127.0.0.1:9000/h", Secret: "k"}, nil},
		{"other scheme", Config{URL: "ftp://app.example/h", Secret: "k"}, []string{"scheme"}},
		{"no host", Config{URL: "http:///h", Secret: "k"}, []string{"no host"}},
		{"unparsable", Config{URL: "http://[::1", Secret: "k"}, []string{"url"}},
		{"no secret", Config{URL: "https://app.example/h"}, []string{"secret"}},
		{"negatives joined", Config{QueueSize: -1, Workers: -1, Timeout: -1, MaxAttempts: -1, DrainTimeout: -1},
			[]string{"queue size", "workers", "timeout", "max attempts", "drain timeout"}},
		{"backoff inverted", Config{BackoffMin: time.Second, BackoffMax: time.Millisecond}, []string{"backoff min"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := New(tt.cfg); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := Config{URL: "https://app.example/h", Secret: "k"}.withDefaults()
	if c.QueueSize != 10000 || c.Workers != 2 || c.Timeout != 5*time.Second || c.MaxAttempts != 6 ||
		c.BackoffMin != 200*time.Millisecond || c.BackoffMax != 30*time.Second || c.DrainTimeout != 5*time.Second || c.Logger == nil {
		t.Errorf("defaults %+v", c)
	}
	if c := (Config{BackoffMax: 50 * time.Millisecond}).withDefaults(); c.BackoffMin != 50*time.Millisecond {
		t.Errorf("backoff min %v above a smaller configured max", c.BackoffMin)
	}
	s := mustNew(t, Config{URL: "https://app.example/h", Secret: "k", QueueSize: 10, Workers: 3})
	if len(s.shards) != 3 || cap(s.shards[0]) != 3 {
		t.Errorf("%d shards of %d, want 3 of 3", len(s.shards), cap(s.shards[0]))
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 200*time.Millisecond, 30*time.Second
	for attempt, base := range map[int]time.Duration{
		1: 200 * time.Millisecond, 2: 400 * time.Millisecond, 3: 800 * time.Millisecond,
		8: 25600 * time.Millisecond, 9: hi, 100: hi,
	} {
		for range 100 {
			if d := backoff(lo, hi, attempt, 0); d < base/2 || d > base {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, base/2, base)
			}
		}
	}
	if d := backoff(lo, hi, 1, 10*time.Second); d != 10*time.Second {
		t.Errorf("Retry-After 10s gave %v", d)
	}
	if d := backoff(lo, hi, 1, time.Hour); d != hi {
		t.Errorf("Retry-After 1h gave %v, want the %v cap", d, hi)
	}
	now := time.Now()
	h := http.Header{}
	for v, want := range map[string]time.Duration{
		"":     0,
		"3":    3 * time.Second,
		"-3":   0,
		"soon": 0,
		now.Add(time.Minute).UTC().Format(http.TimeFormat): 59 * time.Second, // truncated to seconds
	} {
		h.Set("Retry-After", v)
		if got := retryAfter(h, now); got < want || got > want+time.Second {
			t.Errorf("Retry-After %q = %v, want about %v", v, got, want)
		}
	}
}

func TestShardOfSpreadsAndIsStable(t *testing.T) {
	counts := make([]int, 4)
	for i := range 4000 {
		u := fmt.Sprint("user-", i)
		n := shardOf(u, 4)
		if n != shardOf(u, 4) {
			t.Fatal("unstable")
		}
		counts[n]++
	}
	for i, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("shard %d got %d of 4000 users", i, c)
		}
	}
}
