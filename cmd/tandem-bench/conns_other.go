//go:build !linux

package main

import (
	"log/slog"
	"os/exec"
)

// raiseFileLimit: `tandem-bench conns` reads Linux's /proc and is only
// meant for Linux; elsewhere it reports an unknown limit.
func raiseFileLimit(*slog.Logger) uint64 { return 0 }

func dieWithParent(*exec.Cmd) {}
