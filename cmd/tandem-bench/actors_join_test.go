//go:build !race

package main

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/clustertest"
	"github.com/tandem-im/tandem/internal/pgtest"
)

// TestActorsJoinCluster: `tandem-bench actors -join` against a running
// 2-node cluster of separate tandem processes on a real PostgreSQL. The
// tool's member hosts no actors: every virtual user's actor lives on the
// nodes (their tandem_online_users add up to the users, the nodes' logs in
// PostgreSQL hold every acked message, read by the tool's ledger), and
// the pushes come back to the tool over the actor remote.
func TestActorsJoinCluster(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.CreateDB(t, "join")
	c := clustertest.Start(t, clustertest.Config{
		Nodes: 2,
		Flags: func(int) []string { return []string{"--store", url, "--max-frame-rate", "-1"} },
	})
	const users = 60
	cfg := ActorsConfig{
		Users: users, MsgRate: 2, Duration: 2 * time.Second, DataDir: t.TempDir(),
		Target: ActorsTarget{
			Join:        []string{c.Node(0).GossipAddr(), c.Node(1).GossipAddr()},
			ClusterName: "tandem", ClusterKey: c.ClusterKey, JWTSecret: clustertest.JWTSecret, Store: url, Bind: "127.0.0.1",
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// The nodes' online users, sampled while the run holds its devices
	// logged in (the chat phase): the run's users must all be theirs.
	online := make(chan int, 1)
	progress := cancelWriter(func(line string) {
		if strings.Contains(line, "msgs/s") && !strings.Contains(line, "msgs/s       0") {
			select {
			case online <- onlineOn(t, c.Node(0).APIURL()) + onlineOn(t, c.Node(1).APIURL()):
			default:
			}
		}
	})
	cfg.Progress = progress
	res, err := runActors(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res.print(&out)
	t.Log("\n" + out.String())
	if len(res.Problems) > 0 {
		t.Errorf("not sound: %q", res.Problems)
	}
	if res.Logins.OK != users || res.Logins.UsersActivated != users {
		t.Errorf("logins %+v", res.Logins)
	}
	ch := res.Chat
	if ch.Sent == 0 || ch.Acked != ch.Sent || ch.Pushes != ch.PushesExpected || ch.FullyPushed != ch.Acked {
		t.Errorf("chat %+v", ch)
	}
	if lc := res.Ledger; lc == nil || lc.Messages != ch.Acked || lc.MessagesMissing != 0 || lc.Logins != users || lc.LoginsMissing != 0 || lc.ReadErrors != 0 {
		t.Errorf("ledger %+v", res.Ledger)
	}
	select {
	case n := <-online:
		if n != users {
			t.Errorf("the nodes hold %d online users during the chat, want all %d (the tool's member must host none)", n, users)
		}
	default:
		t.Error("no progress line during the chat to sample the nodes' online users")
	}
}

// onlineOn reads tandem_online_users from a node's /metrics.
func onlineOn(t *testing.T, api string) int {
	t.Helper()
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Errorf("GET %s/metrics: %v", api, err)
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "tandem_online_users "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Errorf("tandem_online_users %q: %v", v, err)
			}
			return int(f)
		}
	}
	t.Errorf("%s/metrics has no tandem_online_users", api)
	return -1
}

// TestActorsJoinRefusals: a join without what the cluster needs is refused
// before any load, naming what is missing.
func TestActorsJoinRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-join", "127.0.0.1:1"}, "-cluster-key"},
		{[]string{"-join", "127.0.0.1:1", "-cluster-key", "x"}, "-jwt-secret"},
		{[]string{"-join", "127.0.0.1:1", "-cluster-key", "x", "-jwt-secret", "0123456789abcdef"}, "-store postgres://"},
		{[]string{"-join", "nohostport", "-cluster-key", "x", "-jwt-secret", "0123456789abcdef", "-store", "postgres://x"}, "host:port"},
		{[]string{"-jwt-secret", "0123456789abcdef"}, "go with -join"},
		{[]string{"-join", "127.0.0.1:1", "-cluster-key", "x", "-jwt-secret", "0123456789abcdef", "-store", "postgres://x", "-bind", "localhost"}, "-bind"},
		{[]string{"-join", "127.0.0.1:1", "-cluster-key", "x", "-jwt-secret", "0123456789abcdef", "-store", "postgres://x", "-gossip-profile", "fast"}, "-gossip-profile"},
		{[]string{"-gossip-profile", "wan"}, "-gossip-profile goes with -join"},
	} {
		cfg, err := parseActorsFlags(tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		err = cfg.Validate(0)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

// TestActorsJoinUnreachable: a cluster nobody answers for is refused
// before any load: no login is tried, the error names the addresses.
func TestActorsJoinUnreachable(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.CreateDB(t, "nobody")
	cfg := ActorsConfig{
		Users: 10, DataDir: t.TempDir(),
		Target: ActorsTarget{
			Join:        []string{"127.0.0.1:9"}, // discard: nothing gossips there
			ClusterName: "tandem", ClusterKey: "MDEyMzQ1Njc4OWFiY2RlZg==", JWTSecret: clustertest.JWTSecret, Store: url, Bind: "127.0.0.1",
			JoinTimeout: 2 * time.Second,
		},
	}
	start := time.Now()
	res, err := runActors(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Fatalf("got %v, want an error naming the unreachable address", err)
	}
	if res != nil && res.Logins.OK+res.Logins.Failed > 0 {
		t.Errorf("logins were tried: %+v", res.Logins)
	}
	t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
