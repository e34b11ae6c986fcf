package clustertest

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/node"
)

// StartInProcess starts n nodes in this process with node.Start: loopback
// ports picked by the kernel, a data folder each in the test's temporary
// folder, AdminKey and JWTSecret, UnsafeMultiNodeBadger set (edit may
// choose another store), and a shared cluster key where node.Config has
// one. Node 0 starts first without seeds; the others start together,
// seeded with its gossip address. edit (may be nil) adjusts node i's
// configuration before it starts. It returns once every node sees n
// members, and stops them all at cleanup. Each node logs to node<i>.log
// in the temporary folder; the tails are written to the test log if the
// test failed.
func StartInProcess(t testing.TB, n int, edit func(i int, cfg *node.Config)) []*node.Node {
	t.Helper()
	if n <= 0 {
		t.Fatalf("clustertest: StartInProcess with %d nodes", n)
	}
	dir := t.TempDir()
	key := newKey()
	nodes := make([]*node.Node, n)
	logs := make([]string, n)
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			if nd != nil {
				wg.Go(func() {
					if err := nd.Stop(); err != nil {
						t.Logf("clustertest: stop node: %v", err)
					}
				})
			}
		}
		wg.Wait()
		if t.Failed() {
			for i, p := range logs {
				if p != "" {
					t.Logf("clustertest: in-process node %d log (%s), last lines:\n%s", i, p, tail(p, 40))
				}
			}
		}
	})

	start := func(i int, seeds []string) error {
		cfg := node.Config{
			DataDir:               filepath.Join(dir, fmt.Sprintf("node%d", i)),
			WSAddr:                "127.0.0.1:0",
			APIAddr:               "127.0.0.1:0",
			GossipAddr:            "127.0.0.1:0",
			RemoteAddr:            "127.0.0.1:0",
			Seeds:                 seeds,
			AdminKey:              AdminKey,
			JWTSecret:             JWTSecret,
			UnsafeMultiNodeBadger: true,
		}
		setClusterKey(&cfg, key)
		if edit != nil {
			edit(i, &cfg)
		}
		logs[i] = filepath.Join(dir, fmt.Sprintf("node%d.log", i))
		f, err := os.OpenFile(logs[i], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("clustertest: %w", err)
		}
		t.Cleanup(func() { f.Close() }) // after the nodes stopped (cleanups run last-in first-out)
		log := slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", i)
		ctx, cancel := context.WithTimeout(context.Background(), DefaultStartTimeout)
		defer cancel()
		nd, err := node.Start(ctx, cfg, log)
		if err != nil {
			return fmt.Errorf("clustertest: start in-process node %d: %w", i, err)
		}
		nodes[i] = nd
		return nil
	}

	if err := start(0, nil); err != nil {
		t.Fatal(err)
	}
	seeds := []string{nodes[0].GossipAddr()}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() { errs[i] = start(i, seeds) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	deadline := time.Now().Add(DefaultStartTimeout)
	for {
		var behind []string
		for i, nd := range nodes {
			if got := nd.ClusterMembers(); got != n {
				behind = append(behind, fmt.Sprintf("node %d sees %d", i, got))
			}
		}
		if len(behind) == 0 {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("clustertest: waiting for %d members: %s", n, strings.Join(behind, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setClusterKey sets cfg's cluster key field, if this build's node.Config
// has one (a string of base64 keys, or raw keys): clusters with seeds
// need a key once the server authenticates cluster traffic.
//
// TODO: assign the field directly once node.Config has it for good.
func setClusterKey(cfg *node.Config, key string) {
	f := reflect.ValueOf(cfg).Elem().FieldByName("ClusterKey")
	if !f.IsValid() || !f.CanSet() {
		return
	}
	switch {
	case f.Kind() == reflect.String:
		f.SetString(key)
	case f.Type() == reflect.TypeFor[[][]byte]():
		raw, err := base64.StdEncoding.DecodeString(key)
		if err == nil {
			f.Set(reflect.ValueOf([][]byte{raw}))
		}
	}
}
