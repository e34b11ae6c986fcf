package main

import (
	"log/slog"
	"os/exec"
	"syscall"
)

// raiseFileLimit sets the soft RLIMIT_NOFILE to the hard limit. Children
// inherit it (Go restores the original soft limit in the children it
// starts unless the program set the limit itself). It returns the limit.
func raiseFileLimit(log *slog.Logger) uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		log.Warn("read RLIMIT_NOFILE", "err", err)
		return 0
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		log.Warn("raise RLIMIT_NOFILE", "err", err)
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		log.Warn("read RLIMIT_NOFILE", "err", err)
		return 0
	}
	return l.Cur
}

// dieWithParent has the kernel send SIGTERM to cmd's process when the
// bench dies without stopping it (kill -9), so that no node or worker is
// left holding thousands of connections.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
