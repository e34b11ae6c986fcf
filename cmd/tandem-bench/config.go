package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Config is one benchmark run. Zero fields mean their defaults, except
// Warmup (0 is no warm-up; the flag defaults to DefaultWarmup).
type Config struct {
	Pairs    int           // sender→receiver pairs
	Window   int           // sends in flight per sender
	Duration time.Duration // measured time
	Warmup   time.Duration // sending before the measured time, not measured
	Size     int           // content bytes per message (≥ minSize)
	Drain    time.Duration // after the senders stop: wait this long for acks, then as long again for deliveries

	JSONPath     string // write the result here as JSON ("" = don't)
	JSONProtocol bool   // "tandem.v1.json" instead of binary protobuf

	// External target; empty WSURL means an in-process node.
	WSURL    string // ws://host:7400/ws
	APIURL   string // http://host:7401
	AdminKey string

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

	// minSize: the content carries the message number and its send time.
	minSize = 16
	maxSize = 1 << 20
)

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Pairs, DefaultPairs)
	def(&c.Window, DefaultWindow)
	def(&c.Size, DefaultSize)
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Drain == 0 {
		c.Drain = DefaultDrain
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	return c
}

// external reports whether the run targets a node started elsewhere.
func (c Config) external() bool { return c.WSURL != "" }

// Validate returns every problem at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Pairs < 0 || c.Window < 0 || c.Size < 0 || c.Duration < 0 || c.Drain < 0 || c.Warmup < 0 {
		errs = append(errs, errors.New("-pairs, -window, -size, -duration, -warmup and -drain must not be negative"))
	}
	if c.Size > 0 && (c.Size < minSize || c.Size > maxSize) {
		errs = append(errs, fmt.Errorf("-size %d: must be between %d and %d bytes", c.Size, minSize, maxSize))
	}
	if c.external() {
		if !strings.HasPrefix(c.WSURL, "ws://") && !strings.HasPrefix(c.WSURL, "wss://") {
			errs = append(errs, fmt.Errorf("-ws %q: want ws://host:port/ws", c.WSURL))
		}
		if !strings.HasPrefix(c.APIURL, "http://") && !strings.HasPrefix(c.APIURL, "https://") {
			errs = append(errs, fmt.Errorf("-api %q: an external node needs its server API, http://host:port", c.APIURL))
		}
		if c.AdminKey == "" {
			errs = append(errs, errors.New("-admin-key: an external node needs its admin key to mint tokens"))
		}
		if c.Keep || c.DataDir != "" {
			errs = append(errs, errors.New("-keep and -data-dir apply to the in-process node only"))
		}
	} else if c.APIURL != "" || c.AdminKey != "" {
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
	var c Config
	fs := flag.NewFlagSet("tandem-bench", flag.ContinueOnError)
	fs.IntVar(&c.Pairs, "pairs", DefaultPairs, "sender→receiver pairs (users bench-s<i>-<run> → bench-r<i>-<run>)")
	fs.IntVar(&c.Window, "window", DefaultWindow, "max unacked sends per sender")
	fs.DurationVar(&c.Duration, "duration", DefaultDuration, "measured time")
	fs.DurationVar(&c.Warmup, "warmup", DefaultWarmup, "sending time before the measured window, not measured")
	fs.IntVar(&c.Size, "size", DefaultSize, fmt.Sprintf("message content bytes (%d-%d)", minSize, maxSize))
	fs.DurationVar(&c.Drain, "drain", DefaultDrain, "after the senders stop, wait up to this long for acks, then as long for deliveries")
	fs.StringVar(&c.JSONPath, "json", "", "write the result as JSON to this file (its directory is created)")
	fs.BoolVar(&c.JSONProtocol, "json-protocol", false, "use the tandem.v1.json subprotocol instead of binary protobuf")
	fs.StringVar(&c.WSURL, "ws", "", "external node's WebSocket URL, e.g. ws://127.0.0.1:7400/ws (default: an in-process node)")
	fs.StringVar(&c.APIURL, "api", "", "external node's server API, e.g. http://127.0.0.1:7401")
	fs.StringVar(&c.AdminKey, "admin-key", "", "external node's admin key")
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
	if c.Pairs == 0 || c.Window == 0 || c.Size == 0 || c.Duration == 0 {
		return Config{}, errors.New("-pairs, -window, -size and -duration must be positive")
	}
	return c, c.Validate()
}

// newLogger writes text logs at cfg's level to w.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(cfg.withDefaults().LogLevel)); err != nil {
		l = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
