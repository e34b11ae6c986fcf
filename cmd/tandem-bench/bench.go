package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/proto/wire"
)

// Setup limits.
const (
	dialParallel = 8 // pairs set up at once
	pollEvery    = 20 * time.Millisecond
	maxSamples   = 5 // distinct error messages kept for the report
	deviceID     = "bench"
	platform     = "linux"
)

// run benchmarks the target of cfg and returns the result. The in-process
// node, if any, is stopped and its data dir removed before it returns.
func run(ctx context.Context, cfg Config, log *slog.Logger) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t, err := startTarget(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := t.stop(); err != nil {
			log.Warn("stopping the target", "err", err)
		}
	}()
	return runOn(ctx, cfg, log, t)
}

// runOn benchmarks t with fresh users (a new run ID) and returns the
// result; t stays up.
func runOn(ctx context.Context, cfg Config, log *slog.Logger, t *target) (*Result, error) {
	cfg = cfg.withDefaults()
	b := &bench{cfg: cfg, log: log, runID: newRunID(), target: t}
	defer b.closeClients()
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	return b.measure(ctx)
}

// bench is one run over its pairs.
type bench struct {
	// Set by run and setup, then read-only.
	cfg    Config
	log    *slog.Logger
	runID  string
	target *target
	pairs  []*pair

	// Set once when the senders start; receivers' callbacks read it.
	clock atomic.Pointer[clock]

	// Any goroutine (client callbacks).
	clientErrors atomic.Uint64 // OnError
	kicks        atomic.Uint64 // OnKick: kicks that ended a client
	drops        atomic.Uint64 // OnReconnect ReconnectDropped
	failedDials  atomic.Uint64 // OnReconnect ReconnectFailed
	samplesMu    sync.Mutex
	samples      []string
}

// clock is the run's time line: offsets are monotonic durations since
// start, and the measured window is [warmupEnd, end).
type clock struct {
	start          time.Time
	warmupEnd, end time.Duration
}

func (c *clock) now() time.Duration { return time.Since(c.start) }

func (c *clock) inWindow(d time.Duration) bool { return d >= c.warmupEnd && d < c.end }

// seconds is how many whole or partial seconds the window has; second is
// the one offset d (in the window) falls in.
func (c *clock) seconds() int               { return int((c.end - c.warmupEnd + time.Second - 1) / time.Second) }
func (c *clock) second(d time.Duration) int { return int((d - c.warmupEnd) / time.Second) }

// pair is sender i sending to receiver i.
type pair struct {
	// Set by setup, then read-only.
	sender, receiver     string
	send, recv           *client.Client
	sendNode, recvNode   int // index in target.wsURLs chosen for each device
	sendFirst, recvFirst int // where each device logged in first; -1: not one of them

	// Only the pair's sender goroutine until it returns; then read-only.
	next        uint64   // number of the next message
	first, last uint64   // the measured messages (sent, or in open loop scheduled, in the window) are [first, last)
	started     bool     // first is set
	pace        lateness // open loop: the sends scheduled in the window

	// Receiver callbacks, when not ours.
	foreign atomic.Uint64

	// Guarded by mu: the sender's ack waiters and the receiver's OnEntry.
	mu                sync.Mutex
	acked, delivered  bitset   // by message number
	ackLat, delLat    hist     // measured messages only
	ackedInWindow     uint64   // acks that arrived in the window
	ackedBySecond     []uint64 // the same by second of the window
	deliveredInWindow uint64   // deliveries in the window
	deliveredBySecond []uint64 // the same by second of the window
	measuredAcked     uint64
	measuredDelivered uint64
	sendErrors        uint64
	dupDeliveries     uint64 // a message number delivered twice
}

func newRunID() string { return strings.ToLower(rand.Text()[:6]) }

// setup mints tokens and dials every pair, receivers first, each caught up.
func (b *bench) setup(ctx context.Context) error {
	ttl := max(time.Hour, 2*(b.cfg.Warmup+b.cfg.Duration+2*b.cfg.Drain))
	b.pairs = make([]*pair, b.cfg.Pairs)
	nodes := len(b.target.wsURLs)
	for i := range b.pairs {
		b.pairs[i] = &pair{
			sender:   fmt.Sprintf("bench-s%d-%s", i, b.runID),
			receiver: fmt.Sprintf("bench-r%d-%s", i, b.runID),
			sendNode: senderNode(i, nodes),
			recvNode: receiverNode(i, nodes),
		}
	}
	// The first failure cancels the rest and is the one reported.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		errOnce  sync.Once
		firstErr error
	)
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	for _, p := range b.pairs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			if err := b.dialPair(ctx, p, ttl); err != nil {
				errOnce.Do(func() { firstErr = err })
				cancel()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("set up the pairs: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if n := b.misplaced(); n > 0 {
		b.log.Warn("devices did not log in first on the node chosen for them (has the client's start index changed? see spread.go)", "devices", n)
	}
	return nil
}

func (b *bench) dialPair(ctx context.Context, p *pair, ttl time.Duration) error {
	var err error
	if p.recv, err = b.dial(ctx, p.receiver, p.recvNode, ttl, func(e *wire.Entry) { b.onEntry(p, e) }); err != nil {
		return err
	}
	p.recvFirst = b.nodeOf(p.recv)
	if p.send, err = b.dial(ctx, p.sender, p.sendNode, ttl, nil); err != nil {
		return err
	}
	p.sendFirst = b.nodeOf(p.send)
	return nil
}

// dial logs user's device in on the given node (index in target.wsURLs)
// with every node's URL for reconnects, and waits for its catch-up. The
// token comes from the node's API, or the API list's node%len one.
func (b *bench) dial(ctx context.Context, user string, node int, ttl time.Duration, onEntry func(*wire.Entry)) (*client.Client, error) {
	api := b.target.apiURLs[node%len(b.target.apiURLs)]
	tok, err := client.MintToken(ctx, api, b.target.adminKey, user, ttl)
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(ctx, client.Options{
		URLs:        deviceURLs(b.target.wsURLs, node, deviceID, tok),
		Token:       tok,
		DeviceID:    deviceID,
		Platform:    platform,
		JSON:        b.cfg.JSONProtocol,
		Reconnect:   true,
		KeepEntries: -1,
		OnEntry:     onEntry,
		OnError:     b.onError,
		OnKick:      b.onKick,
		OnReconnect: b.onReconnect,
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", user, err)
	}
	if err := c.WaitCaughtUp(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s catch-up: %w", user, err)
	}
	return c, nil
}

// nodeOf is the index in target.wsURLs of c's current (or last)
// connection, -1 if it is none of them.
func (b *bench) nodeOf(c *client.Client) int {
	return slices.Index(b.target.wsURLs, c.URL())
}

// misplaced counts the devices whose first login was not on their node.
func (b *bench) misplaced() int {
	n := 0
	for _, p := range b.pairs {
		if p.sendFirst != p.sendNode {
			n++
		}
		if p.recvFirst != p.recvNode {
			n++
		}
	}
	return n
}

func (b *bench) closeClients() {
	var wg sync.WaitGroup
	for _, p := range b.pairs {
		for _, c := range []*client.Client{p.send, p.recv} {
			if c != nil {
				wg.Go(func() { c.Close() })
			}
		}
	}
	wg.Wait()
}

func (b *bench) closeSenders() {
	var wg sync.WaitGroup
	for _, p := range b.pairs {
		wg.Go(func() { p.send.Close() })
	}
	wg.Wait()
}

// measure runs the senders through warm-up and the measured window, then
// waits (up to Drain each) for the outstanding acks and for the delivery
// of every acked measured message.
func (b *bench) measure(ctx context.Context) (*Result, error) {
	ck := &clock{start: time.Now(), warmupEnd: b.cfg.Warmup, end: b.cfg.Warmup + b.cfg.Duration}
	for _, p := range b.pairs {
		p.ackedBySecond = make([]uint64, ck.seconds())
		p.deliveredBySecond = make([]uint64, ck.seconds())
	}
	b.clock.Store(ck)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var senders sync.WaitGroup
	for i, p := range b.pairs {
		send := func(m *wire.Send) inFlight { return p.send.SendAsync(m) }
		if b.cfg.Rate > 0 {
			s := newSchedule(b.cfg.Rate, len(b.pairs), i)
			senders.Go(func() { b.paceLoop(sctx, ck, p, s, send) })
		} else {
			senders.Go(func() { b.sendLoop(sctx, ck, p, send) })
		}
	}
	sendersDone := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Go(func() {
		senders.Wait()
		close(sendersDone)
	})
	abort := func(err error) (*Result, error) {
		cancel()
		b.closeClients() // fails the sends still in flight
		watcher.Wait()
		return nil, err
	}

	if err := sleepUntil(ctx, ck, ck.warmupEnd); err != nil {
		return abort(err)
	}
	cpu0, wall0, proc0 := cpuTime(), time.Now(), sampleCPU(b.cfg.CPUPIDs)
	stopProfile, err := b.startProfile()
	if err != nil {
		return abort(err)
	}
	err = sleepUntil(ctx, ck, ck.end)
	cpu1, wall1, proc1 := cpuTime(), time.Now(), sampleCPU(b.cfg.CPUPIDs)
	stopProfile()
	if err != nil {
		return abort(err)
	}

	// The senders stop by themselves at the end of the window (in open
	// loop, once they have sent what was scheduled before it); wait for
	// their last acks.
	drain := time.NewTimer(b.cfg.Drain)
	select {
	case <-sendersDone:
		drain.Stop()
	case <-drain.C:
		b.log.Warn("sends still unacked after the drain time; closing the senders", "drain", b.cfg.Drain)
		b.closeSenders()
		<-sendersDone
	case <-ctx.Done():
		drain.Stop()
		return abort(ctx.Err())
	}
	watcher.Wait()

	// Every acked measured message must reach its receiver: those that
	// did not within the drain time are lost. Whether they are gone or
	// only late, a further wait (Late) tells.
	if err := b.waitDelivered(ctx, b.cfg.Drain); err != nil {
		return abort(err)
	}
	lost := b.undeliveredByPair()
	if n := sum(lost); n > 0 && b.cfg.Late > 0 {
		b.log.Warn("acked messages not delivered within the drain time (lost); waiting for late deliveries", "lost", n, "late", b.cfg.Late)
		if err := b.waitDelivered(ctx, b.cfg.Late); err != nil {
			return abort(err)
		}
	}
	res := b.result(ck, lost)
	res.CPU.ProcessCores = (cpu1 - cpu0).Seconds() / wall1.Sub(wall0).Seconds()
	if err := cpuBetween(&res.CPU, b.cfg.CPUPIDs, proc0, proc1); err != nil {
		if len(b.cfg.CPUPIDs) > 0 {
			b.log.Warn("CPU of the watched processes", "err", err)
		} else {
			b.log.Debug("machine CPU", "err", err)
		}
	}
	return res, nil
}

// inFlight is one send: *client.Pending.
type inFlight interface {
	Done() <-chan struct{}
	Result() (*wire.SendAck, error)
	ClientMessageID() string
}

// sendFunc starts one send of a pair's sender: its client's SendAsync.
type sendFunc func(*wire.Send) inFlight

// sendLoop keeps up to Window sends of p in flight until the window ends
// or ctx is done, then waits for their outcomes (closed loop).
func (b *bench) sendLoop(ctx context.Context, ck *clock, p *pair, send sendFunc) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, b.cfg.Window)
	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: p.receiver} // shared, never modified
	prefix := p.sender + "-"
	defer func() {
		if !p.started {
			p.first = p.next
		}
		p.last = p.next
	}()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		at := ck.now()
		if at >= ck.end {
			return
		}
		n := p.next
		p.next++
		if !p.started && at >= ck.warmupEnd {
			p.first, p.started = n, true
		}
		pend := send(b.message(prefix, n, conv, at))
		wg.Go(func() {
			<-pend.Done()
			b.onAck(ck, p, n, at, pend)
			<-sem
		})
	}
}

// message is message n of a sender whose client message IDs start with
// prefix, sent (or scheduled) at offset at.
func (b *bench) message(prefix string, n uint64, conv *wire.Conversation, at time.Duration) *wire.Send {
	return &wire.Send{
		ClientMessageId: prefix + strconv.FormatUint(n, 10),
		FirstAttempt:    true, // the run ID makes every client message ID new
		Conversation:    conv,
		Type:            int32(wire.MessageType_TEXT),
		Content:         b.content(n, at),
	}
}

// content is Size bytes: the message number and its send offset (both
// little-endian uint64; in open loop the scheduled offset), then filler.
func (b *bench) content(n uint64, at time.Duration) []byte {
	c := make([]byte, b.cfg.Size)
	binary.LittleEndian.PutUint64(c[0:8], n)
	binary.LittleEndian.PutUint64(c[8:16], uint64(at))
	for i := 16; i < len(c); i++ {
		c[i] = 'a' + byte(i%26)
	}
	return c
}

func parseContent(c []byte) (n uint64, at time.Duration, ok bool) {
	if len(c) < minSize {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(c[0:8]), time.Duration(binary.LittleEndian.Uint64(c[8:16])), true
}

// onAck runs once the send of message n is acked or failed. sentAt is
// when it was sent (closed loop) or scheduled (open loop).
func (b *bench) onAck(ck *clock, p *pair, n uint64, sentAt time.Duration, pend inFlight) {
	now := ck.now()
	_, err := pend.Result()
	if err != nil && !errors.Is(err, client.ErrClosed) { // closed: an abort, or the drain time ran out (logged)
		b.sample(fmt.Errorf("send %s: %w", pend.ClientMessageID(), err))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.sendErrors++
		return
	}
	p.acked.set(n)
	if ck.inWindow(now) {
		p.ackedInWindow++
		p.ackedBySecond[ck.second(now)]++
	}
	if ck.inWindow(sentAt) {
		p.measuredAcked++
		p.ackLat.record(now - sentAt)
	}
}

// onEntry is the receiver's OnEntry: it runs on the receiver client's
// reader goroutine.
func (b *bench) onEntry(p *pair, e *wire.Entry) {
	ck := b.clock.Load()
	m := e.GetMessage()
	if ck == nil || m == nil || m.GetSender() != p.sender {
		b.other(p, e)
		return
	}
	now := ck.now()
	n, sentAt, ok := parseContent(m.GetContent())
	if !ok {
		b.other(p, e)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.delivered.has(n) {
		p.dupDeliveries++
		return
	}
	p.delivered.set(n)
	if ck.inWindow(now) {
		p.deliveredInWindow++
		p.deliveredBySecond[ck.second(now)]++
	}
	if ck.inWindow(sentAt) {
		p.measuredDelivered++
		p.delLat.record(now - sentAt)
	}
}

// other counts an entry that is not one of this run's messages.
func (b *bench) other(p *pair, e *wire.Entry) {
	p.foreign.Add(1)
	b.log.Debug("other entry", "receiver", p.receiver, "seq", e.GetSeq(), "kind", fmt.Sprintf("%T", e.GetKind()))
}

// onError counts the clients' non-fatal problems: undecodable frames,
// Error frames with id 0, failed gap pulls.
func (b *bench) onError(err error) {
	b.clientErrors.Add(1)
	b.sample(err)
}

// onKick counts kicks that ended a client (a kick that allows reconnecting
// is part of a reconnect: onReconnect).
func (b *bench) onKick(k *wire.Kick) {
	b.kicks.Add(1)
	b.sample(fmt.Errorf("kicked: %s (close code %d)", k.GetReason(), k.GetCloseCode()))
}

// onReconnect counts drops and failed dials; successful reconnects are in
// client.Stats. A failed first dial during setup counts too.
func (b *bench) onReconnect(ev client.ReconnectEvent) {
	switch ev.Kind {
	case client.ReconnectDropped:
		b.drops.Add(1)
		b.sample(fmt.Errorf("reconnect: dropped from %s (close code %d): %v", ev.URL, ev.CloseCode, ev.Err))
	case client.ReconnectFailed:
		b.failedDials.Add(1)
		b.sample(fmt.Errorf("reconnect: attempt %d on %s failed (close code %d): %v", ev.Attempt, ev.URL, ev.CloseCode, ev.Err))
	}
}

// sample keeps the first few distinct error messages and logs them.
func (b *bench) sample(err error) {
	msg := err.Error()
	b.samplesMu.Lock()
	defer b.samplesMu.Unlock()
	if len(b.samples) >= maxSamples {
		return
	}
	for _, s := range b.samples {
		if s == msg {
			return
		}
	}
	b.samples = append(b.samples, msg)
	b.log.Warn("client error", "err", err)
}

// waitDelivered waits up to d until every acked measured message was
// delivered. The senders must have returned.
func (b *bench) waitDelivered(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for sum(b.undeliveredByPair()) > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
	return nil
}

// undeliveredByPair counts, by pair, the measured messages acked but not
// (yet) delivered. The senders must have returned.
func (b *bench) undeliveredByPair() []uint64 {
	out := make([]uint64, len(b.pairs))
	for i, p := range b.pairs {
		p.mu.Lock()
		out[i] = p.acked.countAndNot(&p.delivered, p.first, p.last)
		p.mu.Unlock()
	}
	return out
}

func sum(ns []uint64) uint64 {
	var s uint64
	for _, n := range ns {
		s += n
	}
	return s
}

func (b *bench) startProfile() (stop func(), err error) {
	return startCPUProfile(b.cfg.CPUProfile, b.log)
}

// sleepUntil sleeps until offset d of ck or ctx is done.
func sleepUntil(ctx context.Context, ck *clock, d time.Duration) error {
	t := time.NewTimer(d - ck.now())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bitset is a growable set of message numbers.
type bitset struct{ w []uint64 }

func (s *bitset) set(n uint64) {
	i := int(n / 64)
	if i >= len(s.w) {
		s.w = append(s.w, make([]uint64, i+1-len(s.w))...)
	}
	s.w[i] |= 1 << (n % 64)
}

func (s *bitset) has(n uint64) bool {
	i := int(n / 64)
	return i < len(s.w) && s.w[i]&(1<<(n%64)) != 0
}

// countAndNot counts the numbers in [from, to) that are in s but not in o.
func (s *bitset) countAndNot(o *bitset, from, to uint64) uint64 {
	var c uint64
	for n := from; n < to; n++ {
		if s.has(n) && !o.has(n) {
			c++
		}
	}
	return c
}
