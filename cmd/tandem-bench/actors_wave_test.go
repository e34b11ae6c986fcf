//go:build !race

package main

import (
	"context"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/clustertest"
	"github.com/tandem-im/tandem/internal/pgtest"
)

// TestActorsReconnectWave: the reconnect wave after a node loss. A 3-node
// cluster of tandem processes on a real PostgreSQL, the tool joined, a
// 1:1 chat running; the tool kills node 2 itself (-kill-pid with its PID)
// 2 s into the chat. The survivors' runtimes kick the devices whose users
// lived there (4017); each logs in again with its cursor and resends
// what was unacked. Every kicked device is back online, the wave's
// figures are there and add up, every acked message is in its
// recipient's log in PostgreSQL (read by the ledger), none twice, and
// every push was made (the missed ones through the re-logins' catch-up).
func TestActorsReconnectWave(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.CreateDB(t, "wave")
	c := clustertest.Start(t, clustertest.Config{
		Nodes: 3,
		Flags: func(int) []string {
			return []string{"--store", url, "--store-pool-size", "8", "--max-frame-rate", "-1"}
		},
	})
	const users = 90
	victim := c.Node(2).PID()
	cfg := ActorsConfig{
		Users: users, MsgRate: 2, Duration: 8 * time.Second, Drain: 20 * time.Second, Timeout: 10 * time.Second,
		KillPID: victim, KillAfter: 2 * time.Second,
		DataDir: t.TempDir(),
		Target: ActorsTarget{
			Join:        []string{c.Node(0).GossipAddr(), c.Node(1).GossipAddr()},
			ClusterName: "tandem", ClusterKey: c.ClusterKey, JWTSecret: clustertest.JWTSecret, Store: url, Bind: "127.0.0.1",
		},
	}
	res, progress := runLogged(t, cfg, 90*time.Second)
	if c.Node(2).Running() {
		t.Fatalf("node 2 (PID %d) still runs after -kill-pid", victim)
	}
	if len(res.Problems) > 0 {
		t.Errorf("not sound: %q", res.Problems)
	}
	w := res.Wave
	if w == nil {
		t.Fatal("no wave in the result")
	}
	// Users are spread over 3 nodes: about a third lived on node 2.
	if w.Kicked < users/10 || w.Kicked > users || w.ReloginsOK != w.Kicked || w.ReloginsFail+w.StillOffline != 0 || w.LoginRequests < w.Kicked {
		t.Errorf("wave devices: %+v", w)
	}
	if w.KilledPID != victim || w.KillError != "" || w.KillAtSeconds <= 0 || w.FirstKickSeconds < w.KillAtSeconds ||
		w.KillToFirstKickSeconds <= 0 || w.LastBackSeconds < w.FirstKickSeconds || math.Abs(w.Seconds-(w.LastBackSeconds-w.FirstKickSeconds)) > 1e-6 {
		t.Errorf("wave times: %+v", w)
	}
	if w.Relogin.Count != w.ReloginsOK || w.Relogin.P50 <= 0 || w.Relogin.P99 < w.Relogin.P50 || w.Relogin.Max < w.Relogin.P99 {
		t.Errorf("re-login latency: %+v", w.Relogin)
	}
	if w.StoredTwice != 0 || w.DuplicateAcks > w.Resent+w.Retried {
		t.Errorf("resends: %+v", w)
	}
	if res.Logins.OK != users || res.Logins.Kicked != 0 {
		t.Errorf("logins %+v (a may-reconnect kick is the wave's, not a lost device)", res.Logins)
	}
	ch := res.Chat
	if ch.Sent == 0 || ch.Acked != ch.Sent || ch.Pushes != ch.PushesExpected || ch.DuplicatePushes != 0 {
		t.Errorf("chat %+v", ch)
	}
	lc := res.Ledger
	if lc == nil || lc.Messages != ch.Acked || lc.missing() != 0 || lc.Logins != users+w.ReloginsOK {
		t.Errorf("ledger %+v: want every acked message once, %d logins", lc, users+w.ReloginsOK)
	}
	if !strings.Contains(progress, "killed PID") || !strings.Contains(progress, "wave:") {
		t.Errorf("the progress lines do not show the kill and the wave")
	}
	page := buildHTMLReport(res)
	marks := 0
	for _, ch := range page.Charts {
		marks += len(ch.Marks)
	}
	if marks == 0 {
		t.Error("no marker on the HTML report's charts")
	}
}

// TestActorsKillRefusals: -kill-pid never kills this process, init or a
// PID that is no process, and only goes with -join and a chat.
func TestActorsKillRefusals(t *testing.T) {
	join := []string{"-join", "127.0.0.1:1", "-cluster-key", "x", "-jwt-secret", "0123456789abcdef", "-store", "postgres://x", "-msg-rate", "1", "-duration", "20s"}
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(join, "-kill-pid", self), "this tool's own process"},
		{append(join, "-kill-pid", "1"), "init"},
		{append(join, "-kill-pid", "-5"), "not a process ID"},
		{append(join, "-kill-pid", "4194304"), "no such process"}, // above Linux's pid_max
		{[]string{"-msg-rate", "1", "-kill-pid", strconv.Itoa(os.Getppid())}, "-kill-pid goes with -join"},
		{append(join, "-kill-after", "5s"), "-kill-after goes with -kill-pid"},
		{append(join, "-kill-pid", strconv.Itoa(os.Getppid()), "-kill-after", "30s"), "within the chat's -duration"},
		{[]string{"-join", "127.0.0.1:1", "-cluster-key", "x", "-jwt-secret", "0123456789abcdef", "-store", "postgres://x", "-kill-pid", strconv.Itoa(os.Getppid())}, "-kill-pid needs a chat"},
		{[]string{"-scenario", "reconnect-wave"}, "needs a cluster"},
	} {
		cfg, err := parseActorsFlags(tc.args)
		if err == nil {
			err = cfg.Validate(0)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error naming %q", tc.args, err, tc.want)
		}
		if code := actorsMain(context.Background(), append(tc.args, "-data-dir", t.TempDir()), &strings.Builder{}); code != 2 {
			t.Errorf("%q: exit status %d, want 2 (refused before anything starts)", tc.args, code)
		}
	}
	// A live process that is not ours to refuse by rule passes the check
	// (nothing is killed: Validate only looks).
	cfg, err := parseActorsFlags(append(join, "-kill-pid", strconv.Itoa(os.Getppid())))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(0); err != nil {
		t.Errorf("-kill-pid of the parent (a live process): %v", err)
	}
	if cfg.KillAfter != 0 || cfg.withDefaults().KillAfter != DefaultActorsKillAfter {
		t.Errorf("-kill-after default: %v", cfg.withDefaults().KillAfter)
	}
}
