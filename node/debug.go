package node

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"runtime/debug"
	"time"
)

// serveDebug serves Go's profiles (net/http/pprof) on ln until ctx ends.
// The handlers are registered on a mux of our own, not the global one.
// POST /debug/gc collects garbage and returns the freed memory to the OS,
// then answers the runtime's memory figures as JSON (gcFigures), so that
// a benchmark reads the RSS and the heap after a GC
// (cmd/tandem-bench conns).
func serveDebug(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /debug/gc", freeMemory)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close() // profiles are not worth waiting for at a stop
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// gcFigures are the Go runtime's memory figures after a forced GC, in
// bytes (runtime.MemStats).
type gcFigures struct {
	HeapInuse  uint64 `json:"heap_inuse"`  // spans with at least one object
	HeapAlloc  uint64 `json:"heap_alloc"`  // live objects
	StackInuse uint64 `json:"stack_inuse"` // goroutine stacks
	Sys        uint64 `json:"sys"`         // everything the runtime got from the OS
	HeapIdle   uint64 `json:"heap_idle"`
	Released   uint64 `json:"heap_released"`
	Goroutines int    `json:"goroutines"`
	NumGC      uint32 `json:"num_gc"`
}

// freeMemory runs two GCs (the second frees what sync.Pools kept through
// the first), returns the freed pages to the OS and answers gcFigures.
func freeMemory(w http.ResponseWriter, _ *http.Request) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	w.Header().Set("Content-Type", "application/json")
	err := json.NewEncoder(w).Encode(gcFigures{
		HeapInuse: m.HeapInuse, HeapAlloc: m.HeapAlloc, StackInuse: m.StackInuse, Sys: m.Sys,
		HeapIdle: m.HeapIdle, Released: m.HeapReleased,
		Goroutines: runtime.NumGoroutine(), NumGC: m.NumGC,
	})
	if err != nil {
		return // the client went away: nobody to tell
	}
}
