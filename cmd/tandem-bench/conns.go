package main

import (
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/tandem-im/tandem/internal/procmem"
)

// `tandem-bench conns` measures the memory a node spends per connection
// (issue 11): it starts Servers real tandem node processes (each a
// single-node cluster on badger with --debug-addr; with ReusePort one
// cluster whose members share one WebSocket port with --reuse-port, the
// kernel choosing each connection's process) and Clients client worker
// processes (conns_worker.go), then logs in
//
//	phase a: Users connections, each a new user (the whole server cost of
//	         a connection: gateway session and the user's actor), and
//	phase b: Second connections, each a second device (another kick-policy
//	         class) of a user from phase a (the gateway's share and the
//	         actor's session entry, no new actor),
//
// in Steps steps each. At each phase's start and after each step it waits
// until every node counts its logged-in sessions, lets the nodes settle,
// forces two GCs through POST /debug/gc (which returns the freed memory
// to the OS), and reads each node's RSS (/proc/PID/status), Go heap,
// stacks and goroutines, and the machine's kernel socket memory. The
// per-connection figures are the differences between a phase's first and
// last points divided by the connections added (conns_report.go). See
// bench/README.md, "Connections: memory per connection (issue 11)".

// ConnsConfig is one `tandem-bench conns` run. Zero fields mean defaults.
type ConnsConfig struct {
	Users   int // phase a connections: one new user each
	Second  int // phase b connections: a second device of users 0..Second-1
	Servers int // tandem node processes; user u lives on node u % Servers
	Clients int // client worker processes
	Steps   int // measurement points per phase after its start

	// ReusePort: the nodes are one cluster (badger each, with
	// --unsafe-multi-node-badger) listening on one shared WebSocket
	// address with --reuse-port. The kernel picks the process of each
	// connection, a user's actor lives where the cluster places it, and
	// the figure that counts is the whole server's: every node's growth
	// over all the connections (phaseSlope.Whole).
	ReusePort bool

	Tandem    string   // the tandem binary; "" = go build ./cmd/tandem into the run's dir
	NodeFlags []string // more flags for every node (e.g. a gateway transport)

	Heartbeat   time.Duration // the nodes' --heartbeat-timeout: longer than the run
	Settle      time.Duration // wait after a step's logins before measuring
	Concurrency int           // logins in flight per client worker
	Timeout     time.Duration // per token mint, dial and login

	DataDir      string // parent of the run's dir ("" = the system's temp dir)
	Keep         bool   // keep the run's dir (node data and logs)
	JSONPath     string
	HeapProfiles string // save node 0's heap profile at each phase boundary into this dir
	LogLevel     string
}

// Defaults.
const (
	DefaultConnsUsers       = 40_000
	DefaultConnsSecond      = 24_000
	DefaultConnsServers     = 4
	DefaultConnsClients     = 4
	DefaultConnsSteps       = 4
	DefaultConnsHeartbeat   = 2 * time.Hour
	DefaultConnsSettle      = 3 * time.Second
	DefaultConnsConcurrency = 32
	DefaultConnsTimeout     = 30 * time.Second

	// fdReserve: file descriptors a process keeps for other things than
	// the measured connections (listeners, badger's files, API and
	// metrics connections, the runtime).
	fdReserve = 1000
)

func (c ConnsConfig) withDefaults() ConnsConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Servers, DefaultConnsServers)
	def(&c.Clients, DefaultConnsClients)
	def(&c.Steps, DefaultConnsSteps)
	def(&c.Concurrency, DefaultConnsConcurrency)
	for _, d := range []struct {
		v *time.Duration
		d time.Duration
	}{{&c.Heartbeat, DefaultConnsHeartbeat}, {&c.Settle, DefaultConnsSettle}, {&c.Timeout, DefaultConnsTimeout}} {
		if *d.v == 0 {
			*d.v = d.d
		}
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	return c
}

// perServer and perClient are the most connections one node and one
// worker hold (at the end of phase b).
func (c ConnsConfig) perServer() int {
	return ceilDiv(c.Users, c.Servers) + ceilDiv(c.Second, c.Servers)
}
func (c ConnsConfig) perClient() int {
	return ceilDiv(c.Users, c.Clients) + ceilDiv(c.Second, c.Clients) + c.Servers
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// Validate returns every problem at once; fdLimit (0: unknown) is the
// file-descriptor limit every process gets.
func (c ConnsConfig) Validate(fdLimit uint64) error {
	c = c.withDefaults()
	var errs []error
	if c.Users <= 0 || c.Second < 0 {
		errs = append(errs, errors.New("-users must be positive and -second not negative"))
	}
	if c.Second > c.Users {
		errs = append(errs, fmt.Errorf("-second %d: at most -users (%d): each is a second device of a phase-a user", c.Second, c.Users))
	}
	if c.Servers < 1 || c.Clients < 1 || c.Steps < 1 || c.Concurrency < 1 {
		errs = append(errs, errors.New("-servers, -clients, -steps and -concurrency must be positive"))
	}
	if c.Steps > 0 && (c.Users < c.Steps*c.Servers || (c.Second > 0 && c.Second < c.Steps*c.Servers)) {
		errs = append(errs, fmt.Errorf("-users and -second must be at least -steps × -servers (%d) for every step to add connections to every node", c.Steps*c.Servers))
	}
	if c.Heartbeat < time.Minute || c.Settle < 0 || c.Timeout <= 0 {
		errs = append(errs, errors.New("-heartbeat must be at least 1m (longer than the run), -settle not negative, -timeout positive"))
	}
	if fdLimit > 0 && c.Servers > 0 && c.Clients > 0 {
		limit := int(min(fdLimit, 1<<30)) - fdReserve
		n := c.perServer()
		if c.ReusePort {
			n += n / 10 // the kernel's spread is not exact
		}
		if n > limit {
			errs = append(errs, fmt.Errorf("%d connections per node: more than the file-descriptor limit %d less %d; add -servers", n, fdLimit, fdReserve))
		}
		if n := c.perClient(); n > limit {
			errs = append(errs, fmt.Errorf("%d connections per client worker: more than the file-descriptor limit %d less %d; add -clients", n, fdLimit, fdReserve))
		}
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("-log-level %q: use debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// parseConnsFlags reads `tandem-bench conns` flags.
func parseConnsFlags(args []string) (ConnsConfig, error) {
	var (
		c         ConnsConfig
		nodeFlags string
	)
	fs := flag.NewFlagSet("tandem-bench conns", flag.ContinueOnError)
	fs.IntVar(&c.Users, "users", DefaultConnsUsers, "phase a: connections, each a new user logged in (user u on node u % -servers)")
	fs.IntVar(&c.Second, "second", DefaultConnsSecond, "phase b: connections, each a second device (another kick-policy class) of one of the first -second users")
	fs.IntVar(&c.Servers, "servers", DefaultConnsServers, "tandem node processes (each a single-node cluster on badger)")
	fs.IntVar(&c.Clients, "clients", DefaultConnsClients, "client worker processes holding the connections")
	fs.IntVar(&c.Steps, "steps", DefaultConnsSteps, "measurement points per phase after its start")
	fs.BoolVar(&c.ReusePort, "reuse-port", false, "the nodes form one cluster sharing one WebSocket port (--reuse-port, SO_REUSEPORT): the kernel picks each connection's node")
	fs.StringVar(&c.Tandem, "tandem", "", "the tandem binary to run (default: go build ./cmd/tandem into the run's dir)")
	fs.StringVar(&nodeFlags, "node-flags", "", "more flags for every node, space-separated, e.g. \"--kick-policy tag\"")
	fs.DurationVar(&c.Heartbeat, "heartbeat", DefaultConnsHeartbeat, "the nodes' --heartbeat-timeout; the clients never ping, so it must outlast the run")
	fs.DurationVar(&c.Settle, "settle", DefaultConnsSettle, "wait this long after a step's logins before measuring")
	fs.IntVar(&c.Concurrency, "concurrency", DefaultConnsConcurrency, "logins (and token mints) in flight per client worker")
	fs.DurationVar(&c.Timeout, "timeout", DefaultConnsTimeout, "limit per token mint, dial and login")
	fs.StringVar(&c.DataDir, "data-dir", "", "parent of the run's dir (node data and logs; default: the system's temp dir)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the run's dir")
	fs.StringVar(&c.JSONPath, "json", "", "write the result as JSON to this file")
	fs.StringVar(&c.HeapProfiles, "heap-profiles", "", "save node 0's heap profile (after GC) at the start, after phase a and after phase b into this dir")
	fs.StringVar(&c.LogLevel, "log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return ConnsConfig{}, err
	}
	if fs.NArg() > 0 {
		return ConnsConfig{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.NodeFlags = strings.Fields(nodeFlags)
	return c, nil
}

// connsMain runs `tandem-bench conns args…`; the exit status.
func connsMain(ctx context.Context, args []string, stdout io.Writer) int {
	cfg, err := parseConnsFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := newLogger(Config{LogLevel: cfg.LogLevel}, os.Stderr)
	limit := raiseFileLimit(log)
	if err := cfg.Validate(limit); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	res, err := runConns(ctx, cfg, log)
	return finishRun(log, stdout, "conns", res, cfg.JSONPath, err)
}

// conns is one run in progress.
type conns struct {
	cfg     ConnsConfig
	log     *slog.Logger
	run     string
	dir     string
	nodes   []*nodeProc
	workers []*workerProc
	res     *ConnsResult
	key     string       // the nodes' admin key
	http    *http.Client // metrics, GC and profile requests (a few connections, kept open)
}

// runConns runs the benchmark. A run that got as far as measuring
// returns its result even with an error, which it then also lists in
// Problems.
func runConns(ctx context.Context, cfg ConnsConfig, log *slog.Logger) (*ConnsResult, error) {
	cfg = cfg.withDefaults()
	fdLimit := raiseFileLimit(log)
	if err := cfg.Validate(fdLimit); err != nil {
		return nil, err
	}
	c := &conns{
		cfg: cfg, log: log, run: newRunID(),
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 2 * time.Minute},
	}
	var err error
	if c.dir, err = os.MkdirTemp(cfg.DataDir, "tandem-conns-"); err != nil {
		return nil, fmt.Errorf("create the run's dir: %w", err)
	}
	c.res = &ConnsResult{Config: cfg.describe(c.run), Machine: readMachine(fdLimit)}
	defer func() {
		if cerr := c.cleanup(); cerr != nil {
			log.Warn("cleaning up", "err", cerr)
		}
	}()
	stop := context.AfterFunc(ctx, c.killWorkers) // an interrupted call() returns
	defer stop()

	if err := c.start(ctx); err != nil {
		return nil, err
	}
	err = c.phases(ctx)
	if err != nil {
		c.res.Problems = append(c.res.Problems, err.Error())
	}
	c.res.Machine.LoadAfter = loadAverage()
	c.res.Phases = phaseSlopes(c.res.Points)
	return c.res, err
}

// start builds the binary if needed and starts the nodes and workers.
func (c *conns) start(ctx context.Context) error {
	bin := c.cfg.Tandem
	if bin == "" {
		c.log.Info("building cmd/tandem")
		var err error
		if bin, err = buildTandem(ctx, c.dir); err != nil {
			return err
		}
	}
	c.res.Config.Tandem = describeBinary(bin)
	key, err := newAdminKey()
	if err != nil {
		return err
	}
	c.key = key
	var cl *sharedCluster
	if c.cfg.ReusePort {
		if cl, err = newSharedCluster(); err != nil {
			return err
		}
	}
	for i := range c.cfg.Servers {
		n, err := startNode(ctx, c.cfg, bin, c.dir, key, i, cl)
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, n)
		c.res.Config.NodePIDs = append(c.res.Config.NodePIDs, n.pid())
		if cl != nil && i == 0 {
			cl.seed = n.gossip
		}
	}
	if cl != nil {
		if err := c.waitMembers(ctx); err != nil {
			return err
		}
	}
	servers := make([]serverAddrs, len(c.nodes))
	for i, n := range c.nodes {
		servers[i] = serverAddrs{WS: n.ws, API: n.api}
	}
	for i := range c.cfg.Clients {
		setup := workerSetup{
			Index: i, Clients: c.cfg.Clients, Servers: servers, AdminKey: key, Run: c.run,
			Concurrency: c.cfg.Concurrency, Timeout: c.cfg.Timeout,
		}
		if c.cfg.ReusePort {
			setup.SourceIP = fmt.Sprintf("127.0.%d.%d", 1+i/250, 2+i%250)
		}
		w, err := startWorker(setup)
		if err != nil {
			return err
		}
		c.workers = append(c.workers, w)
		c.res.Config.WorkerPIDs = append(c.res.Config.WorkerPIDs, w.cmd.Process.Pid)
	}
	return nil
}

// phases logs in both phases step by step, measuring at each point, then
// checks that nothing was kicked or dropped.
func (c *conns) phases(ctx context.Context) error {
	if err := c.measure(ctx, phaseNew, 0, 0, 0); err != nil {
		return err
	}
	if err := c.heapProfile(ctx, "start"); err != nil {
		return err
	}
	for _, ph := range []struct {
		name  string
		total int
	}{{phaseNew, c.cfg.Users}, {phaseSecond, c.cfg.Second}} {
		if ph.total == 0 {
			continue
		}
		if ph.name == phaseSecond {
			// The phase's first point is the last of phase a, again:
			// the same connections, measured afresh.
			if err := c.measure(ctx, phaseSecond, 0, c.cfg.Users, 0); err != nil {
				return err
			}
		}
		from := 0
		for step := 1; step <= c.cfg.Steps; step++ {
			to := ph.total * step / c.cfg.Steps
			t0 := time.Now()
			if err := c.connect(ph.name, from, to); err != nil {
				return err
			}
			c.log.Info("step logged in", "phase", ph.name, "step", step, "conns", to-from, "took", time.Since(t0).Round(time.Millisecond))
			c.res.Checks.LoginSeconds += time.Since(t0).Seconds()
			var a, b int
			if ph.name == phaseNew {
				a, b = to, 0
			} else {
				a, b = c.cfg.Users, to
			}
			if err := c.measure(ctx, ph.name, step, a, b); err != nil {
				return err
			}
			from = to
		}
		if err := c.heapProfile(ctx, "after-"+ph.name); err != nil {
			return err
		}
	}
	return c.check(ctx)
}

// connect has every worker log in its devices of users [from, to) for
// phase, all workers at once.
func (c *conns) connect(phase string, from, to int) error {
	replies := make([]workerReply, len(c.workers))
	errs := make([]error, len(c.workers))
	var wg sync.WaitGroup
	for i, w := range c.workers {
		wg.Go(func() {
			replies[i], errs[i] = w.call(workerCommand{Op: "connect", Phase: phase, From: from, To: to})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var failed []string
	for _, r := range replies {
		c.res.Checks.Logins += r.Connected
		c.res.Checks.FailedLogins += r.Failed
		c.res.Checks.DialRetries += r.DialRetries
		if r.Failed > 0 {
			failed = append(failed, r.Errors...)
		}
	}
	if n := c.res.Checks.FailedLogins; n > 0 {
		return fmt.Errorf("phase %s: %d logins failed: %s", phase, n, strings.Join(failed, "; "))
	}
	return nil
}

// expected is how many sessions node i holds with a users of phase a and
// b devices of phase b logged in; -1 with ReusePort (the kernel decides:
// only the sum over the nodes is known).
func (c *conns) expected(i, a, b int) int {
	if c.cfg.ReusePort {
		return -1
	}
	return countOn(i, a, c.cfg.Servers) + countOn(i, b, c.cfg.Servers)
}

// countOn is how many of users 0..n-1 live on node i.
func countOn(i, n, servers int) int {
	if n <= i {
		return 0
	}
	return (n-1-i)/servers + 1
}

// measure waits until every node has its expected sessions logged in,
// settles, and records one point: a users of phase a and b second devices.
func (c *conns) measure(ctx context.Context, phase string, step, a, b int) error {
	want := make([]int, len(c.nodes))
	for i := range c.nodes {
		want[i] = c.expected(i, a, b)
	}
	metrics, err := c.waitLoggedIn(ctx, want, a+b)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, c.cfg.Settle); err != nil {
		return err
	}
	p := connsPoint{Phase: phase, Step: step, Users: a, SecondDevices: b, Conns: a + b, At: time.Now().UTC(), Load1: loadAverage()[0]}
	for i, n := range c.nodes {
		sp := serverPoint{Conns: int(metrics[i][mLoggedIn]), Sessions: int(metrics[i][mSessions]), OnlineUsers: int(metrics[i][mOnline])}
		if sp.Runtime, err = c.gc(ctx, n); err != nil {
			return err
		}
		if sp.Process, err = procmem.Read(n.pid()); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		p.Servers = append(p.Servers, sp)
	}
	if p.Kernel, err = readKernelMemory(); err != nil {
		return fmt.Errorf("read the kernel's memory: %w", err)
	}
	for _, w := range c.workers {
		if m, err := procmem.Read(w.cmd.Process.Pid); err == nil {
			p.ClientRSS += m.RSS
		}
	}
	c.res.Points = append(c.res.Points, p)
	c.log.Info("measured", "phase", phase, "step", step, "conns", p.Conns,
		"node0_rss_mib", p.Servers[0].Process.RSS>>20, "node0_heap_mib", p.Servers[0].Runtime.HeapInuse>>20,
		"node0_goroutines", p.Servers[0].Runtime.Goroutines)
	return nil
}

// Metrics read from every node.
const (
	mLoggedIn  = "tandem_gateway_logged_in_sessions"
	mSessions  = "tandem_gateway_sessions"
	mOnline    = "tandem_online_users"
	mLogins    = "tandem_logins_total"
	mConflicts = "tandem_login_conflicts_total"
	mCloses    = "tandem_gateway_closes_total"
	mSlow      = "tandem_gateway_slow_consumers_total"
	mWriteErr  = "tandem_gateway_write_errors_total"
	mMembers   = "tandem_cluster_members"
)

var connsMetrics = []string{mLoggedIn, mSessions, mOnline, mLogins, mConflicts, mCloses, mSlow, mWriteErr, mMembers}

// waitLoggedIn polls every node's /metrics until its logged-in sessions
// are want[i] (any for -1) and all of them together total (at most a
// minute), and returns the last scrape of each. A kicked or dropped
// connection fails it at once.
func (c *conns) waitLoggedIn(ctx context.Context, want []int, total int) ([]map[string]float64, error) {
	return c.pollNodes(ctx, func(ms []map[string]float64) ([]string, error) {
		var off []string
		sum := 0
		for i, m := range ms {
			sum += int(m[mLoggedIn])
			if want[i] >= 0 && int(m[mLoggedIn]) != want[i] {
				off = append(off, fmt.Sprintf("node %d has %d logged in, want %d", i, int(m[mLoggedIn]), want[i]))
			}
		}
		if sum != total {
			off = append(off, fmt.Sprintf("the nodes have %d logged in, want %d", sum, total))
		}
		if len(off) == 0 {
			return nil, nil
		}
		if err := c.workerTrouble(); err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(off, "; "), err)
		}
		return off, nil
	})
}

// waitMembers waits (at most a minute) until every node of a -reuse-port
// run lists all of them as cluster members: placement is settled before
// the first login.
func (c *conns) waitMembers(ctx context.Context) error {
	_, err := c.pollNodes(ctx, func(ms []map[string]float64) ([]string, error) {
		var off []string
		for i, m := range ms {
			if int(m[mMembers]) != len(c.nodes) {
				off = append(off, fmt.Sprintf("node %d lists %d cluster members, want %d", i, int(m[mMembers]), len(c.nodes)))
			}
		}
		return off, nil
	})
	return err
}

// pollNodes scrapes every node's /metrics every 200 ms until judge finds
// nothing off (at most a minute) and returns the last scrape; judge's
// error ends it at once, and after the minute what was still off is the
// error.
func (c *conns) pollNodes(ctx context.Context, judge func([]map[string]float64) (off []string, err error)) ([]map[string]float64, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		ms, err := c.scrape(ctx)
		if err != nil {
			return nil, err
		}
		off, err := judge(ms)
		if err != nil {
			return nil, err
		}
		if len(off) == 0 {
			return ms, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.New(strings.Join(off, "; "))
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// workerTrouble asks the workers whether a connection was kicked or
// dropped: then the nodes' counts will never come right, and the run
// fails at once instead of waiting for them.
func (c *conns) workerTrouble() error {
	var kicks, drops int
	var msgs []string
	for _, w := range c.workers {
		r, err := w.call(workerCommand{Op: "status"})
		if err != nil {
			return err
		}
		kicks += r.Kicks
		drops += r.Drops
		msgs = append(msgs, r.Errors...)
	}
	if kicks+drops == 0 {
		return nil
	}
	return fmt.Errorf("connections kicked %d, dropped %d: %s", kicks, drops, strings.Join(msgs, "; "))
}

func (c *conns) scrape(ctx context.Context) ([]map[string]float64, error) {
	out := make([]map[string]float64, len(c.nodes))
	for i, n := range c.nodes {
		err := c.get(ctx, http.MethodGet, n.api+"/metrics", func(r io.Reader) error {
			var err error
			out[i], err = parseMetrics(r, connsMetrics...)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
	}
	return out, nil
}

// gc forces the GCs on node n and returns its runtime's figures.
func (c *conns) gc(ctx context.Context, n *nodeProc) (runtimeMemory, error) {
	var m runtimeMemory
	err := c.get(ctx, http.MethodPost, n.debugURL+"/debug/gc", func(r io.Reader) error {
		return json.NewDecoder(r).Decode(&m)
	})
	if err == nil && (m.HeapInuse == 0 || m.Goroutines == 0) {
		err = fmt.Errorf("POST /debug/gc: empty figures %+v", m)
	}
	if err != nil {
		return m, fmt.Errorf("node %d: %w", n.index, err)
	}
	return m, nil
}

// get makes one request and hands a 200 answer's body to read.
func (c *conns) get(ctx context.Context, method, url string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("%s %s: %s: %s (%v)", method, url, resp.Status, strings.TrimSpace(string(b)), err)
	}
	return read(resp.Body)
}

// heapProfile saves node 0's heap profile (gc=1: after a GC) as
// heap-<name>.pb.gz in cfg.HeapProfiles.
func (c *conns) heapProfile(ctx context.Context, name string) error {
	if c.cfg.HeapProfiles == "" {
		return nil
	}
	if err := os.MkdirAll(c.cfg.HeapProfiles, 0o755); err != nil {
		return err
	}
	path := filepath.Join(c.cfg.HeapProfiles, "heap-"+name+".pb.gz")
	return c.get(ctx, http.MethodGet, c.nodes[0].debugURL+"/debug/pprof/heap?gc=1", func(r io.Reader) error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
}

// check gathers the workers' and nodes' counts at the end and lists what
// makes the run unsound: kicks, drops, closes, conflicts, missing
// sessions or devices.
func (c *conns) check(ctx context.Context) error {
	ck := &c.res.Checks
	for _, w := range c.workers {
		r, err := w.call(workerCommand{Op: "status"})
		if err != nil {
			return err
		}
		ck.OpenClientConns += r.Open
		ck.Kicks += r.Kicks
		ck.Drops += r.Drops
		ck.FramesReceived += r.Frames
		if r.Kicks > 0 || r.Drops > 0 {
			ck.ClientErrors = append(ck.ClientErrors, r.Errors...)
		}
	}
	ms, err := c.scrape(ctx)
	if err != nil {
		return err
	}
	var problems []string
	// Per node where the bench placed the users; with ReusePort the
	// kernel and the cluster did, and only the sums are known: node -1.
	check := func(node int, m map[string]float64, wantSess, wantUsers int) {
		if int(m[mLoggedIn]) != wantSess || int(m[mSessions]) != wantSess || int(m[mLogins]) != wantSess || int(m[mOnline]) != wantUsers {
			what := fmt.Sprintf("node %d", node)
			if node < 0 {
				what = "all nodes"
			}
			problems = append(problems, fmt.Sprintf("%s: %d sessions, %d logged in, %d logins, %d online users; want %d, %d, %d, %d",
				what, int(m[mSessions]), int(m[mLoggedIn]), int(m[mLogins]), int(m[mOnline]), wantSess, wantSess, wantSess, wantUsers))
		}
	}
	sum := map[string]float64{}
	for i, m := range ms {
		ck.ServerCloses += int(m[mCloses])
		ck.LoginConflicts += int(m[mConflicts])
		ck.SlowConsumers += int(m[mSlow] + m[mWriteErr])
		for k, v := range m {
			sum[k] += v
		}
		if !c.cfg.ReusePort {
			check(i, m, c.expected(i, c.cfg.Users, c.cfg.Second), countOn(i, c.cfg.Users, c.cfg.Servers))
		}
	}
	if c.cfg.ReusePort {
		check(-1, sum, c.cfg.Users+c.cfg.Second, c.cfg.Users)
	}
	want := c.cfg.Users + c.cfg.Second
	if ck.OpenClientConns != want {
		problems = append(problems, fmt.Sprintf("the workers hold %d open connections, want %d", ck.OpenClientConns, want))
	}
	if ck.Kicks+ck.Drops+ck.ServerCloses+ck.LoginConflicts+ck.SlowConsumers > 0 {
		problems = append(problems, fmt.Sprintf("kicks %d, drops %d, server closes %d, login conflicts %d, slow or failed writes %d: want none",
			ck.Kicks, ck.Drops, ck.ServerCloses, ck.LoginConflicts, ck.SlowConsumers))
	}
	problems = append(problems, c.checkDevices(ctx)...)
	c.res.Problems = append(c.res.Problems, problems...)
	return nil
}

// checkDevices asks the server API for the devices of a few users of
// each node: users with a second device must list both, the others one.
func (c *conns) checkDevices(ctx context.Context) []string {
	var problems []string
	key := c.key
	sample := []int{0, c.cfg.Second - 1, c.cfg.Second, c.cfg.Users - 1}
	for i := range c.nodes {
		sample = append(sample, i, c.cfg.Users/2+i)
	}
	for _, u := range sample {
		if u < 0 || u >= c.cfg.Users {
			continue
		}
		n := c.nodes[serverOf(u, len(c.nodes))]
		want := []string{phaseDevice[phaseNew].id}
		if u < c.cfg.Second {
			want = append(want, phaseDevice[phaseSecond].id)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.api+"/v1/users/"+userID(c.run, u)+"/devices", nil)
		if err != nil {
			return append(problems, err.Error())
		}
		req.Header.Set("Authorization", "Bearer "+key)
		var got struct {
			Devices []struct {
				DeviceID string `json:"device_id"`
			} `json:"devices"`
		}
		err = func() error {
			resp, err := c.http.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s", resp.Status)
			}
			return json.NewDecoder(resp.Body).Decode(&got)
		}()
		ck := &c.res.Checks
		ck.DevicesChecked++
		var ids []string
		for _, d := range got.Devices {
			ids = append(ids, d.DeviceID)
		}
		if err != nil || !sameSet(ids, want) {
			problems = append(problems, fmt.Sprintf("user %d: devices %v (%v), want %v", u, ids, err, want))
		}
	}
	return problems
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		if seen[s]--; seen[s] < 0 {
			return false
		}
	}
	return true
}

// killWorkers ends the workers at once (an interrupted run).
func (c *conns) killWorkers() { killWorkers(c.workers, c.log) }

// cleanup stops the workers (closing their connections), then the nodes,
// and removes the run's dir unless kept.
func (c *conns) cleanup() error {
	var errs []error
	for _, w := range c.workers {
		if err := w.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	var wg sync.WaitGroup
	nerrs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		wg.Go(func() { nerrs[i] = n.stop(30 * time.Second) })
	}
	wg.Wait()
	errs = append(errs, nerrs...)
	c.http.CloseIdleConnections()
	if c.cfg.Keep {
		c.log.Warn("kept the run's dir", "dir", c.dir)
	} else if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// describeBinary names the tandem binary with its VCS revision, if the
// build recorded one.
func describeBinary(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return path
	}
	rev, modified := "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if rev == "" {
		return fmt.Sprintf("%s, %s", path, bi.GoVersion)
	}
	return fmt.Sprintf("%s, %s at %.10s%s", path, bi.GoVersion, rev, modified)
}

// readMachine describes the machine for the report.
func readMachine(fdLimit uint64) machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(), FDLimit: fdLimit, LoadBefore: loadAverage()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.THP = thpMode()
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			var kb int64
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				m.MemTotal = kb << 10
			}
		}
	}
	return m
}

// thpMode is the system's transparent huge pages mode, the bracketed word
// of /sys/kernel/mm/transparent_hugepage/enabled ("always [madvise]
// never"); "" if there is none. The marks of a large heap are cheaper on
// huge pages (bench/README.md, "Huge pages"), so runs record it.
func thpMode() string {
	b, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return thpModeOf(string(b))
}

func thpModeOf(enabled string) string {
	_, rest, ok := strings.Cut(enabled, "[")
	mode, _, ok2 := strings.Cut(rest, "]")
	if !ok || !ok2 {
		return ""
	}
	return mode
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute figures.
func loadAverage() [3]float64 {
	var l [3]float64
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if _, err := fmt.Sscanf(string(b), "%f %f %f", &l[0], &l[1], &l[2]); err != nil {
			return [3]float64{}
		}
	}
	return l
}
