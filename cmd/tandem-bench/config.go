package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-im/tandem/internal/procs"
	"github.com/tandem-im/tandem/node"
)

// Config is one benchmark run, or with Sweep one run per step. Zero
// fields mean their defaults, except Warmup and Late (0 is none; the flags
// default to DefaultWarmup and DefaultLate).
type Config struct {
	GCMinHeap int64         // this process's smallest heap goal (internal/gctune); 0: Go's pacing
	SyncProcs int           // Ps beyond the CPUs, as the node's --sync-procs (-1: one for an in-process node, none for an external one)
	Pairs     int           // sender→receiver pairs
	Window    int           // sends in flight per sender (DefaultWindow; DefaultOpenWindow in open loop)
	Rate      float64       // open loop: total msgs/s over all senders, on a fixed schedule (openloop.go); 0: closed loop
	Sweep     bool          // the closed-loop peak (unless Peak), then open loop at sweepPercents of it (sweep.go)
	Peak      float64       // Sweep: the peak msgs/s, instead of measuring it
	Duration  time.Duration // measured time
	Warmup    time.Duration // sending before the measured time, not measured
	Size      int           // content bytes per message (≥ minSize)
	Drain     time.Duration // after the senders stop: wait this long for acks, then as long again for deliveries
	Late      time.Duration // if some acked messages were lost (not delivered within Drain), wait this much longer to tell late from gone; 0: don't

	JSONPath     string // write the result here as JSON ("" = don't)
	JSONProtocol bool   // "tandem.v1.json" instead of binary protobuf

	// External target: one node, or the nodes of one cluster. Empty WSURLs
	// means an in-process node. Devices spread over WSURLs (spread.go);
	// a device on node i mints its token at APIURLs[i % len(APIURLs)].
	WSURLs   []string // ws://host:7400/ws, one per node
	APIURLs  []string // http://host:7401; one is enough
	AdminKey string

	// CPUPIDs: processes whose CPU over the measured window is reported
	// (with their descendants, from /proc), by label, e.g. the nodes.
	CPUPIDs []watchedPID

	// In-process node only.
	DataDir string // parent of the temporary data dir ("" = the system's temp dir)
	Keep    bool   // keep the data dir

	CPUProfile string // write a CPU profile of the measured window here
	LogLevel   string // bench and in-process node logs; default warn
}

// Defaults.
const (
	DefaultPairs    = 10
	DefaultWindow   = 32
	DefaultDuration = 20 * time.Second
	DefaultWarmup   = 2 * time.Second
	DefaultSize     = 100
	DefaultDrain    = 5 * time.Second
	DefaultLate     = 60 * time.Second

	// DefaultOpenWindow: in open loop the window only caps the sends in
	// flight, so that a stalled server does not get an unbounded pile;
	// it is generous so that the schedule, not the window, sets the pace.
	DefaultOpenWindow = 1024

	// minSize: the content carries the message number and its send time.
	minSize = 16
	maxSize = 1 << 20
)

func (c Config) withDefaults() Config {
	orDefault(&c.Pairs, DefaultPairs)
	if c.Rate > 0 {
		orDefault(&c.Window, DefaultOpenWindow)
	}
	orDefault(&c.Window, DefaultWindow)
	orDefault(&c.Size, DefaultSize)
	orDefault(&c.Duration, DefaultDuration)
	orDefault(&c.Drain, DefaultDrain)
	orDefault(&c.LogLevel, "warn")
	return c
}

// external reports whether the run targets nodes started elsewhere.
func (c Config) external() bool { return len(c.WSURLs) > 0 }

// Validate returns every problem at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Pairs < 0 || c.Window < 0 || c.Size < 0 || c.Duration < 0 || c.Drain < 0 || c.Warmup < 0 || c.Late < 0 {
		errs = append(errs, errors.New("-pairs, -window, -size, -duration, -warmup, -drain and -late must not be negative"))
	}
	if c.Rate < 0 || c.Peak < 0 {
		errs = append(errs, errors.New("-rate and -peak must not be negative"))
	}
	if c.Sweep && c.Rate > 0 {
		errs = append(errs, errors.New("-sweep chooses the rates itself: drop -rate"))
	}
	if c.Peak > 0 && !c.Sweep {
		errs = append(errs, errors.New("-peak needs -sweep"))
	}
	if c.Sweep && c.CPUProfile != "" {
		errs = append(errs, errors.New("-cpuprofile covers one run: not with -sweep"))
	}
	if c.Size > 0 && (c.Size < minSize || c.Size > maxSize) {
		errs = append(errs, fmt.Errorf("-size %d: must be between %d and %d bytes", c.Size, minSize, maxSize))
	}
	if c.external() {
		for i, u := range c.WSURLs {
			if !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
				errs = append(errs, fmt.Errorf("-ws %q: want ws://host:port/ws", u))
			}
			if slices.Contains(c.WSURLs[:i], u) {
				errs = append(errs, fmt.Errorf("-ws %q: listed twice (one URL per node)", u))
			}
		}
		if len(c.APIURLs) == 0 {
			errs = append(errs, errors.New("-api: an external node needs its server API, http://host:port"))
		}
		for _, u := range c.APIURLs {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				errs = append(errs, fmt.Errorf("-api %q: want the server API, http://host:port", u))
			}
		}
		if c.AdminKey == "" {
			errs = append(errs, errors.New("-admin-key: an external node needs its admin key to mint tokens"))
		}
		if c.Keep || c.DataDir != "" {
			errs = append(errs, errors.New("-keep and -data-dir apply to the in-process node only"))
		}
	} else if len(c.APIURLs) > 0 || c.AdminKey != "" {
		errs = append(errs, errors.New("-api and -admin-key need -ws (an external node)"))
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("-log-level %q: use debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// parseFlags reads the command line into a validated Config.
func parseFlags(args []string) (Config, error) {
	var (
		c             Config
		ws, api, pids string
	)
	fs := flag.NewFlagSet("tandem-bench", flag.ContinueOnError)
	fs.IntVar(&c.SyncProcs, "sync-procs", -1, "Ps (GOMAXPROCS) of this process beyond its CPUs, as the node's --sync-procs: -1 one for the in-process node (its badger store fsyncs here), none with -ws; 0 Go's default (a GOMAXPROCS environment variable wins)")
	fs.Int64Var(&c.GCMinHeap, "gc-min-heap", node.DefaultGCMinHeap, "smallest Go heap goal of this process in bytes, as the node's --gc-min-heap (0: Go's default pacing); with an in-process node it covers the node too")
	fs.IntVar(&c.Pairs, "pairs", DefaultPairs, "sender→receiver pairs (users bench-s<i>-<run> → bench-r<i>-<run>)")
	fs.IntVar(&c.Window, "window", 0, fmt.Sprintf("max unacked sends per sender (default %d; %d in open loop: -rate, and -sweep's steps)", DefaultWindow, DefaultOpenWindow))
	fs.Float64Var(&c.Rate, "rate", 0, "open loop: send this many msgs/s in all, spread over the senders on a fixed schedule; latencies are measured from each message's scheduled time (default: closed loop)")
	fs.BoolVar(&c.Sweep, "sweep", false, "latency-throughput curve: a closed-loop run for the peak, then open-loop runs at 25, 50, 75 and 100 % of it, each with its own warm-up, duration and fresh users")
	fs.Float64Var(&c.Peak, "peak", 0, "-sweep: use this peak (msgs/s) instead of measuring it")
	fs.DurationVar(&c.Duration, "duration", DefaultDuration, "measured time")
	fs.DurationVar(&c.Warmup, "warmup", DefaultWarmup, "sending time before the measured window, not measured")
	fs.IntVar(&c.Size, "size", DefaultSize, fmt.Sprintf("message content bytes (%d-%d)", minSize, maxSize))
	fs.DurationVar(&c.Drain, "drain", DefaultDrain, "after the senders stop, wait up to this long for acks, then as long for deliveries")
	fs.DurationVar(&c.Late, "late", DefaultLate, "if acked messages were not delivered within -drain (lost), wait up to this much longer to count which of them were only late (0: don't)")
	fs.StringVar(&c.JSONPath, "json", "", "write the result as JSON to this file (its directory is created)")
	fs.BoolVar(&c.JSONProtocol, "json-protocol", false, "use the tandem.v1.json subprotocol instead of binary protobuf")
	fs.StringVar(&ws, "ws", "", "external node's WebSocket URL, e.g. ws://127.0.0.1:7400/ws, or a comma-separated list, one per node of a cluster: devices spread over them (default: an in-process node)")
	fs.StringVar(&api, "api", "", "external node's server API, e.g. http://127.0.0.1:7401, or a comma-separated list (one is enough to mint tokens)")
	fs.StringVar(&c.AdminKey, "admin-key", "", "external node's admin key")
	fs.StringVar(&pids, "cpu-pids", "", "report the CPU over the measured window of these processes and their descendants (Linux /proc), as label=pid,... e.g. node0=4242,postgres=4200")
	fs.StringVar(&c.DataDir, "data-dir", "", "in-process node: parent of its temporary data dir (default: the system's temp dir)")
	fs.BoolVar(&c.Keep, "keep", false, "in-process node: keep its data dir")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the measured window to this file")
	fs.StringVar(&c.LogLevel, "log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.WSURLs, c.APIURLs = splitList(ws), splitList(api)
	var err error
	if c.CPUPIDs, err = parseWatched(pids); err != nil {
		return Config{}, err
	}
	windowSet := false
	fs.Visit(func(f *flag.Flag) { windowSet = windowSet || f.Name == "window" })
	if c.Pairs == 0 || (windowSet && c.Window == 0) || c.Size == 0 || c.Duration == 0 {
		return Config{}, errors.New("-pairs, -window, -size and -duration must be positive")
	}
	return c, c.Validate()
}

// orDefault sets *v to d if *v is the zero value (a flag not given).
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// splitList splits a comma-separated flag value; blanks around the
// commas are dropped, and so is an empty value.
func splitList(v string) []string {
	var out []string
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseWatched reads -cpu-pids: label=pid,...
func parseWatched(v string) ([]watchedPID, error) {
	var out []watchedPID
	for _, f := range splitList(v) {
		label, pid, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(pid)
		if !ok || label == "" || err != nil || n <= 0 {
			return nil, fmt.Errorf("-cpu-pids %q: want label=pid", f)
		}
		if slices.ContainsFunc(out, func(w watchedPID) bool { return w.Label == label }) {
			return nil, fmt.Errorf("-cpu-pids: label %q used twice", label)
		}
		out = append(out, watchedPID{Label: label, PID: n})
	}
	return out, nil
}

// newLogger writes text logs at cfg's level to w.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(cfg.withDefaults().LogLevel)); err != nil {
		l = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// extraProcs is the Ps -sync-procs asks for beyond Go's default: -1 is
// one for the in-process node (badger, fsyncing in this process), none
// for an external node.
func (c Config) extraProcs() int {
	store := "badger"
	if len(c.WSURLs) > 0 {
		store = "" // the node is another process
	}
	return procs.Resolve(c.SyncProcs, store)
}
