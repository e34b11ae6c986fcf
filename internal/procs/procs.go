// Package procs gives the process Ps (GOMAXPROCS) beyond its CPUs for the
// goroutines that block in the kernel on a write's fsync.
//
// A goroutine in a blocking system call keeps its P until the runtime's
// monitor takes it back (after at least one of its ticks, and not while
// other Ps are idle or spinning), and the P is handed to another thread
// and back when the call returns. An embedded store fsyncs its log for
// every group commit, 0.3–3.5 ms each on the machines we measure: on two
// CPUs one of the two Ps was held or passed around for much of a login
// storm, and the threads' hand-offs cost system time. With one P more,
// 1,000,000 logins ran 28–29k/s on 75–81 CPU-seconds, against 18–21k/s on
// 90–107 at Go's default (bench/README.md, "An extra P for fsync").
package procs

import (
	"os"
	"runtime"
)

// Add raises GOMAXPROCS by extra above the runtime's default, unless
// extra is 0 or the GOMAXPROCS environment variable is set (the
// operator's choice stands). It returns the GOMAXPROCS in effect and a
// function that restores the previous value.
func Add(extra int) (int, func()) {
	prev := runtime.GOMAXPROCS(0)
	if extra <= 0 || os.Getenv("GOMAXPROCS") != "" {
		return prev, func() {}
	}
	runtime.GOMAXPROCS(prev + extra)
	return prev + extra, func() { runtime.GOMAXPROCS(prev) }
}

// Resolve is the extra Ps of a --sync-procs setting: the setting itself,
// or with −1 (auto) ForStore(store).
func Resolve(setting int, store string) int {
	if setting < 0 {
		return ForStore(store)
	}
	return setting
}

// ForStore is the extra Ps a node on store wants: one with an embedded
// store (badger, pebble: its fsync runs in this process), none with
// PostgreSQL (the server fsyncs; this process only waits on sockets) or
// none at all here ("": the node is another process).
func ForStore(store string) int {
	if store == "badger" || store == "pebble" {
		return 1
	}
	return 0
}
