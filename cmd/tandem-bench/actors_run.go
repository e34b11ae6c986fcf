package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/auth"
	"github.com/tandem-im/tandem/internal/deadline"
	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// Device states in actorsRun.online.
const (
	devNone      = iota // not logged in (yet)
	devOnline           // login asked or answered ok: pushes are taken
	devGone             // the login failed, or the device was kicked
	devLoggingIn        // a login again (after a kick or a logout) in flight: takes frames, the chat skips it
)

// The chat's actions.
type actionKind uint8

const (
	kindDirect actionKind = iota // a 1:1 send to the next user
	kindGroup                    // a send to one of the sender's groups
	kindRead                     // a mark-read of the newest message received
	kindRecall                   // a recall of the user's newest acked message
	kindLogout                   // a logout of the device and a login again with its cursor
	numKinds
)

var kindNames = [numKinds]string{"1:1", "group", "read", "recall", "logout"}

// Frame IDs: a message's is its ledger index + 1; mark-reads and recalls
// count from their bases.
const (
	readIDBase   = 1 << 40
	recallIDBase = 2 << 40
)

// ledgerEntry is one message of the chat: scheduled by the sender loop,
// completed by its SendAck (or Error) and counted by its pushes.
type ledgerEntry struct {
	sched             time.Duration // since the run's start
	sender, recipient int32         // recipient: the peer, or the group's index
	dev               int32         // the sending device
	group             bool
	acked, failed     bool
	resent            bool   // sent again after its device logged in again
	tries             uint8  // resends after UNAVAILABLE
	recalled          bool   // a recall of it was sent: its pushes are no longer awaited
	settled           bool   // acked, and pushed to every device it goes to, or recalled
	pushes            uint32 // to the recipient's devices (a group's: every member's, the sender's too)
	seq               uint64 // in the sender's log
	msgID             string
}

// opEntry is a mark-read or a recall: answered with Ok (acked) or Error.
type opEntry struct {
	sched         time.Duration
	user          int32
	target        int32  // read: the peer or the group; recall: the message's ledger index; logout: the device
	group         bool   // read: of a group conversation
	upTo          uint64 // read: the seq marked, in the user's log
	acked, failed bool
}

// received is the newest message a user was pushed from someone else.
type received struct {
	seq   uint64 // in the user's log; 0: none yet
	conv  int32  // the sender, or the group
	group bool
}

// kindCounters are one kind's figures; under actorsRun.mu.
type kindCounters struct {
	sent, skipped, acked, failed uint64
	ack, ackSec                  hist
	lastAck                      time.Duration
}

// actorsRun is one run: the virtual devices (it is the node's session
// table, actors.SessionTable) and what they measured.
type actorsRun struct {
	// Set before the load, then read-only.
	cfg   ActorsConfig
	log   *slog.Logger
	front *actors.Frontend
	keys  *auth.Keys
	// userCounts reads the in-process node's (or the tool's member's:
	// none) user actors: active and passivated.
	userCounts func() actors.UserCounts
	start      time.Time
	groups     *groupLayout
	// calls: the deadline of logins and activations, shared (no timer of
	// the tool's own per call on the node's cores).
	calls deadline.Shared

	// Any goroutine; one slot per device (user u's device d is u·Devices+d,
	// session ID that plus 1, plus its login's generation << 32: sidOf)
	// and per user.
	online    []atomic.Uint32
	gens      []atomic.Uint32 // logins of the device after its first
	activated []bool          // per user: a login or activation succeeded (under mu)
	epochs    []uint64        // -activate-only: user u's epoch as its actor answered (under mu)

	// The frame senders (frameWorkers): device i's frames go through
	// frameq[i % frameWorkers], in order.
	frameq    []chan queuedFrame
	frameWG   sync.WaitGroup
	frameWait atomic.Int64 // the longest one Frontend.Frame call took, ns

	// Re-logins and logouts in flight (busy), their goroutines and the
	// resend timers (wg); closing: the run is ending, kicks start no
	// re-login.
	busy    atomic.Int64
	wg      sync.WaitGroup
	closing atomic.Bool

	// Everything below: under mu.
	mu                        sync.Mutex
	loginLat, loginSec        hist
	logins, loginFails, kicks uint64
	users                     uint64 // users with a successful login: activations
	kinds                     [numKinds]kindCounters
	pushLat, memberPushLat    hist // every message push; a group message's member pushes
	fanoutLat, fanoutSec      hist // a group message's send → its last member push
	pushes, fullyPushed, dups uint64
	settled                   uint64
	carbons, foreign          uint64
	groupPushes, groupEvents  uint64 // member pushes of group messages; CREATED events pushed
	firstGroupSend            time.Duration
	lastGroupPush             time.Duration
	lateness                  time.Duration // the sender loop's worst
	errs                      map[string]uint64
	ledger                    []ledgerEntry
	reads, recalls, logouts   []opEntry
	cursors                   []uint64  // per device: the highest seq pushed or paged to it
	repeats                   uint64    // entries at or below their device's cursor, dropped (a catch-up page and a push both had them)
	loginsOK, logoutsOK       []uint16  // per device: successful logins, logouts answered
	outstanding               [][]int32 // per device, with a chat: ledger indexes of its sends, unanswered at the last look
	wave                      waveState
	lastRecv                  []received      // per user
	lastOwn                   []int32         // per user: the newest acked own message not recalled (ledger index), -1 none
	marks                     []time.Duration // marks[k]: when logins done reached k % of all
	loginsDone                int
}

// vuserPrefix starts every virtual user's ID: "u" in process, fresh per
// run against a joined cluster (ActorsTarget.UserPrefix). Set by
// runActors before any load; one run at a time per process.
var vuserPrefix = "u"

func vuser(u int) string { return vuserPrefix + strconv.Itoa(u) }

// vdevice names a user's device d; the first names are made once (the
// node keeps a session's device ID: one string a login for the node's
// heap to hold and the collector to mark, were it made for each).
func vdevice(d int) string {
	if d < len(vdevices) {
		return vdevices[d]
	}
	return "d" + strconv.Itoa(d)
}

var vdevices = func() (names [32]string) {
	for d := range names {
		names[d] = "d" + strconv.Itoa(d)
	}
	return names
}()

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
	r := newActorsRun(cfg, log)
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
	ncfg := cfg.Target.nodeConfig(dir, hex.EncodeToString(key), cfg.LogLevel, r)
	ncfg.IdleTimeout = cfg.IdleTimeout // 0: the node's default
	n, err := node.Start(ctx, ncfg, log.With("component", "node"))
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
		r.closing.Store(true)
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
	r.userCounts = n.UserCounts
	stopFrames := sync.OnceFunc(r.startFrames())
	defer stopFrames()
	res.Memory.HeapBaseline = settledHeapLive()

	chat := cfg.MsgRate > 0 && cfg.Duration > 0
	stopLoginProfile := func() {}
	if !chat { // no chat to profile: the logins
		if stopLoginProfile, err = startCPUProfile(cfg.CPUProfile, log); err != nil {
			return nil, err
		}
	}
	r.start = time.Now()
	progress := r.startProgress(res)
	if cfg.Passivate > 0 {
		r.runLogins(ctx, 0, cfg.Passivate*cfg.Devices, 0, 0) // the users that go idle together, as fast as they can
	} else {
		r.runLogins(ctx, 0, len(r.online), cfg.LoginRate, 0)
	}
	loginEnd := time.Since(r.start)
	if cfg.Passivate == 0 {
		stopLoginProfile()
	}
	res.Memory.HeapAfterLogins = settledHeapLive()
	if loggedIn := cmp.Or(cfg.Passivate, cfg.Users); loggedIn > 0 && res.Memory.HeapAfterLogins > res.Memory.HeapBaseline {
		res.Memory.PerUserBytes = float64(res.Memory.HeapAfterLogins-res.Memory.HeapBaseline) / float64(loggedIn)
	}
	var passivation *PassivationResult
	if cfg.Passivate > 0 && ctx.Err() == nil {
		passivation = r.runPassivationWave(ctx)
		loginEnd = passivation.end // the run's logins end with the new users'
		stopLoginProfile()
	}
	var groupsErr error
	if cfg.Groups > 0 && ctx.Err() == nil {
		t0 := time.Now()
		groupsErr = r.createGroups(ctx, n.Groups())
		res.Groups.CreateSeconds = time.Since(t0).Seconds()
	}
	var chatStart, chatEnd time.Duration
	if chat && ctx.Err() == nil && groupsErr == nil {
		stopProfile, err := startCPUProfile(cfg.CPUProfile, log)
		if err != nil {
			return nil, err
		}
		chatStart = time.Since(r.start)
		r.startKill(ctx, chatStart)
		if cfg.onChat != nil {
			r.wg.Go(func() { cfg.onChat(ctx, r) })
		}
		r.runChat(ctx, chatStart)
		chatEnd = time.Since(r.start)
		r.drain()
		stopProfile()
	}
	if err := writeHeapProfile(cfg.HeapProfile); err != nil {
		log.Warn("writing the heap profile", "err", err)
	}
	r.mu.Lock()
	r.closing.Store(true) // kicks from here on start no re-login, UNAVAILABLE no resend
	r.mu.Unlock()
	r.wg.Wait()
	stopFrames()
	progress()
	res.Interrupted = ctx.Err() != nil
	r.fill(res, loginEnd, chatStart, chatEnd)
	if passivation != nil {
		passivation.fromSeries(res.Series)
		res.Passivation = passivation
	}
	if groupsErr != nil {
		res.Problems = r.soundness(res)
		return res, groupsErr
	}

	if !cfg.NoVerify {
		if cfg.beforeVerify != nil {
			cfg.beforeVerify(r)
		}
		vctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		res.Ledger = r.verify(vctx, n)
		cancel()
	}
	res.Problems = r.soundness(res)
	return res, stop()
}

func newActorsRun(cfg ActorsConfig, log *slog.Logger) *actorsRun {
	r := &actorsRun{
		cfg: cfg, log: log,
		online:    make([]atomic.Uint32, cfg.Users*cfg.Devices),
		gens:      make([]atomic.Uint32, cfg.Users*cfg.Devices),
		cursors:   make([]uint64, cfg.Users*cfg.Devices),
		loginsOK:  make([]uint16, cfg.Users*cfg.Devices),
		logoutsOK: make([]uint16, cfg.Users*cfg.Devices),
		activated: make([]bool, cfg.Users),
		errs:      map[string]uint64{},
		marks:     make([]time.Duration, 101),
		groups:    newGroupLayout(cfg.Users, cfg.Groups, cfg.GroupSizes),
	}
	r.calls.Timeout = cfg.Timeout
	if cfg.ActivateOnly {
		r.epochs = make([]uint64, cfg.Users)
	}
	if cfg.MsgRate > 0 { // only a chat has messages to read or recall
		r.lastRecv, r.lastOwn = make([]received, cfg.Users), make([]int32, cfg.Users)
		r.outstanding = make([][]int32, cfg.Users*cfg.Devices)
		for u := range r.lastOwn {
			r.lastOwn[u] = -1
		}
	}
	return r
}

// writeHeapProfile writes the heap in use after a collection to path
// ("": nothing).
func writeHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startCPUProfile profiles the process into path ("": not at all) until
// the function it returns is called.
func startCPUProfile(path string, log *slog.Logger) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start the CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			log.Warn("closing the CPU profile", "err", err)
		}
	}, nil
}

// heapLive is the live heap after a full collection.
// settledHeapLive is heapLive once it stops falling: memory that
// goroutines of an earlier node in the same process (a stop still running
// its steps) release would otherwise come off the baseline during the
// logins. At most ten samples, 50 ms apart.
func settledHeapLive() uint64 {
	h := heapLive()
	for range 10 {
		time.Sleep(50 * time.Millisecond)
		next := heapLive()
		if next+next/100 >= h { // not 1 % below the last sample
			return min(h, next)
		}
		h = next
	}
	return h
}

func heapLive() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// runLogins logs devices from … to−1 in once, Concurrency at a time, at
// rate if set (scheduled from offset since the run's start), else as fast
// as the concurrency allows; after ctx ends it starts no more and waits
// for those in flight.
func (r *actorsRun) runLogins(ctx context.Context, from, to int, rate float64, offset time.Duration) {
	r.eachDevice(ctx, from, to, func(i int) bool {
		at := time.Duration(-1) // from the request
		if rate > 0 {
			at = offset + rampSchedule(i-from, rate, r.cfg.Ramp)
			if !r.sleepUntil(ctx, at) {
				return false
			}
		}
		r.login(i, at)
		return true
	})
}

// eachDevice calls f for devices from … to−1 in order, Concurrency calls
// at a time, until f returns false or ctx ends; it waits for the calls in
// flight.
func (r *actorsRun) eachDevice(ctx context.Context, from, to int, f func(i int) bool) {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	for range min(r.cfg.Concurrency, to-from) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to || !f(i) {
					return
				}
			}
		})
	}
	wg.Wait()
}

// login logs device i in; with a login rate its latency counts from the
// scheduled time at (since the run's start), else (at < 0) from the
// request.
func (r *actorsRun) login(i int, at time.Duration) {
	if r.cfg.ActivateOnly {
		r.activate(i, at)
		return
	}
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
	if at < 0 {
		at = time.Since(r.start)
	}
	// Online before the request: the actor may push before it answers.
	r.online[i].Store(devOnline)
	reply, _, ok := r.front.Login(r.calls.Get(), r.sid(i), fr)
	lat := time.Since(r.start) - at
	if !ok || reply.GetLoginOk() == nil {
		name := reply.GetError().GetName()
		if name == "" {
			name = "NO_LOGIN_OK"
		}
		r.loginFailed(i, name)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loginsOK[i]++
	r.succeeded(u, lat)
}

// succeeded counts a login (or with -activate-only an activation) of
// user u that took lat; under mu.
func (r *actorsRun) succeeded(u int, lat time.Duration) {
	if !r.activated[u] {
		r.activated[u] = true
		r.users++
	}
	r.logins++
	r.loginLat.record(lat)
	r.loginSec.record(lat)
	r.loginDone()
}

// activate activates user i (one device per user: device i is user i)
// and records the epoch it runs under, for the ledger check.
func (r *actorsRun) activate(i int, at time.Duration) {
	if at < 0 {
		at = time.Since(r.start)
	}
	epoch, err := r.front.Activate(r.calls.Get(), vuser(i))
	lat := time.Since(r.start) - at
	if err != nil || epoch == 0 {
		r.loginFailed(i, "ACTIVATE")
		r.log.Error("activation failed", "user", vuser(i), "epoch", epoch, "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epochs[i] = epoch
	r.succeeded(i, lat)
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

// runChat has every user act at MsgRate (rising over Ramp) until
// Duration or ctx ends: action k is user k mod Users's, from its devices
// in turn, sent on schedule however late the earlier ones were; its kind
// is drawn (seeded, so every run draws the same) by the shares.
func (r *actorsRun) runChat(ctx context.Context, start time.Duration) {
	rng := mrand.New(mrand.NewPCG(12, uint64(r.cfg.Users)))
	rate := r.cfg.MsgRate * float64(r.cfg.Users)
	for k := 0; ; k++ {
		at := rampSchedule(k, rate, r.cfg.Ramp)
		if at >= r.cfg.Duration || !r.sleepUntil(ctx, start+at) {
			return
		}
		u := k % r.cfg.Users
		round := k / r.cfg.Users
		i := u*r.cfg.Devices + round%r.cfg.Devices
		kind := kindDirect
		switch x := rng.Float64(); {
		case x < r.cfg.ReadShare:
			kind = kindRead
		case x < r.cfg.ReadShare+r.cfg.RecallShare:
			kind = kindRecall
		case x < r.cfg.ReadShare+r.cfg.RecallShare+r.cfg.LogoutShare:
			kind = kindLogout
		case rng.Float64() < r.cfg.GroupShare:
			kind = kindGroup
		}
		if r.online[i].Load() != devOnline {
			r.mu.Lock()
			r.kinds[kind].skipped++
			r.mu.Unlock()
			continue
		}
		sched := start + at
		switch kind {
		case kindDirect:
			r.send(i, u, int32((u+1)%r.cfg.Users), false, sched)
		case kindGroup:
			gs := r.groups.of(u)
			r.send(i, u, gs[round%len(gs)], true, sched)
		case kindRead:
			r.markRead(i, u, sched)
		case kindRecall:
			r.recall(i, u, sched)
		case kindLogout:
			r.logout(i, u, sched)
		}
	}
}

// frameWorkers send the devices' frames: Frontend.Frame may wait for a
// user's activation (after a node loss, while the cluster looks the user
// up again or activates it elsewhere), as one connection of a real
// gateway would; the other devices' frames go on meanwhile.
const frameWorkers = 1024

type queuedFrame struct {
	i    int
	user string
	fr   *wire.Frame
}

// startFrames starts the frame senders; the function it returns stops
// them once nothing queues frames any more.
func (r *actorsRun) startFrames() func() {
	r.frameq = make([]chan queuedFrame, frameWorkers)
	for w := range r.frameq {
		q := make(chan queuedFrame, 64)
		r.frameq[w] = q
		r.frameWG.Go(func() {
			for f := range q {
				t0 := time.Now()
				r.front.Frame(r.sid(f.i), f.user, f.fr)
				if d := int64(time.Since(t0)); d > r.frameWait.Load() {
					r.frameWait.Store(d) // one writer per worker: a lost race loses a near-equal value
				}
			}
		})
	}
	return func() {
		for _, q := range r.frameq {
			close(q)
		}
		r.frameWG.Wait()
	}
}

// frame queues fr of device i (user user) for its frame sender; the
// session is the device's current one when it is sent.
func (r *actorsRun) frame(i int, user string, fr *wire.Frame) {
	r.frameq[i%frameWorkers] <- queuedFrame{i: i, user: user, fr: fr}
}

// late notes how far behind its schedule the loop is; under mu.
func (r *actorsRun) late(sched time.Duration) {
	r.lateness = max(r.lateness, time.Since(r.start)-sched)
}

// send sends a message from device i of user u to the user or the group
// to, as message n of the ledger (its content is n).
func (r *actorsRun) send(i, u int, to int32, group bool, sched time.Duration) {
	kind := kindDirect
	if group {
		kind = kindGroup
	}
	r.mu.Lock()
	r.late(sched)
	n := len(r.ledger)
	r.ledger = append(r.ledger, ledgerEntry{sched: sched, sender: int32(u), recipient: to, dev: int32(i), group: group})
	r.kinds[kind].sent++
	if group && r.kinds[kindGroup].sent == 1 {
		r.firstGroupSend = sched
	}
	if r.outstanding != nil {
		out := r.outstanding[i]
		if len(out) >= 8 { // forget the answered ones
			keep := out[:0]
			for _, k := range out {
				if e := &r.ledger[k]; !e.acked && !e.failed {
					keep = append(keep, k)
				}
			}
			out = keep
		}
		r.outstanding[i] = append(out, int32(n))
	}
	r.mu.Unlock()
	r.sendFrame(i, n, true)
}

// sendFrame sends message n of the ledger from device i: its content is
// n, its client message ID "m" n; first: its first attempt (every run's
// IDs are new), else a resend.
func (r *actorsRun) sendFrame(i, n int, first bool) {
	r.mu.Lock()
	e := r.ledger[n]
	r.mu.Unlock()
	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: vuser(int(e.recipient))}
	if e.group {
		conv = &wire.Conversation{Type: wire.Conversation_GROUP, Id: vgroup(int(e.recipient))}
	}
	content := make([]byte, 8)
	binary.LittleEndian.PutUint64(content, uint64(n))
	r.frame(i, vuser(int(e.sender)), &wire.Frame{Id: uint64(n) + 1, Body: &wire.Frame_Send{Send: &wire.Send{
		ClientMessageId: "m" + strconv.Itoa(n),
		FirstAttempt:    first,
		Conversation:    conv,
		Type:            int32(wire.MessageType_TEXT),
		Content:         content,
	}}})
}

// markRead marks the newest message user u was pushed from someone else
// read, from device i (skipped if none yet).
func (r *actorsRun) markRead(i, u int, sched time.Duration) {
	r.mu.Lock()
	rc := r.lastRecv[u]
	if rc.seq == 0 {
		r.kinds[kindRead].skipped++
		r.mu.Unlock()
		return
	}
	r.late(sched)
	n := len(r.reads)
	r.reads = append(r.reads, opEntry{sched: sched, user: int32(u), target: rc.conv, group: rc.group, upTo: rc.seq})
	r.kinds[kindRead].sent++
	r.mu.Unlock()
	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: vuser(int(rc.conv))}
	if rc.group {
		conv = &wire.Conversation{Type: wire.Conversation_GROUP, Id: vgroup(int(rc.conv))}
	}
	r.frame(i, vuser(u), &wire.Frame{Id: readIDBase + uint64(n), Body: &wire.Frame_MarkRead{MarkRead: &wire.MarkRead{
		Conversation: conv, UpToSeq: rc.seq,
	}}})
}

// recall recalls user u's newest acked message, from device i (skipped
// if it has none not yet recalled).
func (r *actorsRun) recall(i, u int, sched time.Duration) {
	r.mu.Lock()
	m := r.lastOwn[u]
	if m < 0 {
		r.kinds[kindRecall].skipped++
		r.mu.Unlock()
		return
	}
	r.late(sched)
	r.lastOwn[u] = -1
	e := &r.ledger[m]
	e.recalled = true
	r.settle(e) // its pushes may stop: the recall can beat a delivery
	n := len(r.recalls)
	r.recalls = append(r.recalls, opEntry{sched: sched, user: int32(u), target: m})
	r.kinds[kindRecall].sent++
	id, to, group := e.msgID, e.recipient, e.group
	r.mu.Unlock()
	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: vuser(int(to))}
	if group {
		conv = &wire.Conversation{Type: wire.Conversation_GROUP, Id: vgroup(int(to))}
	}
	r.frame(i, vuser(u), &wire.Frame{Id: recallIDBase + uint64(n), Body: &wire.Frame_Recall{Recall: &wire.Recall{
		Conversation: conv, MessageId: id,
	}}})
}

// expected is how many pushes message e gets: one to each device of its
// recipient, or of every member of its group.
func (r *actorsRun) expected(e *ledgerEntry) uint32 {
	if e.group {
		return uint32(r.groups.size[e.recipient]) * uint32(r.cfg.Devices)
	}
	return uint32(r.cfg.Devices)
}

// settle counts e once it is acked and either pushed everywhere or
// recalled; under mu.
func (r *actorsRun) settle(e *ledgerEntry) {
	if !e.settled && e.acked && (e.recalled || e.pushes >= r.expected(e)) {
		e.settled = true
		r.settled++
	}
}

// msgAcks is the messages acked; under mu.
func (r *actorsRun) msgAcks() uint64 { return r.kinds[kindDirect].acked + r.kinds[kindGroup].acked }

// drain waits until every action is answered and every acked message not
// recalled is pushed to every device it goes to, or Drain passes.
func (r *actorsRun) drain() {
	deadline := time.Now().Add(r.cfg.Drain)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		done := r.settled == r.msgAcks()
		for k := range r.kinds {
			done = done && r.kinds[k].acked+r.kinds[k].failed == r.kinds[k].sent
		}
		r.mu.Unlock()
		if done && r.busy.Load() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Deliver takes the actors' frames for a virtual device (actors.SessionTable).
// It never blocks on anything but mu.
func (r *actorsRun) Deliver(sid uint64, frames []*wire.Frame) bool {
	i, ok := r.device(sid)
	if !ok {
		return false
	}
	if st := r.online[i].Load(); st != devOnline && st != devLoggingIn {
		return false
	}
	u := i / r.cfg.Devices
	now := time.Since(r.start)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, fr := range frames {
		switch {
		case fr.GetSendAck() != nil:
			r.acked(fr.GetId(), fr.GetSendAck(), now)
		case fr.GetOk() != nil:
			if op, kind := r.op(fr.GetId()); op != nil && !op.acked && !op.failed {
				op.acked = true
				kc := &r.kinds[kind]
				kc.acked++
				kc.lastAck = now
				kc.ack.record(now - op.sched)
				kc.ackSec.record(now - op.sched)
			} else {
				r.foreign++
			}
		case fr.GetError() != nil && fr.GetId() > 0:
			name := fr.GetError().GetName()
			if e := r.entry(fr.GetId()); e != nil {
				kind := kindDirect
				if e.group {
					kind = kindGroup
				}
				if fr.GetError().GetCode() == uint32(wire.CodeUnavailable) && !r.cfg.NoReconnect && !e.acked && !e.failed && e.tries < sendRetries {
					// A real client sends it again, with the same ID.
					e.tries++
					r.wave.retried++
					r.errs["send "+kindNames[kind]+" "+name+" (retried)"]++
					r.retrySend(int(e.dev), int(fr.GetId()-1), e.tries)
					continue
				}
				if !e.acked && !e.failed {
					e.failed = true
					r.kinds[kind].failed++
				}
				r.errs["send "+kindNames[kind]+" "+name]++
			} else if op, kind := r.op(fr.GetId()); op != nil {
				if !op.acked && !op.failed {
					op.failed = true
					r.kinds[kind].failed++
				}
				r.errs[kindNames[kind]+" "+name]++
			} else {
				r.errs["unmatched "+name]++
			}
		case fr.GetPush() != nil:
			for _, en := range fr.GetPush().GetEntries() {
				r.take(i, u, en, now)
			}
		case fr.GetSyncPage() != nil: // a login's catch-up
			for _, en := range fr.GetSyncPage().GetEntries() {
				r.take(i, u, en, now)
			}
		}
	}
	return true
}

// take is one entry pushed or paged to device i of user u: the device
// keeps the highest seq it got as its cursor and drops what it had
// (a catch-up page and a live push may both carry an entry); under mu.
func (r *actorsRun) take(i, u int, en *wire.Entry, now time.Duration) {
	if en.GetSeq() <= r.cursors[i] {
		r.repeats++
		return
	}
	r.cursors[i] = en.GetSeq()
	r.pushed(u, en, now)
}

// acked records message id-1's SendAck; under mu.
func (r *actorsRun) acked(id uint64, a *wire.SendAck, now time.Duration) {
	e := r.entry(id)
	switch {
	case e == nil:
		r.foreign++
		return
	case e.acked && a.GetMessageId() == e.msgID:
		r.wave.dupAcks++ // a resend's ack: the server's de-duplication found it
		return
	case e.acked:
		r.wave.storedTwice++
		r.errs["send acked twice with different message IDs"]++
		return
	}
	kind := kindDirect
	if e.group {
		kind = kindGroup
	}
	e.acked, e.msgID, e.seq = true, a.GetMessageId(), a.GetSeq()
	kc := &r.kinds[kind]
	kc.acked++
	kc.lastAck = now
	kc.ack.record(now - e.sched)
	kc.ackSec.record(now - e.sched)
	if n := int32(id - 1); n > r.lastOwn[e.sender] {
		r.lastOwn[e.sender] = n
	}
	r.settle(e) // a push may beat its ack
}

// pushed counts one entry pushed to a device of user u; under mu.
func (r *actorsRun) pushed(u int, en *wire.Entry, now time.Duration) {
	if en.GetGroup().GetKind() == wire.GroupEvent_CREATED {
		r.groupEvents++
		return
	}
	m := en.GetMessage()
	if m == nil {
		return // device events, recalls, read state...
	}
	if len(m.GetContent()) != 8 {
		if !m.GetRecalled() {
			r.foreign++
		}
		return
	}
	e := r.entry(binary.LittleEndian.Uint64(m.GetContent()) + 1)
	switch {
	case e == nil || m.GetSender() != vuser(int(e.sender)):
		r.foreign++
		return
	case e.group && r.groups.isMember(int(e.recipient), u):
		r.groupPushes++
		r.lastGroupPush = now
		r.memberPushLat.record(now - e.sched)
	case !e.group && int(e.recipient) == u:
	case !e.group && int(e.sender) == u:
		r.carbons++
		return
	default:
		r.foreign++
		return
	}
	e.pushes++
	switch exp := r.expected(e); {
	case e.pushes > exp:
		r.dups++
	case e.pushes == exp:
		r.fullyPushed++
		if e.group {
			r.fanoutLat.record(now - e.sched)
			r.fanoutSec.record(now - e.sched)
		}
		r.settle(e)
	}
	r.pushes++
	r.pushLat.record(now - e.sched)
	if int(e.sender) != u && en.GetSeq() > r.lastRecv[u].seq {
		conv := e.sender
		if e.group {
			conv = e.recipient
		}
		r.lastRecv[u] = received{seq: en.GetSeq(), conv: conv, group: e.group}
	}
}

// entry is the ledger entry of frame id (message id-1), or nil; under mu.
func (r *actorsRun) entry(id uint64) *ledgerEntry {
	if id == 0 || id > uint64(len(r.ledger)) {
		return nil
	}
	return &r.ledger[id-1]
}

// op is the mark-read or recall of frame id, or nil; under mu.
func (r *actorsRun) op(id uint64) (*opEntry, actionKind) {
	switch {
	case id >= recallIDBase && id-recallIDBase < uint64(len(r.recalls)):
		return &r.recalls[id-recallIDBase], kindRecall
	case id >= readIDBase && id < recallIDBase && id-readIDBase < uint64(len(r.reads)):
		return &r.reads[id-readIDBase], kindRead
	}
	return nil, 0
}

// startProgress prints a line a second (one updated line on a terminal)
// and keeps it as a point of res.Series; the function it returns stops it.
func (r *actorsRun) startProgress(res *ActorsResult) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var prevLogins, prevGroupPushes uint64
		prevCounts := r.userCounts()
		var prevAcked [numKinds]uint64
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
			var acked [numKinds]uint64
			for k := range r.kinds {
				acked[k] = r.kinds[k].acked - prevAcked[k]
				prevAcked[k] = r.kinds[k].acked
			}
			var msgSec hist
			msgSec.merge(&r.kinds[kindDirect].ackSec)
			msgSec.merge(&r.kinds[kindGroup].ackSec)
			p := ActorsPoint{
				Seconds: math.Round(time.Since(r.start).Seconds()*10) / 10,
				Users:   r.users, LoginsPerSecond: r.logins - prevLogins, MsgsPerSecond: acked[kindDirect] + acked[kindGroup],
				DirectPerSecond: acked[kindDirect], GroupPerSecond: acked[kindGroup], ReadsPerSecond: acked[kindRead], RecallsPerSecond: acked[kindRecall],
				LogoutsPerSecond: acked[kindLogout], Kicked: r.wave.kicked, BackOnline: r.wave.ok,
				MemberEntriesPerSecond: (r.groupPushes - prevGroupPushes) / uint64(r.cfg.Devices),
				Errors:                 r.loginFails + r.kicks + r.failures(),
				LoginP99Ms:             ms(r.loginSec.quantile(0.99)), AckP99Ms: ms(msgSec.quantile(0.99)), FanoutP99Ms: ms(r.fanoutSec.quantile(0.99)),
			}
			counts := r.userCounts()
			p.ActiveUsers, p.PassivationsPerSecond = counts.Active, counts.Passivations-prevCounts.Passivations
			prevCounts = counts
			prevLogins, prevGroupPushes = r.logins, r.groupPushes
			r.loginSec, r.fanoutSec = hist{}, hist{}
			for k := range r.kinds {
				r.kinds[k].ackSec = hist{}
			}
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
	if p.GroupPerSecond+p.ReadsPerSecond+p.RecallsPerSecond+p.LogoutsPerSecond+p.MemberEntriesPerSecond > 0 {
		line += fmt.Sprintf("  | 1:1/s %d  group/s %d  reads/s %d  recalls/s %d  logouts/s %d  member entries/s %d  fan-out p99 %.1f ms",
			p.DirectPerSecond, p.GroupPerSecond, p.ReadsPerSecond, p.RecallsPerSecond, p.LogoutsPerSecond, p.MemberEntriesPerSecond, p.FanoutP99Ms)
	}
	if p.Kicked > 0 {
		line += fmt.Sprintf("  | wave: %d kicked, %d back online", p.Kicked, p.BackOnline)
	}
	if p.PassivationsPerSecond > 0 {
		line += fmt.Sprintf("  | active %d, passivated/s %d", p.ActiveUsers, p.PassivationsPerSecond)
	}
	if terminal {
		fmt.Fprintf(w, "\r%-110s", line)
		return
	}
	fmt.Fprintln(w, line)
}

// failures is the actions answered with an error; under mu.
func (r *actorsRun) failures() uint64 {
	var n uint64
	for k := range r.kinds {
		n += r.kinds[k].failed
	}
	return n
}
