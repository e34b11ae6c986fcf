//go:build !race

// The run starts an in-process node with its protoactor cluster member,
// which has data races of its own: this file stays out of the race run.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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
	cfg := ActorsConfig{
		Users: users, Devices: devices, MsgRate: 1, Duration: 2 * time.Second, Ramp: 500 * time.Millisecond,
		DataDir: dir, JSONPath: filepath.Join(dir, "actors.json"),
	}
	res, progress := runLogged(t, cfg, time.Minute)
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
	// 600 sessions are ~1 MiB, less than what an earlier test's remains in
	// this binary may free meanwhile: the figure per user is asserted in
	// TestActorsActivateOnly, with a heap growth far above that; here that
	// it follows from what was measured.
	if m := res.Memory; m.HeapBaseline == 0 || m.HeapAfterLogins == 0 || m.PerUserBytes != max(0, float64(m.HeapAfterLogins)-float64(m.HeapBaseline))/users {
		t.Errorf("memory %+v", res.Memory)
	}
	if len(res.Series) == 0 {
		t.Error("no progress points")
	}
	if !strings.Contains(progress, "logins/s") {
		t.Errorf("no progress lines: %q", progress)
	}
	if code := finishRun(testLog(), &strings.Builder{}, "actors", res, cfg.JSONPath, nil); code != 0 {
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

// runActorsTest runs cfg in t's temp dir, logs its report and writes its
// HTML report there (as actorsMain does; the JSON is finishRun's).
func runActorsTest(t *testing.T, cfg ActorsConfig) (*ActorsResult, *slog.Logger) {
	t.Helper()
	dir := t.TempDir()
	cfg.DataDir = dir
	cfg.JSONPath, cfg.HTMLPath = filepath.Join(dir, "actors.json"), filepath.Join(dir, "actors.html")
	res, _ := runLogged(t, cfg, time.Minute)
	if err := writeActorsHTML(cfg.HTMLPath, res); err != nil {
		t.Fatal(err)
	}
	return res, testLog()
}

// TestActorsMixedKinds: every kind of action in one small run — 1:1 and
// group sends (groups of 10 and 50, created through the group actors),
// mark-reads, recalls, logouts — each acked, every push made, and the
// ledger read back from the store finds every copy, recall, read position
// and device event; JSON and HTML carry each kind.
func TestActorsMixedKinds(t *testing.T) {
	const users, devices = 300, 2
	res, log := runActorsTest(t, ActorsConfig{
		Users: users, Devices: devices, MsgRate: 2, Duration: 2 * time.Second, Ramp: 300 * time.Millisecond,
		GroupShare: 0.3, GroupSizes: []int{10, 50}, ReadShare: 0.2, RecallShare: 0.1, LogoutShare: 0.05,
	})
	if len(res.Problems) > 0 {
		t.Errorf("not sound: %q", res.Problems)
	}
	if len(res.Kinds) != int(numKinds) {
		t.Fatalf("%d kinds", len(res.Kinds))
	}
	for _, k := range res.Kinds {
		if k.Sent == 0 || k.Acked != k.Sent || k.Refused+k.Unacked != 0 || k.Ack.Count != k.Acked || k.AckedPerSecond <= 0 {
			t.Errorf("kind %s: %+v", k.Kind, k)
		}
	}
	direct, group, reads, recalls, logouts := res.Kinds[kindDirect], res.Kinds[kindGroup], res.Kinds[kindRead], res.Kinds[kindRecall], res.Kinds[kindLogout]
	// 2 s at 600 actions/s: ~1,100 actions, 65 % sends (30 % of them to
	// groups), 20 % reads, 10 % recalls, 5 % logouts (the draw is seeded).
	total := direct.Sent + group.Sent + direct.Skipped + group.Skipped + reads.Sent + reads.Skipped + recalls.Sent + recalls.Skipped + logouts.Sent + logouts.Skipped
	if total < 1000 || group.Sent < total/10 || reads.Sent+reads.Skipped < total/10 || recalls.Sent+recalls.Skipped < total/20 || logouts.Sent+logouts.Skipped < total/40 {
		t.Errorf("the mix of %d actions: %+v", total, res.Kinds)
	}
	c := res.Chat
	if c.Sent != direct.Sent+group.Sent || c.Acked != c.Sent || c.Recalled != recalls.Acked || c.Pushes != c.PushesExpected || c.DuplicatePushes+c.Foreign != 0 {
		t.Errorf("chat %+v", c)
	}
	g := res.Groups
	if g.Groups != 10 || g.Memberships != users || g.EventPushes != users*devices || g.EventPushes != g.EventPushesExpected {
		t.Errorf("groups %+v", g)
	}
	if g.MemberPushes != g.MemberPushesExpected || g.MemberEntries == 0 || g.MemberEntriesPerSecond <= 0 || g.LastMemberPush.Count != g.FullyPushed || g.FullyPushed == 0 {
		t.Errorf("group fan-out %+v", g)
	}
	lc := res.Ledger
	if lc == nil || lc.missing() != 0 || lc.GroupMessages != group.Acked || lc.Messages <= direct.Acked || lc.Recalls < 2*recalls.Acked || lc.Reads == 0 ||
		lc.Logins != users*devices+logouts.Acked || lc.Logouts != logouts.Acked {
		t.Errorf("ledger %+v", lc)
	}
	if code := finishRun(log, &strings.Builder{}, "actors", res, res.Config.JSONPath, nil); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	var back ActorsResult
	b, err := os.ReadFile(res.Config.JSONPath)
	if err == nil {
		err = json.Unmarshal(b, &back)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Kinds) != int(numKinds) || back.Kinds[kindRecall].Acked != recalls.Acked || back.Groups.MemberEntries != g.MemberEntries ||
		back.Ledger.Reads != lc.Reads || back.Config.GroupShare != 0.3 || len(back.Series) == 0 || back.Series[len(back.Series)-1].Seconds == 0 {
		t.Errorf("JSON round trip: %+v", back)
	}
	page, err := os.ReadFile(res.Config.HTMLPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"recall →ack", "group→last member", "member-log entries/s", "logout →ack", ">logouts/s<"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
}

// TestActorsGroupBurst: a small big-group burst — 2 groups of 200 of 400
// users, every send to a group — makes every member-log entry: each
// message pushed to every member device, the sender's own included, and
// found once in every member's log. The chat's CPU profile is written.
func TestActorsGroupBurst(t *testing.T) {
	const users, size = 400, 200
	profile := filepath.Join(t.TempDir(), "cpu.pprof")
	res, _ := runActorsTest(t, ActorsConfig{
		Users: users, MsgRate: 0.5, Duration: time.Second, Groups: 2, GroupSizes: []int{size}, GroupShare: 1, CPUProfile: profile,
	})
	if st, err := os.Stat(profile); err != nil || st.Size() == 0 {
		t.Errorf("-cpuprofile: %v", err)
	}
	if len(res.Problems) > 0 {
		t.Errorf("not sound: %q", res.Problems)
	}
	group := res.Kinds[kindGroup]
	if group.Sent < 150 || group.Acked != group.Sent || res.Kinds[kindDirect].Sent != 0 {
		t.Errorf("kinds %+v", res.Kinds)
	}
	g := res.Groups
	if g.MemberEntries != group.Acked*size || g.FullyPushed != group.Acked || g.LastMemberPush.Count != group.Acked || g.MemberPush.Count != group.Acked*size {
		t.Errorf("fan-out %+v", g)
	}
	if g.LastMemberPush.P50 < g.MemberPush.P50 || g.LastMemberPush.Max != g.MemberPush.Max {
		t.Errorf("the last member push is not the latest: %+v", g)
	}
	if lc := res.Ledger; lc == nil || lc.missing() != 0 || lc.GroupMessages != group.Acked || lc.Messages != group.Acked*size {
		t.Errorf("ledger %+v", res.Ledger)
	}
}

// TestActorsLedgerRealStore: the ledger check against the real store
// finds acks the store never saw — a group message of group g0 (missing
// from its 10 members' logs), a recall of a 1:1 message that was never
// recalled (no RecallEvent in the sender's or the recipient's log), a
// read position past the end of a log — and only those: the run is not
// sound and exits 1.
func TestActorsLedgerRealStore(t *testing.T) {
	cfg := ActorsConfig{Users: 20, MsgRate: 5, Duration: time.Second, Groups: 2, GroupSizes: []int{10}, GroupShare: 0.3, ReadShare: 0.2}
	cfg.beforeVerify = func(r *actorsRun) {
		r.mu.Lock()
		defer r.mu.Unlock()
		target := slices.IndexFunc(r.ledger, func(e ledgerEntry) bool { return e.acked && !e.group && !e.recalled })
		if target < 0 {
			t.Error("no acked 1:1 message to fabricate a recall of")
			return
		}
		r.ledger = append(r.ledger, ledgerEntry{sender: 3, recipient: 0, group: true, acked: true, msgID: "fabricated"})
		r.recalls = append(r.recalls, opEntry{user: r.ledger[target].sender, target: int32(target), acked: true})
		r.reads = append(r.reads, opEntry{user: 1, target: 0, upTo: 1 << 30, acked: true})
	}
	res, log := runActorsTest(t, cfg)
	lc := res.Ledger
	if lc == nil || lc.MessagesMissing != 10 || lc.RecallsMissing != 2 || lc.ReadsMissing != 1 || lc.MessagesDuplicated+lc.LoginsMissing+lc.ReadErrors != 0 {
		t.Fatalf("ledger %+v: want the 10 copies, 2 recalls and 1 read fabricated missing", lc)
	}
	if !slices.ContainsFunc(lc.Examples, func(s string) bool { return strings.Contains(s, "message fabricated from u3") }) {
		t.Errorf("examples %q", lc.Examples)
	}
	if len(res.Problems) != 3 {
		t.Errorf("problems %q: want the missing copies, recalls and read", res.Problems)
	}
	if code := finishRun(log, &strings.Builder{}, "actors", res, "", nil); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
}

// TestActorsActivateOnly: -activate-only activates every user (actor
// start + store activation, through actors.Frontend.Activate) and logs
// nobody in: the ledger finds each activation's epoch in the store and
// no device event is looked for; an epoch the store does not hold (one
// the test raises) is reported and fails the run.
func TestActorsActivateOnly(t *testing.T) {
	const users = 20000
	cfg, err := parseActorsFlags([]string{"-scenario", "activation-storm", "-users", fmt.Sprint(users), "-concurrency", "256"})
	if err != nil {
		t.Fatal(err)
	}
	res, log := runActorsTest(t, cfg)
	lc := res.Ledger
	if len(res.Problems) > 0 || lc == nil || lc.Activations != users || lc.ActivationsMissing+lc.ReadErrors+lc.Logins != 0 {
		t.Fatalf("problems %q, ledger %+v: want %d activations found, no login looked for", res.Problems, lc, users)
	}
	if l := res.Logins; l.OK != users || l.UsersActivated != users || l.Failed != 0 || l.PerSecond <= 0 {
		t.Fatalf("activations %+v", l)
	}
	// The rate over each tenth: ten, none zero, as many in the report as
	// the activations took (each tenth's time over a tenth of them).
	tenths := res.Logins.TenthsPerSecond
	if len(tenths) != 10 || slices.Min(tenths) <= 0 {
		t.Fatalf("activations per tenth: %v, want ten rates above 0", tenths)
	}
	var took float64
	for _, v := range tenths {
		took += float64(users) / 10 / v
	}
	if d := took - res.Logins.Seconds; d > 0.01 || d < -0.5 {
		t.Fatalf("the tenths add up to %.3f s, the activations took %.3f s", took, res.Logins.Seconds)
	}
	var out strings.Builder
	res.print(&out)
	if !strings.Contains(out.String(), "activations/s per tenth") {
		t.Fatalf("no per-tenth line in the summary:\n%s", out.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("activations                  %d of %d ok", users, users)) ||
		!strings.Contains(out.String(), fmt.Sprintf("0 of %d activations without their epoch in the store", users)) {
		t.Errorf("summary:\n%s", out.String())
	}
	// 20,000 actors with their state and epoch: tens of MiB the heap
	// grows by, beyond the noise of what else the process frees.
	if m := res.Memory; m.PerUserBytes < 200 || m.PerUserBytes > 20000 || !strings.Contains(out.String(), fmt.Sprintf("%.0f B per user", m.PerUserBytes)) {
		t.Errorf("memory %+v: want 200 B to 20 KB per user, in the summary", m)
	}
	if page, err := os.ReadFile(res.Config.HTMLPath); err != nil || !strings.Contains(string(page), "activations/s") || strings.Contains(string(page), "logins/s") {
		t.Errorf("the HTML report names its figures logins, or could not be read: %v", err)
	}
	if code := finishRun(log, &strings.Builder{}, "actors", res, "", nil); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}

	cfg.Users = 50
	cfg.beforeVerify = func(r *actorsRun) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.epochs[7]++ // an activation the store did not keep
	}
	res, log = runActorsTest(t, cfg)
	if lc := res.Ledger; lc == nil || lc.Activations != 50 || lc.ActivationsMissing != 1 ||
		!slices.ContainsFunc(lc.Examples, func(s string) bool { return strings.Contains(s, "u7: activated under epoch 2, the store holds 1") }) {
		t.Fatalf("ledger %+v: want u7's activation missing", lc)
	}
	if code := finishRun(log, &strings.Builder{}, "actors", res, "", nil); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
}

// TestActorsLogout: logout as a traffic kind, in process. A fifth of the
// actions log a device out (Frontend.Logout) and in again with its
// cursor; each is counted and timed as acked once the device is back,
// the messages pushed to it meanwhile arrive in its login's catch-up (so
// every push is made), and the ledger finds one LOGGED_OUT per logout and
// one LOGGED_IN per login (the first ones and those after each logout) in
// the users' logs read back from the store.
func TestActorsLogout(t *testing.T) {
	const users, devices = 100, 2
	res, _ := runActorsTest(t, ActorsConfig{
		Users: users, Devices: devices, MsgRate: 2, Duration: 2 * time.Second, LogoutShare: 0.2,
	})
	if len(res.Problems) > 0 {
		t.Errorf("not sound: %q", res.Problems)
	}
	lo := res.Kinds[kindLogout]
	// 2 s at 200 actions/s: ~400 actions, a fifth logouts.
	if lo.Sent < 50 || lo.Acked != lo.Sent || lo.Refused+lo.Unacked != 0 || lo.Ack.Count != lo.Acked || lo.Ack.P50 <= 0 || lo.AckedPerSecond <= 0 {
		t.Errorf("logouts %+v", lo)
	}
	c := res.Chat
	if c.Sent == 0 || c.Acked != c.Sent || c.Pushes != c.PushesExpected || c.FullyPushed != c.Acked || c.DuplicatePushes+c.Foreign != 0 {
		t.Errorf("chat %+v", c)
	}
	lc := res.Ledger
	if lc == nil || lc.missing() != 0 || lc.Messages != c.Acked || lc.Logouts != lo.Acked || lc.Logins != users*devices+lo.Acked {
		t.Errorf("ledger %+v: want %d logouts and %d logins", lc, lo.Acked, users*devices+lo.Acked)
	}
	if res.Wave != nil {
		t.Errorf("a wave without a kick: %+v", res.Wave)
	}
}

// TestActorsReconnectInProcess: the re-login path on one node. Half a
// second into the chat, 10 devices' sessions are lost to the server: the
// tool moves each to a session ID the user's actor never saw, so its next
// frame is answered with a 4017 kick (may reconnect), as after a node
// loss. Each logs in again with its cursor, resends the send the kick
// answered (and any whose ack went to the lost session) under the same
// client message ID, and gets the pushes it missed in the login's
// catch-up: every message acked once, pushed everywhere, in the log once.
func TestActorsReconnectInProcess(t *testing.T) {
	const users, lost = 50, 10
	res, _ := runActorsTest(t, ActorsConfig{
		Users: users, MsgRate: 4, Duration: 2 * time.Second,
		onChat: func(ctx context.Context, r *actorsRun) {
			if sleepCtx(ctx, 500*time.Millisecond) == nil {
				for i := range lost {
					r.gens[i].Add(1)
				}
			}
		},
	})
	if len(res.Problems) > 0 {
		t.Errorf("not sound: %q", res.Problems)
	}
	w := res.Wave
	if w == nil || w.Kicked != lost || w.ReloginsOK != lost || w.LoginRequests != lost || w.Resent < lost || w.StoredTwice != 0 || w.Relogin.Count != lost {
		t.Fatalf("wave %+v: want the %d lost devices kicked, back, and their sends resent", w, lost)
	}
	c := res.Chat
	if c.Sent == 0 || c.Acked != c.Sent || c.Pushes != c.PushesExpected || c.FullyPushed != c.Acked || c.DuplicatePushes != 0 {
		t.Errorf("chat %+v", c)
	}
	if lc := res.Ledger; lc == nil || lc.missing() != 0 || lc.Messages != c.Acked || lc.Logins != users+lost {
		t.Errorf("ledger %+v", lc)
	}
}

// TestActorsPassivationWave is the CI-sized passivation wave: 600 users
// log in and out together, their actors passivate 1.5–2.5 s later (idle
// timeout 2 s), while 300 new users log in at 80/s. It checks that every
// idle actor was passivated (counted by the node), every new user's login
// succeeded during the wave, the seconds with passivations were seen and
// the ledger has every LOGGED_IN and LOGGED_OUT; it asserts no speed.
func TestActorsPassivationWave(t *testing.T) {
	dir := t.TempDir()
	const users, idle, fresh = 900, 600, 300
	cfg := ActorsConfig{Users: users, Passivate: idle, IdleTimeout: 2 * time.Second, LoginRate: 80, DataDir: dir}
	res, _ := runLogged(t, cfg, time.Minute)
	if len(res.Problems) > 0 {
		t.Errorf("not sound: %q", res.Problems)
	}
	w := res.Passivation
	if w == nil {
		t.Fatal("no passivation result")
	}
	if w.LoggedOut != idle || w.LogoutFailed != 0 || w.Passivated != idle {
		t.Errorf("wave: %d logged out (%d refused), %d passivated; want %d each", w.LoggedOut, w.LogoutFailed, w.Passivated, idle)
	}
	if w.Logins != fresh || w.LoginsFailed != 0 || w.Latency.Count != fresh {
		t.Errorf("new users during the wave: %d logins, %d failed, %d latencies; want %d", w.Logins, w.LoginsFailed, w.Latency.Count, fresh)
	}
	// Passivations come 1.5–2.5 s after the logouts (±25 %), inside the
	// new users' 3.75 s of logins.
	if w.SecondsWith == 0 || w.PeakPerSecond == 0 || w.FirstSeconds < 1 || w.LastSeconds > 4 {
		t.Errorf("passivation seconds: %d with, peak %d, first %.1f s, last %.1f s after the logouts", w.SecondsWith, w.PeakPerSecond, w.FirstSeconds, w.LastSeconds)
	}
	var sum uint64
	for _, p := range res.Series {
		sum += p.PassivationsPerSecond
	}
	if sum == 0 || sum > w.Passivated { // the last second may end after the run's last point
		t.Errorf("the series counts %d passivations, the result %d", sum, w.Passivated)
	}
	if w.ActiveAtEnd != fresh {
		t.Errorf("%d user actors active at the end, want the %d new users'", w.ActiveAtEnd, fresh)
	}
	if lc := res.Ledger; lc == nil || lc.Logins != users || lc.LoginsMissing != 0 || lc.Logouts != idle || lc.LogoutsMissing != 0 {
		t.Errorf("ledger %+v", res.Ledger)
	}
}

// runLogged runs cfg within limit, logs its progress lines and summary,
// and fails the test if the run returned an error; it returns the result
// and the progress lines.
func runLogged(t *testing.T, cfg ActorsConfig, limit time.Duration) (*ActorsResult, string) {
	t.Helper()
	var progress strings.Builder
	cfg.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	res, err := runActors(ctx, cfg, testLog())
	if res != nil {
		var out strings.Builder
		res.print(&out)
		t.Log("\n" + progress.String() + "\n" + out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	return res, progress.String()
}

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
