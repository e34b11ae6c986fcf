package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/proto/wire"
)

// `tandem-bench broadcast` measures what one group message costs the
// server when it reaches many online members (issue 11): for each gateway
// transport asked (-transports; each passed to the node as
// --ws-transport), it starts one real tandem node process (single node,
// badger) and client worker processes (conns_worker.go) holding Members
// logged-in connections, one per member user; creates a group of those
// users through the server API (in batches of Batch); logs in a sender,
// a second device of member 0; waits until the node is quiet; and then
// sends Messages group messages, one every Interval. The workers count
// what every member connection is pushed (broadcast_worker.go). The
// measured window runs from just before the first send until every
// member got every message, plus Tail; over it the node process's CPU
// time (user+sys, /proc/PID/stat) divided by the pushes delivered is the
// server CPU per delivered push. See bench/README.md, "Broadcast cost
// (issue 11)".

// BroadcastConfig is one `tandem-bench broadcast` run. Zero fields mean
// defaults.
type BroadcastConfig struct {
	Members    int           // member connections, one user each; the group has exactly these users
	Messages   int           // group messages sent in the window
	Interval   time.Duration // between two sends
	Size       int           // content bytes per message
	Transports []string      // each a run: the node's --ws-transport, or "default" (no flag)
	Clients    int           // client worker processes
	Batch      int           // members per group API request (create, then add)

	Tandem    string   // the tandem binary; "" = go build ./cmd/tandem into the run's dir
	NodeFlags []string // more flags for the node

	Heartbeat   time.Duration // the node's --heartbeat-timeout: longer than the run
	Concurrency int           // logins in flight per client worker
	Timeout     time.Duration // per token mint, dial, login and API request
	Quiet       time.Duration // before the window: how long the node must stay quiet
	Idle        time.Duration // before the window: how long the node's idle CPU is measured
	Drain       time.Duration // after the last send: the longest wait for the pushes
	Tail        time.Duration // after the last push: still in the window (acks, fan-out marks)

	DataDir    string
	Keep       bool
	JSONPath   string
	CPUProfile string // save the node's CPU profile of the sends (Messages × Interval) into this dir
	LogLevel   string
}

// Defaults.
const (
	DefaultBcastMembers  = 10_000
	DefaultBcastMessages = 50
	DefaultBcastInterval = 2 * time.Second
	DefaultBcastSize     = 64
	DefaultBcastClients  = 2
	DefaultBcastBatch    = 2_500
	DefaultBcastQuiet    = time.Second
	DefaultBcastIdle     = 2 * time.Second
	DefaultBcastDrain    = time.Minute
	DefaultBcastTail     = time.Second

	// transportDefault runs the node without --ws-transport (for builds
	// that do not know the flag: the gateway's default, epoll on Linux).
	transportDefault = "default"

	// maxGroupMembers is the server's group size limit (actors/group.go).
	maxGroupMembers = 10_000
)

func (c BroadcastConfig) withDefaults() BroadcastConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Members, DefaultBcastMembers)
	def(&c.Messages, DefaultBcastMessages)
	def(&c.Size, DefaultBcastSize)
	def(&c.Clients, DefaultBcastClients)
	def(&c.Batch, DefaultBcastBatch)
	def(&c.Concurrency, DefaultConnsConcurrency)
	for _, d := range []struct {
		v *time.Duration
		d time.Duration
	}{
		{&c.Interval, DefaultBcastInterval}, {&c.Heartbeat, DefaultConnsHeartbeat}, {&c.Timeout, DefaultConnsTimeout},
		{&c.Quiet, DefaultBcastQuiet}, {&c.Idle, DefaultBcastIdle}, {&c.Drain, DefaultBcastDrain}, {&c.Tail, DefaultBcastTail},
	} {
		if *d.v == 0 {
			*d.v = d.d
		}
	}
	if len(c.Transports) == 0 {
		c.Transports = []string{"epoll", "goroutine"}
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	return c
}

// Validate returns every problem at once; fdLimit (0: unknown) is the
// file-descriptor limit every process gets.
func (c BroadcastConfig) Validate(fdLimit uint64) error {
	c = c.withDefaults()
	var errs []error
	if c.Members < 1 || c.Members > maxGroupMembers {
		errs = append(errs, fmt.Errorf("-members %d: 1 to %d (the server's group size limit; the sender is member 0)", c.Members, maxGroupMembers))
	}
	if c.Messages < 1 || c.Interval <= 0 || c.Clients < 1 || c.Batch < 1 || c.Concurrency < 1 {
		errs = append(errs, errors.New("-messages, -interval, -clients, -batch and -concurrency must be positive"))
	}
	if c.Size < bcastMinSize {
		errs = append(errs, fmt.Errorf("-size %d: at least %d (the message number and its send time)", c.Size, bcastMinSize))
	}
	for _, t := range c.Transports {
		if t != "epoll" && t != "goroutine" && t != transportDefault {
			errs = append(errs, fmt.Errorf("-transports: %q: use epoll, goroutine or %s (no --ws-transport flag)", t, transportDefault))
		}
	}
	if c.Heartbeat < time.Minute || c.Timeout <= 0 || c.Quiet < 0 || c.Idle <= 0 || c.Drain <= 0 || c.Tail < 0 {
		errs = append(errs, errors.New("-heartbeat must be at least 1m, -timeout, -idle and -drain positive, -quiet and -tail not negative"))
	}
	if fdLimit > 0 && c.Clients > 0 {
		limit := int(min(fdLimit, 1<<30)) - fdReserve
		if c.Members > limit {
			errs = append(errs, fmt.Errorf("%d connections on the node: more than the file-descriptor limit %d less %d", c.Members, fdLimit, fdReserve))
		}
		if n := ceilDiv(c.Members, c.Clients) + 1; n > limit {
			errs = append(errs, fmt.Errorf("%d connections per client worker: more than the file-descriptor limit %d less %d; add -clients", n, fdLimit, fdReserve))
		}
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("-log-level %q: use debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// parseBroadcastFlags reads `tandem-bench broadcast` flags.
func parseBroadcastFlags(args []string) (BroadcastConfig, error) {
	var (
		c                     BroadcastConfig
		transports, nodeFlags string
	)
	fs := flag.NewFlagSet("tandem-bench broadcast", flag.ContinueOnError)
	fs.IntVar(&c.Members, "members", DefaultBcastMembers, "member connections, each a user of the group (at most 10,000, the server's group limit; member 0 also sends, from a second device)")
	fs.IntVar(&c.Messages, "messages", DefaultBcastMessages, "group messages sent in the measured window")
	fs.DurationVar(&c.Interval, "interval", DefaultBcastInterval, "time between two sends")
	fs.IntVar(&c.Size, "size", DefaultBcastSize, "content bytes per message (at least 16)")
	fs.StringVar(&transports, "transports", "epoll,goroutine", "comma-separated; one run each, with the node's --ws-transport set to it ("+transportDefault+": no flag, for builds without it)")
	fs.IntVar(&c.Clients, "clients", DefaultBcastClients, "client worker processes holding the member connections")
	fs.IntVar(&c.Batch, "batch", DefaultBcastBatch, "members per group API request (the create, then adds)")
	fs.StringVar(&c.Tandem, "tandem", "", "the tandem binary to run (default: go build ./cmd/tandem into the run's dir)")
	fs.StringVar(&nodeFlags, "node-flags", "", "more flags for the node, space-separated")
	fs.DurationVar(&c.Heartbeat, "heartbeat", DefaultConnsHeartbeat, "the node's --heartbeat-timeout; the members never ping, so it must outlast the run")
	fs.IntVar(&c.Concurrency, "concurrency", DefaultConnsConcurrency, "logins (and token mints) in flight per client worker")
	fs.DurationVar(&c.Timeout, "timeout", DefaultConnsTimeout, "limit per token mint, dial, login and API request")
	fs.DurationVar(&c.Quiet, "quiet", DefaultBcastQuiet, "before the window: the node must push nothing and use under 5 % of a core for this long")
	fs.DurationVar(&c.Idle, "idle", DefaultBcastIdle, "before the window: measure the quiet node's CPU for this long")
	fs.DurationVar(&c.Drain, "drain", DefaultBcastDrain, "after the last send: wait at most this long for every push")
	fs.DurationVar(&c.Tail, "tail", DefaultBcastTail, "after the last push: the window goes on this long (acks, fan-out bookkeeping)")
	fs.StringVar(&c.DataDir, "data-dir", "", "parent of the run's dir (node data and logs; default: the system's temp dir)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the run's dir")
	fs.StringVar(&c.JSONPath, "json", "", "write the result as JSON to this file")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "save the node's CPU profile over the sends (-messages × -interval) as node-<transport>.pprof in this dir (profiling costs the node a little CPU)")
	fs.StringVar(&c.LogLevel, "log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return BroadcastConfig{}, err
	}
	if fs.NArg() > 0 {
		return BroadcastConfig{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.Transports = splitList(transports)
	c.NodeFlags = strings.Fields(nodeFlags)
	return c, nil
}

// broadcastMain runs `tandem-bench broadcast args…`; the exit status.
func broadcastMain(ctx context.Context, args []string, stdout io.Writer) int {
	cfg, err := parseBroadcastFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := newLogger(Config{LogLevel: cfg.LogLevel}, os.Stderr)
	if err := cfg.Validate(raiseFileLimit(log)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	res, err := runBroadcast(ctx, cfg, log)
	return finishRun(log, stdout, "broadcast", res, cfg.JSONPath, err)
}

// runBroadcast runs one measurement per transport, one after the other,
// each on a fresh node and fresh workers. It returns what it measured
// even with an error.
func runBroadcast(ctx context.Context, cfg BroadcastConfig, log *slog.Logger) (*BroadcastResult, error) {
	cfg = cfg.withDefaults()
	fdLimit := raiseFileLimit(log)
	if err := cfg.Validate(fdLimit); err != nil {
		return nil, err
	}
	res := &BroadcastResult{Config: cfg.describe(), Machine: readMachine(fdLimit)}
	defer func() { res.Machine.LoadAfter = loadAverage() }()
	bin := cfg.Tandem
	if bin == "" {
		dir, err := os.MkdirTemp(cfg.DataDir, "tandem-bcast-bin-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		log.Info("building cmd/tandem")
		if bin, err = buildTandem(ctx, dir); err != nil {
			return nil, err
		}
	}
	res.Config.Tandem = describeBinary(bin)
	if slices.ContainsFunc(cfg.Transports, func(t string) bool { return t != transportDefault }) && !nodeKnowsFlag(ctx, bin, "ws-transport") {
		return res, fmt.Errorf("%s does not know --ws-transport (built before the flag): measure its default transport with -transports %s, or pass -tandem a build that has the flag",
			bin, transportDefault)
	}
	for _, tr := range cfg.Transports {
		r, err := runBroadcastOnce(ctx, cfg, bin, tr, log)
		if r != nil {
			res.Runs = append(res.Runs, *r)
		}
		if err != nil {
			return res, fmt.Errorf("transport %s: %w", tr, err)
		}
	}
	return res, nil
}

// nodeKnowsFlag reports whether the tandem binary's -h lists --name.
func nodeKnowsFlag(ctx context.Context, bin, name string) bool {
	out, err := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) { // -h exits 2 after listing the flags; this did not run
		return false
	}
	return bytes.Contains(out, []byte("\n  -"+name+" "))
}

// bcast is one run (one transport) in progress.
type bcast struct {
	cfg       BroadcastConfig
	transport string
	log       *slog.Logger
	run       string
	group     string
	dir       string
	key       string
	node      *nodeProc
	workers   []*workerProc
	sender    *client.Client
	http      *http.Client
	res       *BroadcastRun
}

func runBroadcastOnce(ctx context.Context, cfg BroadcastConfig, bin, transport string, log *slog.Logger) (*BroadcastRun, error) {
	b := &bcast{
		cfg: cfg, transport: transport, log: log.With("transport", transport), run: newRunID(),
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}, Timeout: cfg.Timeout},
	}
	b.group = "bcast-" + b.run
	var err error
	if b.dir, err = os.MkdirTemp(cfg.DataDir, "tandem-bcast-"); err != nil {
		return nil, fmt.Errorf("create the run's dir: %w", err)
	}
	b.res = &BroadcastRun{Transport: transport, Run: b.run, Group: b.group, LoadBefore: loadAverage()}
	defer func() {
		if cerr := b.cleanup(); cerr != nil {
			b.log.Warn("cleaning up", "err", cerr)
			b.res.Problems = append(b.res.Problems, "cleanup: "+cerr.Error())
		}
	}()
	stop := context.AfterFunc(ctx, b.killWorkers)
	defer stop()
	if err := b.setup(ctx, bin); err != nil {
		b.res.Problems = append(b.res.Problems, err.Error())
		return b.res, err
	}
	if err := b.measure(ctx); err != nil {
		b.res.Problems = append(b.res.Problems, err.Error())
		return b.res, err
	}
	b.res.LoadAfter = loadAverage()
	return b.res, nil
}

// setup starts the node and workers, logs the members in, builds the
// group, logs the sender in and waits until the node is quiet.
func (b *bcast) setup(ctx context.Context, bin string) error {
	t0 := time.Now()
	key, err := newAdminKey()
	if err != nil {
		return err
	}
	b.key = key
	flags := append([]string(nil), b.cfg.NodeFlags...)
	if b.transport != transportDefault {
		flags = append(flags, "--ws-transport", b.transport)
	}
	b.res.NodeFlags = flags
	if b.node, err = startNode(ctx, ConnsConfig{Heartbeat: b.cfg.Heartbeat, NodeFlags: flags}, bin, b.dir, key, 0, nil); err != nil {
		return err
	}
	b.res.NodePID = b.node.pid()
	srv := []serverAddrs{{WS: b.node.ws, API: b.node.api}}
	for i := range b.cfg.Clients {
		w, err := startWorker(workerSetup{
			Index: i, Clients: b.cfg.Clients, Servers: srv, AdminKey: key, Run: b.run,
			Concurrency: b.cfg.Concurrency, Timeout: b.cfg.Timeout,
		})
		if err != nil {
			return err
		}
		b.workers = append(b.workers, w)
		b.res.WorkerPIDs = append(b.res.WorkerPIDs, w.cmd.Process.Pid)
	}

	// Members: user u's device conns-a, on the workers; then the group.
	if err := b.connect(); err != nil {
		return err
	}
	b.res.Setup.LoginSeconds = time.Since(t0).Seconds()
	b.log.Info("members logged in", "members", b.cfg.Members, "took", time.Since(t0).Round(time.Millisecond))
	if b.res.NodeGoroutines, err = b.goroutines(ctx); err != nil {
		return err
	}
	t1 := time.Now()
	if err := b.makeGroup(ctx); err != nil {
		return err
	}
	b.res.Setup.GroupSeconds = time.Since(t1).Seconds()

	// The sender: member 0's second device (a desktop class beside the
	// members' android: nothing is kicked), in this process.
	tok, err := client.MintToken(ctx, b.node.api, key, userID(b.run, 0), 0)
	if err != nil {
		return err
	}
	b.sender, err = client.Dial(ctx, client.Options{
		URL: b.node.ws, Token: tok, DeviceID: "bcast-sender", Platform: phaseDevice[phaseSecond].platform,
		RequestTimeout: b.cfg.Timeout, PingInterval: -1,
	})
	if err != nil {
		return fmt.Errorf("log the sender in: %w", err)
	}
	t2 := time.Now()
	if err := b.waitQuiet(ctx); err != nil {
		return err
	}
	b.res.Setup.QuietSeconds = time.Since(t2).Seconds()
	b.res.Setup.Seconds = time.Since(t0).Seconds()
	return nil
}

// connect has every worker log in its share of the members.
func (b *bcast) connect() error {
	errs := make([]error, len(b.workers))
	replies := make([]workerReply, len(b.workers))
	var wg sync.WaitGroup
	for i, w := range b.workers {
		wg.Go(func() {
			replies[i], errs[i] = w.call(workerCommand{Op: "connect", Phase: phaseNew, From: 0, To: b.cfg.Members})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var failed []string
	for _, r := range replies {
		b.res.Checks.Logins += r.Connected
		b.res.Checks.FailedLogins += r.Failed
		failed = append(failed, r.Errors...)
	}
	if b.res.Checks.FailedLogins > 0 || b.res.Checks.Logins != b.cfg.Members {
		return fmt.Errorf("%d of %d members logged in (%d failed): %s", b.res.Checks.Logins, b.cfg.Members, b.res.Checks.FailedLogins, strings.Join(failed, "; "))
	}
	return nil
}

// makeGroup creates the group with the first Batch members (member 0
// the owner) and adds the rest Batch at a time. Each request tells every
// member so far (a membership event in each log), so the group actor may
// still be busy with the last one's fan-out and not answer in time: an
// UNAVAILABLE answer is tried again (adds are idempotent; a create tried
// again may find the group made). A last add of member 0 (a no-op)
// reads the member list back.
func (b *bcast) makeGroup(ctx context.Context) error {
	ids := make([]string, b.cfg.Members)
	for u := range ids {
		ids[u] = userID(b.run, u)
	}
	for from := 0; from < len(ids); from += b.cfg.Batch {
		batch := ids[from:min(from+b.cfg.Batch, len(ids))]
		var err error
		if from == 0 {
			_, err = b.groupRequest(ctx, "/v1/groups", map[string]any{"group_id": b.group, "name": "broadcast " + b.run, "owner": ids[0], "members": batch})
		} else {
			_, err = b.groupRequest(ctx, "/v1/groups/"+b.group+"/members", map[string]any{"user_ids": batch})
		}
		if err != nil {
			return fmt.Errorf("group %s: members %d-%d: %w", b.group, from, from+len(batch)-1, err)
		}
	}
	got, err := b.groupRequest(ctx, "/v1/groups/"+b.group+"/members", map[string]any{"user_ids": ids[:1]})
	if err != nil {
		return fmt.Errorf("group %s: read the members back: %w", b.group, err)
	}
	if len(got) != len(ids) || !sameSet(got, ids) {
		return fmt.Errorf("group %s has %d members after the adds, want %d", b.group, len(got), len(ids))
	}
	return nil
}

// groupRequest POSTs one group request, again while the answer is
// UNAVAILABLE (at most 10 times), and returns the members it answers.
func (b *bcast) groupRequest(ctx context.Context, path string, body map[string]any) ([]string, error) {
	buf, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	create := path == "/v1/groups"
	for attempt := 0; ; attempt++ {
		b.res.Setup.GroupRequests++
		status, rb, err := b.post(ctx, path, buf)
		if err != nil {
			return nil, err
		}
		var out struct {
			Members []string `json:"members"`
			Error   struct {
				Name    string `json:"name"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rb, &out); err != nil {
			return nil, fmt.Errorf("POST %s: %d %q: %w", path, status, rb, err)
		}
		switch {
		case status/100 == 2:
			return out.Members, nil
		case create && attempt > 0 && out.Error.Name == "INVALID_ARGUMENT" && strings.Contains(out.Error.Message, "exists"):
			return nil, nil // an earlier attempt made it
		case out.Error.Name == "UNAVAILABLE" && attempt < 10:
			b.res.Setup.GroupRetries++
			b.log.Info("group request not answered: trying again", "path", path, "attempt", attempt+1)
			if err := sleepCtx(ctx, time.Duration(attempt+1)*500*time.Millisecond); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("POST %s: %d: %s", path, status, strings.TrimSpace(string(rb)))
		}
	}
}

// post makes one authorised server API request with a JSON body.
func (b *bcast) post(ctx context.Context, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.node.api+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, rb, err
}

// goroutines is the node's goroutine count (its goroutine profile's
// header): with the members logged in, at least one per connection on
// the goroutine transport, a few hundred in all on epoll.
func (b *bcast) goroutines(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.node.debugURL+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read the node's goroutines: %w", err)
	}
	defer resp.Body.Close()
	line, err := firstLine(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("read the node's goroutines: %w", err)
	}
	n, ok := strings.CutPrefix(line, "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("the node's goroutine profile starts %q", line)
	}
	return strconv.Atoi(strings.TrimSpace(n))
}

func firstLine(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, 256))
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line, nil
}

// waitQuiet waits until, for Quiet, the workers were pushed nothing and
// the node used under 5 % of a core (the group's membership events have
// gone out), then measures the node's idle CPU over Idle.
func (b *bcast) waitQuiet(ctx context.Context) error {
	const poll = 250 * time.Millisecond
	deadline := time.Now().Add(2 * time.Minute)
	frames, err := b.frames()
	if err != nil {
		return err
	}
	cpu, err := procCPU(b.node.pid())
	if err != nil {
		return err
	}
	var quietSince time.Time
	for at := time.Now(); ; {
		if err := sleepCtx(ctx, poll); err != nil {
			return err
		}
		f, err := b.frames()
		if err != nil {
			return err
		}
		c, err := procCPU(b.node.pid())
		if err != nil {
			return err
		}
		now := time.Now()
		quiet := f == frames && (c-cpu).Seconds() < 0.05*now.Sub(at).Seconds()+0.0101 // one clock tick of slack
		frames, cpu, at = f, c, now
		switch {
		case !quiet:
			quietSince = time.Time{}
		case quietSince.IsZero():
			quietSince = now
		case now.Sub(quietSince) >= b.cfg.Quiet:
			b.res.Setup.FramesBefore = frames
			c0, t0 := cpu, now
			if err := sleepCtx(ctx, b.cfg.Idle); err != nil {
				return err
			}
			c1, err := procCPU(b.node.pid())
			if err != nil {
				return err
			}
			b.res.NodeIdleCores = (c1 - c0).Seconds() / time.Since(t0).Seconds()
			return nil
		}
		if now.After(deadline) {
			return fmt.Errorf("the node did not go quiet within 2 minutes of the set-up (workers' frames %d)", frames)
		}
	}
}

// waitPushes polls the workers' counts until they hold want pushes or
// deadline passes, and returns the last count.
func (b *bcast) waitPushes(ctx context.Context, want int64, deadline time.Time) (int64, error) {
	for {
		rs, err := b.all(workerCommand{Op: opBcastCount})
		if err != nil {
			return 0, err
		}
		var got int64
		for _, r := range rs {
			got += r.Broadcast.Pushes
		}
		if got >= want || time.Now().After(deadline) {
			return got, nil
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// frames is the frames the workers were pushed so far.
func (b *bcast) frames() (int64, error) {
	var n int64
	for _, w := range b.workers {
		r, err := w.call(workerCommand{Op: "status"})
		if err != nil {
			return 0, err
		}
		n += r.Frames
	}
	return n, nil
}

// Metrics read before and after the window.
const (
	mFramesOut    = "tandem_gateway_frames_out_total"
	mStoreCommits = "tandem_store_commits_total"
	mStoreEntries = "tandem_store_entries_total"
)

// procCPU is a process's CPU time so far (user+sys, /proc/PID/stat).
func procCPU(pid int) (time.Duration, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	_, cpu, ok := parseProcStat(st)
	if !ok {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, st)
	}
	return cpu, nil
}

// all calls every worker with cmd at once.
func (b *bcast) all(cmd workerCommand) ([]workerReply, error) {
	replies := make([]workerReply, len(b.workers))
	errs := make([]error, len(b.workers))
	var wg sync.WaitGroup
	for i, w := range b.workers {
		wg.Go(func() { replies[i], errs[i] = w.call(cmd) })
	}
	wg.Wait()
	return replies, errors.Join(errs...)
}

// windowSample is the CPU of the node, the workers and the machine at one
// instant.
type windowSample struct {
	at            time.Time
	node, workers time.Duration
	busy          time.Duration
}

func (b *bcast) sample() (windowSample, error) {
	s := windowSample{at: time.Now()}
	var err error
	if s.node, err = procCPU(b.node.pid()); err != nil {
		return s, fmt.Errorf("the node's CPU: %w", err)
	}
	for _, w := range b.workers {
		c, err := procCPU(w.cmd.Process.Pid)
		if err != nil {
			return s, fmt.Errorf("a worker's CPU: %w", err)
		}
		s.workers += c
	}
	if s.busy, _, err = machineCPU(); err != nil {
		return s, err
	}
	return s, nil
}

// measure sends the messages and measures the window.
func (b *bcast) measure(ctx context.Context) error {
	m, members := b.cfg.Messages, b.cfg.Members
	if _, err := b.all(workerCommand{Op: opBcastTrack, Broadcast: &bcastTrack{Group: b.group, Messages: m}}); err != nil {
		return err
	}
	conv := &wire.Conversation{Type: wire.Conversation_GROUP, Id: b.group}
	sent := make([]time.Time, m)
	acks := make([]time.Duration, m)
	ackErrs := make([]error, m)
	pend := make([]*client.Pending, m)
	var acked sync.WaitGroup // until every ack, or the sender is closed

	m0, err := b.scrape(ctx)
	if err != nil {
		return err
	}
	var prof sync.WaitGroup
	defer prof.Wait()
	if b.cfg.CPUProfile != "" {
		prof.Go(func() {
			if err := b.cpuProfile(ctx, time.Duration(m)*b.cfg.Interval); err != nil {
				b.log.Warn("node CPU profile", "err", err)
			}
		})
	}
	s0, err := b.sample()
	if err != nil {
		return err
	}
	start := time.Now()
	for n := range m {
		if err := sleepCtx(ctx, time.Until(start.Add(time.Duration(n)*b.cfg.Interval))); err != nil {
			return err
		}
		sent[n] = time.Now()
		p := b.sender.SendAsync(&wire.Send{
			ClientMessageId: fmt.Sprintf("bcast-%s-%d", b.run, n),
			FirstAttempt:    true,
			Conversation:    conv,
			Type:            int32(wire.MessageType_TEXT),
			Content:         bcastContent(uint64(n), sent[n], b.cfg.Size),
		})
		pend[n] = p
		acked.Go(func() {
			<-p.Done()
			acks[n] = time.Since(sent[n])
			_, ackErrs[n] = p.Result()
		})
	}
	lastSend := time.Now()

	// Until every member has every message (or Drain ends).
	want := int64(m) * int64(members)
	got, err := b.waitPushes(ctx, want, lastSend.Add(b.cfg.Drain))
	if err != nil {
		return err
	}
	lastPush := time.Now()
	if err := sleepCtx(ctx, b.cfg.Tail); err != nil {
		return err
	}
	s1, err := b.sample()
	if err != nil {
		return err
	}
	m1, err := b.scrape(ctx)
	if err != nil {
		return err
	}
	b.res.PushesInWindow = got
	if got < want {
		// Late or lost: wait as long again before the tally tells.
		b.res.Problems = append(b.res.Problems, fmt.Sprintf("%d of %d pushes arrived within -drain %s of the last send", got, want, b.cfg.Drain))
		if _, err := b.waitPushes(ctx, want, time.Now().Add(b.cfg.Drain)); err != nil {
			return err
		}
	}
	ackWait := time.NewTimer(b.cfg.Drain)
	defer ackWait.Stop()
	for n := range m {
		select {
		case <-pend[n].Done():
		case <-ackWait.C:
		}
	}
	if err := b.sender.Close(); err != nil { // fails the sends still unacked
		return fmt.Errorf("close the sender: %w", err)
	}
	acked.Wait()

	// The tally: exactly once each, none missing.
	rs, err := b.all(workerCommand{Op: opBcastStatus})
	if err != nil {
		return err
	}
	r := b.res
	r.Sent = m
	for n := range m {
		if ackErrs[n] == nil {
			r.Acked++
		} else if len(r.Problems) < 8 {
			r.Problems = append(r.Problems, fmt.Sprintf("message %d: %v", n, ackErrs[n]))
		}
	}
	r.PushesExpected = want
	var pushHist hist
	lastPushAt := make([]int64, m)
	for i, wr := range rs {
		t := wr.Broadcast
		r.Checks.OpenConns += t.Conns
		r.Checks.Complete += t.Complete
		r.Checks.Missing += t.Missing
		r.Checks.Duplicates += t.Duplicates
		r.Checks.OtherEntries += t.Other
		r.Checks.Foreign += t.Foreign
		r.Checks.Kicks += wr.Kicks
		r.Checks.Drops += wr.Drops
		r.PushesDelivered += t.Pushes - t.Duplicates
		if len(t.LastPush) != m || len(t.Received) != m {
			return fmt.Errorf("worker %d: a tally of %d messages, want %d", i, len(t.LastPush), m)
		}
		for n := range m {
			lastPushAt[n] = max(lastPushAt[n], t.LastPush[n])
		}
		h, err := t.Latency.hist()
		if err != nil {
			return fmt.Errorf("worker %d: %w", i, err)
		}
		pushHist.merge(h)
	}
	var lastHist, ackHist hist
	for n := range m {
		if lastPushAt[n] > 0 {
			lastHist.record(time.Duration(lastPushAt[n] - sent[n].UnixNano()))
		}
		if ackErrs[n] == nil {
			ackHist.record(acks[n])
		}
	}
	r.Latency = bcastLatency{
		LastPush: quantilesMS(&lastHist), Push: quantilesMS(&pushHist), Ack: quantilesMS(&ackHist),
	}

	// The window.
	wall := s1.at.Sub(s0.at).Seconds()
	w := &r.Window
	w.Seconds = wall
	w.SendSeconds = lastSend.Sub(start).Seconds()
	w.DeliverSeconds = lastPush.Sub(start).Seconds()
	w.NodeCPUSeconds = (s1.node - s0.node).Seconds()
	w.NodeCores = w.NodeCPUSeconds / wall
	w.WorkersCPUSeconds = (s1.workers - s0.workers).Seconds()
	w.MachineBusyCores = (s1.busy - s0.busy).Seconds() / wall
	w.OtherCores = max(w.MachineBusyCores-w.NodeCores-w.WorkersCPUSeconds/wall, 0)
	if got > 0 {
		w.NodeCPUPerPushMicros = w.NodeCPUSeconds / float64(got) * 1e6
		w.NodeCPUPerPushNetMicros = max(w.NodeCPUSeconds-r.NodeIdleCores*wall, 0) / float64(got) * 1e6
		w.WorkersCPUPerPushMicros = w.WorkersCPUSeconds / float64(got) * 1e6
	}
	w.FramesOut = int64(m1[mFramesOut] - m0[mFramesOut])
	w.StoreCommits = int64(m1[mStoreCommits] - m0[mStoreCommits])
	w.StoreEntries = int64(m1[mStoreEntries] - m0[mStoreEntries])
	w.NodeCPUPerMessageMillis = w.NodeCPUSeconds / float64(m) * 1e3

	return b.check(ctx)
}

// cpuProfile saves the node's CPU profile over d as
// node-<transport>.pprof in CPUProfile.
func (b *bcast) cpuProfile(ctx context.Context, d time.Duration) error {
	if err := os.MkdirAll(b.cfg.CPUProfile, 0o755); err != nil {
		return err
	}
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", b.node.debugURL, secs), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: d + time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /debug/pprof/profile: %s", resp.Status)
	}
	f, err := os.Create(filepath.Join(b.cfg.CPUProfile, "node-"+b.transport+".pprof"))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// check lists what makes the run unsound.
func (b *bcast) check(ctx context.Context) error {
	r := b.res
	c := &r.Checks
	ms, err := b.scrape(ctx)
	if err != nil {
		return err
	}
	c.ServerCloses = int(ms[mCloses])
	c.SlowConsumers = int(ms[mSlow] + ms[mWriteErr])
	c.LoginConflicts = int(ms[mConflicts])
	members := b.cfg.Members
	if c.OpenConns != members || c.Complete != members || c.Missing != 0 || c.Duplicates != 0 || c.Foreign != 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d open member connections, %d got every message exactly once, %d missing, %d duplicates, %d foreign: want %d, %d, 0, 0, 0",
			c.OpenConns, c.Complete, c.Missing, c.Duplicates, c.Foreign, members, members))
	}
	if r.Acked != r.Sent {
		r.Problems = append(r.Problems, fmt.Sprintf("%d of %d sends acked", r.Acked, r.Sent))
	}
	if c.Kicks+c.Drops+c.ServerCloses+c.SlowConsumers+c.LoginConflicts > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("kicks %d, drops %d, server closes %d, slow or failed writes %d, login conflicts %d: want none",
			c.Kicks, c.Drops, c.ServerCloses, c.SlowConsumers, c.LoginConflicts))
	}
	if r.Window.NodeCPUSeconds <= 0 {
		r.Problems = append(r.Problems, "the node used no measurable CPU in the window")
	}
	// The transport the node really used: a goroutine per connection or not.
	r.ObservedTransport = "epoll"
	if r.NodeGoroutines >= members {
		r.ObservedTransport = "goroutine"
	}
	if b.transport != transportDefault && r.ObservedTransport != b.transport && members >= 500 {
		r.Problems = append(r.Problems, fmt.Sprintf("asked for the %s transport, but the node ran %d goroutines with %d connections (looks like %s)",
			b.transport, r.NodeGoroutines, members, r.ObservedTransport))
	}
	return nil
}

func (b *bcast) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.node.api+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body, append([]string{mFramesOut, mStoreCommits, mStoreEntries}, connsMetrics...)...)
}

func (b *bcast) killWorkers() { killWorkers(b.workers, b.log) }

// cleanup closes the sender, stops the workers, then the node, and
// removes the run's dir unless kept.
func (b *bcast) cleanup() error {
	var errs []error
	if b.sender != nil {
		if err := b.sender.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the sender: %w", err))
		}
	}
	for _, w := range b.workers {
		if err := w.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.node != nil {
		if err := b.node.stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	b.http.CloseIdleConnections()
	if b.cfg.Keep {
		b.log.Warn("kept the run's dir", "dir", b.dir)
	} else if err := os.RemoveAll(b.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
