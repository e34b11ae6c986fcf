package clustertest

import "syscall"

// sysProcAttr makes a node die with the test process (a test binary
// killed by its timeout leaves no node running). Linux sends the parent
// death signal when the thread that started the child ends; the Go
// runtime ends a thread only when a goroutine locked to it (LockOSThread)
// exits, which neither the harness nor the test does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
