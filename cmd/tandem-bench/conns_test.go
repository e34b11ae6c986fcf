package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary serve as a `conns` client worker: the
// pipeline test re-executes it with connsWorkerEnv set, as the real
// command re-executes itself.
func TestMain(m *testing.M) {
	if os.Getenv(connsWorkerEnv) == "1" {
		os.Exit(connsWorkerMain(context.Background(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	}
	code := m.Run()
	if tandemDir != "" {
		if err := os.RemoveAll(tandemDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

// The tandem binary the conns tests run, built once.
var (
	tandemOnce sync.Once
	tandemDir  string
	tandemBin  string
	tandemErr  error
)

func testTandem(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts node processes")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command builds cmd/tandem for this test: %v", err)
	}
	tandemOnce.Do(func() {
		if tandemDir, tandemErr = os.MkdirTemp("", "tandem-bench-test-"); tandemErr == nil {
			tandemBin, tandemErr = buildTandem(context.Background(), tandemDir)
		}
	})
	if tandemErr != nil {
		t.Fatal(tandemErr)
	}
	return tandemBin
}

// soundConnsRun runs cfg (at most 2 minutes), logs the report, and fails
// the test unless the run finished and was sound.
func soundConnsRun(t *testing.T, cfg ConnsConfig) *ConnsResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := runConns(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if res != nil {
		var out strings.Builder
		res.print(&out)
		t.Log("\n" + out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) > 0 {
		t.Fatalf("not sound: %q", res.Problems)
	}
	return res
}

// TestConnsPipeline is the CI-sized run of `tandem-bench conns`: 2 real
// node processes, 2 client worker processes, 1,000 connections per node
// (600 new users, then 400 second devices each). It checks that the run
// is sound (every connection logged in, nothing kicked or dropped) and
// that every figure was measured; it asserts no memory figure.
func TestConnsPipeline(t *testing.T) {
	bin := testTandem(t)
	dir := t.TempDir()
	cfg := ConnsConfig{
		Tandem: bin, Users: 1200, Second: 800, Servers: 2, Clients: 2, Steps: 2,
		Settle: 300 * time.Millisecond, DataDir: dir,
		JSONPath: filepath.Join(dir, "conns.json"), HeapProfiles: filepath.Join(dir, "heap"),
	}
	res := soundConnsRun(t, cfg)
	k := res.Checks
	if k.Logins != 2000 || k.FailedLogins != 0 || k.OpenClientConns != 2000 || k.Kicks != 0 || k.Drops != 0 || k.ServerCloses != 0 || k.LoginConflicts != 0 {
		t.Errorf("checks %+v: want 2,000 logins, all open, no kick, drop, close or conflict", k)
	}
	if k.DevicesChecked == 0 {
		t.Error("no device lists checked")
	}
	// Points: the start, 2 steps; phase b's start, 2 steps.
	if len(res.Points) != 6 {
		t.Fatalf("%d points, want 6", len(res.Points))
	}
	for _, p := range res.Points {
		if len(p.Servers) != 2 || p.Kernel.SocketSlab <= 0 || p.Kernel.Slab <= 0 || p.Kernel.TCPInUse <= 0 {
			t.Errorf("point %s/%d: %d nodes, kernel %+v", p.Phase, p.Step, len(p.Servers), p.Kernel)
		}
		for i, s := range p.Servers {
			if s.Process.RSS <= 0 || s.Process.RSSAnon <= 0 || s.Runtime.HeapInuse <= 0 || s.Runtime.HeapAlloc <= 0 ||
				s.Runtime.StackInuse <= 0 || s.Runtime.Goroutines <= 0 || s.Runtime.NumGC < 2 {
				t.Errorf("point %s/%d node %d: %+v", p.Phase, p.Step, i, s)
			}
		}
	}
	last := res.Points[len(res.Points)-1]
	if last.Conns != 2000 || last.Servers[0].Conns != 1000 || last.Servers[1].OnlineUsers != 600 {
		t.Errorf("last point: %d conns, node 0 %d, node 1 %d online users; want 2,000, 1,000, 600",
			last.Conns, last.Servers[0].Conns, last.Servers[1].OnlineUsers)
	}
	if len(res.Phases) != 2 {
		t.Fatalf("%d phases, want 2", len(res.Phases))
	}
	for _, ph := range res.Phases {
		// Measured, not judged: only that each phase grew the nodes.
		if ph.Mean.RSS <= 0 || ph.Mean.HeapAlloc <= 0 || len(ph.PerServer) != 2 || ph.ToPerServer-ph.FromPerServer <= 0 {
			t.Errorf("phase %s: %+v", ph.Phase, ph)
		}
	}

	// runConns leaves the JSON to connsMain: write it the same way.
	if err := writeJSONFile(cfg.JSONPath, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	var back ConnsResult
	if err := json.Unmarshal(b, &back); err != nil || len(back.Points) != 6 || len(back.Phases) != 2 {
		t.Errorf("JSON: %d points, %d phases, %v", len(back.Points), len(back.Phases), err)
	}
	for _, name := range []string{"start", "after-a", "after-b"} {
		if st, err := os.Stat(filepath.Join(cfg.HeapProfiles, "heap-"+name+".pb.gz")); err != nil || st.Size() == 0 {
			t.Errorf("heap profile %s: %v", name, err)
		}
	}
}

// TestConnsReusePort is the CI-sized -reuse-port run: 2 node processes
// of one cluster on one shared WebSocket port, 600 new users and 400
// second devices. The kernel places the connections: the run must be
// sound, both nodes must have got some, and the whole-server figure must
// be measured (not judged).
func TestConnsReusePort(t *testing.T) {
	bin := testTandem(t)
	cfg := ConnsConfig{
		Tandem: bin, Users: 600, Second: 400, Servers: 2, Clients: 2, Steps: 2,
		Settle: 300 * time.Millisecond, DataDir: t.TempDir(), ReusePort: true,
	}
	res := soundConnsRun(t, cfg)
	if k := res.Checks; k.Logins != 1000 || k.OpenClientConns != 1000 || k.DevicesChecked == 0 {
		t.Errorf("checks %+v: want 1,000 logins, all open, devices checked", k)
	}
	last := res.Points[len(res.Points)-1]
	a, b := last.Servers[0], last.Servers[1]
	if a.Conns+b.Conns != 1000 || a.Conns == 0 || b.Conns == 0 || a.OnlineUsers+b.OnlineUsers != 600 {
		t.Errorf("last point: node 0 %d sessions, node 1 %d, %d+%d online users; want 1,000 spread over both, 600 users",
			a.Conns, b.Conns, a.OnlineUsers, b.OnlineUsers)
	}
	if !res.Config.ReusePort || len(res.Phases) != 2 {
		t.Fatalf("config %+v, %d phases", res.Config, len(res.Phases))
	}
	for _, ph := range res.Phases {
		if ph.Whole.RSS <= 0 || ph.Whole.HeapAlloc <= 0 {
			t.Errorf("phase %s: whole-server figures %+v", ph.Phase, ph.Whole)
		}
	}
}

// TestConnsKicksFail: under the single kick policy every second device
// kicks the user's first; the run must fail, and say so, rather than
// measure.
func TestConnsKicksFail(t *testing.T) {
	bin := testTandem(t)
	cfg := ConnsConfig{
		Tandem: bin, Users: 40, Second: 20, Servers: 1, Clients: 1, Steps: 1,
		Settle: time.Millisecond, DataDir: t.TempDir(), NodeFlags: []string{"--kick-policy", "single"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t0 := time.Now()
	res, err := runConns(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	// The run fails as soon as a worker reports a kick while the nodes'
	// counts are off; a kick that lands after a step's counts came right
	// (the kicked session not yet closed) is found by the final check, as
	// one of the problems that fail the run (finishRun exits 1).
	if res == nil || len(res.Problems) == 0 {
		t.Fatalf("result %+v, err %v: want the kicks among its problems", res, err)
	}
	if err != nil && !strings.Contains(err.Error(), "kicked") {
		t.Fatalf("err %v, want one about kicks", err)
	}
	if !slices.ContainsFunc(res.Problems, func(p string) bool { return strings.Contains(p, "kick") }) {
		t.Errorf("problems %q: none names the kicks", res.Problems)
	}
	if d := time.Since(t0); d > 40*time.Second {
		t.Errorf("took %s to notice the kicks", d)
	}
}

func TestConnsPlacement(t *testing.T) {
	const users, servers, clients = 103, 4, 3
	perServer := make([]int, servers)
	perPair := map[[2]int]int{}
	for u := range users {
		s, w := serverOf(u, servers), ownerOf(u, servers, clients)
		perServer[s]++
		perPair[[2]int{s, w}]++
	}
	for i, n := range perServer {
		if got := countOn(i, users, servers); got != n {
			t.Errorf("countOn(%d) = %d, want %d", i, got, n)
		}
	}
	if len(perPair) != servers*clients {
		t.Errorf("%d (node, worker) pairs used, want %d: every worker should reach every node", len(perPair), servers*clients)
	}
	if countOn(3, 3, 4) != 0 || countOn(0, 0, 4) != 0 || countOn(0, 1, 4) != 1 {
		t.Error("countOn at the edges")
	}
}

func TestConnsValidate(t *testing.T) {
	ok := ConnsConfig{Users: 40000, Second: 24000, Servers: 4, Clients: 4}
	if err := ok.Validate(20000); err != nil {
		t.Errorf("%+v: %v", ok, err)
	}
	for _, c := range []ConnsConfig{
		{Users: 40000, Second: 24000, Servers: 3, Clients: 4}, // 21,334 per node
		{Users: 40000, Second: 24000, Servers: 4, Clients: 3}, // 21,338 per worker
		{Users: 100, Second: 200},                             // more second devices than users
		{Users: 10, Servers: 4, Steps: 4},                     // a step adds nothing to some node
		{Users: 100, Heartbeat: time.Second},                  // the sessions would time out
	} {
		if err := c.Validate(20000); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestConnsFlags(t *testing.T) {
	c, err := parseConnsFlags([]string{"-users", "100", "-second", "50", "-servers", "2", "-node-flags", "--kick-policy tag  --log-level info"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Users != 100 || c.Second != 50 || c.Servers != 2 || c.Clients != DefaultConnsClients || strings.Join(c.NodeFlags, "|") != "--kick-policy|tag|--log-level|info" {
		t.Errorf("%+v", c)
	}
}

func TestParseSockstat(t *testing.T) {
	in, mem, err := parseSockstat([]byte("sockets: used 13\nTCP: inuse 5 orphan 0 tw 1 alloc 7 mem 73\nUDP: inuse 0 mem 0\n"))
	if err != nil || in != 5 || mem != 73 {
		t.Errorf("inuse %d mem %d err %v", in, mem, err)
	}
}

func TestParseSlabinfo(t *testing.T) {
	const in = `slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
TCPv6                 26     26   2496   13    8 : tunables    0    0    0 : slabdata      2      2      0
TCP                  104    104   2368   13    8 : tunables    0    0    0 : slabdata      8      9      0
filp                 581    672    192   21    1 : tunables    0    0    0 : slabdata     32     32      0
`
	got, err := parseSlabinfo(strings.NewReader(in), []string{"TCP", "filp", "dentry"}, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if got["TCP"] != 9*8*4096 || got["filp"] != 32*4096 || got["dentry"] != 0 || len(got) != 3 {
		t.Errorf("%v", got)
	}
	if _, err := parseSlabinfo(strings.NewReader("TCP 1 2 3\n"), []string{"TCP"}, 4096); err == nil {
		t.Error("no error for a malformed line")
	}
}

func TestParseMetrics(t *testing.T) {
	const in = `# HELP tandem_gateway_sessions Open WebSocket sessions on this node.
# TYPE tandem_gateway_sessions gauge
tandem_gateway_sessions 1000
tandem_gateway_closes_total{code="1000"} 2
tandem_gateway_closes_total{code="4001"} 3
tandem_gateway_sessions_other 7
`
	m, err := parseMetrics(strings.NewReader(in), "tandem_gateway_sessions", "tandem_gateway_closes_total", "absent")
	if err != nil {
		t.Fatal(err)
	}
	if m["tandem_gateway_sessions"] != 1000 || m["tandem_gateway_closes_total"] != 5 || m["absent"] != 0 {
		t.Errorf("%v", m)
	}
}

// TestPhaseSlopesWhole: with connections spread unevenly (as the kernel
// does with -reuse-port), Whole is all the growth over all the
// connections, not the mean of the nodes' own slopes.
func TestPhaseSlopesWhole(t *testing.T) {
	pt := func(step int, conns0, conns1 int, rss0, rss1 int64) connsPoint {
		a, b := serverPoint{Conns: conns0}, serverPoint{Conns: conns1}
		a.Process.RSS, b.Process.RSS = rss0, rss1
		return connsPoint{Phase: phaseNew, Step: step, Conns: conns0 + conns1, Servers: []serverPoint{a, b}}
	}
	got := phaseSlopes([]connsPoint{pt(0, 0, 0, 100e6, 100e6), pt(1, 1000, 3000, 110e6, 110e6)})
	if len(got) != 1 {
		t.Fatalf("%d phases", len(got))
	}
	if w, m := got[0].Whole.RSS, got[0].Mean.RSS; w != 5000 || m < 6666 || m > 6667 {
		t.Errorf("whole %v, mean %v; want 5000 (20 MB ÷ 4,000) and 6,666.7 ((10,000 + 3,333.3) ÷ 2)", w, m)
	}
}

func TestPhaseSlopes(t *testing.T) {
	pt := func(phase string, step, conns int, rss, heap int64, g int) connsPoint {
		s := serverPoint{Conns: conns}
		s.Process.RSS, s.Process.RSSAnon = rss, rss
		s.Runtime.HeapInuse, s.Runtime.HeapAlloc, s.Runtime.Goroutines = heap, heap, g
		return connsPoint{Phase: phase, Step: step, Conns: 2 * conns, Servers: []serverPoint{s, s},
			Kernel: kernelMemory{SocketSlab: int64(conns) * 16384, TCPInUse: int64(2 * conns), SlabCaches: map[string]int64{"TCP": int64(conns) * 9000}}}
	}
	ps := []connsPoint{
		pt(phaseNew, 0, 0, 100<<20, 50<<20, 60),
		pt(phaseNew, 1, 1000, 100<<20+20_000_000, 50<<20+10_000_000, 1060),
		pt(phaseNew, 2, 2000, 100<<20+36_000_000, 50<<20+20_000_000, 2060),
		pt(phaseSecond, 0, 2000, 100<<20+36_000_000, 50<<20+20_000_000, 2060),
		pt(phaseSecond, 1, 3000, 100<<20+46_000_000, 50<<20+22_000_000, 3060),
	}
	got := phaseSlopes(ps)
	if len(got) != 2 {
		t.Fatalf("%d phases", len(got))
	}
	a, b := got[0], got[1]
	if a.Mean.RSS != 18_000 || a.Whole.RSS != 18_000 || a.StepMin.RSS != 16_000 || a.StepMax.RSS != 20_000 || a.Mean.HeapInuse != 10_000 || a.Mean.Goroutines != 1 {
		t.Errorf("phase a: %+v", a)
	}
	if a.FromPerServer != 0 || a.ToPerServer != 2000 || a.FromConns != 0 || a.ToConns != 4000 {
		t.Errorf("phase a range: %+v", a)
	}
	// Kernel figures are per connection of the whole machine (2 per node here).
	if a.Kernel.SocketSlab != 8192 || a.Kernel.TCPInUse != 1 || a.Kernel.Caches["TCP"] != 4500 || a.Kernel.PerSocket != 8192 || !a.Kernel.othersBusy() {
		t.Errorf("phase a kernel: %+v", a.Kernel)
	}
	if b.Mean.RSS != 10_000 || b.Mean.HeapAlloc != 2_000 || b.Min != b.Max {
		t.Errorf("phase b: %+v", b)
	}
}

// The marginal fit leaves the first step's one-off cost in the intercept:
// points on an exact line after it give that line back, and a point off it
// moves the slope the way least squares must.
func TestPhaseSlopesFit(t *testing.T) {
	pt := func(step, conns int, rss int64) connsPoint {
		s := serverPoint{Conns: conns}
		s.Process.RSS = rss
		s.Runtime.HeapInuse = rss / 2
		return connsPoint{Phase: phaseNew, Step: step, Conns: 2 * conns, Servers: []serverPoint{s, s}}
	}
	const fixed, first = 50 << 20, 200 << 20 // per process: at start, and what step 1 adds once
	line := func(step, conns int) connsPoint { return pt(step, conns, fixed+first+int64(conns)*3000) }
	ps := []connsPoint{pt(0, 0, fixed), line(1, 1000), line(2, 2000), line(3, 3000), line(4, 4000)}
	got := phaseSlopes(ps)[0]
	f := got.Fit
	if f == nil {
		t.Fatal("no fit over 4 points after the start")
	}
	// Whole server: 2 processes, so 2 × 3,000 B per 2 connections = 3,000 B per connection.
	if math.Abs(f.Slope.RSS-3000) > 1e-6 || math.Abs(f.Slope.HeapInuse-1500) > 1e-6 {
		t.Errorf("slope %+v, want RSS 3000, heap in use 1500", f.Slope)
	}
	if want := float64(2 * (fixed + first)); math.Abs(f.Intercept.RSS-want) > 1 {
		t.Errorf("intercept %.0f, want %.0f", f.Intercept.RSS, want)
	}
	if f.FromConns != 2000 || f.ToConns != 8000 || f.Points != 4 {
		t.Errorf("range %+v", f)
	}
	if want := 3000 + float64(fixed+first)/1e6; math.Abs(f.PerConnAtMillion-want) > 1e-6 {
		t.Errorf("at 1M per process %.3f, want %.3f", f.PerConnAtMillion, want)
	}
	if got.Whole.RSS <= 3000 {
		t.Errorf("whole %.0f: the first step's one-off cost must show in the whole-phase figure", got.Whole.RSS)
	}
	// The last point 4 MB higher per process: the slope rises by
	// Σ(x−x̄)·Δy ÷ Σ(x−x̄)² = 3,000·8e6 ÷ 2e7 = 1,200 B.
	ps[4].Servers[0].Process.RSS += 4e6
	ps[4].Servers[1].Process.RSS += 4e6
	if f := phaseSlopes(ps)[0].Fit; math.Abs(f.Slope.RSS-4200) > 1e-6 {
		t.Errorf("slope with an outlier %.3f, want 4200", f.Slope.RSS)
	}
	if phaseSlopes(ps[:3])[0].Fit == nil || phaseSlopes(ps[:2])[0].Fit != nil {
		t.Error("a fit needs two points after the start")
	}
}
