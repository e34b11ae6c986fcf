//go:build !race

package e2e

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"testing"
	"time"
)

// catchupProfile profiles the measured catch-ups only (go test's own
// -cpuprofile also covers filling the log).
var catchupProfile = flag.String("catchup.cpuprofile", "", "write a CPU profile of the measured catch-ups (the benchmarks' loops) to this file")

// catchupStore is the node's --store for the catch-up benchmarks.
var catchupStore = flag.String("catchup.store", "", "the node's store for the catch-up benchmarks: badger (default) or pebble")

// The catch-up benchmarks (bench/README.md, "Catch-up"): a real in-process
// node, a user whose log is filled through the node's send path, and a new
// device logging in over one WebSocket with the Go client, timed from Dial
// (login) to the last catch-up page delivered. Each iteration is a new
// device, so every one reads the whole backlog.
//
//	go test ./test/e2e -run '^$' -bench Catchup -benchtime 5x
//	go test ./test/e2e -run '^$' -bench Catchup10k -benchtime 30x -args -catchup.cpuprofile=/tmp/catchup.pprof
//	go test ./test/e2e -run '^$' -bench Catchup -benchtime 5x -args -catchup.store=pebble

// BenchmarkCatchup10k: a device with cursor 0, 10,000 messages behind.
func BenchmarkCatchup10k(b *testing.B) {
	const count = 10000
	n := startCatchupNode(b, 1)
	last := fillNotes(b, n, "bench-alice", count, 256, nil)
	benchCatchup(b, n, "bench-alice", true, last)
}

// BenchmarkCatchupCompensation7d: a new device (no cursor) with
// --compensation-days 7 and 3,500 messages spread over the last 7 days.
func BenchmarkCatchupCompensation7d(b *testing.B) {
	const days, perDay = 7, 500
	n := startCatchupNode(b, days)
	// Day d's messages are written with the node's clock (7 d - 1 h - d days)
	// in the past; the clock then returns to real time.
	last := fillNotes(b, n, "bench-alice", days*perDay, 256, func(i int) time.Duration {
		return days*24*time.Hour - time.Hour - time.Duration(i/perDay)*24*time.Hour
	})
	n.setAgo(0)
	benchCatchup(b, n, "bench-alice", false, last)
}

func benchCatchup(b *testing.B, n *catchupNode, user string, hasCursor bool, last uint64) {
	tok := token(b, n.apiURL(), user)
	var total, login time.Duration
	entries, i := 0, 0
	if *catchupProfile != "" {
		f, err := os.Create(*catchupProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	for b.Loop() {
		r := catchUp(b, n, tok, user, fmt.Sprint("bench-dev-", i), hasCursor)
		i++
		if r.caughtUpAt < last {
			b.Fatalf("caught up at seq %d, want at least %d", r.caughtUpAt, last)
		}
		total += r.elapsed
		login += r.login
		entries += len(r.entries)
	}
	b.ReportMetric(float64(entries)/float64(i), "entries/op")
	b.ReportMetric(float64(entries)/total.Seconds(), "entries/s")
	b.ReportMetric(float64(login.Milliseconds())/float64(i), "login-ms/op")
}
