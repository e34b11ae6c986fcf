package actors

import (
	"errors"
	"fmt"
	"time"
)

// Config is the user actors' configuration. The zero value means defaults.
type Config struct {
	// HeartbeatTimeout: a session silent this long is dropped (the gateway
	// enforces it); LoginOk asks clients to ping at half of it.
	HeartbeatTimeout time.Duration
	// CompensationDays: a device without a cursor gets the entries of this
	// many days (1–7, default 1).
	CompensationDays int
	// IdleTimeout: an actor with no session and nothing in flight
	// passivates after this long (jittered ±25%). Default 2 min.
	IdleTimeout time.Duration
	// RequestTimeout bounds a gateway's or the API's request to an actor.
	RequestTimeout time.Duration
	// Policy decides which sessions a new login kicks; the zero value is
	// per_class with DefaultLimits.
	Policy Policy
	// RecallWindow: a sender may recall a message only this long after it
	// was sent; 0 means no limit. The server API may always recall.
	RecallWindow time.Duration
	// Now is the clock (nil: time.Now); tests move it to age entries out.
	Now func() time.Time
	// NoActivations makes this member host no user or group actors: Kinds
	// is empty, so the cluster never places anybody here, and the runtime
	// re-drives no pending fan-out (it owns none). Its gateway, presence and
	// relay actors run as on any member, so sessions on it reach users
	// owned elsewhere. For a load tool that joins a running cluster from
	// outside the nodes' processes (`tandem-bench actors -join`).
	NoActivations bool

	// noEvents: nobody publishes session events (NewRuntime without a
	// Publisher), so the user state builds none (userState.notify).
	noEvents bool
}

// Defaults.
const (
	DefaultHeartbeatTimeout = 60 * time.Second
	DefaultCompensationDays = 1
	MaxCompensationDays     = 7
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultRequestTimeout   = 5 * time.Second
	pageLimit               = 200 // entries per SyncPage
)

func (c Config) withDefaults() Config {
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.CompensationDays == 0 {
		c.CompensationDays = DefaultCompensationDays
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	c.Policy = c.Policy.withDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if c.HeartbeatTimeout < 0 || (c.HeartbeatTimeout > 0 && c.HeartbeatTimeout < 2*time.Second) {
		errs = append(errs, fmt.Errorf("heartbeat timeout %s: must be at least 2s", c.HeartbeatTimeout))
	}
	if c.CompensationDays < 0 || c.CompensationDays > MaxCompensationDays {
		errs = append(errs, fmt.Errorf("compensation days %d: must be 1-%d", c.CompensationDays, MaxCompensationDays))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle timeout %s: must not be negative", c.IdleTimeout))
	}
	if c.RecallWindow < 0 {
		errs = append(errs, fmt.Errorf("recall window %s: must not be negative", c.RecallWindow))
	}
	if c.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("request timeout %s: must not be negative", c.RequestTimeout))
	}
	if err := c.Policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
