// Command tandem-bench measures durable one-to-one messaging over loopback
// WebSockets: N sender→receiver pairs of Go clients, each sender keeping up
// to W sends in flight (closed loop) or sending on a fixed schedule at a
// target rate (open loop, -rate: openloop.go), against an in-process node
// (fsync on), an external one, or the nodes of an external cluster
// (devices spread over them, spread.go). -sweep runs a latency-throughput
// curve (sweep.go). It prints a summary and optionally writes it as JSON;
// see bench/README.md for what each figure means. Flags: `tandem-bench -h`.
//
// `tandem-bench conns` measures memory per connection over real node
// processes and client worker processes instead (conns.go; flags:
// `tandem-bench conns -h`). `tandem-bench broadcast` measures the server
// CPU per delivered push of group messages to many online members
// (broadcast.go; flags: `tandem-bench broadcast -h`). `tandem-bench
// actors` drives virtual users straight into the user and group actors
// of an in-process node or of a cluster it joins, with no WebSocket:
// logins, 1:1 and group sends, mark-reads, recalls, logouts, and the
// reconnect wave after a node loss (actors.go, actors_wave.go; flags and
// ready-made scenarios: `tandem-bench actors -h`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandem-im/tandem/internal/gctune"
	"github.com/tandem-im/tandem/internal/procs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv(connsWorkerEnv) == "1" { // a client worker of `conns` (conns_worker.go)
		os.Exit(connsWorkerMain(ctx, newLogger(Config{}, os.Stderr)))
	}
	if len(os.Args) > 1 && os.Args[1] == "conns" { // memory per connection (conns.go)
		os.Exit(connsMain(ctx, os.Args[2:], os.Stdout))
	}
	if len(os.Args) > 1 && os.Args[1] == "actors" { // virtual users straight into the actors (actors.go)
		os.Exit(actorsMain(ctx, os.Args[2:], os.Stdout))
	}
	if len(os.Args) > 1 && os.Args[1] == "broadcast" { // server CPU per group push (broadcast.go)
		os.Exit(broadcastMain(ctx, os.Args[2:], os.Stdout))
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := newLogger(cfg, os.Stderr)
	if cfg.GCMinHeap < 0 {
		fmt.Fprintln(os.Stderr, "-gc-min-heap must not be negative")
		os.Exit(2)
	}
	defer gctune.Start(uint64(cfg.GCMinHeap)).Stop()
	if cfg.SyncProcs < -1 {
		fmt.Fprintln(os.Stderr, "-sync-procs must be -1, 0 or more")
		os.Exit(2)
	}
	_, restoreProcs := procs.Add(cfg.extraProcs())
	defer restoreProcs()
	if cfg.Sweep {
		os.Exit(sweepMain(ctx, cfg, log))
	}
	res, err := run(ctx, cfg, log)
	if err != nil {
		log.Error("benchmark failed", "err", err)
		os.Exit(1)
	}
	res.print(os.Stdout)
	if cfg.JSONPath != "" {
		if err := res.writeJSON(cfg.JSONPath); err != nil {
			log.Error("writing the JSON result", "err", err)
			os.Exit(1)
		}
	}
	if res.Messages.Lost > 0 {
		log.Error("acked messages were not delivered", "lost", res.Messages.Lost)
		os.Exit(1)
	}
}

// sweepMain runs -sweep and returns the exit status: 1 if it failed or
// lost acked messages in any run.
func sweepMain(ctx context.Context, cfg Config, log *slog.Logger) int {
	sr, err := runSweep(ctx, cfg, log, os.Stdout)
	if err != nil {
		log.Error("sweep failed", "err", err)
		return 1
	}
	fmt.Println()
	sr.printCurve(os.Stdout)
	if cfg.JSONPath != "" {
		if err := sr.writeJSON(cfg.JSONPath); err != nil {
			log.Error("writing the JSON result", "err", err)
			return 1
		}
	}
	if n := sr.lost(); n > 0 {
		log.Error("acked messages were not delivered", "lost", n)
		return 1
	}
	return 0
}
