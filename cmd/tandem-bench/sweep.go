package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"text/tabwriter"
)

// The latency-throughput curve (-sweep): a closed-loop run finds the peak
// (acked msgs/s), unless -peak gives it; then one open-loop run at each of
// sweepPercents of it. Every run is on the same target with fresh users
// (its own run ID), its own warm-up and its own measured window.

// sweepPercents are the open-loop steps, in percent of the peak.
var sweepPercents = []int{25, 50, 75, 100}

// sweepStep is one open-loop run of a sweep.
type sweepStep struct {
	Percent int
	Rate    float64 // msgs/s over all senders
}

// sweepSteps are the steps for a peak of msgs/s: sweepPercents of it,
// rounded to whole msgs/s, at least 1.
func sweepSteps(peak float64) []sweepStep {
	out := make([]sweepStep, len(sweepPercents))
	for i, p := range sweepPercents {
		out[i] = sweepStep{Percent: p, Rate: max(1, math.Round(peak*float64(p)/100))}
	}
	return out
}

// SweepResult is a sweep's outcome. Its JSON has the 100 % step's Result
// at the top level, so that whatever reads a single run's JSON (such as
// bench/cluster.sh's table) reads that step, and the whole sweep under
// "sweep".
type SweepResult struct {
	*Result
	Sweep Sweep `json:"sweep"`
}

// Sweep is the curve and every run behind it.
type Sweep struct {
	PeakPerSecond float64 `json:"peak_per_second"`
	// PeakFrom: "measured" (the closed-loop PeakRun) or "given" (-peak).
	PeakFrom string       `json:"peak_from"`
	Curve    []CurvePoint `json:"curve"`
	PeakRun  *Result      `json:"peak_run,omitempty"`
	Steps    []*Result    `json:"steps"` // one per open-loop step, in Curve's order
}

// CurvePoint is one row of the curve: the closed-loop peak run (Percent
// 0, Mode "closed loop") or an open-loop step.
type CurvePoint struct {
	Mode                 string  `json:"mode"`
	Percent              int     `json:"percent_of_peak,omitempty"`
	TargetPerSecond      float64 `json:"target_per_second,omitempty"`
	AckedPerSecond       float64 `json:"acked_per_second"`
	DeliveredPerSecond   float64 `json:"delivered_per_second"`
	AckP50               float64 `json:"send_to_ack_p50_ms"`
	AckP99               float64 `json:"send_to_ack_p99_ms"`
	DeliverP50           float64 `json:"send_to_deliver_p50_ms"`
	DeliverP99           float64 `json:"send_to_deliver_p99_ms"`
	SlowestSecondPercent float64 `json:"slowest_second_percent"`
	Lost                 uint64  `json:"lost"`
	LateSends            uint64  `json:"late_sends"`
	WorstLatenessMs      float64 `json:"worst_lateness_ms"`
}

// curvePoint is r's row; percent is its step (0 for the peak run).
func curvePoint(r *Result, percent int) CurvePoint {
	pt := CurvePoint{
		Mode:                 r.Config.Mode,
		Percent:              percent,
		TargetPerSecond:      r.Config.RatePerSecond,
		AckedPerSecond:       r.Throughput.AckedPerSecond,
		DeliveredPerSecond:   r.Throughput.DeliveredPerSecond,
		AckP50:               r.AckLatency.P50,
		AckP99:               r.AckLatency.P99,
		DeliverP50:           r.Delivery.P50,
		DeliverP99:           r.Delivery.P99,
		SlowestSecondPercent: r.Throughput.SlowestSecondPercent,
		Lost:                 r.Messages.Lost,
	}
	if o := r.OpenLoop; o != nil {
		pt.LateSends, pt.WorstLatenessMs = o.LateSends, o.WorstLatenessMs
	}
	return pt
}

// runSweep runs the sweep of cfg on one target (started here, stopped
// before it returns) and writes each run's report to out as it ends.
func runSweep(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) (*SweepResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Sweep {
		return nil, errors.New("runSweep: not a sweep")
	}
	t, err := startTarget(ctx, cfg.withDefaults(), log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := t.stop(); err != nil {
			log.Warn("stopping the target", "err", err)
		}
	}()
	// Each run's own defaults: the window differs between the closed
	// and the open loop unless -window was given.
	one := cfg
	one.Sweep, one.Peak = false, 0

	sr := &SweepResult{Sweep: Sweep{PeakPerSecond: cfg.Peak, PeakFrom: "given"}}
	if cfg.Peak == 0 {
		fmt.Fprintf(out, "=== sweep: the peak, closed loop\n")
		res, err := runOn(ctx, one, log, t)
		if err != nil {
			return nil, fmt.Errorf("the closed-loop peak run: %w", err)
		}
		res.print(out)
		if res.Throughput.AckedPerSecond < 1 {
			return nil, fmt.Errorf("the closed-loop peak run acked %.1f msgs/s: nothing to sweep", res.Throughput.AckedPerSecond)
		}
		sr.Sweep.PeakPerSecond, sr.Sweep.PeakFrom, sr.Sweep.PeakRun = res.Throughput.AckedPerSecond, "measured", res
		sr.Sweep.Curve = append(sr.Sweep.Curve, curvePoint(res, 0))
	}
	for i, st := range sweepSteps(sr.Sweep.PeakPerSecond) {
		fmt.Fprintf(out, "\n=== sweep step %d of %d: open loop at %d %% of the peak (%.0f msgs/s)\n",
			i+1, len(sweepPercents), st.Percent, st.Rate)
		c := one
		c.Rate = st.Rate
		res, err := runOn(ctx, c, log, t)
		if err != nil {
			return nil, fmt.Errorf("sweep step %d %%: %w", st.Percent, err)
		}
		res.print(out)
		sr.Sweep.Steps = append(sr.Sweep.Steps, res)
		sr.Sweep.Curve = append(sr.Sweep.Curve, curvePoint(res, st.Percent))
	}
	sr.Result = sr.Sweep.Steps[len(sr.Sweep.Steps)-1]
	return sr, nil
}

// lost is the messages lost over every run of the sweep.
func (sr *SweepResult) lost() uint64 {
	var n uint64
	for _, pt := range sr.Sweep.Curve {
		n += pt.Lost
	}
	return n
}

// printCurve writes the curve as one table.
func (sr *SweepResult) printCurve(w io.Writer) {
	s := sr.Sweep
	fmt.Fprintf(w, "latency-throughput curve: peak %.0f msgs/s (%s); latencies in ms, open loop from each message's scheduled time\n", s.PeakPerSecond, s.PeakFrom)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\ttarget/s\tacked/s\tdelivered/s\tack p50\tack p99\tdeliver p50\tdeliver p99\tslowest s, % of mean\tlate sends\tworst late ms\tlost\t")
	for _, pt := range s.Curve {
		run, target, late, worst := "closed loop", "–", "–", "–"
		if pt.Mode == "open loop" {
			run = fmt.Sprintf("open %d %%", pt.Percent)
			target = fmt.Sprintf("%.0f", pt.TargetPerSecond)
			late, worst = fmt.Sprint(pt.LateSends), fmt.Sprintf("%.1f", pt.WorstLatenessMs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%s\t%s\t%d\t\n",
			run, target, pt.AckedPerSecond, pt.DeliveredPerSecond, pt.AckP50, pt.AckP99,
			pt.DeliverP50, pt.DeliverP99, pt.SlowestSecondPercent, late, worst, pt.Lost)
	}
	tw.Flush()
}

// writeJSON writes sr to path, creating its directory.
func (sr *SweepResult) writeJSON(path string) error {
	return writeJSONFile(path, sr)
}
