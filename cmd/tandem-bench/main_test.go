//go:build !race

// The run starts an in-process node with its protoactor cluster member,
// which has data races of its own: this file stays out of the race run.

package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRunInProcess(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Pairs:    2,
		Window:   8,
		Warmup:   200 * time.Millisecond,
		Duration: time.Second,
		Size:     64,
		DataDir:  dir,
		JSONPath: filepath.Join(dir, "out", "result.json"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := run(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res.print(&out)
	t.Log("\n" + out.String())

	m := res.Messages
	if res.Throughput.Acked == 0 || m.Acked == 0 {
		t.Errorf("nothing acked: throughput %+v, messages %+v", res.Throughput, m)
	}
	if m.Delivered != m.Acked || m.Lost != 0 || m.Late != 0 || m.Missing != 0 || m.Unacked != 0 {
		t.Errorf("measured messages %+v: want every one acked and delivered", m)
	}
	if res.AckLatency.Count != m.Acked || res.Delivery.Count != m.Delivered {
		t.Errorf("latency counts %d/%d, want %d/%d", res.AckLatency.Count, res.Delivery.Count, m.Acked, m.Delivered)
	}
	if p := res.Problems; p.SendErrors != 0 || p.DuplicateDeliveries != 0 {
		t.Errorf("problems: %+v", p)
	}

	if err := res.writeJSON(cfg.JSONPath); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("the JSON result does not parse: %v", err)
	}
	if back.Config.Pairs != 2 || back.Config.Target != "in-process" || !reflect.DeepEqual(back.Messages, m) {
		t.Errorf("JSON round trip: config %+v, messages %+v; want pairs 2 in-process, %+v", back.Config, back.Messages, m)
	}

	// The node's data dir is gone; only the JSON output remains.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "out" {
			t.Errorf("left behind in the data dir's parent: %s", e.Name())
		}
	}
}

// TestRunInProcessOpenLoop: 200 msgs/s over 2 senders for a 1 s window is
// exactly 200 scheduled messages; every one is acked and delivered, and
// the achieved rate is near the target (a wide band: the machine may be
// busy).
func TestRunInProcessOpenLoop(t *testing.T) {
	cfg := Config{
		Pairs:    2,
		Rate:     200,
		Warmup:   200 * time.Millisecond,
		Duration: time.Second,
		Size:     64,
		DataDir:  t.TempDir(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := run(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res.print(&out)
	t.Log("\n" + out.String())

	m, o := res.Messages, res.OpenLoop
	if res.Config.Mode != "open loop" || res.Config.RatePerSecond != 200 || res.Config.Window != DefaultOpenWindow || o == nil {
		t.Fatalf("config %+v, open loop %+v: want an open loop at 200/s, window %d", res.Config, o, DefaultOpenWindow)
	}
	if m.Sent != 200 || o.Scheduled != 200 {
		t.Errorf("sent %d, scheduled %d in the window; want 200", m.Sent, o.Scheduled)
	}
	if m.Acked != m.Sent || m.Delivered != m.Acked || m.Lost != 0 || m.Unacked != 0 {
		t.Errorf("measured messages %+v: want every one acked and delivered", m)
	}
	if a := res.Throughput.AckedPerSecond; a < 100 || a > 300 {
		t.Errorf("acked %.0f msgs/s, want about the target 200", a)
	}
	if o.AchievedPercent != 100*res.Throughput.AckedPerSecond/200 || o.LateSends > o.Scheduled {
		t.Errorf("open loop %+v", o)
	}
	if res.AckLatency.Count != m.Acked || res.Delivery.Count != m.Delivered {
		t.Errorf("latency counts %d/%d, want %d/%d", res.AckLatency.Count, res.Delivery.Count, m.Acked, m.Delivered)
	}
	if s := res.Throughput.SlowestSecondPercent; s <= 0 || s > 100 {
		t.Errorf("slowest second %.1f %% of the mean, want in (0, 100]", s)
	}
	if p := res.Problems; p.SendErrors != 0 || p.DuplicateDeliveries != 0 {
		t.Errorf("problems: %+v", p)
	}
}

// TestSweepInProcess: a sweep with a given peak runs its four open-loop
// steps on one in-process node, each with fresh users, and loses nothing.
func TestSweepInProcess(t *testing.T) {
	cfg := Config{
		Pairs:    2,
		Sweep:    true,
		Peak:     400,
		Warmup:   100 * time.Millisecond,
		Duration: 400 * time.Millisecond,
		Size:     64,
		DataDir:  t.TempDir(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var out strings.Builder
	sr, err := runSweep(ctx, cfg, log, &out)
	if err != nil {
		t.Fatal(err)
	}
	sr.printCurve(&out)
	t.Log("\n" + out.String())

	s := sr.Sweep
	if s.PeakFrom != "given" || s.PeakRun != nil || len(s.Steps) != 4 || len(s.Curve) != 4 || sr.Result != s.Steps[3] {
		t.Fatalf("sweep %+v: want the given peak and four steps, the last one on top", s)
	}
	runIDs := map[string]bool{}
	for i, r := range s.Steps {
		rate := 100 * float64(i+1)
		m := r.Messages
		if r.Config.RatePerSecond != rate || s.Curve[i].TargetPerSecond != rate || s.Curve[i].Percent != 25*(i+1) {
			t.Errorf("step %d: rate %g, curve %+v; want %g", i, r.Config.RatePerSecond, s.Curve[i], rate)
		}
		if want := rate * cfg.Duration.Seconds(); float64(m.Sent) < want-2 || float64(m.Sent) > want+2 {
			t.Errorf("step %d: sent %d in the window, want %.0f", i, m.Sent, want)
		}
		if m.Acked != m.Sent || m.Delivered != m.Acked || m.Lost != 0 {
			t.Errorf("step %d: measured messages %+v: want every one acked and delivered", i, m)
		}
		if r.Config.WSURL != s.Steps[0].Config.WSURL || runIDs[r.Config.RunID] {
			t.Errorf("step %d: node %s, run %s; want the same node, a new run", i, r.Config.WSURL, r.Config.RunID)
		}
		runIDs[r.Config.RunID] = true
	}
	if sr.lost() != 0 {
		t.Errorf("lost %d", sr.lost())
	}
}
