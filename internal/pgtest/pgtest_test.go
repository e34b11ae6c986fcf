package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestStartConnectKill(t *testing.T) {
	t.Parallel()
	s := Start(t)
	conn := connect(t, s.URL("postgres"))
	var fsync, sync string
	if err := conn.QueryRow(t.Context(), "SELECT current_setting('fsync'), current_setting('synchronous_commit')").Scan(&fsync, &sync); err != nil {
		t.Fatal(err)
	}
	if fsync != "on" || sync != "on" {
		t.Fatalf("fsync=%s synchronous_commit=%s, want on, on", fsync, sync)
	}
	// The server never runs as root (initdb and postgres refuse to).
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] == "0" {
			t.Fatalf("postmaster runs as root: %s", line)
		}
	}

	url := s.CreateDB(t, "app")
	app := connect(t, url)
	if _, err := app.Exec(t.Context(), "CREATE TABLE t (k text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	surl := s.CreateSchema(t, "app", "other")
	other := connect(t, surl)
	if _, err := other.Exec(t.Context(), "CREATE TABLE t (k int)"); err != nil {
		t.Fatalf("same table name in a schema of its own: %v", err)
	}
	var schema string
	if err := other.QueryRow(t.Context(), "SELECT current_schema()").Scan(&schema); err != nil || schema != "other" {
		t.Fatalf("current_schema() = %q, %v; want other", schema, err)
	}

	pid := s.PID()
	s.Kill()
	if s.Running() {
		t.Fatal("still running after Kill")
	}
	if err := syscallKill0(pid); err == nil {
		t.Fatalf("postmaster %d still exists after Kill", pid)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := app.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("query succeeded on a killed server")
	}
	s.Stop() // no-op once exited
}

// TestStopKeepsCommitted: committed data survives a kill and a restart;
// Close removes the directory.
func TestStopKeepsCommitted(t *testing.T) {
	t.Parallel()
	s := Start(t)
	conn := connect(t, s.URL("postgres"))
	if _, err := conn.Exec(t.Context(), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())
	s.Kill()
	s.Restart(t)
	again := connect(t, s.URL("postgres"))
	var v int
	if err := again.QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v); err != nil || v != 7 {
		t.Fatalf("after kill and restart: %d, %v; want 7", v, err)
	}
	again.Close(t.Context())
	s.Stop()
	if s.Running() {
		t.Fatal("still running after Stop")
	}
	dir := s.Dir()
	s.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory %s left after Close: %v", dir, err)
	}
}

func TestShared(t *testing.T) {
	a, b := Shared(t), Shared(t)
	if a != b {
		t.Fatal("Shared started two servers")
	}
	conn := connect(t, a.URL("postgres"))
	if _, err := conn.Exec(t.Context(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}

// TestStandbyPromote: a row committed on the primary (synchronously
// replicated) is on the standby after the primary is killed and the
// standby promoted; a multi-host URL finds the new primary.
func TestStandbyPromote(t *testing.T) {
	t.Parallel()
	p := Start(t)
	sb := StartStandby(t, p)
	url := p.CreateDB(t, "app")
	conn := connect(t, url)
	var names string
	if err := conn.QueryRow(t.Context(), "SHOW synchronous_standby_names").Scan(&names); err != nil || names == "" {
		t.Fatalf("synchronous_standby_names = %q, %v", names, err)
	}
	if _, err := conn.Exec(t.Context(), "CREATE TABLE t (k text PRIMARY KEY, v int)"); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := conn.Exec(t.Context(), "INSERT INTO t VALUES ($1, $2)", fmt.Sprint("k", i), i); err != nil {
			t.Fatal(err)
		}
	}
	p.Kill()
	sb.Promote(t)

	multi := connect(t, URLs("app", p, sb))
	var n int
	if err := multi.QueryRow(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != 10 {
		t.Fatalf("rows on the promoted standby = %d, %v; want 10", n, err)
	}
	if _, err := multi.Exec(t.Context(), "INSERT INTO t VALUES ('after', 1)"); err != nil {
		t.Fatalf("write to the promoted standby: %v", err)
	}
}

func BenchmarkCreate(b *testing.B) {
	s := Shared(b)
	b.Run("database", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			s.CreateDB(b, fmt.Sprint("bench_db_", i))
		}
	})
	b.Run("schema", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			s.CreateSchema(b, "postgres", fmt.Sprint("bench_schema_", i))
		}
	})
}
