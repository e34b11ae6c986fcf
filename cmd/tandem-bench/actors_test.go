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
	"strings"
	"testing"
	"time"
)

// TestActorsStormAndChat is the CI-sized `tandem-bench actors` run: 300
// users with 2 devices each logged in, then 2 s of 1:1 chat at 1 msg/s
// per user. It checks that the run is sound (every login ok and in the
// log, every message acked, pushed to both recipient devices, carbons to
// the sender's other device, and read back from the recipient's log) and
// that the figures exist; it asserts no speed.
func TestActorsStormAndChat(t *testing.T) {
	dir := t.TempDir()
	const users, devices = 300, 2
	var progress strings.Builder
	cfg := ActorsConfig{
		Users: users, Devices: devices, MsgRate: 1, Duration: 2 * time.Second, Ramp: 500 * time.Millisecond,
		DataDir: dir, JSONPath: filepath.Join(dir, "actors.json"), Progress: &progress,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := runActors(ctx, cfg, log)
	if res != nil {
		var out strings.Builder
		res.print(&out)
		t.Log("\n" + progress.String() + "\n" + out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) > 0 {
		t.Errorf("not sound: %q", res.Problems)
	}
	l := res.Logins
	if l.OK != users*devices || l.Failed+l.Kicked != 0 || l.UsersActivated != users || l.Latency.Count != users*devices || l.PerSecond <= 0 {
		t.Errorf("logins %+v", l)
	}
	c := res.Chat
	// 2 s at 300 msgs/s, the first 0.5 s ramping: 525 messages.
	if c.Sent < 500 || c.Acked != c.Sent || c.Refused+c.Unacked+c.Skipped+c.Foreign+c.DuplicatePushes != 0 {
		t.Errorf("chat %+v", c)
	}
	if c.PushesExpected != c.Acked*devices || c.Pushes != c.PushesExpected || c.FullyPushed != c.Acked || c.Carbons != c.Acked*(devices-1) {
		t.Errorf("pushes: %+v", c)
	}
	if c.Ack.Count != c.Acked || c.Push.Count != c.Pushes || c.Ack.P50 <= 0 {
		t.Errorf("latency: ack %+v push %+v", c.Ack, c.Push)
	}
	if lc := res.Ledger; lc == nil || lc.Messages != c.Acked || lc.MessagesMissing != 0 || lc.Logins != users*devices || lc.LoginsMissing != 0 || lc.ReadErrors != 0 {
		t.Errorf("ledger %+v", res.Ledger)
	}
	if res.Memory.HeapAfterLogins == 0 || res.Memory.PerUserBytes <= 0 || len(res.Series) == 0 {
		t.Errorf("memory %+v, %d progress points", res.Memory, len(res.Series))
	}
	if !strings.Contains(progress.String(), "logins/s") {
		t.Errorf("no progress lines: %q", progress.String())
	}
	if code := finishRun(log, &strings.Builder{}, "actors", res, cfg.JSONPath, nil); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	b, err := os.ReadFile(cfg.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	var back ActorsResult
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Chat.Acked != c.Acked || back.Logins.OK != l.OK || back.Ledger == nil {
		t.Errorf("JSON round trip: %+v", back)
	}
}

// TestActorsInterrupted: a cancelled run stops the load, drains what is
// in flight and still reports, sound.
func TestActorsInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Ctrl-C once the progress line shows messages acked.
	progress := cancelWriter(func(line string) {
		if !strings.Contains(line, "msgs/s       0") {
			cancel()
		}
	})
	cfg := ActorsConfig{Users: 100, MsgRate: 2, Duration: time.Minute, DataDir: t.TempDir(), Progress: progress}
	res, err := runActors(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Chat.Sent == 0 || res.Chat.Acked != res.Chat.Sent || len(res.Problems) > 0 {
		t.Errorf("interrupted %v, chat %+v, problems %q", res.Interrupted, res.Chat, res.Problems)
	}
	if res.Chat.Seconds > 30 {
		t.Errorf("chat ran %.1f s after the cancel", res.Chat.Seconds)
	}
}

// cancelWriter calls f with each write.
type cancelWriter func(string)

func (w cancelWriter) Write(b []byte) (int, error) {
	w(string(b))
	return len(b), nil
}
