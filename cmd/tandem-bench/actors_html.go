package main

import (
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
	h.Summary = [][2]string{
		{"scenario", fmt.Sprintf("%s: %d users × %d devices (%s), concurrency %d, login rate %s, chat %g msgs/s per user for %s",
			orDash(c.Scenario), c.Users, c.Devices, strings.Join(c.Platforms, ","), c.Concurrency, rateOrMax(c.LoginRate), c.MsgRate, c.Duration)},
		{"machine", fmt.Sprintf("%d CPUs, load %.2f before, %.2f after, %s", r.Machine.CPUs, r.Machine.LoadBefore[0], r.Machine.LoadAfter[0], r.Machine.GoVersion)},
		{"logins", fmt.Sprintf("%d of %d ok, %d failed, %d kicked; %.0f/s over %.1f s (first tenth %.0f/s, last tenth %.0f/s)",
			r.Logins.OK, r.Logins.Devices, r.Logins.Failed, r.Logins.Kicked, r.Logins.PerSecond, r.Logins.Seconds, r.Logins.FirstTenthPerSecond, r.Logins.LastTenthPerSecond)},
		{"users activated", fmt.Sprint(r.Logins.UsersActivated)},
		{"heap live after GC", fmt.Sprintf("%.1f MiB before, %.1f MiB after the logins: %.0f B per user",
			float64(r.Memory.HeapBaseline)/(1<<20), float64(r.Memory.HeapAfterLogins)/(1<<20), r.Memory.PerUserBytes)},
	}
	if r.Chat.Sent > 0 {
		h.Summary = append(h.Summary, [2]string{"chat", fmt.Sprintf("%d sent, %d acked, %d refused, %d unacked; %.0f acked/s; pushes %d of %d",
			r.Chat.Sent, r.Chat.Acked, r.Chat.Refused, r.Chat.Unacked, r.Chat.AckedPerSecond, r.Chat.Pushes, r.Chat.PushesExpected)})
	}
	if l := r.Ledger; l != nil {
		h.Summary = append(h.Summary, [2]string{"ack ledger (store)", fmt.Sprintf("%d of %d acked messages missing, %d of %d logins missing, %d read errors",
			l.MessagesMissing, l.Messages, l.LoginsMissing, l.Logins, l.ReadErrors)})
	} else {
		h.Summary = append(h.Summary, [2]string{"ack ledger (store)", "not checked (-no-verify)"})
	}

	ts := make([]float64, len(r.Series))
	logins, msgs, users, loginP99, ackP99 := make([]float64, len(ts)), make([]float64, len(ts)), make([]float64, len(ts)), make([]float64, len(ts)), make([]float64, len(ts))
	for i, p := range r.Series {
		ts[i] = p.Seconds
		logins[i], msgs[i], users[i] = float64(p.LoginsPerSecond), float64(p.MsgsPerSecond), float64(p.Users)
		loginP99[i], ackP99[i] = p.LoginP99Ms, p.AckP99Ms
	}
	type s = struct {
		name, color string
		vals        []float64
	}
	h.Charts = []chart{
		newChart("Throughput, per second", "per second", ts, s{"logins/s", "#1f77b4", logins}, s{"acked msgs/s", "#d62728", msgs}),
		newChart("Users online", "users", ts, s{"users activated", "#2ca02c", users}),
		newChart("p99 latency, per second", "ms", ts, s{"login p99", "#1f77b4", loginP99}, s{"send→ack p99", "#d62728", ackP99}),
	}

	lat := []struct {
		name string
		l    Latency
	}{{"login", r.Logins.Latency}, {"send→ack", r.Chat.Ack}, {"send→push", r.Chat.Push}}
	for _, x := range lat {
		if x.l.Count > 0 {
			h.PctMaxMs = max(h.PctMaxMs, x.l.Max)
		}
	}
	h.PctMaxMs = niceMax(h.PctMaxMs)
	const rowH, barH = 60.0, 11.0
	for i, x := range lat {
		if x.l.Count == 0 {
			continue
		}
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
