// Command tandem runs one tandem node. Flags (each with a TANDEM_*
// environment twin) are listed by `tandem -h`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tandem-im/tandem/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := node.ParseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := node.Logger(cfg, os.Stderr)
	go func() {
		// After the first signal, a second one ends the process at once
		// (the default action) instead of waiting for the stop deadline.
		<-ctx.Done()
		stop()
	}()
	if err := node.Run(ctx, cfg, log); err != nil {
		if _, ok := errors.AsType[*node.StartError](err); ok {
			fmt.Fprintln(os.Stderr, "tandem:", err) // one line naming the cause
			os.Exit(1)
		}
		if _, ok := errors.AsType[*node.StoreFailedError](err); ok {
			log.Error("server stopped", "err", err)
			os.Exit(5) // the store failed while serving: restart to recover from what is durable
		}
		log.Error("server stopped", "err", err)
		os.Exit(1)
	}
}
