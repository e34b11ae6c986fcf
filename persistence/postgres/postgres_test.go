package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tandem-im/tandem/internal/leakcheck"
	"github.com/tandem-im/tandem/internal/pgtest"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/postgres"
	"github.com/tandem-im/tandem/persistence/storetest"
)

// TestMain stops the shared server and fails the package if a store's
// goroutines (committer, workers, sweeper, pool) outlive its tests.
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	if code == 0 {
		if left := leakcheck.Wait(5*time.Second, "persistence/postgres.", "jackc/pgx", "jackc/puddle"); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n\n%s\n", strings.Join(left, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

var schemas atomic.Int64

// newURL returns the URL of a fresh, empty schema on the shared server.
func newURL(t testing.TB) string {
	t.Helper()
	return pgtest.Shared(t).CreateSchema(t, "postgres", fmt.Sprintf("t%d", schemas.Add(1)))
}

// openStore opens a store at url and closes it when the test ends.
func openStore(t testing.TB, url string, opts postgres.Options) *postgres.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// harness opens every store in a schema of its own and reopens it on the
// same schema with the same options (retention and clock included).
func harness(opts postgres.Options) storetest.Harness {
	type opened struct {
		url  string
		opts postgres.Options
	}
	var mu sync.Mutex
	stores := make(map[persistence.Store]opened)
	open := func(t *testing.T, url string, opts postgres.Options) persistence.Store {
		s := openStore(t, url, opts)
		mu.Lock()
		stores[s] = opened{url, opts}
		mu.Unlock()
		return s
	}
	return storetest.Harness{
		Open: func(t *testing.T) persistence.Store { return open(t, newURL(t), opts) },
		Reopen: func(t *testing.T, old persistence.Store) persistence.Store {
			mu.Lock()
			o, ok := stores[old]
			mu.Unlock()
			if !ok {
				t.Fatal("Reopen of a store this harness did not open")
			}
			return open(t, o.url, o.opts)
		},
		OpenWithRetention: func(t *testing.T, retention time.Duration, now func() time.Time) persistence.Store {
			o := opts
			o.Retention, o.Now = retention, now
			return open(t, newURL(t), o)
		},
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, harness(postgres.Options{}))
}

// TestConformanceTight runs the suite with commits capped near the suite's
// largest append and a one-connection pool (two batches in flight share it
// with the readers).
func TestConformanceTight(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("second conformance run")
	}
	storetest.Run(t, harness(postgres.Options{MaxBatchRows: 64, MaxBatchBytes: 16 << 10, PoolSize: 1}))
}

// sql opens a plain connection to url for checks behind the store's back.
func sqlConn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}
