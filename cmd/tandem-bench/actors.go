package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/internal/gctune"
	"github.com/tandem-im/tandem/internal/procs"
)

// `tandem-bench actors` drives virtual users straight into the real user
// and group actors of an in-process node, with no WebSocket (issue 12):
// the node is started with a virtual session table (node.Config.Sessions)
// that plays the devices, and logins and frames enter through the node's
// actors.Frontend, the path the gateway uses. A login storm logs in
// Users × Devices devices (tokens minted and verified with the node's own
// keys), at most Concurrency at once and at LoginRate if set. Groups are
// then created through the group actors, as the server API creates them
// (node.Node.Groups). The chat has every user act at MsgRate (open loop:
// latencies count from the scheduled time): each action is a mark-read of
// the newest message it received (ReadShare), a recall of its newest
// acked message (RecallShare), a logout of the device and a login again
// with its cursor (LogoutShare), or a send — to one of its groups
// (GroupShare of the sends) or to the next user. A device kicked with
// may_reconnect (after a node loss: -kill-pid, or a node the user kills)
// logs in again at once with its cursor and resends its unacked sends
// with the same client message IDs, and the wave is measured
// (actors_wave.go; -reconnect=false keeps it offline). At the end every acked
// message is looked up in its recipients' logs, read from the store (the
// ack ledger): a 1:1 message in its recipient's, a group message in
// every member's, exactly once; an acked recall's RecallEvent in every
// log that had the message, an acked mark-read in the reader's log and
// conversation state; every login's LOGGED_IN and every logout's
// LOGGED_OUT device event in its user's log, and no message stored twice. See
// bench/README.md, "Actor level".

// ActorsConfig is one `tandem-bench actors` run. Zero fields mean
// defaults; ready-made scenarios (actorsScenarios) and scenario files are
// flag values, applied by parseActorsFlags.
type ActorsConfig struct {
	GCMinHeap   int64         // this process's smallest heap goal, as the node's --gc-min-heap (0: Go's pacing)
	SyncProcs   int           // Ps beyond the CPUs, as the node's --sync-procs (-1: one for an in-process node, none with Join)
	Scenario    string        // the ready-made scenario the flags started from ("": none)
	Users       int           // virtual users
	Devices     int           // devices per user, each logged in once
	Platforms   []string      // device d of user u gets Platforms[(u+d) % len]
	LoginRate   float64       // logins per second; 0: as fast as Concurrency allows
	Concurrency int           // logins in flight
	MsgRate     float64       // actions (sends, mark-reads, recalls) per second per user; 0: no chat
	Duration    time.Duration // of the chat
	Ramp        time.Duration // the login rate (with LoginRate) and the chat rate rise linearly over this
	Timeout     time.Duration // per login request and group creation
	Drain       time.Duration // after the chat: the longest wait for acks and pushes
	NoVerify    bool          // skip the ledger check
	// Passivate: users 0 … Passivate−1 log in, then log out together and
	// go idle while the others log in at LoginRate (actors_passivate.go).
	Passivate int
	// IdleTimeout: the in-process node's passivation timeout (0: its
	// default, actors.DefaultIdleTimeout).
	IdleTimeout time.Duration
	// ActivateOnly: each user is activated (its actor started and its
	// epoch claimed in the store, actors.Frontend.Activate) rather than
	// logged in: no device, nothing appended. Activations are counted,
	// timed and checked where logins otherwise are.
	ActivateOnly bool
	Target       ActorsTarget // an in-process node, or a cluster to join (actors_join.go)

	// Groups: group g has GroupSizes[g % len] members, the users after
	// the previous group's (packed around the users).
	Groups      int     // 0: with GroupShare, just enough to hold every user
	GroupSizes  []int   // default DefaultActorsGroupSize
	GroupShare  float64 // of the sends, the share to one of the sender's groups
	ReadShare   float64 // of the actions, mark-reads of the newest message received
	RecallShare float64 // of the actions, recalls of the user's newest acked message
	LogoutShare float64 // of the actions, a logout of the device and a login again with its cursor

	// NoReconnect: a device kicked with may_reconnect (4017 session lost
	// after a node loss, 4015 shutdown) stays offline; by default it logs
	// in again at once with its cursor and resends its unacked sends with
	// the same client message IDs, as a real client does (actors_wave.go).
	NoReconnect bool
	// KillPID: with Join, the tool sends SIGKILL to this process (a node
	// of the cluster, named by the user) KillAfter into the chat.
	KillPID   int
	KillAfter time.Duration // default DefaultActorsKillAfter

	DataDir  string
	Keep     bool
	JSONPath string
	HTMLPath string // the HTML report (actors_html.go)
	// CPUProfile: the whole process's (node and bench) CPU profile over
	// the chat and its drain (without a chat: the logins), written to this file.
	CPUProfile string
	// HeapProfile: the whole process's heap profile (in use after a
	// collection) once the chat is drained, written to this file.
	HeapProfile string
	LogLevel    string

	// Progress gets the line per second (nil: none); Terminal: overwrite
	// one line with \r instead of printing lines.
	Progress io.Writer `json:"-"`
	Terminal bool      `json:"-"`

	// beforeVerify, if set, sees the run before the ledger check (tests
	// add acks the store never saw); onChat, if set, runs on its own
	// goroutine from the chat's start (tests lose sessions).
	beforeVerify func(*actorsRun)
	onChat       func(context.Context, *actorsRun)
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
	DefaultActorsGroupSize   = 100
	DefaultActorsKillAfter   = 10 * time.Second

	// maxActorsMessages bounds the ack ledger (about 100 bytes an action).
	maxActorsMessages = 50_000_000
	// Rough heap a user costs (the actor, its sessions, the bench's own
	// bit), to refuse runs that cannot fit in memory before they start.
	estUserBytes, estDeviceBytes = 4 << 10, 1536
)

// actorsScenario is a ready-made scenario: flag values that the command
// line and a scenario file override.
type actorsScenario struct {
	Name, About string
	Flags       [][2]string // flag name, value
}

var actorsScenarios = []actorsScenario{
	{"login-storm", "100,000 users with one device each log in as fast as 64 at a time allow",
		[][2]string{{"users", "100000"}, {"devices", "1"}, {"concurrency", "64"}}},
	{"activation-storm", "100,000 users are activated (actor start + store activation, no login) as fast as 1,024 at a time allow",
		[][2]string{{"users", "100000"}, {"devices", "1"}, {"concurrency", "1024"}, {"activate-only", "true"}}},
	{"steady-chat", "10,000 users chat 1:1 at 0.2 msg/s each for 30 s (5 s ramp)",
		[][2]string{{"users", "10000"}, {"devices", "1"}, {"concurrency", "64"}, {"msg-rate", "0.2"}, {"duration", "30s"}, {"ramp", "5s"}}},
	{"mixed-chat", "10,000 users act at 0.1/s each for 30 s (5 s ramp): 10 % mark-reads, 2 % recalls, the other sends 20 % to groups of 10 and 50 members",
		[][2]string{{"users", "10000"}, {"devices", "1"}, {"concurrency", "64"}, {"msg-rate", "0.1"}, {"duration", "30s"}, {"ramp", "5s"},
			{"group-share", "0.2"}, {"group-size", "10,50"}, {"read-share", "0.1"}, {"recall-share", "0.02"}}},
	{"big-group-burst", "20 groups of 2,000 of 20,000 online users; a 5 s burst of 100 group sends/s (1,000,000 member-log entries)",
		[][2]string{{"users", "20000"}, {"devices", "1"}, {"concurrency", "64"}, {"groups", "20"}, {"group-size", "2000"}, {"group-share", "1"},
			{"msg-rate", "0.005"}, {"duration", "5s"}, {"drain", "3m"}}},
	{"passivation-wave", "100,000 users log in, then log out together; their actors passivate 7.5–12.5 s later (idle timeout 10 s ±25 %) while 30,000 new users log in at 1,500/s",
		[][2]string{{"users", "130000"}, {"devices", "1"}, {"concurrency", "64"}, {"passivate", "100000"}, {"idle-timeout", "10s"}, {"login-rate", "1500"}}},
	{"reconnect-wave", "with -join: 3,000 users chat 1:1 at 0.2 msg/s each for 40 s; a node is lost (kill one yourself, or -kill-pid PID -kill-after 10s): its users' devices are kicked (4017), log in again with their cursors and resend their unacked sends; the wave is measured",
		[][2]string{{"users", "3000"}, {"devices", "1"}, {"concurrency", "64"}, {"msg-rate", "0.2"}, {"duration", "40s"}, {"ramp", "2s"}, {"drain", "1m"}}},
}

// scenarioNeedsJoin: a ready-made scenario that only makes sense against
// a cluster (a node of the in-process run is this process).
var scenarioNeedsJoin = map[string]string{
	"reconnect-wave": "a node loss needs a cluster: give -join, -cluster-key, -jwt-secret and -store of a running one (bench/cluster.sh starts one)",
}

func findScenario(name string) (actorsScenario, bool) {
	for _, s := range actorsScenarios {
		if s.Name == name {
			return s, true
		}
	}
	return actorsScenario{}, false
}

func scenarioNames() string {
	var names []string
	for _, s := range actorsScenarios {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

// listScenarios writes every ready-made scenario with its flags.
func listScenarios(w io.Writer) {
	fmt.Fprintln(w, "Ready-made scenarios (-scenario NAME; flags and -scenario-file keys override them):")
	for _, s := range actorsScenarios {
		var flags []string
		for _, f := range s.Flags {
			flags = append(flags, "-"+f[0]+" "+f[1])
		}
		fmt.Fprintf(w, "  %-16s %s\n  %-16s %s\n", s.Name, s.About, "", strings.Join(flags, " "))
	}
}

func (c ActorsConfig) withDefaults() ActorsConfig {
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
	if c.KillPID != 0 {
		orDefault(&c.KillAfter, DefaultActorsKillAfter)
	}
	if len(c.GroupSizes) == 0 {
		c.GroupSizes = []int{DefaultActorsGroupSize}
	}
	if c.Groups == 0 && c.GroupShare > 0 && c.Users > 0 && !slices.ContainsFunc(c.GroupSizes, func(n int) bool { return n < 1 }) {
		// Just enough groups to hold every user once.
		for held := 0; held < c.Users; c.Groups++ {
			held += c.GroupSizes[c.Groups%len(c.GroupSizes)]
		}
	}
	return c
}

// Validate returns every problem at once; memTotal (0: unknown) is the
// machine's memory in bytes.
func (c ActorsConfig) Validate(memTotal int64) error {
	if _, ok := findScenario(c.Scenario); c.Scenario != "" && !ok {
		return fmt.Errorf("-scenario %q: use one of %s (or none, and flags)", c.Scenario, scenarioNames())
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
	if why, ok := scenarioNeedsJoin[c.Scenario]; ok && len(c.Target.Join) == 0 {
		errs = append(errs, fmt.Errorf("-scenario %s: %s", c.Scenario, why))
	}
	errs = append(errs, c.validateMix()...)
	errs = append(errs, c.validateKill()...)
	errs = append(errs, c.validatePassivate()...)
	if c.ActivateOnly && (c.MsgRate > 0 || c.Passivate > 0 || c.Devices > 1 || c.KillPID != 0) {
		errs = append(errs, errors.New("-activate-only activates users and nothing else: no -msg-rate, -passivate, -kill-pid or -devices above 1"))
	}
	if c.Users > 0 && c.Devices > 0 {
		if d := int64(c.Users) * int64(c.Devices); d > 1<<31 {
			errs = append(errs, fmt.Errorf("%d devices: more than this tool counts (2^31)", d))
		} else if need := int64(c.Users)*estUserBytes + int64(c.Users)*int64(c.Devices-1)*estDeviceBytes; memTotal > 0 && need > memTotal*3/4 {
			errs = append(errs, fmt.Errorf("%d users with %d devices need about %d MiB of heap; the machine has %d MiB", c.Users, c.Devices, need>>20, memTotal>>20))
		}
	}
	if m := c.MsgRate * float64(c.Users) * c.Duration.Seconds(); m > maxActorsMessages {
		errs = append(errs, fmt.Errorf("-msg-rate × -users × -duration is %.0f actions: at most %d fit the ack ledger", m, maxActorsMessages))
	}
	if err := checkPlatforms(c.Platforms, c.Devices, c.Users); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validateMix checks the traffic mix and the groups (c with defaults).
func (c ActorsConfig) validateMix() []error {
	var errs []error
	shares := true
	for _, s := range []struct {
		name string
		v    float64
	}{{"-group-share", c.GroupShare}, {"-read-share", c.ReadShare}, {"-recall-share", c.RecallShare}, {"-logout-share", c.LogoutShare}} {
		if s.v < 0 || s.v > 1 || math.IsNaN(s.v) {
			errs = append(errs, fmt.Errorf("%s %g: a share is between 0 and 1", s.name, s.v))
			shares = false
		}
	}
	if sum := c.ReadShare + c.RecallShare + c.LogoutShare; shares && sum > 1 {
		errs = append(errs, fmt.Errorf("-read-share %g + -recall-share %g + -logout-share %g is more than 1: they are shares of the same actions", c.ReadShare, c.RecallShare, c.LogoutShare))
	} else if shares && sum == 1 {
		errs = append(errs, errors.New("-read-share + -recall-share + -logout-share is 1: no action is a send, so nothing is ever received or acked to read or recall"))
	}
	if c.MsgRate == 0 && c.GroupShare+c.ReadShare+c.RecallShare+c.LogoutShare > 0 {
		errs = append(errs, errors.New("-group-share, -read-share, -recall-share and -logout-share are shares of the chat's actions: give -msg-rate too"))
	}
	if c.Groups < 0 {
		errs = append(errs, fmt.Errorf("-groups %d must not be negative", c.Groups))
	}
	sizes := true
	for _, n := range c.GroupSizes {
		switch {
		case n < 1:
			errs = append(errs, fmt.Errorf("-group-size %d: a group has at least 1 member", n))
			sizes = false
		case n > actors.MaxGroupSize:
			errs = append(errs, fmt.Errorf("-group-size %d: the server allows at most %d members", n, actors.MaxGroupSize))
			sizes = false
		case c.Users > 0 && n > c.Users && (c.GroupShare > 0 || c.Groups > 0): // the default size of a run without groups is no choice
			errs = append(errs, fmt.Errorf("-group-size %d is more than the %d -users: members are distinct users", n, c.Users))
			sizes = false
		}
	}
	if sizes && c.GroupShare > 0 && c.Groups > 0 && c.Users > 0 {
		held := 0
		for g := range c.Groups {
			held += c.GroupSizes[g%len(c.GroupSizes)]
		}
		if held < c.Users {
			errs = append(errs, fmt.Errorf("-groups %d of -group-size %s hold %d of the %d users: every user sends to its groups, so every user must be in one (more groups, bigger ones, or leave -groups out for just enough)",
				c.Groups, joinInts(c.GroupSizes), held, c.Users))
		}
	}
	if c.Groups > 1<<20 {
		errs = append(errs, fmt.Errorf("-groups %d: at most %d", c.Groups, 1<<20))
	}
	return errs
}

// mixString describes the actions and groups; "" for 1:1 sends only.
func (c ActorsConfig) mixString() string {
	var parts []string
	if c.ReadShare+c.RecallShare > 0 {
		parts = append(parts, fmt.Sprintf("%g %% mark-reads, %g %% recalls", 100*c.ReadShare, 100*c.RecallShare))
	}
	if c.LogoutShare > 0 {
		parts = append(parts, fmt.Sprintf("%g %% logouts (and a login again with the cursor)", 100*c.LogoutShare))
	}
	if c.GroupShare > 0 {
		parts = append(parts, fmt.Sprintf("%g %% of the sends to groups", 100*c.GroupShare))
	}
	if c.Groups > 0 {
		parts = append(parts, fmt.Sprintf("%d groups of %s members", c.Groups, joinInts(c.GroupSizes)))
	}
	return strings.Join(parts, "; ")
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
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

// errListed: -list-scenarios was given; nothing is to run.
var errListed = errors.New("scenarios listed")

// parseActorsFlags reads `tandem-bench actors` flags. Values come from,
// latest winning: the ready-made scenario (-scenario, on the command line
// or in the file), the scenario file (-scenario-file: a JSON object whose
// keys are the flag names), the command line.
func parseActorsFlags(args []string) (ActorsConfig, error) {
	var (
		c                ActorsConfig
		platforms, sizes string
		scenarioFile     string
		list             bool
		reconnect        bool
	)
	fs := flag.NewFlagSet("tandem-bench actors", flag.ContinueOnError)
	fs.IntVar(&c.SyncProcs, "sync-procs", -1, "Ps (GOMAXPROCS) of this process beyond its CPUs, as the node's --sync-procs: -1 one for the in-process node (its store fsyncs here), none with -join; 0 Go's default (a GOMAXPROCS environment variable wins)")
	fs.Int64Var(&c.GCMinHeap, "gc-min-heap", 256<<20, "smallest Go heap goal of this process (and so of the in-process node) in bytes, as the node's --gc-min-heap; 0: Go's default pacing")
	fs.StringVar(&c.Scenario, "scenario", "", "a ready-made scenario ("+scenarioNames()+"; see -list-scenarios); other flags override it")
	fs.StringVar(&scenarioFile, "scenario-file", "", "a JSON object of flag values, e.g. {\"users\": 5000, \"group-size\": [10, 200]}; unknown keys are refused; flags given override it")
	fs.BoolVar(&list, "list-scenarios", false, "print the ready-made scenarios and their flags, and exit")
	fs.IntVar(&c.Users, "users", 0, fmt.Sprintf("virtual users (default %d)", DefaultActorsUsers))
	fs.IntVar(&c.Devices, "devices", 0, "devices per user, each logged in once (default 1)")
	fs.StringVar(&platforms, "platforms", DefaultActorsPlatforms, "platform mix: device d of user u gets the ((u+d) mod n)-th; a mix the default per_class kick policy cannot hold is refused")
	fs.Float64Var(&c.LoginRate, "login-rate", 0, "logins per second (0: as fast as -concurrency allows)")
	fs.IntVar(&c.Concurrency, "concurrency", DefaultActorsConcurrency, "logins in flight")
	fs.Float64Var(&c.MsgRate, "msg-rate", 0, "actions per second per online user: sends (1:1 to the next user, or to a group), mark-reads, recalls, logouts (0: no chat)")
	fs.DurationVar(&c.Duration, "duration", 0, "how long the chat runs (default 10s)")
	fs.DurationVar(&c.Ramp, "ramp", 0, "the login rate (with -login-rate) and the chat rate rise linearly from 0 over this")
	fs.DurationVar(&c.Timeout, "timeout", DefaultActorsTimeout, "limit per login request and group creation")
	fs.DurationVar(&c.Drain, "drain", DefaultActorsDrain, "after the chat (or Ctrl-C): the longest wait for outstanding answers and pushes")
	fs.Float64Var(&c.GroupShare, "group-share", 0, "the share of the sends that go to one of the sender's groups (the rest: 1:1)")
	fs.StringVar(&sizes, "group-size", "", fmt.Sprintf("members per group (default %d); a list such as 10,200 is a mix: group g gets the (g mod n)-th", DefaultActorsGroupSize))
	fs.IntVar(&c.Groups, "groups", 0, "groups, created before the chat through the group actors (default with -group-share: just enough to hold every user once)")
	fs.Float64Var(&c.ReadShare, "read-share", 0, "the share of the actions that mark the newest message the user received read")
	fs.Float64Var(&c.RecallShare, "recall-share", 0, "the share of the actions that recall the user's newest acked message")
	fs.Float64Var(&c.LogoutShare, "logout-share", 0, "the share of the actions that log the device out (Logout) and in again with its cursor")
	fs.BoolVar(&c.ActivateOnly, "activate-only", false, "activate each user (actor start + store activation, the epoch durable) instead of logging a device in; the report's logins are these activations, and the ledger check reads every activated user's epoch from the store")
	fs.IntVar(&c.Passivate, "passivate", 0, "a passivation wave: users 0 … N−1 log in, then all their devices log out at once and their actors go idle together, while the other users (new ones) log in at -login-rate; the node's passivations and the logins' p99 are reported per second")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 0, "the in-process node's --idle-timeout: an actor with no session and nothing in flight passivates after this long ±25 % (default 2m)")
	fs.BoolVar(&reconnect, "reconnect", true, "a device kicked with may_reconnect (4017 session lost after a node loss, 4015 shutdown) logs in again at once with its cursor and resends its unacked sends with the same client message IDs, as a real client does; the wave is measured (-reconnect=false: it stays offline)")
	fs.IntVar(&c.KillPID, "kill-pid", 0, "with -join: KILLS the process with this PID (SIGKILL) -kill-after into the chat — a node of the cluster, to measure the reconnect wave; refused for this process, PID 1 or no process")
	fs.DurationVar(&c.KillAfter, "kill-after", 0, fmt.Sprintf("with -kill-pid: how long into the chat the process is killed (default %v)", DefaultActorsKillAfter))
	fs.BoolVar(&c.NoVerify, "no-verify", false, "skip the ack ledger check (every acked message, recall, mark-read and login read back from the store)")
	fs.StringVar(&c.DataDir, "data-dir", "", "parent of the node's temporary data dir (default: the system's temp dir)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the node's data dir")
	fs.StringVar(&c.JSONPath, "json", "", "write the result as JSON to this file")
	fs.StringVar(&c.HTMLPath, "html", "", "write an HTML report (summary, throughput and p99 over time, latency percentiles) to this file")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the CPU profile of the chat and its drain, or of the logins when there is no chat (node and bench: one process), to this file")
	fs.StringVar(&c.HeapProfile, "heapprofile", "", "write the heap profile (in use after a collection; node and bench: one process) to this file once the chat is drained, or after the logins without a chat")
	fs.StringVar(&c.LogLevel, "log-level", "warn", "debug, info, warn or error")
	c.Target.addFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: tandem-bench actors [flags]")
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output())
		listScenarios(fs.Output())
	}
	if err := fs.Parse(args); err != nil {
		return ActorsConfig{}, err
	}
	if fs.NArg() > 0 {
		return ActorsConfig{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if list {
		return ActorsConfig{}, errListed
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if scenarioFile != "" {
		if err := applyScenarioFile(fs, scenarioFile, given); err != nil {
			return ActorsConfig{}, err
		}
	}
	if c.Scenario != "" {
		sc, ok := findScenario(c.Scenario)
		if !ok {
			return ActorsConfig{}, fmt.Errorf("-scenario %q: use one of %s (or none, and flags)", c.Scenario, scenarioNames())
		}
		for _, f := range sc.Flags {
			if !given[f[0]] {
				if err := fs.Set(f[0], f[1]); err != nil {
					return ActorsConfig{}, fmt.Errorf("scenario %s: -%s %s: %w", sc.Name, f[0], f[1], err)
				}
			}
		}
	}
	c.NoReconnect = !reconnect
	c.Platforms = splitList(platforms)
	for _, f := range splitList(sizes) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return ActorsConfig{}, fmt.Errorf("-group-size %q: want a number of members or a list such as 10,200", sizes)
		}
		c.GroupSizes = append(c.GroupSizes, n)
	}
	return c, nil
}

// applyScenarioFile sets the flags the JSON object in path names, except
// those given on the command line (given; it gets the file's keys too).
// A key that is no flag is refused by name.
func applyScenarioFile(fs *flag.FlagSet, path string, given map[string]bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-scenario-file: %w", err)
	}
	var obj map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&obj); err != nil {
		return fmt.Errorf("-scenario-file %s: want one JSON object of flag values: %w", path, err)
	}
	if d.More() {
		return fmt.Errorf("-scenario-file %s: more than one JSON value", path)
	}
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		if fs.Lookup(key) == nil || key == "scenario-file" || key == "list-scenarios" {
			var names []string
			fs.VisitAll(func(f *flag.Flag) {
				if f.Name != "scenario-file" && f.Name != "list-scenarios" {
					names = append(names, f.Name)
				}
			})
			return fmt.Errorf("-scenario-file %s: unknown key %q: the keys are the flag names (%s)", path, key, strings.Join(names, ", "))
		}
		v, err := scenarioValue(obj[key])
		if err != nil {
			return fmt.Errorf("-scenario-file %s: key %q: %w", path, key, err)
		}
		if given[key] {
			continue // the command line wins
		}
		if err := fs.Set(key, v); err != nil {
			return fmt.Errorf("-scenario-file %s: key %q: %q: %w", path, key, v, err)
		}
		given[key] = true
	}
	return nil
}

// scenarioValue is a JSON value as a flag value: a string as it is, a
// number as written, a boolean, or an array of those joined with commas.
func scenarioValue(raw json.RawMessage) (string, error) {
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", err
	}
	scalar := func(v any) (string, bool) {
		switch x := v.(type) {
		case string:
			return x, true
		case json.Number:
			return x.String(), true
		case bool:
			return strconv.FormatBool(x), true
		}
		return "", false
	}
	if s, ok := scalar(v); ok {
		return s, nil
	}
	if arr, ok := v.([]any); ok {
		parts := make([]string, 0, len(arr))
		for _, e := range arr {
			s, ok := scalar(e)
			if !ok {
				return "", fmt.Errorf("%s: an array holds strings, numbers or booleans only", raw)
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("%s: want a string, number, boolean or an array of them", raw)
}

// actorsMain runs `tandem-bench actors args…`; the exit status. A refused
// scenario exits with 2 before anything starts.
func actorsMain(ctx context.Context, args []string, stdout io.Writer) int {
	cfg, err := parseActorsFlags(args)
	if errors.Is(err, errListed) {
		listScenarios(stdout)
		return 0
	}
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
	if cfg.GCMinHeap < 0 {
		fmt.Fprintln(os.Stderr, "-gc-min-heap must not be negative")
		return 2
	}
	defer gctune.Start(uint64(cfg.GCMinHeap)).Stop()
	if cfg.SyncProcs < -1 {
		fmt.Fprintln(os.Stderr, "-sync-procs must be -1, 0 or more")
		return 2
	}
	_, restoreProcs := procs.Add(cfg.extraProcs())
	defer restoreProcs()
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

// extraProcs is the Ps -sync-procs asks for beyond Go's default: -1 is
// one for an in-process node (badger or pebble, fsyncing in this
// process), none for a cluster the tool only joins.
func (c ActorsConfig) extraProcs() int {
	store := cmp.Or(c.Target.Store, "badger")
	if len(c.Target.Join) > 0 {
		store = "" // the nodes are other processes
	}
	return procs.Resolve(c.SyncProcs, store)
}
