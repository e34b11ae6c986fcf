package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/pgtest"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/postgres"
)

func schemaVersions(t *testing.T, url string) []int {
	t.Helper()
	rows, err := sqlConn(t, url).Query(t.Context(), "SELECT version FROM tandem_schema_version ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMigrations: Open migrates a new schema once, even when several
// stores open it at once; opening again is a no-op that keeps the data; a
// schema newer than the binary is refused, naming both versions.
func TestMigrations(t *testing.T) {
	t.Parallel()
	latest := postgres.SchemaVersion()
	if latest < 1 {
		t.Fatalf("SchemaVersion() = %d", latest)
	}
	url := newURL(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), url, postgres.Options{})
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Opens of a new schema: %v", err)
	}
	want := make([]int, latest)
	for i := range want {
		want[i] = i + 1
	}
	if got := schemaVersions(t, url); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tandem_schema_version = %v, want %v", got, want)
	}

	s := openStore(t, url, postgres.Options{})
	e, _ := activate(t, s, "u")
	if err := s.AppendSync(t.Context(), persistence.AppendRequest{User: "u", Epoch: e, Entries: entry(1, []byte("kept"))}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, url, postgres.Options{})
	if got := schemaVersions(t, url); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopening, tandem_schema_version = %v, want %v", got, want)
	}
	if got, err := s.Read(t.Context(), "u", 0, 10); err != nil || len(got) != 1 {
		t.Fatalf("after reopening, Read = %v, %v", got, err)
	}
	s.Close()

	newer := latest + 7
	if _, err := sqlConn(t, url).Exec(t.Context(), "INSERT INTO tandem_schema_version (version, name) VALUES ($1, 'from the future')", newer); err != nil {
		t.Fatal(err)
	}
	_, err := postgres.Open(t.Context(), url, postgres.Options{})
	if !errors.Is(err, postgres.ErrSchemaTooNew) {
		t.Fatalf("Open of a newer schema: %v, want ErrSchemaTooNew", err)
	}
	for _, v := range []int{newer, latest} {
		if !strings.Contains(err.Error(), fmt.Sprint(v)) {
			t.Errorf("error %q does not name version %d", err, v)
		}
	}
	t.Logf("newer schema: %v", err)
}

// TestOpenUnreachable: a URL nothing answers, or one that does not lead to
// a database, fails Open quickly with an error saying so.
func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	// A listener that accepts and never answers: only the connect timeout
	// ends the wait.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()

	srv := pgtest.Shared(t)
	for _, tc := range []struct {
		name, url string
		opts      postgres.Options
		within    time.Duration
		mention   string
	}{
		{"refused", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", closedPort), postgres.Options{}, 5 * time.Second, "connect"},
		{"silent", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", silent.Addr().(*net.TCPAddr).Port),
			postgres.Options{ConnectTimeout: time.Second}, 5 * time.Second, "timeout"},
		{"silent, connect_timeout in the URL", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&connect_timeout=1", silent.Addr().(*net.TCPAddr).Port),
			postgres.Options{}, 5 * time.Second, "timeout"},
		{"no such database", srv.URL("no_such_database"), postgres.Options{}, 5 * time.Second, "no_such_database"},
		{"not a URL", "postgres://[::1", postgres.Options{}, time.Second, "parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s, err := postgres.Open(context.Background(), tc.url, tc.opts)
			took := time.Since(start)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if took > tc.within {
				t.Errorf("Open took %v to fail, want under %v", took, tc.within)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
			t.Logf("%v: %v", took.Round(time.Millisecond), err)
		})
	}

	// A context deadline bounds Open as well.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if s, err := postgres.Open(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", silent.Addr().(*net.TCPAddr).Port), postgres.Options{}); err == nil {
		s.Close()
		t.Fatal("Open succeeded")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Open with a 300 ms context took %v", took)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	if err := (postgres.Options{}).Validate(); err != nil {
		t.Fatalf("zero options: %v", err)
	}
	err := postgres.Options{PoolSize: -2, Pipeline: 4, MaxBatchRows: -1}.Validate()
	if err == nil {
		t.Fatal("invalid options accepted")
	}
	for _, want := range []string{"PoolSize", "MaxBatchRows"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := postgres.Open(t.Context(), "postgres://x", postgres.Options{Pipeline: -1}); err == nil {
		t.Fatal("Open accepted invalid options")
	}
}
