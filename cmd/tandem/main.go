// Command tandem runs one tandem node. Flags (each with a TANDEM_*
// environment twin) and exit codes are listed by `tandem -h`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandem-im/tandem/internal/gctune"
	"github.com/tandem-im/tandem/internal/procs"
	"github.com/tandem-im/tandem/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := node.ParseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) { // -h printed the usage
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(node.ExitBadFlags)
	}
	log := node.Logger(cfg, os.Stderr)
	defer gctune.Start(uint64(cfg.GCMinHeap)).Stop()
	_, restoreProcs := procs.Add(cfg.ExtraProcs())
	defer restoreProcs()
	go func() {
		// After the first signal, a second one ends the process at once
		// (the default action) instead of waiting for the stop deadline.
		<-ctx.Done()
		stop()
	}()
	err = node.Run(ctx, cfg, log)
	if _, ok := errors.AsType[*node.StartError](err); ok {
		fmt.Fprintln(os.Stderr, "tandem:", err) // one line naming the cause
	} else if err != nil {
		log.Error("server stopped", "err", err, "exit", node.ExitCode(err))
	}
	os.Exit(node.ExitCode(err)) // abandoned shutdown steps do not hold the process
}
