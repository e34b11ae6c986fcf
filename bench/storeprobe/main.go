// Command storeprobe measures the local store alone (persistence.Local on
// badger or pebble, fsync on) under an open-loop load shaped like 1:1
// chat: per message, the sender's append (its log entry, a dedup key and
// the conversation state) and the recipient's (its log entry and a dedup
// key), each user's appends in order, as the actors submit them. Latency
// is from the scheduled time to the later of the two completions, so a
// stall cannot hide (no coordinated omission). It prints p50/p99/p999/max,
// the acked count of every second and the slowest second as a share of
// the rate. bench/README.md ("Issue 10: the pebble store") has figures.
// With -logins it measures instead the store's memory per login of a new
// user (logins.go).
//
//	go run ./bench/storeprobe -engine pebble -rate 20000 -duration 60s
//	go run ./bench/storeprobe -engine badger -rate 20000 -duration 60s
//	go run ./bench/storeprobe -engine badger -logins 200000 -every 10000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-im/tandem/persistence"
)

func main() {
	engine := flag.String("engine", "pebble", "badger or pebble")
	rate := flag.Int("rate", 20000, "messages per second (open loop)")
	dur := flag.Duration("duration", 60*time.Second, "measured time")
	users := flag.Int("users", 20000, "users; each message goes from a random user to another")
	size := flag.Int("size", 220, "log entry bytes (a 100-byte text as the actors store it)")
	dir := flag.String("dir", "", "data dir (default: a new temp dir, removed at the end)")
	nLogins := flag.Int("logins", 0, "instead: memory per login of this many new users (logins.go)")
	every := flag.Int("every", 10000, "with -logins: users between measurements")
	entry := flag.Int("entry", 92, "with -logins: LOGGED_IN entry bytes")
	record := flag.Int("record", 85, "with -logins: device record bytes")
	flag.Parse()
	var err error
	if *nLogins > 0 {
		err = withDir(*dir, func(d string) error { return logins(*engine, d, *nLogins, max(*every, 1), *entry, *record) })
	} else {
		err = withDir(*dir, func(d string) error { return run(*engine, *rate, *dur, *users, *size, d) })
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "storeprobe:", err)
		os.Exit(1)
	}
}

// withDir runs f on dir, or on a new temp dir removed afterwards.
func withDir(dir string, f func(string) error) error {
	if dir != "" {
		return f(dir)
	}
	d, err := os.MkdirTemp("", "storeprobe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(d)
	return f(d)
}

func run(engine string, rate int, dur time.Duration, users, size int, dir string) error {
	s, err := open(engine, dir)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx := context.Background()
	type user struct {
		epoch persistence.Epoch
		last  persistence.Seq
	}
	us := make([]user, users)
	name := func(i int) string { return fmt.Sprintf("u%07d", i) }
	for i := range us {
		if us[i].epoch, us[i].last, err = s.Activate(ctx, name(i), "probe"); err != nil {
			return err
		}
	}
	data := make([]byte, size)
	conv := make([]byte, 230)
	total := rate * int(dur.Seconds())
	lat := make([]time.Duration, total)
	nsec := int(dur.Seconds())
	perSec := make([]atomic.Int64, nsec+1)
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now().Add(50 * time.Millisecond)
	rng := uint64(1)
	next := func(n int) int { // xorshift: no lock, no allocation
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	for i := range total {
		sched := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
		if d := time.Until(sched); d > 0 {
			time.Sleep(d)
		}
		a := next(users)
		b := (a + 1 + next(users-1)) % users
		now := sched.UnixMilli()
		var left atomic.Int32
		left.Store(2)
		wg.Add(2)
		done := func(err error) {
			if err != nil {
				failed.Add(1)
			}
			if left.Add(-1) == 0 {
				d := time.Since(sched)
				lat[i] = d
				if sec := int(time.Since(start) / time.Second); sec < len(perSec) {
					perSec[sec].Add(1)
				}
			}
			wg.Done()
		}
		us[a].last++
		us[b].last++
		key := fmt.Sprintf("m%d", i)
		s.Append(persistence.AppendRequest{User: name(a), Epoch: us[a].epoch,
			Entries: []persistence.Entry{{Seq: us[a].last, TimeMS: now, Data: data}},
			Dedup:   []persistence.DedupKey{{Key: "c" + key, Seq: us[a].last}},
			Convs:   []persistence.Conv{{Key: "d:" + name(b), Data: conv}}}, done)
		s.Append(persistence.AppendRequest{User: name(b), Epoch: us[b].epoch,
			Entries: []persistence.Entry{{Seq: us[b].last, TimeMS: now, Data: data}},
			Dedup:   []persistence.DedupKey{{Key: "s" + key, Seq: us[b].last}}}, done)
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d appends failed", n)
	}
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e6 }
	secs := make([]int64, nsec)
	slowest := int64(-1)
	for i := range secs {
		secs[i] = perSec[i].Load()
		if slowest < 0 || secs[i] < slowest {
			slowest = secs[i]
		}
	}
	st := s.Stats()
	fmt.Printf("%s, %d msgs/s for %v (%d users, %d-byte entries): store latency p50 %.1f p99 %.1f p999 %.1f max %.1f ms; "+
		"slowest second %d (%.0f %% of the rate); %d commits, %.1f appends per commit\n",
		engine, rate, dur, users, size, p(.5), p(.99), p(.999), p(1), slowest, 100*float64(slowest)/float64(rate),
		st.Commits, float64(st.Ops)/float64(max(st.Commits, 1)))
	fmt.Println("per second:", secs)
	return nil
}
