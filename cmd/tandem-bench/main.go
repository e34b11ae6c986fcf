// Command tandem-bench measures durable one-to-one messaging over loopback
// WebSockets: N sender→receiver pairs of Go clients, each sender keeping up
// to W sends in flight, against an in-process node (fsync on), an
// external one, or the nodes of an external cluster (devices spread over
// them, spread.go). It prints a summary and optionally writes it as JSON;
// see bench/README.md for what each figure means. Flags: `tandem-bench -h`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := newLogger(cfg, os.Stderr)
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
