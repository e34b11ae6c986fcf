package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/tandem-im/tandem/actors"
)

// A passivation wave (-passivate N): users 0 … N−1 log in as fast as
// -concurrency allows, then every one of their devices logs out at once,
// so their actors go idle together and the node passivates them one idle
// timeout later (-idle-timeout, ±25 %). Meanwhile the other users — new
// users, each login an actor start and a store activation — log in at
// -login-rate, and the run watches whether the wave of stops holds up the
// activations: per second, logins and their p99 next to the node's
// passivations (ActorsPoint), and a summary of the seconds with and
// without passivations (PassivationResult). In process only: the
// passivations are counted by the node (Node.UserCounts).

// PassivationResult is what a passivation wave measured.
type PassivationResult struct {
	Users              int     `json:"users"` // whose devices logged out together
	IdleTimeoutSeconds float64 `json:"idle_timeout_seconds"`
	LoggedOut          uint64  `json:"logged_out"` // devices whose logout was answered
	LogoutFailed       uint64  `json:"logout_failed"`
	LogoutSeconds      float64 `json:"logout_seconds"` // the logouts, all of them
	// Passivated: the node's passivations from the logouts' start to the
	// end of the run; FirstSeconds and LastSeconds: the seconds of the
	// first and the last, counted from the end of the logouts.
	Passivated    uint64  `json:"passivated"`
	FirstSeconds  float64 `json:"first_seconds"`
	LastSeconds   float64 `json:"last_seconds"`
	PeakPerSecond uint64  `json:"peak_per_second"`
	ActiveAtEnd   int64   `json:"active_at_end"` // the node's active user actors once the wave was over
	// The new users' logins during the wave (from the end of the logouts).
	Logins          uint64  `json:"logins"`
	LoginsFailed    uint64  `json:"logins_failed"`
	LoginsPerSecond float64 `json:"logins_per_second"`
	Latency         Latency `json:"latency"`
	// Over the whole seconds of the new users' logins: those with at
	// least one passivation and those without, the fewest logins in one
	// second and the worst per-second p99.
	SecondsWith       int     `json:"seconds_with"`
	SecondsWithout    int     `json:"seconds_without"`
	MinLoginsWith     uint64  `json:"min_logins_with"`
	MinLoginsWithout  uint64  `json:"min_logins_without"`
	WorstP99WithMs    float64 `json:"worst_p99_with_ms"`
	WorstP99WithoutMs float64 `json:"worst_p99_without_ms"`

	start, end time.Duration // the new users' logins, since the run's start
}

// validatePassivate checks -passivate and -idle-timeout (c with defaults).
func (c ActorsConfig) validatePassivate() []error {
	var errs []error
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("-idle-timeout %v must not be negative", c.IdleTimeout))
	}
	if c.IdleTimeout > 0 && len(c.Target.Join) > 0 {
		errs = append(errs, errors.New("-idle-timeout sets the in-process node's: a joined cluster's nodes keep their own --idle-timeout"))
	}
	if c.Passivate == 0 {
		return errs
	}
	switch {
	case c.Passivate < 0 || c.Passivate >= c.Users:
		errs = append(errs, fmt.Errorf("-passivate %d: between 1 and -users − 1 (%d): the other users log in during the wave", c.Passivate, c.Users-1))
	case len(c.Target.Join) > 0:
		errs = append(errs, errors.New("-passivate needs the in-process node: the passivations are counted where the actors run"))
	case c.MsgRate > 0:
		errs = append(errs, errors.New("-passivate measures logins against a wave of stops: leave -msg-rate out"))
	case c.LoginRate <= 0:
		errs = append(errs, errors.New("-passivate needs -login-rate: the new users log in at that rate through the wave"))
	default:
		idle := cmp.Or(c.IdleTimeout, actors.DefaultIdleTimeout)
		fresh := float64((c.Users-c.Passivate)*c.Devices) / c.LoginRate
		if need := 1.25*idle.Seconds() + 1; fresh < need {
			errs = append(errs, fmt.Errorf("-passivate: the %d new users' logins take %.1f s at -login-rate %g, but the passivations go on until %.1f s after the logouts (1.25 × -idle-timeout %v) and the logins must outlast them by a second: more -users or a lower -login-rate",
				c.Users-c.Passivate, fresh, c.LoginRate, 1.25*idle.Seconds(), idle))
		}
	}
	return errs
}

// logoutAll logs out every device of users [0, n), -concurrency at a
// time, and counts them.
func (r *actorsRun) logoutAll(ctx context.Context, n int) (ok, failed uint64) {
	var okN, failN atomic.Uint64
	r.eachDevice(ctx, 0, n*r.cfg.Devices, func(i int) bool {
		if !r.online[i].CompareAndSwap(devOnline, devGone) {
			return true // its login failed: nothing to log out
		}
		lctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		err := r.front.Logout(lctx, r.sid(i), vuser(i/r.cfg.Devices))
		cancel()
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			failN.Add(1)
			r.errs["logout refused"]++
			return true
		}
		okN.Add(1)
		r.logoutsOK[i]++
		return true
	})
	return okN.Load(), failN.Load()
}

// runPassivationWave runs the wave after users [0, Passivate) logged in:
// their logouts, the other users' logins at the login rate, then a wait
// (at most the idle timeout × 1.25 + -drain after the logouts) until the
// node has passivated every one of them.
func (r *actorsRun) runPassivationWave(ctx context.Context) *PassivationResult {
	c := r.cfg
	w := &PassivationResult{Users: c.Passivate, IdleTimeoutSeconds: cmp.Or(c.IdleTimeout, actors.DefaultIdleTimeout).Seconds()}
	base := r.userCounts().Passivations
	t0 := time.Now()
	w.LoggedOut, w.LogoutFailed = r.logoutAll(ctx, c.Passivate)
	w.LogoutSeconds = time.Since(t0).Seconds()

	r.mu.Lock()
	loginsBefore, failsBefore := r.logins, r.loginFails
	first := r.loginLat
	r.loginLat = hist{} // the new users' logins only, merged back below
	r.mu.Unlock()
	w.start = time.Since(r.start)
	r.runLogins(ctx, c.Passivate*c.Devices, len(r.online), c.LoginRate, w.start)
	w.end = time.Since(r.start)

	deadline := time.Now().Add(time.Duration(1.25*w.IdleTimeoutSeconds*float64(time.Second)) + c.Drain)
	for ctx.Err() == nil && time.Now().Before(deadline) && r.userCounts().Passivations-base < uint64(c.Passivate) {
		sleepCtx(ctx, 100*time.Millisecond)
	}
	counts := r.userCounts()
	w.Passivated, w.ActiveAtEnd = counts.Passivations-base, counts.Active

	r.mu.Lock()
	defer r.mu.Unlock()
	w.Logins, w.LoginsFailed = r.logins-loginsBefore, r.loginFails-failsBefore
	if d := (w.end - w.start).Seconds(); d > 0 {
		w.LoginsPerSecond = float64(w.Logins) / d
	}
	w.Latency = latency(&r.loginLat)
	first.merge(&r.loginLat)
	r.loginLat = first // the run's logins: all of them
	return w
}

// fromSeries fills the per-second figures from the run's series (the
// points inside the new users' logins) and the passivations' first, last
// and peak second.
func (w *PassivationResult) fromSeries(series []ActorsPoint) {
	logoutsEnd := w.start.Seconds()
	w.MinLoginsWith, w.MinLoginsWithout = math.MaxUint64, math.MaxUint64
	first := true
	for _, p := range series {
		if p.PassivationsPerSecond > 0 {
			if first {
				w.FirstSeconds, first = p.Seconds-logoutsEnd, false
			}
			w.LastSeconds = p.Seconds - logoutsEnd
			w.PeakPerSecond = max(w.PeakPerSecond, p.PassivationsPerSecond)
		}
		// A whole second of the new users' logins: it began after they
		// started and ended before they ended.
		if p.Seconds-1 < w.start.Seconds() || p.Seconds > w.end.Seconds() {
			continue
		}
		if p.PassivationsPerSecond > 0 {
			w.SecondsWith++
			w.MinLoginsWith = min(w.MinLoginsWith, p.LoginsPerSecond)
			w.WorstP99WithMs = max(w.WorstP99WithMs, p.LoginP99Ms)
		} else {
			w.SecondsWithout++
			w.MinLoginsWithout = min(w.MinLoginsWithout, p.LoginsPerSecond)
			w.WorstP99WithoutMs = max(w.WorstP99WithoutMs, p.LoginP99Ms)
		}
	}
	if w.SecondsWith == 0 {
		w.MinLoginsWith = 0
	}
	if w.SecondsWithout == 0 {
		w.MinLoginsWithout = 0
	}
}

// problems lists what makes the wave's figures not count.
func (w *PassivationResult) problems() []string {
	var p []string
	if w.LogoutFailed > 0 {
		p = append(p, fmt.Sprintf("passivation wave: %d logouts refused", w.LogoutFailed))
	}
	if w.Passivated < uint64(w.Users) {
		p = append(p, fmt.Sprintf("passivation wave: %d of %d idle users' actors passivated by the end (idle timeout %.0f s ±25 %%, then -drain)", w.Passivated, w.Users, w.IdleTimeoutSeconds))
	}
	if w.SecondsWith == 0 {
		p = append(p, "passivation wave: no whole second of the new users' logins had a passivation: nothing was measured against the wave")
	}
	return p
}

func (w *PassivationResult) summary() string {
	return fmt.Sprintf("%d users' %d devices logged out in %.1f s (%d refused); %d actors passivated %.1f–%.1f s later (idle timeout %.0f s ±25 %%), at most %d in a second\n"+
		"%-28s %d new users logged in meanwhile (%d failed), %.0f/s, p50 %.2f p99 %.2f max %.2f ms\n"+
		"%-28s %d s with passivations: fewest logins in a second %d, worst p99 %.1f ms; %d s without: fewest %d, worst p99 %.1f ms",
		w.Users, w.LoggedOut+w.LogoutFailed, w.LogoutSeconds, w.LogoutFailed, w.Passivated, w.FirstSeconds, w.LastSeconds, w.IdleTimeoutSeconds, w.PeakPerSecond,
		"", w.Logins, w.LoginsFailed, w.LoginsPerSecond, w.Latency.P50, w.Latency.P99, w.Latency.Max,
		"", w.SecondsWith, w.MinLoginsWith, w.WorstP99WithMs, w.SecondsWithout, w.MinLoginsWithout, w.WorstP99WithoutMs)
}
