package main

import (
	"cmp"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"strings"
)

// The HTML report of `tandem-bench actors -html FILE`: one self-contained
// page (no script, no external file) with the run's summary, the
// throughput and the users online over time, the p99 over time, and the
// latency percentiles, drawn as inline SVG from ActorsResult.

// chart is one SVG line chart: lines over a shared time axis.
type chart struct {
	Title  string
	Unit   string
	W, H   int
	Lines  []chartLine
	YMax   float64
	XMax   float64
	YTicks []tick
	XTicks []tick
	XAxisY int // baseline of the time axis' labels
	// Marks: vertical lines at moments of the run (the kill, the wave).
	Marks []chartMark
}

type chartMark struct {
	X      float64 // pixels
	Label  string
	Color  string
	LabelY int
}

// mark adds a vertical line at t seconds (if on the chart).
func (c *chart) mark(t float64, label, color string) {
	if t <= 0 || t > c.XMax {
		return
	}
	c.Marks = append(c.Marks, chartMark{X: float64(plotL) + c.plotW()*t/c.XMax, Label: label, Color: color, LabelY: plotT + 12 + 14*len(c.Marks)})
}

type chartLine struct {
	Name   string
	Color  string
	Points string // SVG polyline points, in the plot's pixels
	LabelY int    // where its name goes in the legend
}

type tick struct {
	Pos   float64 // pixels along the axis
	Label string
}

const (
	chartW, chartH   = 760, 260
	plotL, plotR     = 60, 20 // margins in pixels
	plotT, plotB     = 20, 30
	chartTicks       = 5
	percentileChartH = 220
)

func (c *chart) plotW() float64 { return float64(c.W - plotL - plotR) }
func (c *chart) plotH() float64 { return float64(c.H - plotT - plotB) }

// niceMax rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceMax(v float64) float64 {
	if v <= 1 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// newChart lays out series (name, color, values per second at times ts).
func newChart(title, unit string, ts []float64, series ...struct {
	name, color string
	vals        []float64
}) chart {
	c := chart{Title: title, Unit: unit, W: chartW, H: chartH, XAxisY: chartH - plotB + 16}
	ymax, xmax := 0.0, 0.0
	for _, t := range ts {
		xmax = max(xmax, t)
	}
	for _, s := range series {
		for _, v := range s.vals {
			ymax = max(ymax, v)
		}
	}
	c.YMax, c.XMax = niceMax(ymax), niceMax(xmax)
	for i := 0; i <= chartTicks; i++ {
		f := float64(i) / chartTicks
		c.YTicks = append(c.YTicks, tick{Pos: float64(plotT) + c.plotH()*(1-f), Label: fmtTick(c.YMax * f)})
		c.XTicks = append(c.XTicks, tick{Pos: float64(plotL) + c.plotW()*f, Label: fmtTick(c.XMax*f) + " s"})
	}
	for _, s := range series {
		var b strings.Builder
		for i, v := range s.vals {
			if i >= len(ts) {
				break
			}
			x := float64(plotL) + c.plotW()*ts[i]/c.XMax
			y := float64(plotT) + c.plotH()*(1-v/c.YMax)
			fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
		}
		c.Lines = append(c.Lines, chartLine{Name: s.name, Color: s.color, Points: strings.TrimSpace(b.String()), LabelY: plotT + 12 + 14*len(c.Lines)})
	}
	return c
}

func fmtTick(v float64) string {
	switch {
	case v >= 1000 && math.Mod(v, 1000) == 0:
		return fmt.Sprintf("%gk", v/1000)
	case v == math.Trunc(v):
		return fmt.Sprintf("%g", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

// percentileBar is one latency's percentiles, drawn as a row of bars.
type percentileBar struct {
	Name  string
	Count uint64
	Bars  []bar
}

type bar struct {
	Label string // p50, p90, p99, max
	Ms    float64
	X, W  float64 // pixels
	Y     float64
}

// htmlReport is what the template shows.
type htmlReport struct {
	R           *ActorsResult
	Title       string
	Summary     [][2]string
	Charts      []chart
	Percentiles []percentileBar
	PctW, PctH  int
	PctMaxMs    float64
	Problems    []string
}

func buildHTMLReport(r *ActorsResult) htmlReport {
	h := htmlReport{R: r, Title: "tandem-bench actors", PctW: chartW, PctH: percentileChartH, Problems: r.Problems}
	c := r.Config
	noun := c.loginNoun()
	h.Summary = [][2]string{
		{"scenario", fmt.Sprintf("%s: %d users × %d devices (%s), concurrency %d, login rate %s, chat %g msgs/s per user for %s",
			orDash(c.Scenario), c.Users, c.Devices, strings.Join(c.Platforms, ","), c.Concurrency, rateOrMax(c.LoginRate), c.MsgRate, c.Duration)},
		{"machine", fmt.Sprintf("%d CPUs, GOMAXPROCS %d, load %.2f before, %.2f after, %s, transparent huge pages %s", r.Machine.CPUs, r.Machine.GOMAXPROCS, r.Machine.LoadBefore[0], r.Machine.LoadAfter[0], r.Machine.GoVersion, cmp.Or(r.Machine.THP, "unknown"))},
		{noun + "s", fmt.Sprintf("%d of %d ok, %d failed, %d kicked; %.0f/s over %.1f s (first tenth %.0f/s, last tenth %.0f/s)",
			r.Logins.OK, r.Logins.Devices, r.Logins.Failed, r.Logins.Kicked, r.Logins.PerSecond, r.Logins.Seconds, r.Logins.FirstTenthPerSecond, r.Logins.LastTenthPerSecond)},
		{"users activated", fmt.Sprint(r.Logins.UsersActivated)},
		{"heap live after GC", r.Memory.text(noun)},
	}
	if mix := c.mixString(); mix != "" {
		h.Summary = append(h.Summary, [2]string{"mix", mix})
	}
	if r.Chat.Sent > 0 {
		h.Summary = append(h.Summary, [2]string{"chat", fmt.Sprintf("%d sent, %d acked, %d refused, %d unacked; %.0f acked/s; pushes %d of %d",
			r.Chat.Sent, r.Chat.Acked, r.Chat.Refused, r.Chat.Unacked, r.Chat.AckedPerSecond, r.Chat.Pushes, r.Chat.PushesExpected)})
	}
	for _, k := range r.Kinds {
		if k.Sent+k.Skipped == 0 {
			continue
		}
		h.Summary = append(h.Summary, [2]string{k.Kind, fmt.Sprintf("%d sent, %d acked, %d skipped, %d refused, %d unacked; %.1f acked/s; ack p50 %.2f, p99 %.2f, max %.2f ms",
			k.Sent, k.Acked, k.Skipped, k.Refused, k.Unacked, k.AckedPerSecond, k.Ack.P50, k.Ack.P99, k.Ack.Max)})
	}
	g := r.Groups
	if g.Groups > 0 {
		h.Summary = append(h.Summary, [2]string{"groups", fmt.Sprintf("%d of %s members (%d memberships), created in %.1f s; CREATED pushed to %d of %d member devices",
			g.Groups, joinInts(g.Sizes), g.Memberships, g.CreateSeconds, g.EventPushes, g.EventPushesExpected)})
	}
	if g.MemberEntries > 0 {
		h.Summary = append(h.Summary, [2]string{"group fan-out", fmt.Sprintf("%d member-log entries, %.0f/s; member pushes %d of %d; send → last member push p50 %.2f, p99 %.2f, max %.2f ms",
			g.MemberEntries, g.MemberEntriesPerSecond, g.MemberPushes, g.MemberPushesExpected, g.LastMemberPush.P50, g.LastMemberPush.P99, g.LastMemberPush.Max)})
	}
	if l := r.Ledger; l != nil {
		h.Summary = append(h.Summary, [2]string{"ack ledger (store)", l.verdict()})
	} else {
		h.Summary = append(h.Summary, [2]string{"ack ledger (store)", "not checked (-no-verify)"})
	}

	n := len(r.Series)
	ts := make([]float64, n)
	col := func(f func(p ActorsPoint) float64) []float64 {
		v := make([]float64, n)
		for i, p := range r.Series {
			v[i] = f(p)
		}
		return v
	}
	for i, p := range r.Series {
		ts[i] = p.Seconds
	}
	type s = struct {
		name, color string
		vals        []float64
	}
	mixed, logouts := false, false // more than 1:1 sends; logouts among them
	for _, k := range r.Kinds {
		mixed = mixed || (k.Kind != kindNames[kindDirect] && k.Sent > 0)
		logouts = logouts || (k.Kind == kindNames[kindLogout] && k.Sent > 0)
	}
	thr := []s{
		{r.Config.loginNoun() + "s/s", "#1f77b4", col(func(p ActorsPoint) float64 { return float64(p.LoginsPerSecond) })},
		{"acked msgs/s", "#d62728", col(func(p ActorsPoint) float64 { return float64(p.MsgsPerSecond) })},
	}
	if mixed {
		thr = append(thr,
			s{"1:1/s", "#ff7f0e", col(func(p ActorsPoint) float64 { return float64(p.DirectPerSecond) })},
			s{"group/s", "#9467bd", col(func(p ActorsPoint) float64 { return float64(p.GroupPerSecond) })},
			s{"reads/s", "#8c564b", col(func(p ActorsPoint) float64 { return float64(p.ReadsPerSecond) })},
			s{"recalls/s", "#e377c2", col(func(p ActorsPoint) float64 { return float64(p.RecallsPerSecond) })})
	}
	if logouts {
		thr = append(thr, s{"logouts/s", "#17becf", col(func(p ActorsPoint) float64 { return float64(p.LogoutsPerSecond) })})
	}
	p99 := []s{
		{"login p99", "#1f77b4", col(func(p ActorsPoint) float64 { return p.LoginP99Ms })},
		{"send→ack p99", "#d62728", col(func(p ActorsPoint) float64 { return p.AckP99Ms })},
	}
	if g.LastMemberPush.Count > 0 {
		p99 = append(p99, s{"group send→last member push p99", "#9467bd", col(func(p ActorsPoint) float64 { return p.FanoutP99Ms })})
	}
	h.Charts = []chart{
		newChart("Throughput, per second", "per second", ts, thr...),
		newChart("Users online", "users", ts, s{"users activated", "#2ca02c", col(func(p ActorsPoint) float64 { return float64(p.Users) })}),
		newChart("p99 latency, per second", "ms", ts, p99...),
	}
	if g.MemberEntries > 0 {
		h.Charts = append(h.Charts, newChart("Group fan-out: member-log entries per second", "per second", ts,
			s{"member-log entries/s", "#9467bd", col(func(p ActorsPoint) float64 { return float64(p.MemberEntriesPerSecond) })}))
	}
	if w := r.Wave; w != nil {
		h.Summary = append(h.Summary, [2]string{"reconnect wave", w.summary()})
		if w.Kicked > 0 {
			h.Charts = append(h.Charts, newChart("Reconnect wave: devices kicked (may reconnect) and back online", "devices", ts,
				s{"kicked", "#d62728", col(func(p ActorsPoint) float64 { return float64(p.Kicked) })},
				s{"back online", "#2ca02c", col(func(p ActorsPoint) float64 { return float64(p.BackOnline) })}))
		}
		for i := range h.Charts {
			c := &h.Charts[i]
			if w.KilledPID != 0 {
				c.mark(w.KillAtSeconds, fmt.Sprintf("kill PID %d", w.KilledPID), "#000")
			}
			if w.Kicked > 0 {
				c.mark(w.FirstKickSeconds, "first kick", "#d62728")
				c.mark(w.LastBackSeconds, "last back online", "#2ca02c")
			}
		}
	}

	lat := []struct {
		name string
		l    Latency
	}{{r.Config.loginNoun(), r.Logins.Latency}, {"send→ack", r.Chat.Ack}, {"send→push", r.Chat.Push}}
	if mixed {
		for _, k := range r.Kinds {
			lat = append(lat, struct {
				name string
				l    Latency
			}{k.Kind + " →ack", k.Ack})
		}
	}
	lat = append(lat, []struct {
		name string
		l    Latency
	}{{"group→member push", g.MemberPush}, {"group→last member", g.LastMemberPush}}...)
	for _, x := range lat {
		if x.l.Count > 0 {
			h.PctMaxMs = max(h.PctMaxMs, x.l.Max)
		}
	}
	h.PctMaxMs = niceMax(h.PctMaxMs)
	const rowH, barH = 60.0, 11.0
	row := 0
	for _, x := range lat {
		if x.l.Count == 0 {
			continue
		}
		i := row
		row++
		pb := percentileBar{Name: x.name, Count: x.l.Count}
		for j, p := range []struct {
			label string
			ms    float64
		}{{"p50", x.l.P50}, {"p90", x.l.P90}, {"p99", x.l.P99}, {"max", x.l.Max}} {
			pb.Bars = append(pb.Bars, bar{Label: p.label, Ms: p.ms, X: 150,
				W: float64(chartW-150-110) * p.ms / h.PctMaxMs, Y: float64(plotT) + rowH*float64(i) + barH*float64(j)})
		}
		h.Percentiles = append(h.Percentiles, pb)
	}
	h.PctH = max(percentileChartH, plotT+int(rowH)*row+10)
	return h
}

func orDash(s string) string {
	if s == "" {
		return "custom"
	}
	return s
}

func rateOrMax(r float64) string {
	if r == 0 {
		return "as fast as the concurrency allows"
	}
	return fmt.Sprintf("%g/s", r)
}

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"f1":  func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"add": func(a, b float64) float64 { return a + b },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:820px}
table{border-collapse:collapse}td{padding:2px 10px 2px 0;vertical-align:top}td:first-child{color:#666;white-space:nowrap}
svg text{font-size:11px;fill:#444}.bad{color:#b00;font-weight:bold}h2{font-size:1.1em;margin-top:1.6em}
</style></head><body>
<h1>{{.Title}}</h1>
{{if .Problems}}<p class="bad">NOT SOUND: {{range .Problems}}{{.}}; {{end}}</p>{{else}}<p>Sound run: every check passed.</p>{{end}}
<table>{{range .Summary}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>{{end}}</table>
{{range .Charts}}<h2>{{.Title}}</h2>
<svg width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Title}}">
{{range .YTicks}}<line x1="60" x2="740" y1="{{f1 .Pos}}" y2="{{f1 .Pos}}" stroke="#eee"/><text x="54" y="{{f1 .Pos}}" text-anchor="end" dy="4">{{.Label}}</text>
{{end}}{{$c := .}}{{range .XTicks}}<text x="{{f1 .Pos}}" y="{{$c.XAxisY}}" text-anchor="middle">{{.Label}}</text>
{{end}}{{range .Lines}}<polyline fill="none" stroke="{{.Color}}" stroke-width="1.5" points="{{.Points}}"/>
<text x="70" y="{{.LabelY}}" style="fill:{{.Color}}">{{.Name}}</text>
{{end}}{{range .Marks}}<line class="mark" x1="{{f1 .X}}" x2="{{f1 .X}}" y1="20" y2="230" stroke="{{.Color}}" stroke-dasharray="4,3"/><text x="{{f1 (add .X 3)}}" y="{{.LabelY}}" style="fill:{{.Color}}">{{.Label}}</text>
{{end}}</svg>{{end}}
{{if .Percentiles}}<h2>Latency percentiles (ms)</h2>
<svg width="{{.PctW}}" height="{{.PctH}}" viewBox="0 0 {{.PctW}} {{.PctH}}" role="img" aria-label="latency percentiles">
{{range .Percentiles}}{{$p := .}}{{range $j, $b := .Bars}}{{if eq $j 0}}<text x="0" y="{{f1 (add $b.Y 9)}}">{{$p.Name}} ({{$p.Count}})</text>{{end}}
<text x="144" y="{{f1 (add $b.Y 9)}}" text-anchor="end">{{$b.Label}}</text><rect x="{{f1 $b.X}}" y="{{f1 $b.Y}}" width="{{f1 $b.W}}" height="9" fill="#1f77b4"/><text x="{{f1 (add $b.X (add $b.W 4))}}" y="{{f1 (add $b.Y 9)}}">{{f1 $b.Ms}}</text>
{{end}}{{end}}</svg>{{end}}
</body></html>
`))

// writeActorsHTML writes r's report to path.
func writeActorsHTML(path string, r *ActorsResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := renderActorsHTML(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func renderActorsHTML(w io.Writer, r *ActorsResult) error {
	return htmlTemplate.Execute(w, buildHTMLReport(r))
}
