//go:build !race

// These tests start protoactor cluster members, which have data races of
// their own: they stay out of the race run.

package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/proto/wire"
)

// startTestNode starts a node on loopback ports picked by the kernel, after
// edit; cleanup stops it.
func startTestNode(t *testing.T, edit func(*Config)) (*Node, error) {
	t.Helper()
	cfg := Config{
		DataDir:    t.TempDir(),
		WSAddr:     "127.0.0.1:0",
		APIAddr:    "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0",
		RemoteAddr: "127.0.0.1:0",
		AdminKey:   "node-test-admin-key",
		JWTSecret:  "node-test-jwt-secret-0123456789",
		ClusterKey: testClusterKey,
	}
	edit(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg, nil)
	if err == nil {
		t.Cleanup(func() { n.Stop() })
	}
	return n, err
}

// waitTwoMembers waits up to 10 s until a and b each list both as
// cluster members.
func waitTwoMembers(t *testing.T, a, b *Node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for a.ClusterMembers() != 2 || b.ClusterMembers() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("members: a sees %d, b sees %d; want 2", a.ClusterMembers(), b.ClusterMembers())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readyz returns /readyz's status code and body.
func readyz(t *testing.T, n *Node) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + n.APIAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// TestNodeJWTSecretMismatchRefused: a node whose JWT secret differs from
// the cluster's fails to start and says so; the cluster stays as it was.
func TestNodeJWTSecretMismatchRefused(t *testing.T) {
	a, err := startTestNode(t, func(*Config) {})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(t, a); code != http.StatusOK {
		t.Fatalf("first node not ready: %d %s", code, body)
	}
	_, err = startTestNode(t, func(c *Config) {
		c.Seeds = []string{a.GossipAddr()}
		c.UnsafeMultiNodeBadger = true
		c.JWTSecret = "another-jwt-secret-0123456789"
	})
	if !errors.Is(err, cluster.ErrMismatch) || !strings.Contains(err.Error(), "--jwt-secret differs") {
		t.Fatalf("start with another JWT secret: %v; want a --jwt-secret mismatch", err)
	}
	t.Logf("refused: %v", err)
	if n := a.ClusterMembers(); n != 1 {
		t.Errorf("the first node lists %d members", n)
	}
	if code, body := readyz(t, a); code != http.StatusOK {
		t.Errorf("first node no longer ready: %d %s", code, body)
	}
}

// TestNodeNotReadyUntilJoined: a node whose seeds are unreachable serves
// but /readyz says it is not ready, and why.
func TestNodeNotReadyUntilJoined(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	n, err := startTestNode(t, func(c *Config) {
		c.Seeds = []string{dead}
		c.UnsafeMultiNodeBadger = true
	})
	if err != nil {
		t.Fatal(err)
	}
	code, body := readyz(t, n)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no seed reachable") {
		t.Fatalf("/readyz = %d %s; want 503 saying no seed is reachable", code, body)
	}
	t.Logf("/readyz: %d %s", code, body)
}

// TestSingleNodeListensOnLoopback: with the default gossip and remote
// addresses a node listens on 127.0.0.1 only. It needs ports 7946 and
// 7402 free, and skips otherwise.
func TestSingleNodeListensOnLoopback(t *testing.T) {
	n, err := startTestNode(t, func(c *Config) {
		c.GossipAddr, c.RemoteAddr, c.ClusterKey = "", "", ""
	})
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			t.Skipf("default ports busy: %v", err)
		}
		t.Fatal(err)
	}
	if g, r := n.GossipAddr(), n.Member().Address(); g != DefaultGossipAddr || r != DefaultRemoteAddr {
		t.Fatalf("gossip %s, remote %s; want %s and %s", g, r, DefaultGossipAddr, DefaultRemoteAddr)
	}
	// Nothing answers on the other interfaces.
	ifaces, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, a := range ifaces {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.To4() == nil {
			continue
		}
		for _, port := range []string{"7946", "7402"} {
			addr := net.JoinHostPort(ipn.IP.String(), port)
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s accepts connections", addr)
			}
			checked++
		}
	}
	t.Logf("checked %d non-loopback addresses: %s", checked, fmt.Sprint(ifaces))
}

// TestNodeBlockedByClusterStops: a node the cluster cuts off for good (as
// protoactor does to a member it declared dead while it ran) stops
// serving with cluster.ErrBlocked, the tandem command's exit code 6,
// instead of running on unready and useless; the cluster keeps serving
// without it.
func TestNodeBlockedByClusterStops(t *testing.T) {
	a, err := startTestNode(t, func(*Config) {})
	if err != nil {
		t.Fatal(err)
	}
	b, err := startTestNode(t, func(c *Config) {
		c.Seeds = []string{a.GossipAddr()}
		c.UnsafeMultiNodeBadger = true
	})
	if err != nil {
		t.Fatal(err)
	}
	waitTwoMembers(t, a, b)
	a.Member().Cluster().Remote.BlockList().Block(b.Member().ID())
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked node is still serving 10 s after the cluster blocked it")
	}
	if !errors.Is(b.err, cluster.ErrBlocked) || ExitCode(b.err) != ExitBlocked {
		t.Fatalf("the blocked node ended with %v (exit code %d); want cluster.ErrBlocked, %d", b.err, ExitCode(b.err), ExitBlocked)
	}
	if code, body := readyz(t, a); code != http.StatusOK {
		t.Errorf("the node that blocked it is not ready: %d %s", code, body)
	}
}

// TestReusePortSharesWSAddr: two members of one cluster listen on the same
// WebSocket address with --reuse-port; the kernel spreads connections
// over both, every device logs in wherever it lands, and messages reach
// users connected through the other process. A node without the flag
// still finds the address in use.
func TestReusePortSharesWSAddr(t *testing.T) {
	a, err := startTestNode(t, func(c *Config) { c.ReusePort = true })
	if err != nil {
		t.Fatal(err)
	}
	shared := a.WSAddr()
	b, err := startTestNode(t, func(c *Config) {
		c.Seeds = []string{a.GossipAddr()}
		c.UnsafeMultiNodeBadger = true
		c.ReusePort = true
		c.WSAddr = shared
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.WSAddr() != shared {
		t.Fatalf("second node listens on %s, want the shared %s", b.WSAddr(), shared)
	}
	if _, err := startTestNode(t, func(c *Config) { c.WSAddr = shared }); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("a node without --reuse-port on %s: %v; want ErrAddrInUse", shared, err)
	}
	waitTwoMembers(t, a, b)

	// 32 users, one device each, all dialling the shared address: the
	// kernel hashes each connection to one of the two listeners (all on
	// one process with probability 2⁻³¹).
	const users = 32
	type device struct {
		*client.Client
		got chan *wire.Message
	}
	devs := make([]device, users)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i := range devs {
		user := fmt.Sprintf("rp%02d", i)
		got := make(chan *wire.Message, 4)
		c, err := client.Dial(ctx, client.Options{
			URL: "ws://" + shared + "/ws", DeviceID: "d", Platform: "web",
			TokenFunc: func(ctx context.Context) (string, error) {
				return client.MintToken(ctx, "http://"+a.APIAddr(), "node-test-admin-key", user, time.Hour)
			},
			OnEntry: func(e *wire.Entry) {
				if m := e.GetMessage(); m != nil {
					got <- m
				}
			},
		})
		if err != nil {
			t.Fatalf("dial %s: %v", user, err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.WaitCaughtUp(ctx); err != nil {
			t.Fatalf("%s catch-up: %v", user, err)
		}
		devs[i] = device{c, got}
	}
	onA := metric(t, a, "tandem_gateway_logged_in_sessions")
	onB := metric(t, b, "tandem_gateway_logged_in_sessions")
	if onA+onB != users || onA == 0 || onB == 0 {
		t.Fatalf("logged-in sessions: %v on a, %v on b; want %d spread over both", onA, onB, users)
	}
	t.Logf("the kernel put %v connections on a, %v on b", onA, onB)

	// A ring of messages: user i to user i+1, each acked and pushed.
	for i, d := range devs {
		peer := fmt.Sprintf("rp%02d", (i+1)%users)
		if _, err := d.Send(ctx, &wire.Send{ClientMessageId: fmt.Sprintf("ring-%d", i),
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: peer},
			Type:         1, Content: []byte("ring")}); err != nil {
			t.Fatalf("send rp%02d → %s: %v", i, peer, err)
		}
	}
	for i, d := range devs {
		from := fmt.Sprintf("rp%02d", (i+users-1)%users)
		for received := false; !received; {
			select {
			case m := <-d.got:
				// Its own message may come back as an entry of its log.
				received = m.GetSender() == from
			case <-ctx.Done():
				t.Fatalf("rp%02d: no message from %s", i, from)
			}
		}
	}
}
