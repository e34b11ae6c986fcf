package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandem-im/tandem/internal/procmem"
)

// ConnsResult is a `tandem-bench conns` run: what was run where, every
// measured point, the per-connection figures of each phase, and the
// soundness checks. Problems lists what makes the figures not count; a
// sound run has none.
type ConnsResult struct {
	Config   connsRunConfig `json:"config"`
	Machine  machineInfo    `json:"machine"`
	Points   []connsPoint   `json:"points"`
	Phases   []phaseSlope   `json:"phases"`
	Checks   connsChecks    `json:"checks"`
	Problems []string       `json:"problems"`
}

type connsRunConfig struct {
	Run         string    `json:"run"`
	Date        time.Time `json:"date"`
	Users       int       `json:"users"`
	Second      int       `json:"second"`
	Servers     int       `json:"servers"`
	Clients     int       `json:"clients"`
	Steps       int       `json:"steps"`
	PerServer   int       `json:"max_conns_per_server"`
	ReusePort   bool      `json:"reuse_port"`
	Tandem      string    `json:"tandem"` // binary, Go version, VCS revision
	NodeFlags   []string  `json:"node_flags"`
	Heartbeat   string    `json:"heartbeat_timeout"`
	Settle      string    `json:"settle"`
	Concurrency int       `json:"concurrency"`
	NodePIDs    []int     `json:"node_pids"`
	WorkerPIDs  []int     `json:"worker_pids"`
}

func (c ConnsConfig) describe(run string) connsRunConfig {
	return connsRunConfig{
		Run: run, Date: time.Now().UTC(), Users: c.Users, Second: c.Second, Servers: c.Servers, Clients: c.Clients,
		Steps: c.Steps, PerServer: c.perServer(), ReusePort: c.ReusePort, NodeFlags: c.NodeFlags, Heartbeat: c.Heartbeat.String(),
		Settle: c.Settle.String(), Concurrency: c.Concurrency,
	}
}

type machineInfo struct {
	CPUs       int        `json:"cpus"`
	MemTotal   int64      `json:"mem_total"`
	Kernel     string     `json:"kernel"`
	GoVersion  string     `json:"go_version"` // the bench's
	GOMAXPROCS int        `json:"gomaxprocs"` // the bench process's (an in-process node's too)
	FDLimit    uint64     `json:"fd_limit"`   // RLIMIT_NOFILE of every process of the run
	LoadBefore [3]float64 `json:"load_before"`
	LoadAfter  [3]float64 `json:"load_after"`
	THP        string     `json:"thp,omitempty"` // the system's transparent huge pages mode (always, madvise, never)
}

// connsPoint is one measurement: Users of phase a and SecondDevices of
// phase b logged in (Conns in all), after GC.
type connsPoint struct {
	Phase         string        `json:"phase"`
	Step          int           `json:"step"` // 0: the phase's start
	Users         int           `json:"users"`
	SecondDevices int           `json:"second_devices"`
	Conns         int           `json:"conns"`
	At            time.Time     `json:"at"`
	Load1         float64       `json:"load1"`
	Servers       []serverPoint `json:"servers"`
	Kernel        kernelMemory  `json:"kernel"`
	ClientRSS     int64         `json:"client_workers_rss"` // all workers together
}

type serverPoint struct {
	Conns       int            `json:"conns"` // logged-in sessions (checked against /metrics)
	Sessions    int            `json:"sessions"`
	OnlineUsers int            `json:"online_users"`
	Process     procmem.Memory `json:"process"`
	Runtime     runtimeMemory  `json:"runtime"`
}

// runtimeMemory is what the node's POST /debug/gc answers (node/debug.go).
type runtimeMemory struct {
	HeapInuse  int64 `json:"heap_inuse"`
	HeapAlloc  int64 `json:"heap_alloc"`
	StackInuse int64 `json:"stack_inuse"`
	Sys        int64 `json:"sys"`
	HeapIdle   int64 `json:"heap_idle"`
	Released   int64 `json:"heap_released"`
	Goroutines int   `json:"goroutines"`
	NumGC      int   `json:"num_gc"`
}

type connsChecks struct {
	Logins          int      `json:"logins"`
	FailedLogins    int      `json:"failed_logins"`
	DialRetries     int      `json:"dial_retries"`
	LoginSeconds    float64  `json:"login_seconds"` // wall time of all the steps' logins
	OpenClientConns int      `json:"open_client_conns"`
	Kicks           int      `json:"kicks"`
	Drops           int      `json:"drops"`
	FramesReceived  int64    `json:"frames_received"`
	ServerCloses    int      `json:"server_closes"`
	LoginConflicts  int      `json:"login_conflicts"`
	SlowConsumers   int      `json:"slow_or_failed_writes"`
	DevicesChecked  int      `json:"devices_checked"`
	ClientErrors    []string `json:"client_errors,omitempty"`
}

// perConn is memory per connection, in bytes (goroutines: a count).
type perConn struct {
	RSS        float64 `json:"rss"`
	RSSAnon    float64 `json:"rss_anon"`
	HeapInuse  float64 `json:"heap_inuse"`
	HeapAlloc  float64 `json:"heap_alloc"`
	StackInuse float64 `json:"stack_inuse"`
	Goroutines float64 `json:"goroutines"`
}

// kernelPerConn is the kernel's memory per connection, machine-wide: on
// loopback a connection is two sockets (client and server end).
type kernelPerConn struct {
	SocketSlab float64            `json:"socket_slab"`
	Caches     map[string]float64 `json:"socket_slab_caches"`
	TCPMem     float64            `json:"tcp_mem"`
	Slab       float64            `json:"slab"`
	TCPInUse   float64            `json:"tcp_sockets"` // sockets per connection (2 expected)
	// PerSocket is SocketSlab per TCP socket the machine gained (both
	// ends, and other programs' sockets): it holds when other programs
	// open or close sockets meanwhile, as long as theirs are alike.
	PerSocket float64 `json:"socket_slab_per_tcp_socket"`
}

// othersBusy reports whether the machine's TCP sockets grew by other than
// two per connection (±5 %): then other programs opened or closed sockets
// during the phase, and the per-connection kernel figures are off.
func (k kernelPerConn) othersBusy() bool { return k.TCPInUse < 1.9 || k.TCPInUse > 2.1 }

// phaseSlope is a phase's figures: (last point − first point) ÷ the
// connections added, per node; Whole: all the nodes' growth together ÷
// all the connections added (the whole server's figure, and with
// -reuse-port the only one that means a cost per connection: a node holds
// sessions of users whose actors live on another); Mean, Min and Max over
// the nodes; StepMin and StepMax the extremes of Whole between
// consecutive points, to show whether growth is linear.
type phaseSlope struct {
	Phase         string    `json:"phase"`
	Whole         perConn   `json:"whole"`
	FromPerServer float64   `json:"from_conns_per_server"`
	ToPerServer   float64   `json:"to_conns_per_server"`
	FromConns     int       `json:"from_conns"`
	ToConns       int       `json:"to_conns"`
	PerServer     []perConn `json:"per_server"`
	Mean          perConn   `json:"mean"`
	Min           perConn   `json:"min"`
	Max           perConn   `json:"max"`
	StepMin       perConn   `json:"step_min"`
	StepMax       perConn   `json:"step_max"`
	// Fit is the marginal cost: a least-squares line through the whole
	// server's points after the phase's first step (nil with fewer than
	// two of them). The first step carries each process's one-off costs —
	// the collector filling its heap goal floor (--gc-min-heap), first-use
	// pools, a cluster's remote endpoints — which belong in the intercept,
	// not in a cost per connection.
	Fit    *lineFit      `json:"fit,omitempty"`
	Kernel kernelPerConn `json:"kernel"`
}

// lineFit is figure ≈ Intercept + Slope × connections (whole server),
// fitted over the points from FromConns to ToConns.
type lineFit struct {
	FromConns int     `json:"from_conns"`
	ToConns   int     `json:"to_conns"`
	Points    int     `json:"points"`
	Slope     perConn `json:"slope"`     // per connection
	Intercept perConn `json:"intercept"` // whole server, bytes (goroutines: a count)
	// PerConnAtMillion is RSS per connection of one process holding a
	// million connections by this line: Slope.RSS + the intercept's RSS
	// shared by the processes, ÷ 1,000,000.
	PerConnAtMillion float64 `json:"rss_per_conn_at_1m_per_process"`
}

// fitLine fits the whole server's figures against its connections by
// least squares over ps (at least two points with different counts).
func fitLine(ps []connsPoint, servers int) *lineFit {
	if len(ps) < 2 || servers < 1 {
		return nil
	}
	xs := make([]float64, len(ps))
	ys := make([]perConn, len(ps))
	var mx float64
	for i, p := range ps {
		s := sumServers(p.Servers)
		xs[i], ys[i] = float64(s.Conns), figuresOf(s)
		mx += xs[i]
	}
	mx /= float64(len(ps))
	var sxx float64
	for _, x := range xs {
		sxx += (x - mx) * (x - mx)
	}
	if sxx == 0 {
		return nil
	}
	f := &lineFit{FromConns: int(xs[0]), ToConns: int(xs[len(xs)-1]), Points: len(ps)}
	for j := range f.Slope.fields() {
		var my, sxy float64
		for i := range ys {
			my += *ys[i].fields()[j]
		}
		my /= float64(len(ys))
		for i := range ys {
			sxy += (xs[i] - mx) * (*ys[i].fields()[j] - my)
		}
		*f.Slope.fields()[j] = sxy / sxx
		*f.Intercept.fields()[j] = my - sxy/sxx*mx
	}
	f.PerConnAtMillion = f.Slope.RSS + f.Intercept.RSS/float64(servers)/1e6
	return f
}

func slopeOf(a, b serverPoint) perConn {
	d := float64(b.Conns - a.Conns)
	if d == 0 {
		return perConn{}
	}
	s, fa := figuresOf(b), figuresOf(a)
	for i, f := range s.fields() {
		*f = (*f - *fa.fields()[i]) / d
	}
	return s
}

// figuresOf is a point's memory figures as they are (not per connection),
// in a perConn's fields.
func figuresOf(p serverPoint) perConn {
	return perConn{
		RSS: float64(p.Process.RSS), RSSAnon: float64(p.Process.RSSAnon),
		HeapInuse: float64(p.Runtime.HeapInuse), HeapAlloc: float64(p.Runtime.HeapAlloc),
		StackInuse: float64(p.Runtime.StackInuse), Goroutines: float64(p.Runtime.Goroutines),
	}
}

// wholeOf is every node's growth between points a and b together,
// divided by all the connections added.
func wholeOf(a, b connsPoint) perConn {
	n := min(len(a.Servers), len(b.Servers))
	return slopeOf(sumServers(a.Servers[:n]), sumServers(b.Servers[:n]))
}

// sumServers adds up the nodes' connections and memory figures.
func sumServers(ps []serverPoint) serverPoint {
	var s serverPoint
	for _, p := range ps {
		s.Conns += p.Conns
		s.Process.RSS += p.Process.RSS
		s.Process.RSSAnon += p.Process.RSSAnon
		s.Runtime.HeapInuse += p.Runtime.HeapInuse
		s.Runtime.HeapAlloc += p.Runtime.HeapAlloc
		s.Runtime.StackInuse += p.Runtime.StackInuse
		s.Runtime.Goroutines += p.Runtime.Goroutines
	}
	return s
}

// fields lists a perConn's figures in table order, for mean/min/max.
func (p *perConn) fields() []*float64 {
	return []*float64{&p.RSS, &p.RSSAnon, &p.HeapInuse, &p.HeapAlloc, &p.StackInuse, &p.Goroutines}
}

// meanOf is the mean of the nodes' slopes between points a and b.
func meanOf(a, b connsPoint) perConn {
	var m perConn
	n := 0
	for i := range min(len(a.Servers), len(b.Servers)) {
		s := slopeOf(a.Servers[i], b.Servers[i])
		for j, f := range s.fields() {
			*m.fields()[j] += *f
		}
		n++
	}
	if n > 0 {
		for _, f := range m.fields() {
			*f /= float64(n)
		}
	}
	return m
}

func phaseSlopes(points []connsPoint) []phaseSlope {
	var out []phaseSlope
	for _, phase := range []string{phaseNew, phaseSecond} {
		var ps []connsPoint
		for _, p := range points {
			if p.Phase == phase {
				ps = append(ps, p)
			}
		}
		if len(ps) < 2 {
			continue
		}
		first, last := ps[0], ps[len(ps)-1]
		s := phaseSlope{Phase: phase, FromConns: first.Conns, ToConns: last.Conns}
		for i := range min(len(first.Servers), len(last.Servers)) {
			s.FromPerServer += float64(first.Servers[i].Conns)
			s.ToPerServer += float64(last.Servers[i].Conns)
			s.PerServer = append(s.PerServer, slopeOf(first.Servers[i], last.Servers[i]))
		}
		if n := float64(len(s.PerServer)); n > 0 {
			s.FromPerServer /= n
			s.ToPerServer /= n
		}
		s.Whole = wholeOf(first, last)
		s.Mean = meanOf(first, last)
		s.Min, s.Max = spread(s.PerServer)
		var steps []perConn
		for i := 1; i < len(ps); i++ {
			steps = append(steps, wholeOf(ps[i-1], ps[i]))
		}
		s.StepMin, s.StepMax = spread(steps)
		if len(ps) > 2 {
			s.Fit = fitLine(ps[1:], len(first.Servers))
		}
		s.Kernel = kernelSlope(first, last)
		out = append(out, s)
	}
	return out
}

// spread is the field-wise minimum and maximum of ps.
func spread(ps []perConn) (lo, hi perConn) {
	for i, p := range ps {
		for j, f := range p.fields() {
			if i == 0 || *f < *lo.fields()[j] {
				*lo.fields()[j] = *f
			}
			if i == 0 || *f > *hi.fields()[j] {
				*hi.fields()[j] = *f
			}
		}
	}
	return lo, hi
}

func kernelSlope(a, b connsPoint) kernelPerConn {
	d := float64(b.Conns - a.Conns)
	k := kernelPerConn{Caches: map[string]float64{}}
	if d == 0 {
		return k
	}
	k.SocketSlab = float64(b.Kernel.SocketSlab-a.Kernel.SocketSlab) / d
	k.TCPMem = float64(b.Kernel.TCPMem-a.Kernel.TCPMem) / d
	k.Slab = float64(b.Kernel.Slab-a.Kernel.Slab) / d
	k.TCPInUse = float64(b.Kernel.TCPInUse-a.Kernel.TCPInUse) / d
	if ds := float64(b.Kernel.TCPInUse - a.Kernel.TCPInUse); ds > 0 {
		k.PerSocket = float64(b.Kernel.SocketSlab-a.Kernel.SocketSlab) / ds
	}
	for name, v := range b.Kernel.SlabCaches {
		k.Caches[name] = float64(v-a.Kernel.SlabCaches[name]) / d
	}
	return k
}

var phaseTitle = map[string]string{
	phaseNew:    "(a) new users",
	phaseSecond: "(b) second devices",
}

func kib(b float64) string { return fmt.Sprintf("%.2f", b/1024) }
func mib(b int64) string   { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// print writes the report: the setup, the checks, every point (mean of
// the nodes) and the per-connection figures.
// problems counts what made the run unsound.
func (r *ConnsResult) problems() int { return len(r.Problems) }

func (r *ConnsResult) print(w io.Writer) {
	c, m := r.Config, r.Machine
	fmt.Fprintf(w, "tandem-bench conns, run %s, %s\n", c.Run, c.Date.Format(time.RFC3339))
	nodes := "single-node, badger"
	if c.ReusePort {
		nodes = "one cluster sharing one WebSocket port with SO_REUSEPORT: the kernel picks each connection's node"
	}
	fmt.Fprintf(w, "%d node processes (%s), %d client workers; phase a %d new users, phase b %d second devices; at most %d connections per node\n",
		c.Servers, nodes, c.Clients, c.Users, c.Second, c.PerServer)
	fmt.Fprintf(w, "node: %s; flags %q; heartbeat timeout %s\n", c.Tandem, strings.Join(append([]string{"--log-level warn"}, c.NodeFlags...), " "), c.Heartbeat)
	fmt.Fprintf(w, "machine: %d CPUs, %.1f GiB, Linux %s, fd limit %d, load %.2f before, %.2f after; bench %s\n",
		m.CPUs, float64(m.MemTotal)/(1<<30), m.Kernel, m.FDLimit, m.LoadBefore[0], m.LoadAfter[0], m.GoVersion)
	k := r.Checks
	fmt.Fprintf(w, "checks: %d logins, %d failed, %d dials retried, %.1f s of logins; open at the end %d; kicks %d, drops %d, server closes %d, login conflicts %d, slow/failed writes %d; devices listed for %d users\n",
		k.Logins, k.FailedLogins, k.DialRetries, k.LoginSeconds, k.OpenClientConns, k.Kicks, k.Drops, k.ServerCloses, k.LoginConflicts, k.SlowConsumers, k.DevicesChecked)
	for _, e := range k.ClientErrors {
		fmt.Fprintf(w, "  client: %s\n", e)
	}

	fmt.Fprintln(w, "\nPoints, after GC (node figures: mean of the nodes; kernel: machine-wide)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tstep\tconns/node\tRSS MiB\tRssAnon MiB\theap inuse MiB\theap live MiB\tstacks MiB\tgoroutines\tsocket slab MiB\tTCP mem MiB\tslab MiB\tclients RSS MiB\tload1\t")
	for _, p := range r.Points {
		s := sumServers(p.Servers)
		n := int64(len(p.Servers))
		if n == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%.2f\t\n", p.Phase, p.Step, s.Conns/int(n),
			mib(s.Process.RSS/n), mib(s.Process.RSSAnon/n), mib(s.Runtime.HeapInuse/n), mib(s.Runtime.HeapAlloc/n),
			mib(s.Runtime.StackInuse/n), s.Runtime.Goroutines/int(n),
			mib(p.Kernel.SocketSlab), mib(p.Kernel.TCPMem), mib(p.Kernel.Slab), mib(p.ClientRSS), p.Load1)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nPer connection: (last point − first point of the phase) ÷ connections added; KiB")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tconns/node\t\tRSS\tRssAnon\theap inuse\theap live\tstacks\tgoroutines/conn\t")
	row := func(label, what string, p perConn) {
		fmt.Fprintf(tw, "%s\t%s\t\t%s\t%s\t%s\t%s\t%s\t%.3f\t\n", label, what, kib(p.RSS), kib(p.RSSAnon), kib(p.HeapInuse), kib(p.HeapAlloc), kib(p.StackInuse), p.Goroutines)
	}
	for _, s := range r.Phases {
		row(phaseTitle[s.Phase], fmt.Sprintf("%d → %d, whole server (all nodes)", s.FromConns, s.ToConns), s.Whole)
		row("", fmt.Sprintf("%.0f → %.0f, mean of nodes", s.FromPerServer, s.ToPerServer), s.Mean)
		row("", "min over nodes", s.Min)
		row("", "max over nodes", s.Max)
		row("", "whole, min over steps", s.StepMin)
		row("", "whole, max over steps", s.StepMax)
		if f := s.Fit; f != nil {
			row("", fmt.Sprintf("%d → %d, marginal: least-squares slope over %d points", f.FromConns, f.ToConns, f.Points), f.Slope)
		}
	}
	tw.Flush()
	for _, s := range r.Phases {
		if f := s.Fit; f != nil {
			fmt.Fprintf(w, "%s: fixed part (intercept, whole server) RSS %s MiB, heap in use %s MiB; by this line one process holding 1,000,000 such connections: %s KiB RSS per connection\n",
				phaseTitle[s.Phase], mib(int64(f.Intercept.RSS)), mib(int64(f.Intercept.HeapInuse)), kib(f.PerConnAtMillion))
		}
	}

	fmt.Fprintln(w, "\nKernel, per connection (machine-wide; on loopback a connection is two sockets, client and server end); KiB")
	for _, s := range r.Phases {
		k := s.Kernel
		names := make([]string, 0, len(k.Caches))
		for n := range k.Caches {
			names = append(names, n)
		}
		slices.SortFunc(names, func(a, b string) int { return cmp.Compare(k.Caches[b], k.Caches[a]) })
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %s", n, kib(k.Caches[n])))
		}
		fmt.Fprintf(w, "%s, %d → %d connections: socket slab caches %s (%s), /proc/net/sockstat TCP mem %s, all slab (/proc/meminfo) %s; TCP sockets in use +%.2f per connection, socket slab per TCP socket %s\n",
			phaseTitle[s.Phase], s.FromConns, s.ToConns, kib(k.SocketSlab), strings.Join(parts, ", "), kib(k.TCPMem), kib(k.Slab), k.TCPInUse, kib(k.PerSocket))
		if k.othersBusy() {
			fmt.Fprintf(w, "  other programs opened or closed TCP sockets during %s (+%.2f per connection, not 2): its per-connection kernel figures are off; the per-socket figure may hold\n", phaseTitle[s.Phase], k.TCPInUse)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nNOT SOUND, the figures do not count:")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}
