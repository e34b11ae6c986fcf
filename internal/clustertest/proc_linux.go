package clustertest

import "syscall"

// sysProcAttr makes a node die with the test process (a test binary
// killed by a timeout leaves no node running). The parent death signal
// follows the thread that started the process; Go does not end threads it
// has not locked, so it fires only when the test process ends.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
