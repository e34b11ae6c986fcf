package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/tandem-im/tandem/internal/procmem"
	"github.com/tandem-im/tandem/persistence"
)

// logins measures what the store keeps in memory per login (-logins N):
// for each new user what a login of a new user writes — the activation's
// epoch record, then one append of the LOGGED_IN entry (entryBytes: the
// actors' 92-byte encoding of a phone's login) with the device's record
// (recordBytes) and cursor — 256 in flight, as the actors submit them.
// Every `every` users it waits for the appends, collects garbage, returns
// freed memory to the system and prints the process's RSS (anonymous and
// file-backed) and Go heap, in all and per login since the last point.
//
// tandem-bench conns measures a node's whole RSS per connection, and a
// new user's login writes to the store; this shows how much of that is the
// store's memtable filling (on badger: the skiplist arena in the Go heap,
// the write-ahead log mapped from its file) and that it stops growing once
// a memtable is full and flushed, where a node of many connections lives.
func logins(engine, dir string, n, every, entryBytes, recordBytes int) error {
	s, err := open(engine, dir)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx := context.Background()
	entry, record := make([]byte, entryBytes), make([]byte, recordBytes)
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	done := func(err error) {
		if err != nil {
			mu.Lock()
			failed = err
			mu.Unlock()
		}
		<-sem
		wg.Done()
	}
	fmt.Printf("%s: %d logins of new users (%d-byte entry, %d-byte device record); memory after GC, KiB\n", engine, n, entryBytes, recordBytes)
	fmt.Printf("%9s %10s %10s %10s %10s | per login since the last point: %7s %7s %7s %7s\n",
		"users", "RSS", "anon", "file", "heap", "RSS", "anon", "file", "heap")
	last := measure()
	last.print(0, memPoint{}, 0)
	for i := range n {
		user := fmt.Sprintf("u%08d", i)
		epoch, seq, err := s.Activate(ctx, user, "probe")
		if err != nil {
			return err
		}
		sem <- struct{}{}
		wg.Add(1)
		s.Append(persistence.AppendRequest{User: user, Epoch: epoch,
			Entries: []persistence.Entry{{Seq: seq + 1, TimeMS: int64(1764770000000 + i), Data: entry}},
			Devices: []persistence.Device{{DeviceID: "d" + user, Data: record}}}, done)
		if (i+1)%every == 0 || i+1 == n {
			wg.Wait()
			if failed != nil {
				return failed
			}
			p := measure()
			p.print(i+1, last, every)
			last = p
		}
	}
	return nil
}

func open(engine, dir string) (*persistence.Local, error) {
	switch engine {
	case "badger":
		return persistence.OpenBadger(dir, persistence.BadgerOptions{}, nil)
	case "pebble":
		return persistence.OpenPebble(dir, persistence.PebbleOptions{}, nil)
	}
	return nil, fmt.Errorf("-engine %q: badger or pebble", engine)
}

// memPoint is the process's memory after a collection, in bytes.
type memPoint struct{ rss, anon, file, heap int64 }

func measure() memPoint {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := memPoint{heap: int64(ms.HeapInuse)}
	if m, err := procmem.Read(os.Getpid()); err == nil { // not Linux: the heap only
		p.rss, p.anon, p.file = m.RSS, m.RSSAnon, m.RSSFile
	}
	return p
}

func (p memPoint) print(users int, last memPoint, step int) {
	k := func(b int64) string { return fmt.Sprintf("%.0f", float64(b)/1024) }
	fmt.Printf("%9d %10s %10s %10s %10s", users, k(p.rss), k(p.anon), k(p.file), k(p.heap))
	if step > 0 {
		d := func(a, b int64) string { return fmt.Sprintf("%.2f", float64(a-b)/1024/float64(step)) }
		fmt.Printf(" | %49s %7s %7s %7s", d(p.rss, last.rss), d(p.anon, last.anon), d(p.file, last.file), d(p.heap, last.heap))
	}
	fmt.Println()
}
