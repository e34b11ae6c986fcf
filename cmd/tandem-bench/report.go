package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandem-im/tandem/client"
)

// Result is what a run measured; it is printed and written as JSON.
type Result struct {
	Config     RunConfig  `json:"config"`
	Throughput Throughput `json:"throughput"`
	AckLatency Latency    `json:"send_to_ack_ms"`
	Delivery   Latency    `json:"send_to_deliver_ms"`
	Messages   Messages   `json:"measured_messages"`
	OpenLoop   *OpenLoop  `json:"open_loop,omitempty"` // -rate only
	Problems   Problems   `json:"problems"`
	Placement  Placement  `json:"placement"`
	CPU        CPU        `json:"cpu"`
}

// RunConfig describes the run.
type RunConfig struct {
	RunID           string   `json:"run_id"`
	Date            string   `json:"date"`         // RFC 3339, when the run ended
	WindowStart     string   `json:"window_start"` // RFC 3339 (ns), when the measured window began
	Target          string   `json:"target"`
	WSURL           string   `json:"ws_url"`  // the first (or only) node's
	WSURLs          []string `json:"ws_urls"` // every node's
	Nodes           int      `json:"nodes"`
	Fsync           string   `json:"fsync"` // "on" in-process; "unknown" for an external node
	Protocol        string   `json:"protocol"`
	Mode            string   `json:"mode"`                      // "closed loop", or "open loop" (-rate)
	RatePerSecond   float64  `json:"rate_per_second,omitempty"` // open loop: the target, over all senders
	Pairs           int      `json:"pairs"`
	Window          int      `json:"window"`
	SizeBytes       int      `json:"size_bytes"`
	WarmupSeconds   float64  `json:"warmup_seconds"`
	DurationSeconds float64  `json:"duration_seconds"`
	DrainSeconds    float64  `json:"drain_seconds"`
	GOMAXPROCS      int      `json:"gomaxprocs"`
	NumCPU          int      `json:"num_cpu"`
	GoVersion       string   `json:"go_version"`
	OS              string   `json:"os"`
	Arch            string   `json:"arch"`
	KeptDataDir     string   `json:"kept_data_dir,omitempty"`
}

// Throughput counts events whose time fell in the measured window.
type Throughput struct {
	AckedPerSecond     float64 `json:"acked_per_second"`
	DeliveredPerSecond float64 `json:"delivered_per_second"`
	Acked              uint64  `json:"acked"`
	Delivered          uint64  `json:"delivered"`
	// AckedBySecond: acks in each second of the window (the last one
	// partial if the duration is not whole seconds), to spot stalls;
	// DeliveredBySecond the same for deliveries.
	AckedBySecond     []uint64 `json:"acked_by_second"`
	DeliveredBySecond []uint64 `json:"delivered_by_second"`
	// SlowestSecondPercent: the slowest whole second of AckedBySecond as
	// a percentage of their mean (the partial last second left out); 100
	// is an even rate, and issue 10 asks for at least 50.
	SlowestSecondPercent float64 `json:"slowest_second_percent"`
}

// OpenLoop is how an open-loop run kept to its schedule. Its figures
// cover the messages scheduled in the measured window.
type OpenLoop struct {
	TargetPerSecond float64 `json:"target_per_second"`
	// AchievedPercent: Throughput.AckedPerSecond as a percentage of the
	// target.
	AchievedPercent float64 `json:"achieved_percent"`
	Scheduled       uint64  `json:"scheduled"` // sends scheduled in the window that were started
	// LateSends started more than LateAfterMs after their scheduled time;
	// WindowFull had to wait for a window slot (Window sends in flight)
	// when they were due; WorstLatenessMs is the most any send started
	// after its scheduled time.
	LateSends       uint64  `json:"late_sends"`
	LateAfterMs     float64 `json:"late_after_ms"`
	WindowFull      uint64  `json:"window_full"`
	WorstLatenessMs float64 `json:"worst_lateness_ms"`
}

// Latency of the messages sent in the measured window, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Messages follows the messages sent in the measured window to the end.
type Messages struct {
	Sent      uint64 `json:"sent"`
	Acked     uint64 `json:"acked"`
	Delivered uint64 `json:"delivered"` // late deliveries (see Late) included
	// Lost: acked but not delivered by the end of the drain time. Of
	// these, Late were delivered during the further -late wait, and
	// Missing were still not delivered at its end.
	Lost    uint64 `json:"lost"`
	Late    uint64 `json:"late"`
	Missing uint64 `json:"missing"`
	// LostByPair: the pairs with lost messages.
	LostByPair []PairLoss `json:"lost_by_pair,omitempty"`
	// Unacked: sent but never acked (failed, or still pending when the
	// senders were closed).
	Unacked uint64 `json:"unacked"`
}

// PairLoss is one pair's lost messages; nodes are indexes in ws_urls where
// the devices logged in first (-1: none of them).
type PairLoss struct {
	Pair         int    `json:"pair"`
	Sender       string `json:"sender"`
	Receiver     string `json:"receiver"`
	SenderNode   int    `json:"sender_node"`
	ReceiverNode int    `json:"receiver_node"`
	Lost         uint64 `json:"lost"`
	Missing      uint64 `json:"missing"`
}

// Problems over the whole run (setup, warm-up and drain included).
type Problems struct {
	SendErrors   uint64 `json:"send_errors"`   // sends that failed
	ClientErrors uint64 `json:"client_errors"` // OnError calls: undecodable frames, Error frames with id 0, failed gap pulls
	Kicks        uint64 `json:"kicks"`         // OnKick calls: kicks that ended a client
	// Reconnect steps (OnReconnect): connections dropped, dial or login
	// attempts that failed (a failed first dial during setup included),
	// and reconnects that logged in again (client.Stats).
	Drops               uint64   `json:"reconnect_drops"`
	FailedDials         uint64   `json:"reconnect_failed_attempts"`
	Reconnects          uint64   `json:"reconnects"`
	StoppedClients      uint64   `json:"stopped_clients"`      // clients that stopped for good on their own before the end (Err other than ErrClosed)
	Resent              uint64   `json:"resent"`               // sends written again after a reconnect
	DuplicateAcks       uint64   `json:"duplicate_acks"`       // acks of resends already accepted
	DuplicateEntries    uint64   `json:"duplicate_entries"`    // entries the clients dropped by seq
	DuplicateDeliveries uint64   `json:"duplicate_deliveries"` // one message delivered twice to OnEntry
	GapPulls            uint64   `json:"gap_pulls"`
	OtherEntries        uint64   `json:"other_entries"` // receiver entries not from this run's sender
	ErrorSamples        []string `json:"error_samples,omitempty"`
}

// Placement is where the devices logged in first (spread.go).
type Placement struct {
	Nodes []NodePlacement `json:"nodes"`
	// CrossNodePairs: pairs whose sender and receiver logged in on
	// different nodes.
	CrossNodePairs int `json:"cross_node_pairs"`
	// Misplaced: devices whose first login was not on the node chosen for
	// them; Moved: devices connected elsewhere at the end (reconnects).
	Misplaced int `json:"misplaced"`
	Moved     int `json:"moved"`
}

// NodePlacement counts the devices that logged in first on one node.
type NodePlacement struct {
	URL       string `json:"url"`
	Senders   int    `json:"senders"`
	Receivers int    `json:"receivers"`
}

// CPU over the measured window, in cores (1.0 = one core busy).
type CPU struct {
	// ProcessCores: this process. For an in-process node it covers bench
	// and node together.
	ProcessCores float64 `json:"process_cores"`
	// From Linux's /proc (absent elsewhere): the whole machine's busy
	// time, the -cpu-pids processes with their descendants, and what is
	// left (busy minus this process minus the watched ones: other load).
	MachineBusyCores float64      `json:"machine_busy_cores,omitempty"`
	Watched          []WatchedCPU `json:"watched,omitempty"`
	OtherCores       float64      `json:"other_cores,omitempty"`
}

// WatchedCPU is one -cpu-pids process tree.
type WatchedCPU struct {
	Label string  `json:"label"`
	PID   int     `json:"pid"`
	Cores float64 `json:"cores"`
}

// result gathers the pairs' figures; the senders must have returned.
// lost is by pair, as undeliveredByPair counted at the end of the drain.
func (b *bench) result(ck *clock, lost []uint64) *Result {
	cfg := b.cfg
	r := &Result{Config: RunConfig{
		RunID:           b.runID,
		Date:            time.Now().Format(time.RFC3339),
		WindowStart:     ck.start.Add(ck.warmupEnd).Format(time.RFC3339Nano),
		Target:          "in-process",
		WSURL:           b.target.wsURLs[0],
		WSURLs:          b.target.wsURLs,
		Nodes:           len(b.target.wsURLs),
		Fsync:           "on",
		Protocol:        "protobuf (tandem.v1)",
		Mode:            "closed loop",
		Pairs:           cfg.Pairs,
		Window:          cfg.Window,
		SizeBytes:       cfg.Size,
		WarmupSeconds:   cfg.Warmup.Seconds(),
		DurationSeconds: cfg.Duration.Seconds(),
		DrainSeconds:    cfg.Drain.Seconds(),
		GOMAXPROCS:      runtime.GOMAXPROCS(0),
		NumCPU:          runtime.NumCPU(),
		GoVersion:       runtime.Version(),
		OS:              runtime.GOOS,
		Arch:            runtime.GOARCH,
	}}
	if b.target.external {
		r.Config.Target, r.Config.Fsync = "external", "unknown"
	}
	if cfg.JSONProtocol {
		r.Config.Protocol = "json (tandem.v1.json)"
	}
	if cfg.Keep {
		r.Config.KeptDataDir = b.target.dataDir
	}
	var pace lateness

	var ackLat, delLat hist
	r.Throughput.AckedBySecond = make([]uint64, ck.seconds())
	r.Throughput.DeliveredBySecond = make([]uint64, ck.seconds())
	r.Placement = b.placement()
	for i, p := range b.pairs {
		p.mu.Lock()
		ackLat.merge(&p.ackLat)
		delLat.merge(&p.delLat)
		r.Throughput.Acked += p.ackedInWindow
		r.Throughput.Delivered += p.deliveredInWindow
		for s, n := range p.ackedBySecond {
			r.Throughput.AckedBySecond[s] += n
		}
		for s, n := range p.deliveredBySecond {
			r.Throughput.DeliveredBySecond[s] += n
		}
		r.Messages.Sent += p.last - p.first
		r.Messages.Acked += p.measuredAcked
		r.Messages.Delivered += p.measuredDelivered
		missing := p.acked.countAndNot(&p.delivered, p.first, p.last)
		r.Messages.Lost += lost[i]
		r.Messages.Missing += missing
		if lost[i] > 0 {
			r.Messages.LostByPair = append(r.Messages.LostByPair, PairLoss{
				Pair: i, Sender: p.sender, Receiver: p.receiver, SenderNode: p.sendFirst, ReceiverNode: p.recvFirst,
				Lost: lost[i], Missing: missing,
			})
		}
		pace.merge(p.pace)
		r.Problems.SendErrors += p.sendErrors
		r.Problems.DuplicateDeliveries += p.dupDeliveries
		p.mu.Unlock()
		r.Problems.OtherEntries += p.foreign.Load()
		for _, c := range []*client.Client{p.send, p.recv} {
			if err := c.Err(); err != nil && !errors.Is(err, client.ErrClosed) { // closed: the drain time ran out (logged)
				r.Problems.StoppedClients++
				b.sample(fmt.Errorf("client stopped: %w", err))
			}
			st := c.Stats()
			r.Problems.Reconnects += st.Reconnects
			r.Problems.Resent += st.Resent
			r.Problems.DuplicateAcks += st.DuplicateAcks
			r.Problems.DuplicateEntries += st.Duplicates
			r.Problems.GapPulls += st.GapPulls
		}
	}
	r.Messages.Unacked = r.Messages.Sent - r.Messages.Acked
	r.Messages.Late = r.Messages.Lost - min(r.Messages.Missing, r.Messages.Lost)
	secs := cfg.Duration.Seconds()
	r.Throughput.AckedPerSecond = float64(r.Throughput.Acked) / secs
	r.Throughput.DeliveredPerSecond = float64(r.Throughput.Delivered) / secs
	r.Throughput.SlowestSecondPercent = slowestPercent(wholeSeconds(r.Throughput.AckedBySecond, cfg.Duration))
	if cfg.Rate > 0 {
		r.Config.Mode, r.Config.RatePerSecond = "open loop", cfg.Rate
		r.OpenLoop = &OpenLoop{
			TargetPerSecond: cfg.Rate,
			AchievedPercent: 100 * r.Throughput.AckedPerSecond / cfg.Rate,
			Scheduled:       pace.sends,
			LateSends:       pace.late,
			LateAfterMs:     ms(lateAfter),
			WindowFull:      pace.windowFull,
			WorstLatenessMs: ms(pace.worst),
		}
	}
	r.AckLatency = latency(&ackLat)
	r.Delivery = latency(&delLat)
	r.Problems.ClientErrors = b.clientErrors.Load()
	r.Problems.Kicks = b.kicks.Load()
	r.Problems.Drops = b.drops.Load()
	r.Problems.FailedDials = b.failedDials.Load()
	b.samplesMu.Lock()
	r.Problems.ErrorSamples = append([]string(nil), b.samples...)
	b.samplesMu.Unlock()
	return r
}

// placement counts where the devices logged in first, and how many are
// connected elsewhere now.
func (b *bench) placement() Placement {
	pl := Placement{Nodes: make([]NodePlacement, len(b.target.wsURLs)), Misplaced: b.misplaced()}
	for i, u := range b.target.wsURLs {
		pl.Nodes[i].URL = u
	}
	for _, p := range b.pairs {
		if p.sendFirst >= 0 {
			pl.Nodes[p.sendFirst].Senders++
		}
		if p.recvFirst >= 0 {
			pl.Nodes[p.recvFirst].Receivers++
		}
		if p.sendFirst != p.recvFirst {
			pl.CrossNodePairs++
		}
		if b.nodeOf(p.send) != p.sendFirst {
			pl.Moved++
		}
		if b.nodeOf(p.recv) != p.recvFirst {
			pl.Moved++
		}
	}
	return pl
}

// wholeSeconds is a by-second series of a window of duration d without
// its last second if that one is partial (unless it is the only one).
func wholeSeconds(s []uint64, d time.Duration) []uint64 {
	if d%time.Second != 0 && len(s) > 1 {
		return s[:len(s)-1]
	}
	return s
}

// slowestPercent is the smallest count of s as a percentage of their mean;
// 0 if s is empty or all zero.
func slowestPercent(s []uint64) float64 {
	if len(s) == 0 {
		return 0
	}
	mean := float64(sum(s)) / float64(len(s))
	if mean == 0 {
		return 0
	}
	return 100 * float64(slices.Min(s)) / mean
}

func latency(h *hist) Latency {
	return Latency{
		Count: h.n,
		Mean:  ms(h.mean()),
		P50:   ms(h.quantile(0.50)),
		P90:   ms(h.quantile(0.90)),
		P99:   ms(h.quantile(0.99)),
		Max:   ms(h.quantile(1)),
	}
}

// ms rounds to microseconds.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// print writes the summary table.
func (r *Result) print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "tandem-bench run %s  %s  target %s (%s, fsync %s)  %s\n",
		c.RunID, c.Date, c.Target, strings.Join(c.WSURLs, ","), c.Fsync, c.Protocol)
	mode := c.Mode
	if c.Mode == "" {
		mode = "closed loop"
	}
	if c.RatePerSecond > 0 {
		mode = fmt.Sprintf("%s at %g msgs/s (%.4g per sender, staggered)", c.Mode, c.RatePerSecond, c.RatePerSecond/float64(c.Pairs))
	}
	fmt.Fprintf(w, "%s  pairs %d  window %d  size %d B  warm-up %gs  measured %gs  GOMAXPROCS %d  %s %s/%s\n\n",
		mode, c.Pairs, c.Window, c.SizeBytes, c.WarmupSeconds, c.DurationSeconds, c.GOMAXPROCS, c.GoVersion, c.OS, c.Arch)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "throughput\tmsgs/s\tcount\t")
	if o := r.OpenLoop; o != nil {
		fmt.Fprintf(tw, "target\t%g\t\t\n", o.TargetPerSecond)
	}
	fmt.Fprintf(tw, "acked\t%.0f\t%d\t\n", r.Throughput.AckedPerSecond, r.Throughput.Acked)
	fmt.Fprintf(tw, "delivered\t%.0f\t%d\t\n", r.Throughput.DeliveredPerSecond, r.Throughput.Delivered)
	fmt.Fprintln(tw, "\t\t\t")
	fmt.Fprintln(tw, "latency (ms)\tp50\tp90\tp99\tmax\tmean\tcount\t")
	for _, l := range []struct {
		name string
		l    Latency
	}{{"send→ack", r.AckLatency}, {"send→deliver", r.Delivery}} {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t\n",
			l.name, l.l.P50, l.l.P90, l.l.P99, l.l.Max, l.l.Mean, l.l.Count)
	}
	tw.Flush()
	d := time.Duration(c.DurationSeconds * float64(time.Second))
	if s := wholeSeconds(r.Throughput.AckedBySecond, d); len(s) > 0 {
		fmt.Fprintf(w, "\nacked by second of the window: slowest %d, fastest %d; slowest second %.0f %% of the mean (target ≥ 50 %%)\n",
			slices.Min(s), slices.Max(s), r.Throughput.SlowestSecondPercent)
	}
	if s := wholeSeconds(r.Throughput.DeliveredBySecond, d); len(s) > 0 {
		fmt.Fprintf(w, "delivered by second of the window: slowest %d, fastest %d\n", slices.Min(s), slices.Max(s))
	}
	if o := r.OpenLoop; o != nil {
		fmt.Fprintf(w, "open loop: acked %.0f msgs/s = %.1f %% of the target %g; latencies from each message's scheduled time\n",
			r.Throughput.AckedPerSecond, o.AchievedPercent, o.TargetPerSecond)
		fmt.Fprintf(w, "  sends scheduled in the window %d: late %d (started > %g ms after schedule), window full %d, worst lateness %.2f ms\n",
			o.Scheduled, o.LateSends, o.LateAfterMs, o.WindowFull, o.WorstLatenessMs)
	}

	m, p := r.Messages, r.Problems
	fmt.Fprintf(w, "\nmeasured messages: sent %d  acked %d  delivered %d  lost %d  unacked %d\n",
		m.Sent, m.Acked, m.Delivered, m.Lost, m.Unacked)
	if m.Lost > 0 {
		fmt.Fprintf(w, "  of the lost: late %d (delivered after the drain time), missing %d (not delivered at all)\n", m.Late, m.Missing)
		for _, pl := range m.LostByPair {
			fmt.Fprintf(w, "  pair %d (%s on node %d → %s on node %d): lost %d, missing %d\n",
				pl.Pair, pl.Sender, pl.SenderNode, pl.Receiver, pl.ReceiverNode, pl.Lost, pl.Missing)
		}
	}
	fmt.Fprintf(w, "problems: send errors %d  client errors %d  kicks %d  stopped clients %d\n",
		p.SendErrors, p.ClientErrors, p.Kicks, p.StoppedClients)
	fmt.Fprintf(w, "  reconnects: drops %d  failed attempts %d  reconnected %d  resent %d  duplicate acks %d\n",
		p.Drops, p.FailedDials, p.Reconnects, p.Resent, p.DuplicateAcks)
	fmt.Fprintf(w, "  entries: duplicate entries %d  duplicate deliveries %d  gap pulls %d  other entries %d\n",
		p.DuplicateEntries, p.DuplicateDeliveries, p.GapPulls, p.OtherEntries)
	for _, s := range p.ErrorSamples {
		fmt.Fprintf(w, "  error: %s\n", s)
	}
	if pl := r.Placement; len(pl.Nodes) > 1 {
		fmt.Fprintf(w, "placement (first login): ")
		for i, n := range pl.Nodes {
			fmt.Fprintf(w, "node %d %d senders + %d receivers; ", i, n.Senders, n.Receivers)
		}
		fmt.Fprintf(w, "cross-node pairs %d of %d  misplaced %d  moved %d\n", pl.CrossNodePairs, c.Pairs, pl.Misplaced, pl.Moved)
	}
	who := "bench only"
	if c.Target == "in-process" {
		who = "bench + node"
	}
	fmt.Fprintf(w, "cpu: %.2f cores (%s) of %d", r.CPU.ProcessCores, who, c.NumCPU)
	for _, wc := range r.CPU.Watched {
		fmt.Fprintf(w, "  %s %.2f", wc.Label, wc.Cores)
	}
	if r.CPU.MachineBusyCores > 0 {
		fmt.Fprintf(w, "  (machine busy %.2f, other %.2f)", r.CPU.MachineBusyCores, r.CPU.OtherCores)
	}
	fmt.Fprintln(w)
}

// writeJSON writes r to path, creating its directory.
func (r *Result) writeJSON(path string) error {
	return writeJSONFile(path, r)
}

// writeJSONFile writes v as indented JSON to path, creating its directory.
func writeJSONFile(path string, v any) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the result: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
