package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/auth"
	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// Device states in actorsRun.online.
const (
	devNone   = iota // not logged in (yet)
	devOnline        // login asked or answered ok: pushes are taken
	devGone          // the login failed, or the device was kicked
)

// ledgerEntry is one message of the chat: scheduled by the sender loop,
// completed by its SendAck (or Error) and counted by its pushes.
type ledgerEntry struct {
	sched             time.Duration // since the run's start
	sender, recipient int32
	acked, failed     bool
	pushes            uint16 // to the recipient's devices
	seq               uint64 // in the sender's log
	msgID             string
}

// actorsRun is one run: the virtual devices (it is the node's session
// table, actors.SessionTable) and what they measured.
type actorsRun struct {
	// Set before the load, then read-only.
	cfg   ActorsConfig
	log   *slog.Logger
	front *actors.Frontend
	keys  *auth.Keys
	start time.Time

	// Any goroutine; one slot per device (user u's device d is u·Devices+d,
	// session ID that plus 1) and per user.
	online    []atomic.Uint32
	activated []atomic.Bool

	// Everything below: under mu.
	mu                        sync.Mutex
	loginLat, loginSec        hist
	ackLat, ackSec, pushLat   hist
	logins, loginFails, kicks uint64
	users                     uint64 // users with a successful login: activations
	acks, sendErrs, skipped   uint64
	pushes, fullyPushed, dups uint64
	carbons, foreign          uint64
	lastAck, lateness         time.Duration // the last SendAck; the sender loop's worst lateness
	errs                      map[string]uint64
	ledger                    []ledgerEntry
	marks                     []time.Duration // marks[k]: when logins done reached k % of all
	loginsDone                int
}

// vuserPrefix starts every virtual user's ID: "u" in process, fresh per
// run against a joined cluster (ActorsTarget.UserPrefix). Set by
// runActors before any load; one run at a time per process.
var vuserPrefix = "u"

func vuser(u int) string   { return vuserPrefix + strconv.Itoa(u) }
func vdevice(d int) string { return "d" + strconv.Itoa(d) }

// schedule is when event i of a stream at rate per second happens, the
// rate rising linearly from 0 over ramp; 0 with no rate.
func rampSchedule(i int, rate float64, ramp time.Duration) time.Duration {
	if rate <= 0 {
		return 0
	}
	r := ramp.Seconds()
	inRamp := rate * r / 2 // events during the ramp
	if float64(i) < inRamp {
		return time.Duration(math.Sqrt(2*r*float64(i)/rate) * float64(time.Second))
	}
	return ramp + time.Duration((float64(i)-inRamp)/rate*float64(time.Second))
}

// sleepUntil waits until the run's offset at; false if ctx ended first.
func (r *actorsRun) sleepUntil(ctx context.Context, at time.Duration) bool {
	d := at - time.Since(r.start)
	if d <= 0 {
		return ctx.Err() == nil
	}
	return sleepCtx(ctx, d) == nil
}

// runActors starts the in-process node and runs cfg against it. It
// returns what it measured even with an error.
func runActors(ctx context.Context, cfg ActorsConfig, log *slog.Logger) (*ActorsResult, error) {
	cfg = cfg.withDefaults()
	cfg.Target = cfg.Target.withDefaults()
	vuserPrefix = cfg.Target.UserPrefix
	machine := readMachine(0)
	if err := cfg.Validate(machine.MemTotal); err != nil {
		return nil, err
	}
	devices := cfg.Users * cfg.Devices
	r := &actorsRun{
		cfg: cfg, log: log,
		online:    make([]atomic.Uint32, devices),
		activated: make([]atomic.Bool, cfg.Users),
		errs:      map[string]uint64{},
		marks:     make([]time.Duration, 101),
	}
	res := &ActorsResult{Config: cfg, Machine: machine}
	defer func() { res.Machine.LoadAfter = loadAverage() }()

	dir, err := os.MkdirTemp(cfg.DataDir, "tandem-bench-actors-")
	if err != nil {
		return nil, fmt.Errorf("create the node's data dir: %w", err)
	}
	defer func() {
		if cfg.Keep {
			log.Warn("kept the node's data dir", "dir", dir)
		} else if err := os.RemoveAll(dir); err != nil {
			log.Warn("removing the node's data dir", "dir", dir, "err", err)
		}
	}()
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate an admin key: %w", err)
	}
	n, err := node.Start(ctx, cfg.Target.nodeConfig(dir, hex.EncodeToString(key), cfg.LogLevel, r), log.With("component", "node"))
	if err != nil {
		if len(cfg.Target.Join) > 0 {
			return nil, fmt.Errorf("join the cluster at %s: %w", strings.Join(cfg.Target.Join, ","), err)
		}
		return nil, fmt.Errorf("start the in-process node: %w", err)
	}
	if len(cfg.Target.Join) > 0 {
		if err := waitJoined(ctx, n, cfg.Target); err != nil {
			n.Stop()
			return nil, err
		}
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		if err := n.Stop(); err != nil {
			return fmt.Errorf("stop the in-process node: %w", err)
		}
		return nil
	}
	defer func() {
		if err := stop(); err != nil {
			log.Warn("stopping the node", "err", err)
		}
	}()
	if r.keys, err = auth.New(n.JWTSecret); err != nil {
		return nil, fmt.Errorf("the node's token keys: %w", err)
	}
	r.front = n.Frontend()
	res.Memory.HeapBaseline = heapLive()

	r.start = time.Now()
	progress := r.startProgress(res)
	r.runLogins(ctx)
	loginEnd := time.Since(r.start)
	res.Memory.HeapAfterLogins = heapLive()
	if cfg.Users > 0 && res.Memory.HeapAfterLogins > res.Memory.HeapBaseline {
		res.Memory.PerUserBytes = float64(res.Memory.HeapAfterLogins-res.Memory.HeapBaseline) / float64(cfg.Users)
	}
	var chatStart, chatEnd time.Duration
	if cfg.MsgRate > 0 && cfg.Duration > 0 && ctx.Err() == nil {
		chatStart = time.Since(r.start)
		r.runChat(ctx, chatStart)
		chatEnd = time.Since(r.start)
		r.drain()
	}
	progress()
	res.Interrupted = ctx.Err() != nil
	r.fill(res, loginEnd, chatStart, chatEnd)

	if !cfg.NoVerify {
		vctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		res.Ledger = r.verify(vctx, n)
		cancel()
	}
	res.Problems = r.soundness(res)
	return res, stop()
}

// heapLive is the live heap after a full collection.
func heapLive() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// runLogins logs every device in once, Concurrency at a time, at
// LoginRate if set; after ctx ends it starts no more and waits for those
// in flight.
func (r *actorsRun) runLogins(ctx context.Context) {
	total := len(r.online)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(r.cfg.Concurrency, total) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				at := rampSchedule(i, r.cfg.LoginRate, r.cfg.Ramp)
				if !r.sleepUntil(ctx, at) {
					return
				}
				r.login(i, at)
			}
		})
	}
	wg.Wait()
}

// login logs device i in; with a login rate its latency counts from the
// scheduled time at, else from the request.
func (r *actorsRun) login(i int, at time.Duration) {
	u, d := i/r.cfg.Devices, i%r.cfg.Devices
	tok, _, err := r.keys.Mint(vuser(u), 24*time.Hour)
	if err != nil {
		r.loginFailed(i, "MINT")
		r.log.Error("minting a token", "user", vuser(u), "err", err)
		return
	}
	fr := &wire.Frame{Id: 1, Body: &wire.Frame_Login{Login: &wire.Login{
		Token: tok, DeviceId: vdevice(d), Platform: r.cfg.platformOf(u, d),
	}}}
	if r.cfg.LoginRate <= 0 {
		at = time.Since(r.start)
	}
	// Online before the request: the actor may push before it answers.
	r.online[i].Store(devOnline)
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	reply, _, ok := r.front.Login(ctx, uint64(i)+1, fr)
	cancel()
	lat := time.Since(r.start) - at
	if !ok || reply.GetLoginOk() == nil {
		name := reply.GetError().GetName()
		if name == "" {
			name = "NO_LOGIN_OK"
		}
		r.loginFailed(i, name)
		return
	}
	first := !r.activated[u].Swap(true)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logins++
	if first {
		r.users++
	}
	r.loginLat.record(lat)
	r.loginSec.record(lat)
	r.loginDone()
}

func (r *actorsRun) loginFailed(i int, name string) {
	r.online[i].Store(devGone)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loginFails++
	r.errs["login "+name]++
	r.loginDone()
}

// loginDone marks the percentiles of the storm; under mu.
func (r *actorsRun) loginDone() {
	r.loginsDone++
	total := len(r.online)
	for k := r.loginsDone * 100 / total; k >= 1 && r.marks[k] == 0; k-- {
		r.marks[k] = time.Since(r.start)
	}
}

// runChat has every user send to the next at MsgRate (rising over Ramp)
// until Duration or ctx ends: message k is user k mod Users's, from its
// devices in turn, sent on schedule however late the earlier ones were.
func (r *actorsRun) runChat(ctx context.Context, start time.Duration) {
	rate := r.cfg.MsgRate * float64(r.cfg.Users)
	for k := 0; ; k++ {
		at := rampSchedule(k, rate, r.cfg.Ramp)
		if at >= r.cfg.Duration || !r.sleepUntil(ctx, start+at) {
			return
		}
		u := k % r.cfg.Users
		peer := (u + 1) % r.cfg.Users
		i := u*r.cfg.Devices + (k/r.cfg.Users)%r.cfg.Devices
		if r.online[i].Load() != devOnline {
			r.mu.Lock()
			r.skipped++
			r.mu.Unlock()
			continue
		}
		r.mu.Lock()
		r.lateness = max(r.lateness, time.Since(r.start)-(start+at))
		n := len(r.ledger)
		r.ledger = append(r.ledger, ledgerEntry{sched: start + at, sender: int32(u), recipient: int32(peer)})
		r.mu.Unlock()
		content := make([]byte, 8)
		binary.LittleEndian.PutUint64(content, uint64(n))
		r.front.Frame(uint64(i)+1, vuser(u), &wire.Frame{Id: uint64(n) + 1, Body: &wire.Frame_Send{Send: &wire.Send{
			ClientMessageId: "m" + strconv.Itoa(n),
			FirstAttempt:    true, // every run is a fresh store
			Conversation:    &wire.Conversation{Type: wire.Conversation_DIRECT, Id: vuser(peer)},
			Type:            int32(wire.MessageType_TEXT),
			Content:         content,
		}}})
	}
}

// drain waits until every message sent is acked or refused and pushed
// to every device of its recipient, or Drain passes.
func (r *actorsRun) drain() {
	deadline := time.Now().Add(r.cfg.Drain)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		done := r.acks+r.sendErrs == uint64(len(r.ledger)) && r.fullyPushed >= r.acks
		r.mu.Unlock()
		if done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Deliver takes the actors' frames for a virtual device (actors.SessionTable).
// It never blocks on anything but mu.
func (r *actorsRun) Deliver(sid uint64, frames []*wire.Frame) bool {
	i := int(sid) - 1
	if i < 0 || i >= len(r.online) || r.online[i].Load() != devOnline {
		return false
	}
	u := i / r.cfg.Devices
	now := time.Since(r.start)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, fr := range frames {
		switch {
		case fr.GetSendAck() != nil:
			e := r.entry(fr.GetId())
			if e == nil || e.acked {
				r.foreign++
				continue
			}
			a := fr.GetSendAck()
			e.acked, e.msgID, e.seq = true, a.GetMessageId(), a.GetSeq()
			r.acks++
			r.lastAck = now
			r.ackLat.record(now - e.sched)
			r.ackSec.record(now - e.sched)
			if int(e.pushes) >= r.cfg.Devices {
				r.fullyPushed++ // a push may beat its ack
			}
		case fr.GetError() != nil && fr.GetId() > 0:
			if e := r.entry(fr.GetId()); e != nil && !e.acked && !e.failed {
				e.failed = true
				r.sendErrs++
			}
			r.errs["send "+fr.GetError().GetName()]++
		case fr.GetPush() != nil:
			for _, en := range fr.GetPush().GetEntries() {
				m := en.GetMessage()
				if m == nil {
					continue // device events, read state...
				}
				if len(m.GetContent()) != 8 {
					r.foreign++
					continue
				}
				e := r.entry(binary.LittleEndian.Uint64(m.GetContent()) + 1)
				switch {
				case e == nil:
					r.foreign++
				case int(e.recipient) == u && m.GetSender() == vuser(int(e.sender)):
					e.pushes++
					switch {
					case int(e.pushes) > r.cfg.Devices:
						r.dups++
					case int(e.pushes) == r.cfg.Devices && e.acked:
						r.fullyPushed++
					}
					r.pushes++
					r.pushLat.record(now - e.sched)
				case int(e.sender) == u:
					r.carbons++
				default:
					r.foreign++
				}
			}
		}
	}
	return true
}

// entry is the ledger entry of frame id (message id-1), or nil; under mu.
func (r *actorsRun) entry(id uint64) *ledgerEntry {
	if id == 0 || id > uint64(len(r.ledger)) {
		return nil
	}
	return &r.ledger[id-1]
}

// Kick takes a kick for a virtual device: it is gone (and a kick of a
// scenario the policy holds is a problem).
func (r *actorsRun) Kick(sid uint64, k *wire.Kick) bool {
	i := int(sid) - 1
	if i < 0 || i >= len(r.online) || r.online[i].Swap(devGone) != devOnline {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kicks++
	r.errs["kick "+k.GetReason().String()]++
	return true
}

// startProgress prints a line a second (one updated line on a terminal)
// and keeps it as a point of res.Series; the function it returns stops it.
func (r *actorsRun) startProgress(res *ActorsResult) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var prevLogins, prevAcks uint64
		for {
			select {
			case <-done:
				if r.cfg.Terminal && r.cfg.Progress != nil {
					fmt.Fprintln(r.cfg.Progress)
				}
				return
			case <-t.C:
			}
			r.mu.Lock()
			p := ActorsPoint{
				Seconds: math.Round(time.Since(r.start).Seconds()*10) / 10,
				Users:   r.users, LoginsPerSecond: r.logins - prevLogins, MsgsPerSecond: r.acks - prevAcks,
				Errors:     r.loginFails + r.sendErrs + r.kicks,
				LoginP99Ms: ms(r.loginSec.quantile(0.99)), AckP99Ms: ms(r.ackSec.quantile(0.99)),
			}
			prevLogins, prevAcks = r.logins, r.acks
			r.loginSec, r.ackSec = hist{}, hist{}
			res.Series = append(res.Series, p)
			r.mu.Unlock()
			if r.cfg.Progress != nil {
				writeProgress(r.cfg.Progress, r.cfg.Terminal, p)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func writeProgress(w io.Writer, terminal bool, p ActorsPoint) {
	line := fmt.Sprintf("%6.0fs  users %9d  logins/s %7d  msgs/s %7d  errors %d  p99 login %.1f ms  ack %.1f ms",
		p.Seconds, p.Users, p.LoginsPerSecond, p.MsgsPerSecond, p.Errors, p.LoginP99Ms, p.AckP99Ms)
	if terminal {
		fmt.Fprintf(w, "\r%-110s", line)
		return
	}
	fmt.Fprintln(w, line)
}
