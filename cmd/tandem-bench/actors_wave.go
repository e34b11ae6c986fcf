package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// The reconnect wave and logout (issue 12). A device kicked with
// may_reconnect — after a node loss every surviving member's runtime
// kicks the sessions whose user lived on the lost node with 4017
// (actors/failover.go) — logs in again at once, as a real client does:
// with its cursor (the highest seq it was pushed or paged) and reconnect
// set (an automatic reconnect never kicks another session), on a fresh
// session ID (a new connection), retrying a refused or timed-out login
// with backoff. Once back it resends its sends that were neither acked
// nor refused, with the same client message IDs and first_attempt unset:
// the server answers a send it stored already with the first SendAck
// (duplicate), so nothing is stored twice. The wave is every such kick:
// from the first kick to the last device back online, the re-login
// latency (kick → LoginOk), the messages acked meanwhile. With -kill-pid
// the tool causes the node loss itself (SIGKILL, -kill-after into the
// chat).
//
// A logout action (-logout-share) logs a device out (Frontend.Logout, the
// path of a Logout frame) and in again with its cursor, not as a
// reconnect; its latency is from its scheduled time to the LoginOk. The
// ledger finds one LOGGED_OUT device event per acked logout and one
// LOGGED_IN per successful login of each device in its user's log.

// validateKill checks -kill-pid and -kill-after (c with defaults).
func (c ActorsConfig) validateKill() []error {
	if c.KillPID == 0 {
		if c.KillAfter != 0 {
			return []error{errors.New("-kill-after goes with -kill-pid")}
		}
		return nil
	}
	var errs []error
	if len(c.Target.Join) == 0 {
		errs = append(errs, errors.New("-kill-pid goes with -join: it kills a node of the cluster the tool joined (the in-process node is this process)"))
	}
	switch pid := c.KillPID; {
	case pid < 0:
		errs = append(errs, fmt.Errorf("-kill-pid %d: not a process ID", pid))
	case pid == 1:
		errs = append(errs, errors.New("-kill-pid 1: that is init, never a tandem node"))
	case pid == os.Getpid():
		errs = append(errs, fmt.Errorf("-kill-pid %d: that is this tool's own process", pid))
	default:
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("-kill-pid %d: no such process", pid))
		} else if err != nil && !errors.Is(err, syscall.EPERM) {
			errs = append(errs, fmt.Errorf("-kill-pid %d: %v", pid, err))
		}
	}
	if c.MsgRate <= 0 || c.Duration <= 0 {
		errs = append(errs, errors.New("-kill-pid needs a chat (-msg-rate, -duration): the kill happens -kill-after into it and the wave is measured against it"))
	} else if c.KillAfter <= 0 || c.KillAfter >= c.Duration {
		errs = append(errs, fmt.Errorf("-kill-after %v: must be positive and within the chat's -duration %v", c.KillAfter, c.Duration))
	}
	return errs
}

// waveState is the reconnect wave as it happens; under actorsRun.mu.
type waveState struct {
	killAt                   time.Duration // since the run's start; 0: no kill
	killErr                  string
	kicked, ok, failed       uint64 // devices kicked with may_reconnect; re-logins that succeeded, gave up
	attempts                 uint64 // login requests of the re-logins
	firstKick, lastBack      time.Duration
	ackBase, ackedDuring     uint64 // messages acked before the first kick; since, up to the last device back
	lat                      hist   // kick → LoginOk
	resent, retried, dupAcks uint64
	storedTwice              uint64 // a resend acked with another message ID than the first ack
}

// WaveResult is the reconnect wave: every device kicked with
// may_reconnect logging in again.
type WaveResult struct {
	KilledPID     int     `json:"killed_pid,omitempty"`
	KillAtSeconds float64 `json:"kill_at_seconds,omitempty"` // since the run's start
	KillError     string  `json:"kill_error,omitempty"`
	Kicked        uint64  `json:"kicked"` // devices kicked with may_reconnect
	ReloginsOK    uint64  `json:"relogins_ok"`
	ReloginsFail  uint64  `json:"relogins_failed"`
	StillOffline  uint64  `json:"still_offline"`  // kicked, neither back nor given up at the end
	LoginRequests uint64  `json:"login_requests"` // of the re-logins, retries included
	// Since the run's start: the first kick, the last device back online;
	// Seconds between them. KillToFirstKickSeconds: how long the cluster
	// took to notice the loss.
	FirstKickSeconds       float64 `json:"first_kick_seconds"`
	LastBackSeconds        float64 `json:"last_back_seconds"`
	Seconds                float64 `json:"seconds"`
	KillToFirstKickSeconds float64 `json:"kill_to_first_kick_seconds,omitempty"`
	Relogin                Latency `json:"relogin"`      // kick → LoginOk, per device
	AckedDuring            uint64  `json:"acked_during"` // messages acked from the first kick to the last device back
	// Resent: sends resent after a re-login (same client message ID);
	// Retried: sends resent after UNAVAILABLE; DuplicateAcks: second
	// SendAcks of one message with its first message ID (the server's
	// de-duplication); StoredTwice: acks with another message ID — a
	// message stored twice.
	Resent        uint64 `json:"resent"`
	Retried       uint64 `json:"retried"`
	DuplicateAcks uint64 `json:"duplicate_acks"`
	StoredTwice   uint64 `json:"stored_twice"`
}

// Retrying a re-login: the first wait, the longest, and how long a device
// keeps trying (the timeout of each request is -timeout, at most).
const (
	reloginBackoff    = 100 * time.Millisecond
	reloginMaxBackoff = 2 * time.Second
	reloginBudget     = time.Minute
	sendRetries       = 3 // resends of a send answered UNAVAILABLE
)

// sidOf is device i's session ID for its gen-th login: each login after
// the first is a new connection, so frames for an older one are dropped
// (as a closed socket drops them) and a stale kick cannot end a newer
// login.
func sidOf(i int, gen uint32) uint64 { return uint64(gen)<<32 | uint64(i+1) }

// sid is device i's current session ID.
func (r *actorsRun) sid(i int) uint64 { return sidOf(i, r.gens[i].Load()) }

// device is the device of session sid, if it is the device's current one.
func (r *actorsRun) device(sid uint64) (int, bool) {
	i := int(sid&0xffffffff) - 1
	if i < 0 || i >= len(r.online) || uint32(sid>>32) != r.gens[i].Load() {
		return 0, false
	}
	return i, true
}

// Kick takes a kick for a virtual device (actors.SessionTable). A kick
// that allows a reconnect starts the device's re-login (unless
// -reconnect=false or the run is ending); any other leaves it gone (and
// is a problem of a scenario the kick policy holds). A kick during a
// login in flight is dropped: the login's answer decides.
func (r *actorsRun) Kick(sid uint64, k *wire.Kick) bool {
	i, ok := r.device(sid)
	if !ok || !r.online[i].CompareAndSwap(devOnline, devGone) {
		return false
	}
	now := time.Since(r.start)
	r.mu.Lock()
	// closing is set under mu: no re-login starts once the run waits for them.
	again := k.GetMayReconnect() && !r.cfg.NoReconnect && !r.closing.Load()
	if again {
		w := &r.wave
		if w.kicked == 0 {
			w.firstKick, w.ackBase = now, r.msgAcks()
		}
		w.kicked++
		r.busy.Add(1)
		r.wg.Add(1)
	} else {
		r.kicks++
		r.errs["kick "+k.GetReason().String()+" "+closeName(k.GetCloseCode())]++
	}
	r.mu.Unlock()
	if again {
		go func() {
			defer r.wg.Done()
			defer r.busy.Add(-1)
			r.relogin(i, now)
		}()
	}
	return true
}

func closeName(code uint32) string {
	switch code {
	case wire.CloseSessionLost:
		return "4017"
	case wire.CloseShutdown:
		return "4015"
	}
	return fmt.Sprint(code)
}

// relogin logs kicked device i in again and resends its unacked sends.
func (r *actorsRun) relogin(i int, kickedAt time.Duration) {
	ok, tries := r.loginAgain(i, true)
	now := time.Since(r.start)
	r.mu.Lock()
	w := &r.wave
	w.attempts += tries
	if ok {
		w.ok++
		w.lat.record(now - kickedAt)
		w.lastBack = max(w.lastBack, now)
		w.ackedDuring = r.msgAcks() - w.ackBase
	} else {
		w.failed++
	}
	r.mu.Unlock()
	if ok {
		r.resend(i)
	}
}

// loginAgain logs device i in on a new session with its cursor, retrying
// a temporary refusal with backoff for reloginBudget; reconnect: an
// automatic reconnect (never kicks). It returns whether the device is
// online and how many login requests it took.
func (r *actorsRun) loginAgain(i int, reconnect bool) (bool, uint64) {
	u, d := i/r.cfg.Devices, i%r.cfg.Devices
	what := "relogin"
	if !reconnect {
		what = "logout relogin"
	}
	tok, _, err := r.keys.Mint(vuser(u), 24*time.Hour)
	if err != nil {
		r.online[i].Store(devGone)
		r.noteErr(what + " MINT")
		return false, 0
	}
	deadline := time.Now().Add(reloginBudget)
	backoff := reloginBackoff
	for tries := uint64(1); ; tries++ {
		gen := r.gens[i].Add(1)
		r.online[i].Store(devLoggingIn) // takes the catch-up; the chat skips it
		r.mu.Lock()
		cursor := r.cursors[i]
		r.mu.Unlock()
		fr := &wire.Frame{Id: 1, Body: &wire.Frame_Login{Login: &wire.Login{
			Token: tok, DeviceId: vdevice(d), Platform: r.cfg.platformOf(u, d),
			HasCursor: true, Cursor: cursor, Reconnect: reconnect,
		}}}
		ctx, cancel := context.WithTimeout(context.Background(), min(r.cfg.Timeout, time.Until(deadline)))
		reply, _, ok := r.front.Login(ctx, sidOf(i, gen), fr)
		cancel()
		if ok && reply.GetLoginOk() != nil {
			r.online[i].Store(devOnline)
			r.mu.Lock()
			r.loginsOK[i]++
			r.mu.Unlock()
			return true, tries
		}
		r.online[i].Store(devGone)
		name := reply.GetError().GetName()
		if name == "" {
			name = "NO_LOGIN_OK"
		}
		temporary := reply.GetError().GetTemporary() || name == "NO_LOGIN_OK"
		if !temporary || r.closing.Load() || time.Now().Add(backoff).After(deadline) {
			r.noteErr(what + " " + name)
			return false, tries
		}
		r.noteErr(what + " " + name + " (retried)")
		time.Sleep(backoff)
		backoff = min(2*backoff, reloginMaxBackoff)
	}
}

func (r *actorsRun) noteErr(name string) {
	r.mu.Lock()
	r.errs[name]++
	r.mu.Unlock()
}

// resend sends device i's sends that were neither acked nor refused
// again, with their client message IDs.
func (r *actorsRun) resend(i int) {
	if r.outstanding == nil {
		return
	}
	r.mu.Lock()
	var again []int32
	keep := r.outstanding[i][:0]
	for _, n := range r.outstanding[i] {
		if e := &r.ledger[n]; !e.acked && !e.failed {
			keep = append(keep, n)
			again = append(again, n)
			e.resent = true
		}
	}
	r.outstanding[i] = keep
	r.wave.resent += uint64(len(again))
	r.mu.Unlock()
	for _, n := range again {
		r.sendFrame(i, int(n), false)
	}
}

// retrySend resends message n from device i after an UNAVAILABLE answer,
// after a pause; a device offline by then resends it when back. Under mu
// (closing is set under mu).
func (r *actorsRun) retrySend(i, n int, tries uint8) {
	if r.closing.Load() {
		return
	}
	r.wg.Add(1)
	time.AfterFunc(time.Duration(tries)*300*time.Millisecond, func() {
		defer r.wg.Done()
		if r.closing.Load() || r.online[i].Load() != devOnline {
			return
		}
		r.mu.Lock()
		e := &r.ledger[n]
		done := e.acked || e.failed
		r.mu.Unlock()
		if !done {
			r.sendFrame(i, n, false)
		}
	})
}

// logout logs device i of user u out and in again with its cursor
// (skipped if it is not online).
func (r *actorsRun) logout(i, u int, sched time.Duration) {
	if !r.online[i].CompareAndSwap(devOnline, devLoggingIn) {
		r.mu.Lock()
		r.kinds[kindLogout].skipped++
		r.mu.Unlock()
		return
	}
	sid := r.sid(i)
	r.mu.Lock()
	r.late(sched)
	n := len(r.logouts)
	r.logouts = append(r.logouts, opEntry{sched: sched, user: int32(u), target: int32(i)})
	r.kinds[kindLogout].sent++
	r.busy.Add(1)
	r.mu.Unlock()
	r.wg.Go(func() {
		defer r.busy.Add(-1)
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
		err := r.front.Logout(ctx, sid, vuser(u))
		cancel()
		if err == nil {
			r.mu.Lock()
			r.logoutsOK[i]++
			r.mu.Unlock()
		} else {
			r.log.Warn("logout failed", "user", vuser(u), "err", err)
		}
		ok, _ := r.loginAgain(i, false) // a real client logs in again whatever the logout said
		now := time.Since(r.start)
		r.mu.Lock()
		op, kc := &r.logouts[n], &r.kinds[kindLogout]
		if err == nil && ok {
			op.acked = true
			kc.acked++
			kc.lastAck = now
			kc.ack.record(now - op.sched)
			kc.ackSec.record(now - op.sched)
		} else {
			op.failed = true
			kc.failed++
			if err != nil {
				r.errs["logout refused"]++
			}
		}
		r.mu.Unlock()
		if ok {
			r.resend(i)
		}
	})
}

// startKill sends SIGKILL to cfg.KillPID KillAfter after the chat's
// start (at, since the run's start), unless ctx ends first.
func (r *actorsRun) startKill(ctx context.Context, at time.Duration) {
	if r.cfg.KillPID == 0 {
		return
	}
	r.wg.Go(func() {
		if !r.sleepUntil(ctx, at+r.cfg.KillAfter) {
			return
		}
		err := syscall.Kill(r.cfg.KillPID, syscall.SIGKILL)
		now := time.Since(r.start)
		r.mu.Lock()
		r.wave.killAt = now
		if err != nil {
			r.wave.killErr = err.Error()
		}
		r.mu.Unlock()
		if r.cfg.Progress != nil {
			msg := fmt.Sprintf("%6.1fs  killed PID %d (SIGKILL)", now.Seconds(), r.cfg.KillPID)
			if err != nil {
				msg = fmt.Sprintf("%6.1fs  killing PID %d failed: %v", now.Seconds(), r.cfg.KillPID, err)
			}
			if r.cfg.Terminal {
				msg = "\r" + msg
			}
			fmt.Fprintln(r.cfg.Progress, msg)
		}
	})
}

// fillWave is the wave's result, nil if there was no kill and no kick
// that allowed a reconnect; under mu.
func (r *actorsRun) fillWave() *WaveResult {
	w := &r.wave
	if w.kicked == 0 && w.killAt == 0 && w.killErr == "" && w.resent+w.retried+w.dupAcks+w.storedTwice == 0 {
		return nil
	}
	res := &WaveResult{
		KilledPID: r.cfg.KillPID, KillAtSeconds: w.killAt.Seconds(), KillError: w.killErr,
		Kicked: w.kicked, ReloginsOK: w.ok, ReloginsFail: w.failed, StillOffline: w.kicked - w.ok - w.failed,
		LoginRequests: w.attempts, Relogin: latency(&w.lat), AckedDuring: w.ackedDuring,
		Resent: w.resent, Retried: w.retried, DuplicateAcks: w.dupAcks, StoredTwice: w.storedTwice,
	}
	if w.kicked > 0 {
		res.FirstKickSeconds = w.firstKick.Seconds()
		if w.killAt > 0 && w.firstKick > w.killAt {
			res.KillToFirstKickSeconds = (w.firstKick - w.killAt).Seconds()
		}
	}
	if w.ok > 0 {
		res.LastBackSeconds = w.lastBack.Seconds()
		res.Seconds = (w.lastBack - w.firstKick).Seconds()
	}
	return res
}

// problems are what makes the wave unsound.
func (w *WaveResult) problems(killed bool) []string {
	var p []string
	if w.KillError != "" {
		p = append(p, fmt.Sprintf("killing PID %d failed: %s", w.KilledPID, w.KillError))
	}
	if killed && w.KillError == "" && w.Kicked == 0 {
		p = append(p, fmt.Sprintf("PID %d was killed but no device was kicked: it hosted none of the run's users, or the cluster did not notice the loss before the end (a longer -duration or -drain)", w.KilledPID))
	}
	if w.ReloginsFail > 0 {
		p = append(p, fmt.Sprintf("reconnect wave: %d of %d kicked devices could not log in again", w.ReloginsFail, w.Kicked))
	}
	if w.StillOffline > 0 {
		p = append(p, fmt.Sprintf("reconnect wave: %d of %d kicked devices still logging in again at the end", w.StillOffline, w.Kicked))
	}
	if w.StoredTwice > 0 {
		p = append(p, fmt.Sprintf("reconnect wave: %d resent messages acked with another message ID than their first ack (stored twice)", w.StoredTwice))
	}
	return p
}

// summary is the wave in one line.
func (w *WaveResult) summary() string {
	s := ""
	if w.KilledPID != 0 {
		s = fmt.Sprintf("PID %d killed at %.1f s; ", w.KilledPID, w.KillAtSeconds)
		if w.KillToFirstKickSeconds > 0 {
			s += fmt.Sprintf("first kick %.1f s later; ", w.KillToFirstKickSeconds)
		}
	}
	return s + fmt.Sprintf("%d devices kicked (may reconnect), %d back online, %d failed, %d still trying (%d login requests); first kick at %.1f s, last back at %.1f s: %.2f s; re-login (kick → LoginOk) p50 %.1f  p99 %.1f  max %.1f ms; %d messages acked meanwhile; %d sends resent, %d retried after UNAVAILABLE, %d duplicate acks (same message ID), %d stored twice",
		w.Kicked, w.ReloginsOK, w.ReloginsFail, w.StillOffline, w.LoginRequests, w.FirstKickSeconds, w.LastBackSeconds, w.Seconds,
		w.Relogin.P50, w.Relogin.P99, w.Relogin.Max, w.AckedDuring, w.Resent, w.Retried, w.DuplicateAcks, w.StoredTwice)
}
