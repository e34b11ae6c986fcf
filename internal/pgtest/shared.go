package pgtest

import (
	"os"
	"sync"
	"testing"
)

// shared is the server of Shared, started on first use.
var shared struct {
	mu  sync.Mutex
	srv *Server
	err error
}

// Shared returns the test binary's shared server, starting it on the
// first call. It is not stopped at any test's cleanup: call StopShared (or
// use Main) when the tests end. Tests sharing it should each work in a
// database or schema of their own (CreateDB, CreateSchema). If the server
// failed to start, every call fails its test with that error.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = start(config{})
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

// StopShared stops the shared server, if one was started, and removes its
// directory. A later Shared starts a new one.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		shared.srv.Close()
	}
	shared.srv, shared.err = nil, nil
}

// Main runs the tests, stops the shared server and exits: a TestMain body.
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}
