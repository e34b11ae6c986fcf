package webhook

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Defaults for the zero fields of Config.
const (
	DefaultQueueSize    = 10000
	DefaultWorkers      = 2
	DefaultTimeout      = 5 * time.Second
	DefaultMaxAttempts  = 6
	DefaultBackoffMin   = 200 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultDrainTimeout = 5 * time.Second
)

// Config configures a Sender. The zero value of every field means its
// default; an empty URL means a disabled Sender.
type Config struct {
	// URL receives the events by POST (http or https). Empty disables the
	// sender: Publish is then a no-op.
	URL string
	// Secret keys the HMAC-SHA256 signature. Required when URL is set.
	Secret string
	// Node names this server in events that do not name one.
	Node string

	QueueSize    int           // events waiting in all shards together; default 10000
	Workers      int           // delivery goroutines, one queue shard each; default 2
	Timeout      time.Duration // per attempt; default 5 s
	MaxAttempts  int           // attempts per event, the first included; default 6
	BackoffMin   time.Duration // first retry delay; default 200 ms
	BackoffMax   time.Duration // cap of the doubling retry delay; default 30 s
	DrainTimeout time.Duration // how long Run keeps delivering after its context ends; default 5 s

	Logger *slog.Logger
	// Client sends the requests; the default follows no redirects and
	// keeps one idle connection per worker. Per-attempt timeouts come
	// from Timeout, not from Client.Timeout.
	Client *http.Client
}

// Validate reports every problem with c as one joined error.
func (c Config) Validate() error {
	var errs []error
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("webhook: url: %w", err))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("webhook: url %q: scheme must be http or https", c.URL))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("webhook: url %q: no host", c.URL))
		}
		if c.Secret == "" {
			errs = append(errs, errors.New("webhook: secret required when url is set"))
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"queue size", int64(c.QueueSize)},
		{"workers", int64(c.Workers)},
		{"timeout", int64(c.Timeout)},
		{"max attempts", int64(c.MaxAttempts)},
		{"backoff min", int64(c.BackoffMin)},
		{"backoff max", int64(c.BackoffMax)},
		{"drain timeout", int64(c.DrainTimeout)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("webhook: %s must not be negative", f.name))
		}
	}
	if c.BackoffMin > 0 && c.BackoffMax > 0 && c.BackoffMin > c.BackoffMax {
		errs = append(errs, fmt.Errorf("webhook: backoff min %v above backoff max %v", c.BackoffMin, c.BackoffMax))
	}
	return errors.Join(errs...)
}

// withDefaults fills the zero fields of a validated config.
func (c Config) withDefaults() Config {
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
		if c.BackoffMax > 0 {
			c.BackoffMin = min(c.BackoffMin, c.BackoffMax)
		}
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
