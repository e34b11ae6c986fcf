package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"

	"github.com/tandem-im/tandem/node"
)

// target is the node, or the nodes of a cluster, under test.
type target struct {
	wsURLs   []string // one per node
	apiURLs  []string // at least one
	adminKey string
	external bool
	dataDir  string // in-process only
	// stop stops an in-process node and removes its data dir unless kept;
	// a no-op for an external node.
	stop func() error
}

// startTarget starts an in-process node on a fresh temporary data dir with
// the default store options (fsync on) and loopback ports chosen by the
// kernel, or describes the external node(s) of cfg.
func startTarget(ctx context.Context, cfg Config, log *slog.Logger) (*target, error) {
	if cfg.external() {
		return &target{
			wsURLs: cfg.WSURLs, apiURLs: cfg.APIURLs, adminKey: cfg.AdminKey, external: true,
			stop: func() error { return nil },
		}, nil
	}
	dir, err := os.MkdirTemp(cfg.DataDir, "tandem-bench-")
	if err != nil {
		return nil, fmt.Errorf("create the node's data dir: %w", err)
	}
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate an admin key: %w", err)
	}
	n, err := node.Start(ctx, node.Config{
		DataDir:    dir,
		WSAddr:     "127.0.0.1:0",
		APIAddr:    "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0",
		RemoteAddr: "127.0.0.1:0",
		AdminKey:   hex.EncodeToString(key),
		LogLevel:   cfg.LogLevel,
		// A bench device sends far more than a person's 1,000 frames/s.
		MaxFrameRate: -1,
	}, log.With("component", "node"))
	if err != nil {
		if rmErr := os.RemoveAll(dir); rmErr != nil {
			log.Warn("removing the node's data dir", "dir", dir, "err", rmErr)
		}
		return nil, fmt.Errorf("start the in-process node: %w", err)
	}
	return &target{
		wsURLs:   []string{"ws://" + n.WSAddr() + "/ws"},
		apiURLs:  []string{"http://" + n.APIAddr()},
		adminKey: n.AdminKey,
		dataDir:  dir,
		stop: func() error {
			err := n.Stop()
			if cfg.Keep {
				log.Warn("kept the node's data dir", "dir", dir)
				return err
			}
			if rmErr := os.RemoveAll(dir); rmErr != nil {
				return fmt.Errorf("remove the node's data dir %s: %w", dir, rmErr)
			}
			if err != nil {
				return fmt.Errorf("stop the in-process node: %w", err)
			}
			return nil
		},
	}, nil
}
