package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// BroadcastResult is a `tandem-bench broadcast` invocation: one run per
// transport. A run with Problems does not count.
type BroadcastResult struct {
	Config  bcastConfigOut `json:"config"`
	Machine machineInfo    `json:"machine"`
	Runs    []BroadcastRun `json:"runs"`
}

type bcastConfigOut struct {
	Date       time.Time `json:"date"`
	Members    int       `json:"members"`
	Messages   int       `json:"messages"`
	Interval   string    `json:"interval"`
	Size       int       `json:"size"`
	Transports []string  `json:"transports"`
	Clients    int       `json:"clients"`
	Batch      int       `json:"batch"`
	Tandem     string    `json:"tandem"` // binary, Go version, VCS revision
	NodeFlags  []string  `json:"node_flags"`
	Heartbeat  string    `json:"heartbeat_timeout"`
	Tail       string    `json:"tail"`
}

func (c BroadcastConfig) describe() bcastConfigOut {
	return bcastConfigOut{
		Date: time.Now().UTC(), Members: c.Members, Messages: c.Messages, Interval: c.Interval.String(), Size: c.Size,
		Transports: c.Transports, Clients: c.Clients, Batch: c.Batch, NodeFlags: c.NodeFlags,
		Heartbeat: c.Heartbeat.String(), Tail: c.Tail.String(),
	}
}

// BroadcastRun is one transport's measurement.
type BroadcastRun struct {
	Transport         string   `json:"transport"`          // asked: the --ws-transport value, or "default"
	ObservedTransport string   `json:"observed_transport"` // from the node's goroutines: "goroutine" if at least one per member connection
	NodeGoroutines    int      `json:"node_goroutines"`    // with the members logged in, before the group
	NodeFlags         []string `json:"node_flags"`
	Run               string   `json:"run"`
	Group             string   `json:"group"`
	NodePID           int      `json:"node_pid"`
	WorkerPIDs        []int    `json:"worker_pids"`

	Setup bcastSetup `json:"setup"`

	Sent            int   `json:"sent"`
	Acked           int   `json:"acked"`
	PushesExpected  int64 `json:"pushes_expected"`  // sent × members
	PushesInWindow  int64 `json:"pushes_in_window"` // pushes counted when the window's deliveries ended (the CPU figures' divisor)
	PushesDelivered int64 `json:"pushes_delivered"` // first arrivals of a message at a member connection, at the tally

	NodeIdleCores float64      `json:"node_idle_cores"` // the quiet node before the window
	Window        bcastWindow  `json:"window"`
	Latency       bcastLatency `json:"latency"`
	Checks        bcastChecks  `json:"checks"`

	LoadBefore [3]float64 `json:"load_before"`
	LoadAfter  [3]float64 `json:"load_after"`
	Problems   []string   `json:"problems"`
}

type bcastSetup struct {
	Seconds       float64 `json:"seconds"`        // start to window
	LoginSeconds  float64 `json:"login_seconds"`  // node and workers started, members logged in
	GroupSeconds  float64 `json:"group_seconds"`  // the group API requests
	GroupRequests int     `json:"group_requests"` // the last one reads the members back
	GroupRetries  int     `json:"group_retries"`  // requests tried again after UNAVAILABLE (the group actor busy with the last event's fan-out)
	QuietSeconds  float64 `json:"quiet_seconds"`  // waiting for the membership events to go out, and the idle measurement
	FramesBefore  int64   `json:"frames_before"`  // frames the members were pushed before the window (membership events)
}

// bcastWindow is the measured window: from just before the first send to
// Tail after the last push arrived.
type bcastWindow struct {
	Seconds        float64 `json:"seconds"`
	SendSeconds    float64 `json:"send_seconds"`    // first to last send
	DeliverSeconds float64 `json:"deliver_seconds"` // first send to the last push seen

	NodeCPUSeconds          float64 `json:"node_cpu_seconds"` // user+sys of the node process
	NodeCores               float64 `json:"node_cores"`
	NodeCPUPerPushMicros    float64 `json:"node_cpu_per_push_us"`     // node CPU ÷ pushes delivered
	NodeCPUPerPushNetMicros float64 `json:"node_cpu_per_push_net_us"` // the same less the node's idle rate over the window
	NodeCPUPerMessageMillis float64 `json:"node_cpu_per_message_ms"`  // node CPU ÷ messages sent

	// From the node's /metrics, over the window (scraped just outside it).
	FramesOut    int64 `json:"frames_out"`    // frames the gateway wrote
	StoreCommits int64 `json:"store_commits"` // store commits (batches)
	StoreEntries int64 `json:"store_entries"` // log entries written

	WorkersCPUSeconds       float64 `json:"workers_cpu_seconds"` // the client workers (reading and decoding the pushes)
	WorkersCPUPerPushMicros float64 `json:"workers_cpu_per_push_us"`
	MachineBusyCores        float64 `json:"machine_busy_cores"`
	OtherCores              float64 `json:"other_cores"` // busy cores not the node's or the workers' (the bench, other programs)
}

// bcastLatency: LastPush is per message, send → the last member's push;
// Push is per push, send → that push; Ack is per message, send → SendAck.
type bcastLatency struct {
	LastPush quantiles `json:"send_to_last_push_ms"`
	Push     quantiles `json:"send_to_push_ms"`
	Ack      quantiles `json:"send_to_ack_ms"`
}

type quantiles struct {
	N   uint64  `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func quantilesMS(h *hist) quantiles {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return quantiles{N: h.n, P50: ms(h.quantile(0.5)), P99: ms(h.quantile(0.99)), Max: ms(h.quantile(1))}
}

type bcastChecks struct {
	Logins         int   `json:"logins"`
	FailedLogins   int   `json:"failed_logins"`
	OpenConns      int   `json:"open_member_conns"`
	Complete       int   `json:"complete"` // member connections that got every message exactly once
	Missing        int64 `json:"missing"`
	Duplicates     int64 `json:"duplicates"`
	Foreign        int64 `json:"foreign"`       // the group's entries that were not this run's messages
	OtherEntries   int64 `json:"other_entries"` // other entries pushed in the window
	Kicks          int   `json:"kicks"`
	Drops          int   `json:"drops"`
	ServerCloses   int   `json:"server_closes"`
	SlowConsumers  int   `json:"slow_or_failed_writes"`
	LoginConflicts int   `json:"login_conflicts"`
}

func (r *BroadcastResult) problems() int {
	n := 0
	for _, run := range r.Runs {
		n += len(run.Problems)
	}
	return n
}

// print writes the report: the set-up, one table row per transport, the
// checks.
func (r *BroadcastResult) print(w io.Writer) {
	c, m := r.Config, r.Machine
	fmt.Fprintf(w, "tandem-bench broadcast, %s\n", c.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "1 node process (single node, badger), %d member connections on %d client workers, 1 group of %d members (added %d per API request), sender: a second device of member 0\n",
		c.Members, c.Clients, c.Members, c.Batch)
	fmt.Fprintf(w, "%d messages of %d bytes, one every %s; window: first send to the last push + %s\n", c.Messages, c.Size, c.Interval, c.Tail)
	fmt.Fprintf(w, "node: %s; more flags %q\n", c.Tandem, strings.Join(c.NodeFlags, " "))
	fmt.Fprintf(w, "machine: %d CPUs, %.1f GiB, Linux %s, fd limit %d, load %.2f %.2f %.2f before, %.2f %.2f %.2f after; bench %s\n",
		m.CPUs, float64(m.MemTotal)/(1<<30), m.Kernel, m.FDLimit, m.LoadBefore[0], m.LoadBefore[1], m.LoadBefore[2],
		m.LoadAfter[0], m.LoadAfter[1], m.LoadAfter[2], m.GoVersion)

	fmt.Fprintln(w, "\nServer CPU per delivered push (node process, user+sys, over the window)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tobserved\tsent\tacked\tpushes\tnode CPU s\tµs/push\tnet of idle\tms/message\tnode cores\tidle cores\twindow s\tframes out\tcommits\tentries\tworkers µs/push\tother cores\tload1\t")
	for _, x := range r.Runs {
		wd := x.Window
		fmt.Fprintf(tw, "%s\t%s (%d goroutines)\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.1f\t%.2f\t%.3f\t%.1f\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t\n",
			x.Transport, x.ObservedTransport, x.NodeGoroutines, x.Sent, x.Acked, x.PushesInWindow,
			wd.NodeCPUSeconds, wd.NodeCPUPerPushMicros, wd.NodeCPUPerPushNetMicros, wd.NodeCPUPerMessageMillis, wd.NodeCores, x.NodeIdleCores,
			wd.Seconds, wd.FramesOut, wd.StoreCommits, wd.StoreEntries, wd.WorkersCPUPerPushMicros, wd.OtherCores, x.LoadBefore[0])
	}
	tw.Flush()

	fmt.Fprintln(w, "\nLatency, ms (wall clock shared by the processes)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tsend→last member p50\tp99\tmax\tsend→push p50\tp99\tmax\tsend→ack p50\tp99\tdeliver s\t")
	for _, x := range r.Runs {
		l := x.Latency
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t\n", x.Transport,
			l.LastPush.P50, l.LastPush.P99, l.LastPush.Max, l.Push.P50, l.Push.P99, l.Push.Max, l.Ack.P50, l.Ack.P99, x.Window.DeliverSeconds)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nChecks")
	for _, x := range r.Runs {
		k := x.Checks
		fmt.Fprintf(w, "%s: %d logins (%d failed) in %.1f s, group in %.1f s (%d requests, %d tried again), quiet after %.1f s (%d frames pushed before); %d of %d member connections got all %d messages exactly once, %d missing, %d duplicates, %d foreign, %d other entries; kicks %d, drops %d, server closes %d, slow/failed writes %d, login conflicts %d\n",
			x.Transport, k.Logins, k.FailedLogins, x.Setup.LoginSeconds, x.Setup.GroupSeconds, x.Setup.GroupRequests, x.Setup.GroupRetries, x.Setup.QuietSeconds, x.Setup.FramesBefore,
			k.Complete, k.OpenConns, x.Sent, k.Missing, k.Duplicates, k.Foreign, k.OtherEntries, k.Kicks, k.Drops, k.ServerCloses, k.SlowConsumers, k.LoginConflicts)
		if iv, err := time.ParseDuration(c.Interval); err == nil && x.Latency.LastPush.P99 > float64(iv.Milliseconds()) {
			fmt.Fprintf(w, "  %s: send→last member p99 %.0f ms is longer than the interval %s: messages queued behind one another (the node did not keep up with the send rate)\n",
				x.Transport, x.Latency.LastPush.P99, c.Interval)
		}
		if len(x.Problems) > 0 {
			fmt.Fprintf(w, "  NOT SOUND, %s's figures do not count:\n", x.Transport)
			for _, p := range x.Problems {
				fmt.Fprintf(w, "    %s\n", p)
			}
		}
	}
}
