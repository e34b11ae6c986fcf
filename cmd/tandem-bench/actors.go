package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tandem-im/tandem/actors"
)

// `tandem-bench actors` drives virtual users straight into the real user
// actors of an in-process node, with no WebSocket (issue 12): the node is
// started with a virtual session table (node.Config.Sessions) that plays
// the devices, and logins and frames enter through the node's
// actors.Frontend, the path the gateway uses. A login storm logs in
// Users × Devices devices (tokens minted and verified with the node's own
// keys), at most Concurrency at once and at LoginRate if set; a steady
// chat then has every user send 1:1 messages to the next user at MsgRate
// (open loop: latencies count from the scheduled send time). At the end
// every acked message is looked up in the recipient's log, read from the
// store (the ack ledger), and every login's device event in its user's
// log. See bench/README.md, "Actor level".

// ActorsConfig is one `tandem-bench actors` run. Zero fields mean
// defaults (those of the scenario, if one is named).
type ActorsConfig struct {
	Scenario    string        // "", login-storm or steady-chat: presets that flags override
	Users       int           // virtual users
	Devices     int           // devices per user, each logged in once
	Platforms   []string      // device d of user u gets Platforms[(u+d) % len]
	LoginRate   float64       // logins per second; 0: as fast as Concurrency allows
	Concurrency int           // logins in flight
	MsgRate     float64       // 1:1 messages per second per online user; 0: no chat
	Duration    time.Duration // of the chat
	Ramp        time.Duration // the login rate (with LoginRate) and the chat rate rise linearly over this
	Timeout     time.Duration // per login request
	Drain       time.Duration // after the chat: the longest wait for acks and pushes
	NoVerify    bool          // skip the ledger check
	Target      ActorsTarget  // an in-process node, or a cluster to join (actors_join.go)

	DataDir  string
	Keep     bool
	JSONPath string
	HTMLPath string // the HTML report (actors_html.go)
	LogLevel string

	// Progress gets the line per second (nil: none); Terminal: overwrite
	// one line with \r instead of printing lines.
	Progress io.Writer `json:"-"`
	Terminal bool      `json:"-"`
}

// Defaults without a scenario.
const (
	DefaultActorsUsers       = 1_000
	DefaultActorsDevices     = 1
	DefaultActorsPlatforms   = "android,linux,web"
	DefaultActorsConcurrency = 64
	DefaultActorsDuration    = 10 * time.Second
	DefaultActorsTimeout     = 30 * time.Second
	DefaultActorsDrain       = 30 * time.Second

	// maxActorsMessages bounds the ack ledger (about 100 bytes a message).
	maxActorsMessages = 50_000_000
	// Rough heap a user costs (the actor, its sessions, the bench's own
	// bit), to refuse runs that cannot fit in memory before they start.
	estUserBytes, estDeviceBytes = 4 << 10, 1536
)

// actorsScenarios are the ready-made scenarios; flags given override them.
var actorsScenarios = map[string]ActorsConfig{
	"login-storm": {Users: 100_000, Devices: 1, Concurrency: 64},
	"steady-chat": {Users: 10_000, Devices: 1, Concurrency: 64, MsgRate: 0.2, Duration: 30 * time.Second, Ramp: 5 * time.Second},
}

func (c ActorsConfig) withDefaults() ActorsConfig {
	if p, ok := actorsScenarios[c.Scenario]; ok {
		if c.Users == 0 {
			c.Users = p.Users
		}
		if c.Devices == 0 {
			c.Devices = p.Devices
		}
		if c.MsgRate == 0 {
			c.MsgRate = p.MsgRate
		}
		if c.Duration == 0 {
			c.Duration = p.Duration
		}
		if c.Ramp == 0 {
			c.Ramp = p.Ramp
		}
	}
	orDefault(&c.Users, DefaultActorsUsers)
	orDefault(&c.Devices, DefaultActorsDevices)
	if len(c.Platforms) == 0 {
		c.Platforms = splitList(DefaultActorsPlatforms)
	}
	orDefault(&c.Concurrency, DefaultActorsConcurrency)
	orDefault(&c.Duration, DefaultActorsDuration)
	orDefault(&c.Timeout, DefaultActorsTimeout)
	orDefault(&c.Drain, DefaultActorsDrain)
	orDefault(&c.LogLevel, "warn")
	return c
}

// Validate returns every problem at once; memTotal (0: unknown) is the
// machine's memory in bytes.
func (c ActorsConfig) Validate(memTotal int64) error {
	if _, ok := actorsScenarios[c.Scenario]; c.Scenario != "" && !ok {
		return fmt.Errorf("-scenario %q: use login-storm or steady-chat (or none, and flags)", c.Scenario)
	}
	c = c.withDefaults()
	errs := c.Target.validate()
	if c.Users < 1 || c.Devices < 1 || c.Concurrency < 1 {
		errs = append(errs, errors.New("-users, -devices and -concurrency must be positive"))
	}
	if c.LoginRate < 0 || c.MsgRate < 0 || c.Duration < 0 || c.Ramp < 0 || c.Timeout <= 0 || c.Drain <= 0 {
		errs = append(errs, errors.New("-login-rate, -msg-rate, -duration and -ramp must not be negative, -timeout and -drain positive"))
	}
	if c.MsgRate > 0 && c.Users < 2 {
		errs = append(errs, errors.New("-msg-rate needs at least 2 users: each sends to the next"))
	}
	if c.Users > 0 && c.Devices > 0 {
		if d := int64(c.Users) * int64(c.Devices); d > 1<<31 {
			errs = append(errs, fmt.Errorf("%d devices: more than this tool counts (2^31)", d))
		} else if need := int64(c.Users)*estUserBytes + int64(c.Users)*int64(c.Devices-1)*estDeviceBytes; memTotal > 0 && need > memTotal*3/4 {
			errs = append(errs, fmt.Errorf("%d users with %d devices need about %d MiB of heap; the machine has %d MiB", c.Users, c.Devices, need>>20, memTotal>>20))
		}
	}
	if m := c.MsgRate * float64(c.Users) * c.Duration.Seconds(); m > maxActorsMessages {
		errs = append(errs, fmt.Errorf("-msg-rate × -users × -duration is %.0f messages: at most %d fit the ack ledger", m, maxActorsMessages))
	}
	if err := checkPlatforms(c.Platforms, c.Devices, c.Users); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkPlatforms refuses a platform mix under which the default kick
// policy (per_class, actors.DefaultLimits) would kick one of a user's own
// devices with another: the run would measure kicks, not logins.
func checkPlatforms(platforms []string, devices, users int) error {
	var errs []error
	for _, p := range platforms {
		if _, ok := actors.PlatformClass(p); !ok {
			errs = append(errs, fmt.Errorf("-platforms: %q unknown: use ios, android, harmony, ipad, androidpad, pad, windows, macos, linux, web or miniprogram", p))
		}
	}
	if len(errs) > 0 || len(platforms) == 0 {
		return errors.Join(errs...)
	}
	// User u's devices get platforms (u+d) % k: k rotations at most.
	for u := range min(len(platforms), max(users, 1)) {
		count := map[actors.Class][]string{}
		for d := range devices {
			p := platforms[(u+d)%len(platforms)]
			cl, _ := actors.PlatformClass(p)
			count[cl] = append(count[cl], p)
			if lim := actors.DefaultLimits[cl]; len(count[cl]) > lim {
				return fmt.Errorf("-devices %d with -platforms %s: user %d would log in %d %s devices (%s), but the per_class kick policy allows %d: a later login would kick an earlier one; add platforms of other classes (e.g. android,linux,web) or lower -devices",
					devices, strings.Join(platforms, ","), u, len(count[cl]), cl, strings.Join(count[cl], ", "), lim)
			}
		}
	}
	return nil
}

// platformOf is the platform of user u's device d.
func (c ActorsConfig) platformOf(u, d int) string {
	return c.Platforms[(u+d)%len(c.Platforms)]
}

// parseActorsFlags reads `tandem-bench actors` flags.
func parseActorsFlags(args []string) (ActorsConfig, error) {
	var (
		c         ActorsConfig
		platforms string
	)
	fs := flag.NewFlagSet("tandem-bench actors", flag.ContinueOnError)
	fs.StringVar(&c.Scenario, "scenario", "", "a ready-made scenario: login-storm (100,000 users, one device each) or steady-chat (10,000 users chatting at 0.2 msg/s each for 30 s); other flags override it")
	fs.IntVar(&c.Users, "users", 0, fmt.Sprintf("virtual users (default %d, or the scenario's)", DefaultActorsUsers))
	fs.IntVar(&c.Devices, "devices", 0, "devices per user, each logged in once (default 1)")
	fs.StringVar(&platforms, "platforms", DefaultActorsPlatforms, "platform mix: device d of user u gets the ((u+d) mod n)-th; a mix the default per_class kick policy cannot hold is refused")
	fs.Float64Var(&c.LoginRate, "login-rate", 0, "logins per second (0: as fast as -concurrency allows)")
	fs.IntVar(&c.Concurrency, "concurrency", DefaultActorsConcurrency, "logins in flight")
	fs.Float64Var(&c.MsgRate, "msg-rate", 0, "1:1 messages per second per online user, each to the next user (0: no chat)")
	fs.DurationVar(&c.Duration, "duration", 0, "how long the chat runs (default 10s, or the scenario's)")
	fs.DurationVar(&c.Ramp, "ramp", 0, "the login rate (with -login-rate) and the chat rate rise linearly from 0 over this")
	fs.DurationVar(&c.Timeout, "timeout", DefaultActorsTimeout, "limit per login request")
	fs.DurationVar(&c.Drain, "drain", DefaultActorsDrain, "after the chat (or Ctrl-C): the longest wait for outstanding acks and pushes")
	fs.BoolVar(&c.NoVerify, "no-verify", false, "skip the ack ledger check (every acked message and every login read back from the store)")
	fs.StringVar(&c.DataDir, "data-dir", "", "parent of the node's temporary data dir (default: the system's temp dir)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the node's data dir")
	fs.StringVar(&c.JSONPath, "json", "", "write the result as JSON to this file")
	fs.StringVar(&c.HTMLPath, "html", "", "write an HTML report (summary, throughput and p99 over time, latency percentiles) to this file")
	fs.StringVar(&c.LogLevel, "log-level", "warn", "debug, info, warn or error")
	c.Target.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		return ActorsConfig{}, err
	}
	if fs.NArg() > 0 {
		return ActorsConfig{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.Platforms = splitList(platforms)
	return c, nil
}

// actorsMain runs `tandem-bench actors args…`; the exit status. A refused
// scenario exits with 2 before anything starts.
func actorsMain(ctx context.Context, args []string, stdout io.Writer) int {
	cfg, err := parseActorsFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := cfg.Validate(readMachine(0).MemTotal); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-bench actors: scenario refused:", err)
		return 2
	}
	log := newLogger(Config{LogLevel: cfg.LogLevel}, os.Stderr)
	cfg.Progress = stdout
	if f, ok := stdout.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			cfg.Terminal = true
		}
	}
	res, err := runActors(ctx, cfg, log)
	if res != nil && cfg.HTMLPath != "" {
		if herr := writeActorsHTML(cfg.HTMLPath, res); herr != nil {
			log.Error("writing the HTML report", "err", herr)
			err = errors.Join(err, herr)
		}
	}
	return finishRun(log, stdout, "actors", res, cfg.JSONPath, err)
}
