package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/api"
	"github.com/tandem-im/tandem/api/webhook"
	"github.com/tandem-im/tandem/auth"
	"github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/gateway"
	"github.com/tandem-im/tandem/persistence"
)

// The concrete types satisfy the interfaces their consumers declare.
var (
	_ actors.SessionTable  = (*gateway.Server)(nil)
	_ gateway.Handler      = (*actors.Frontend)(nil)
	_ actors.TokenVerifier = (*auth.Keys)(nil)
	_ api.TokenMinter      = (*auth.Keys)(nil)
	_ api.Sessions         = (*actors.Runtime)(nil)
	_ api.Messages         = (*actors.Runtime)(nil)
	_ api.Groups           = (*actors.Runtime)(nil)
	_ actors.Publisher     = hookPublisher{}
	_ actors.Membership    = (*cluster.Member)(nil)
)

// Node is one running node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	store  nodeStore
	health storeHealth // the badger store's; nil for PostgreSQL
	member *cluster.Member
	rt     *actors.Runtime
	gw     *gateway.Server
	front  *actors.Frontend
	apiSrv *api.Server
	hooks  *webhook.Sender

	storeStats  func() storeStats
	hooksCancel context.CancelFunc
	hooksDone   chan struct{}

	wsLn, apiLn net.Listener
	debugLn     net.Listener // --debug-addr; nil: none
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	errOnce     sync.Once
	err         error
	stopOnce    sync.Once
	done        chan struct{}

	abandoned []string // shutdown steps that missed the deadline

	// AdminKey and JWTSecret as used (generated ones included).
	AdminKey, JWTSecret string
}

// Run starts a node and serves until ctx is done, then stops it. It
// returns within cfg's shutdown timeout and stopMargin after ctx is done,
// whatever hangs: a stop that abandoned steps (or that hung itself, or a
// start still running) is a *ShutdownError naming them; their goroutines
// are left behind, for the process to exit over.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limit := cfg.withDefaults().ShutdownTimeout + stopMargin
	// deadline fires limit after ctx is done (or after a serving error
	// ended the node): one deadline for what is left of the start and the
	// whole stop.
	deadline := make(chan struct{})
	var armOnce sync.Once
	arm := func() { armOnce.Do(func() { time.AfterFunc(limit, func() { close(deadline) }) }) }
	stopArm := context.AfterFunc(ctx, arm)
	defer stopArm()

	type started struct {
		n   *Node
		err error
	}
	startc := make(chan started, 1)
	go func() {
		n, err := Start(ctx, cfg, log)
		startc <- started{n, err}
	}()
	var s started
	select {
	case s = <-startc:
	case <-deadline:
		log.Error("stop abandoned at the deadline: the start did not end; nothing was acknowledged yet",
			"abandoned", []string{"start"}, "waited", limit)
		return &ShutdownError{Abandoned: []string{"start"}}
	}
	if s.err != nil {
		if ctx.Err() != nil && errors.Is(s.err, context.Canceled) {
			log.Info("start interrupted by the stop signal")
			return nil // stopped before serving: nothing to abandon
		}
		return s.err
	}
	n := s.n
	select {
	case <-ctx.Done():
	case <-n.done:
		arm()
	}
	stopped := make(chan error, 1)
	go func() { stopped <- n.Stop() }()
	select {
	case err := <-stopped:
		if ab := n.Abandoned(); len(ab) > 0 {
			return &ShutdownError{Abandoned: ab, Err: err}
		}
		return err
	case <-deadline:
		// Stop bounds each step; this is the guard should Stop itself hang.
		log.Error("stop abandoned at the deadline: the shutdown did not end; acknowledged messages were durable before their acks",
			"abandoned", []string{"shutdown"}, "waited", limit)
		return &ShutdownError{Abandoned: []string{"shutdown"}}
	}
}

// stopMargin is how long past the shutdown timeout Run waits for Stop
// before giving up on it.
const stopMargin = time.Second

// Logger returns the logger for cfg's level, writing text to w.
func Logger(cfg Config, w io.Writer) *slog.Logger {
	lvl, err := parseLevel(cfg.withDefaults().LogLevel)
	if err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

// Start builds and starts a node; Stop stops it. A failure is a
// *StartError naming its cause (ErrAddrInUse, ErrDataDirLocked, ...), and
// leaves nothing running.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (n *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, &StartError{Err: &configError{err}}
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n = &Node{cfg: cfg, log: log, done: make(chan struct{})}
	started := n // the error returns below set n to nil
	defer func() {
		if err != nil {
			started.teardown()
			err = &StartError{Err: err}
		}
	}()

	// Validate read the certificate files already; they may have changed.
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	// Listeners first, store and cluster after: a second node on the same
	// ports fails at once, naming the address.
	if n.wsLn, err = listen("WebSockets", cfg.WSAddr, cfg.ReusePort); err != nil {
		return nil, err
	}
	if n.apiLn, err = listen("the server API", cfg.APIAddr, false); err != nil {
		return nil, err
	}
	if cfg.DebugAddr != "" {
		if n.debugLn, err = listen("the debug (pprof) listener", cfg.DebugAddr, false); err != nil {
			return nil, err
		}
	}
	if err := probe(cfg); err != nil {
		return nil, err
	}

	// Refused here, with the reason, is a data dir that is a file, that
	// this user cannot write (another user's, a read-only mount, a full
	// disk) or, for badger, on a file system without shared writable mmap.
	if err := persistence.CheckDir(cfg.DataDir, !cfg.postgres()); err != nil {
		return nil, err
	}
	if n.AdminKey, err = secret(cfg.AdminKey, cfg.DataDir, "admin-key"); err != nil {
		return nil, err
	}
	if n.JWTSecret, err = secret(cfg.JWTSecret, cfg.DataDir, "jwt-secret"); err != nil {
		return nil, err
	}
	keys, err := auth.New(n.JWTSecret)
	if err != nil {
		return nil, err
	}

	var storeDesc string
	n.store, n.storeStats, storeDesc, err = openStore(ctx, cfg, log)
	if err != nil {
		return nil, storeErr(cfg.DataDir, err)
	}
	n.health, _ = n.store.(storeHealth)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	n.hooks, err = webhook.New(webhook.Config{URL: cfg.WebhookURL, Secret: cfg.WebhookSecret, Logger: log.With("component", "webhook")})
	if err != nil {
		return nil, err
	}
	hctx, hcancel := context.WithCancel(context.Background())
	n.hooksCancel, n.hooksDone = hcancel, make(chan struct{})
	go func() {
		defer close(n.hooksDone)
		if err := n.hooks.Run(hctx); err != nil {
			log.Error("webhook sender", "err", err)
		}
	}()
	registerHookMetrics(reg, n.hooks)

	var hooks actors.Publisher
	if n.hooks.Enabled() {
		hooks = hookPublisher{n.hooks}
	}
	n.rt = actors.NewRuntime(cfg.actors(), n.store, hooks, reg, log.With("component", "actors"))
	sys := actor.NewActorSystem(actor.WithLoggerFactory(cluster.LoggerFactory(log.With("component", "protoactor"))))
	clusterKeys, err := cfg.clusterKeys()
	if err != nil {
		return nil, err
	}
	copts := cfg.cluster(clusterKeys)
	copts.Logger = log.With("component", "cluster")
	// Nodes that disagree on these refuse each other (a token minted on one
	// node must verify on every node).
	copts.Agree = map[string]string{"--jwt-secret": n.JWTSecret}
	n.member, err = cluster.Start(ctx, sys, copts, n.rt.Kinds()...)
	if err != nil {
		return nil, clusterErr(cfg, err)
	}

	gwCfg := cfg.gateway(tlsCfg)
	gwCfg.Logger = log.With("component", "gateway")
	n.front = n.rt.Frontend(keys)
	n.gw = gateway.New(gwCfg, n.front)
	var sessions actors.SessionTable = n.gw
	if cfg.Sessions != nil {
		sessions = cfg.Sessions
	}
	if err := n.rt.Start(n.member.Cluster(), sessions, n.member); err != nil {
		return nil, fmt.Errorf("start actors runtime: %w", err)
	}
	n.apiSrv, err = api.New(api.Config{
		AdminKey: n.AdminKey, Minter: keys, Sessions: n.rt, Messages: n.rt, Groups: n.rt, Gatherer: reg, ValidID: actors.ValidID,
		Ready:  n.ready, // not ready while not joined to the configured cluster or the store takes no writes, saying why
		Logger: log.With("component", "api"),
	})
	if err != nil {
		return nil, err
	}
	reg.MustRegister(statsCollector{gw: n.gw, store: n.storeStats, health: n.health})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tandem_cluster_members", Help: "Members in this node's cluster topology, itself included.",
	}, func() float64 { return float64(n.ClusterMembers()) }))

	sctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.serve(sctx, func() error { return n.gw.Serve(sctx, n.wsLn) })
	n.serve(sctx, func() error { return n.apiSrv.Serve(sctx, n.apiLn) })
	if n.debugLn != nil {
		n.serve(sctx, func() error { return serveDebug(sctx, n.debugLn) })
	}
	if n.health != nil {
		n.serve(sctx, func() error { return n.watchStore(sctx) })
	}
	n.serve(sctx, func() error { return n.watchBlocked(sctx) })

	scheme := "ws://"
	if tlsCfg != nil {
		scheme = "wss://"
	}
	log.Info("tandem node started",
		"ws", scheme+n.WSAddr()+"/ws", "api", "http://"+n.APIAddr(),
		"gossip", n.member.GossipAddress(), "remote", n.member.Address(),
		"store", storeDesc)
	return n, nil
}

// serve runs f; an error it returns before the node is stopping ends the
// node (Run returns).
func (n *Node) serve(ctx context.Context, f func() error) {
	n.wg.Go(func() {
		if err := f(); err != nil && ctx.Err() == nil {
			n.errOnce.Do(func() { n.err = err; close(n.done) })
		}
	})
}

// ready is /readyz: the cluster membership's readiness, then the store's
// (disk full, failed).
func (n *Node) ready() error {
	if err := n.member.Ready(); err != nil {
		return err
	}
	return storeReady(n.health)
}

// watchBlocked ends the node when the cluster cuts it off for good: a
// member the others declared dead while it ran (overloaded, paused,
// partitioned) is blocked by protoactor and never taken back, so it would
// serve nobody — not ready, its activations fenced off by the store's
// epochs — until restarted. It stops instead (exit code ExitBlocked);
// restarted, it joins with a new member ID.
func (n *Node) watchBlocked(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-n.member.Blocked():
		n.log.Error("the cluster cut this node off (the other members declared it dead while it ran): stopping the node; restart it to rejoin")
		return cluster.ErrBlocked
	}
}

// watchStore ends the node when the store fails while serving: the
// store already refuses every write (nothing more is acked), readiness
// fails, and Run returns a *StoreFailedError once the node has stopped,
// so the process ends and a restart recovers from what is durable. The
// store is not reopened in place: the actors' state was built on writes
// whose fate is unknown.
func (n *Node) watchStore(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-n.health.Failed():
		err := n.health.Err()
		n.log.Error("store failed while serving: stopping the node; restart it to recover from what is durable", "err", err)
		return &StoreFailedError{Err: err}
	}
}

// WSAddr and APIAddr are the bound listener addresses.
func (n *Node) WSAddr() string  { return n.wsLn.Addr().String() }
func (n *Node) APIAddr() string { return n.apiLn.Addr().String() }

// Member is the node's cluster member (tests use it to find the node that
// owns an identity).
func (n *Node) Member() *cluster.Member { return n.member }

// Frontend is the actors' side of the gateway (gateway.Handler): with
// Config.Sessions set, a tool logs its virtual devices in through it.
func (n *Node) Frontend() *actors.Frontend { return n.front }

// ReadLog reads up to limit entries of user's sync log after seq after,
// straight from the store (not through the user's actor): tools check
// with it what the actors made durable.
func (n *Node) ReadLog(ctx context.Context, user string, after uint64, limit int) ([]persistence.Entry, error) {
	return n.store.Read(ctx, user, persistence.Seq(after), limit)
}

// ReadConvs reads user's stored conversation states (read position,
// unread counts) straight from the store, like ReadLog.
func (n *Node) ReadConvs(ctx context.Context, user string) ([]persistence.Conv, error) {
	return n.store.Convs(ctx, user)
}

// ReadEpoch reads user's epoch straight from the store (0: never
// activated), like ReadLog: what an activation made durable.
func (n *Node) ReadEpoch(ctx context.Context, user string) (uint64, error) {
	e, err := n.store.Epoch(ctx, user)
	return uint64(e), err
}

// Groups runs membership commands (create, add, remove, dismiss) through
// the group actors, the way the server API does: tools that play the
// devices create their groups with it.
func (n *Node) Groups() api.Groups { return n.rt }

// UserCounts is this node's user actors: active now and passivated so
// far (load tools watch passivation waves with it).
func (n *Node) UserCounts() actors.UserCounts { return n.rt.UserCounts() }

// GossipAddr is the bound memberlist address: the seed to give other nodes.
func (n *Node) GossipAddr() string { return n.member.GossipAddress() }

// ClusterMembers is the number of members in this node's current cluster
// topology, itself included.
func (n *Node) ClusterMembers() int { return n.member.Cluster().MemberList.Members().Len() }

// Stop stops the node in order and returns the first serving error.
func (n *Node) Stop() error {
	n.stopOnce.Do(n.teardown)
	return n.err
}

func (n *Node) teardown() {
	start := time.Now()
	budget := n.cfg.ShutdownTimeout
	// step runs f for at most limit (and what is left of the budget): a
	// step that hangs (a peer that left at the same moment, a store that
	// does not answer) is abandoned with a log line, so the process ends
	// in bounded time. Nothing acked depends on a step finishing: acks
	// follow durability.
	// The store's close keeps a second of its own: it flushes what the
	// actors wrote last (durable already, but a clean close spares the
	// next start a recovery).
	// A step that runs past its own limit while the budget lasts (a
	// leave announcement whose gossip is slow) is given up quietly; one
	// cut short by the budget, and the store's close, is abandoned: named
	// in Abandoned, and Run's error (tandem exits 4).
	const storeReserve = time.Second
	step := func(name string, own time.Duration, f func()) bool {
		limit := own
		if name != "store close" {
			limit = min(limit, budget-storeReserve-time.Since(start))
		} else {
			limit = max(min(limit, budget-time.Since(start)), storeReserve)
		}
		atDeadline := limit < own || name == "store close"
		done := make(chan struct{})
		t0 := time.Now()
		go func() { defer close(done); f() }()
		select {
		case <-done:
			n.log.Debug("shutdown step done", "step", name, "took", time.Since(t0))
			return true
		case <-time.After(max(limit, 0)):
			if !atDeadline {
				n.log.Info("shutdown step given up after its own limit", "step", name, "waited", time.Since(t0))
				return false
			}
			n.log.Warn("shutdown step abandoned: the deadline passed", "step", name, "waited", time.Since(t0))
			n.abandoned = append(n.abandoned, name)
			return false
		}
	}
	left := false
	if n.member != nil && n.cancel != nil {
		// Peers first: they stop routing here and re-place this node's
		// users, so the devices drained next log in where their users'
		// new activations will be, and this node's stale activations are
		// fenced by those, never acking again.
		step("cluster leave announcement", time.Second, func() {
			n.member.Leave()
			time.Sleep(100 * time.Millisecond) // a gossip round for the news to spread
		})
		left = true
	}
	step("gateway and API drain", 1500*time.Millisecond, func() {
		if n.cancel != nil {
			n.cancel() // gateway closes its sessions (4015), API shuts down; both close their listeners
		}
		n.wg.Wait()
	})
	if n.cancel == nil { // failed before serving
		for _, ln := range []net.Listener{n.wsLn, n.apiLn, n.debugLn} {
			if ln != nil {
				ln.Close() // nothing else owns it; its error means nothing here
			}
		}
	}
	if n.rt != nil {
		step("actors runtime", 500*time.Millisecond, n.rt.Stop)
	}
	if n.member != nil {
		// After the announcement the peers have blocked this member:
		// protoactor's graceful stop would only wait on them.
		step("cluster stop", 2500*time.Millisecond, func() {
			if err := n.member.Stop(!left); err != nil {
				n.log.Warn("cluster member stop", "err", err)
			}
		})
	}
	if n.hooksCancel != nil { // after the actors: their last events are drained
		step("webhooks", 300*time.Millisecond, func() {
			n.hooksCancel()
			<-n.hooksDone
		})
	}
	if n.store != nil {
		var err error
		if step("store close", budget, func() { err = n.store.Close() }) && err != nil {
			n.log.Error("closing the store", "err", err)
			if errors.Is(err, persistence.ErrNotClosed) { // a full disk: the close was skipped
				n.abandoned = append(n.abandoned, "store close (no room to flush)")
			}
		}
	}
	switch {
	case n.cancel == nil: // a failed start: its error is the news
		n.log.Debug("node stopped", "took", time.Since(start), "abandoned", n.abandoned)
	case len(n.abandoned) > 0:
		n.log.Warn("node stopped, abandoning shutdown steps at the deadline: acknowledged messages were durable before their acks; only the clean close was given up",
			"took", time.Since(start), "abandoned", n.abandoned)
	default:
		n.log.Info("node stopped", "took", time.Since(start))
	}
}

// Abandoned lists the shutdown steps Stop abandoned at the deadline, or
// the store's close it skipped (nil: a clean stop; steps given up after
// their own limit within the budget are only logged).
func (n *Node) Abandoned() []string { return n.abandoned }

// secret returns v, or the secret stored in dir/name, or a new one written
// there (mode 0600) so restarts keep tokens and keys valid.
func secret(v, dir, name string) (string, error) {
	if v != "" {
		return v, nil
	}
	p := filepath.Join(dir, name)
	if b, err := os.ReadFile(p); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", persistence.Unusable(p, "cannot be read", err)
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate %s: %w", name, err)
	}
	s := hex.EncodeToString(buf)
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		return "", persistence.Unusable(p, "cannot be written", err)
	}
	return s, nil
}
