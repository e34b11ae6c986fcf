package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestSweepSteps(t *testing.T) {
	for _, tc := range []struct {
		peak float64
		want []sweepStep
	}{
		{8000, []sweepStep{{25, 2000}, {50, 4000}, {75, 6000}, {100, 8000}}},
		{5470.5, []sweepStep{{25, 1368}, {50, 2735}, {75, 4103}, {100, 5471}}},
		{3, []sweepStep{{25, 1}, {50, 2}, {75, 2}, {100, 3}}},
		{0.4, []sweepStep{{25, 1}, {50, 1}, {75, 1}, {100, 1}}},
	} {
		if got := sweepSteps(tc.peak); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("peak %g: steps %v, want %v", tc.peak, got, tc.want)
		}
	}
}

// sweepFixture is a measured-peak sweep with made-up figures.
func sweepFixture() *SweepResult {
	run := func(mode string, rate, acked, delivered, ackP50, ackP99, delP50, delP99, slowest float64, lost uint64, ol *OpenLoop) *Result {
		return &Result{
			Config:     RunConfig{Mode: mode, RatePerSecond: rate, Pairs: 10},
			Throughput: Throughput{AckedPerSecond: acked, DeliveredPerSecond: delivered, SlowestSecondPercent: slowest},
			AckLatency: Latency{P50: ackP50, P99: ackP99},
			Delivery:   Latency{P50: delP50, P99: delP99},
			Messages:   Messages{Lost: lost},
			OpenLoop:   ol,
		}
	}
	peak := run("closed loop", 0, 6000, 5990, 40.5, 350.25, 70.1, 500.9, 31.4, 0, nil)
	sr := &SweepResult{Sweep: Sweep{PeakPerSecond: 6000, PeakFrom: "measured", PeakRun: peak}}
	sr.Sweep.Curve = append(sr.Sweep.Curve, curvePoint(peak, 0))
	for i, st := range sweepSteps(6000) {
		f := float64(i + 1)
		r := run("open loop", st.Rate, st.Rate*0.99, st.Rate*0.98, 4*f, 20*f*f, 8*f, 30*f*f, 100-10*f, uint64(i/3),
			&OpenLoop{TargetPerSecond: st.Rate, LateSends: uint64(10 * i), WorstLatenessMs: 2.5 * f})
		sr.Sweep.Steps = append(sr.Sweep.Steps, r)
		sr.Sweep.Curve = append(sr.Sweep.Curve, curvePoint(r, st.Percent))
	}
	sr.Result = sr.Sweep.Steps[len(sr.Sweep.Steps)-1]
	return sr
}

func TestSweepCurveTable(t *testing.T) {
	var b strings.Builder
	sweepFixture().printCurve(&b)
	golden := filepath.Join("testdata", "sweep_curve.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("curve table:\n%s\nwant (%s, -update rewrites it):\n%s", b.String(), golden, want)
	}
}

func TestSweepJSON(t *testing.T) {
	sr := sweepFixture()
	if n := sr.lost(); n != 1 {
		t.Errorf("lost over the sweep %d, want 1", n)
	}
	path := filepath.Join(t.TempDir(), "out", "sweep.json")
	if err := sr.writeJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The top level is the 100 % step, read as a single run's result
	// (what bench/cluster.sh's table does).
	var top Result
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	if top.Config.Mode != "open loop" || top.Config.RatePerSecond != 6000 || top.Throughput.AckedPerSecond != 5940 {
		t.Errorf("top level: config %+v, throughput %+v; want the open-loop step at 6000/s", top.Config, top.Throughput)
	}
	// The whole sweep round-trips under "sweep".
	var back struct {
		Sweep Sweep `json:"sweep"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Sweep, sr.Sweep) {
		t.Errorf("sweep after a JSON round trip:\n%+v\nwant\n%+v", back.Sweep, sr.Sweep)
	}
	// The curve's field names, as bench/README.md lists them.
	var raw struct {
		Sweep struct {
			Curve []map[string]any `json:"curve"`
		} `json:"sweep"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mode", "percent_of_peak", "target_per_second", "acked_per_second", "delivered_per_second",
		"send_to_ack_p50_ms", "send_to_ack_p99_ms", "send_to_deliver_p50_ms", "send_to_deliver_p99_ms",
		"slowest_second_percent", "lost", "late_sends", "worst_lateness_ms"} {
		if _, ok := raw.Sweep.Curve[1][k]; !ok {
			t.Errorf("curve point has no %q: %v", k, raw.Sweep.Curve[1])
		}
	}
}
