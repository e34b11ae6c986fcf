package pgtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var standbyCount atomic.Int64

// StartStandby starts a streaming standby of primary (pg_basebackup -R,
// then postgres in recovery with hot_standby on) and makes it primary's
// synchronous standby (synchronous_standby_names names it,
// synchronous_commit is on): from then on a commit on primary returns
// only once the standby has flushed it. It fails t if the standby does
// not come up, and registers a cleanup that first drops it from
// primary's synchronous_standby_names (so primary's commits do not wait
// for a standby that is gone), then stops it and removes its directory.
//
// The latest standby started is the synchronous one.
func StartStandby(t testing.TB, primary *Server) *Server {
	t.Helper()
	s, err := startStandby(primary)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func startStandby(p *Server) (*Server, error) {
	dir, err := makeDir(p.cred)
	if err != nil {
		return nil, err
	}
	s := &Server{
		dir: dir, dataDir: dir + "/data", binDir: p.binDir, cred: p.cred,
		primary: p, appName: "pgtest_standby_" + strconv.FormatInt(standbyCount.Add(1), 10),
	}
	fail := func(err error) (*Server, error) {
		s.Close() // stops it if it started, removes the directory
		return nil, err
	}
	out, err := s.run("pg_basebackup", "-D", s.dataDir, "-h", "127.0.0.1", "-p", strconv.Itoa(p.port),
		"-U", superuser, "-X", "stream", "-c", "fast", "-R")
	if err != nil {
		return fail(fmt.Errorf("pgtest: pg_basebackup of the server on port %d: %w\n%s\nprimary log:\n%s",
			p.port, err, commandOutput(out), p.LogTail()))
	}
	if err := s.launch(nil); err != nil {
		return fail(err)
	}
	if err := p.waitReplication(s.appName, "streaming", "state"); err != nil {
		return fail(fmt.Errorf("pgtest: standby %s of port %d: %w\nstandby log:\n%s", s.appName, p.port, err, s.LogTail()))
	}
	if err := p.setSyncStandby(s.appName); err != nil {
		return fail(err)
	}
	if err := p.waitReplication(s.appName, "sync", "sync_state"); err != nil {
		return fail(fmt.Errorf("pgtest: standby %s of port %d: %w\nstandby log:\n%s", s.appName, p.port, err, s.LogTail()))
	}
	return s, nil
}

// waitReplication waits until pg_stat_replication on s shows standby app
// with column col (state or sync_state) equal to want.
func (s *Server) waitReplication(app, want, col string) error {
	deadline := time.Now().Add(readyTimeout)
	var got string
	for time.Now().Before(deadline) {
		err := s.withConn("postgres", func(ctx context.Context, conn *pgx.Conn) error {
			return conn.QueryRow(ctx, "SELECT coalesce(max("+col+"::text), '') FROM pg_stat_replication WHERE application_name = $1", app).Scan(&got)
		})
		if err != nil {
			return fmt.Errorf("read pg_stat_replication: %w", err)
		}
		if got == want {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("pg_stat_replication %s of %s is %q after %v, want %q", col, app, got, readyTimeout, want)
}

// setSyncStandby makes app the synchronous standby of s.
func (s *Server) setSyncStandby(app string) error {
	err := s.withConn("postgres", func(ctx context.Context, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quoteLiteral(pgx.Identifier{app}.Sanitize())); err != nil {
			return err
		}
		_, err := conn.Exec(ctx, "SELECT pg_reload_conf()")
		return err
	})
	if err != nil {
		return fmt.Errorf("pgtest: make %s the synchronous standby: %w", app, err)
	}
	return nil
}

// dropSyncStandby clears synchronous_standby_names on s if it names app
// and s is running: best effort, at cleanup.
func (s *Server) dropSyncStandby(app string) {
	if !s.Running() {
		return
	}
	_ = s.withConn("postgres", func(ctx context.Context, conn *pgx.Conn) error { // best effort: the primary may be going away too
		var cur string
		if err := conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&cur); err != nil {
			return err
		}
		if cur != (pgx.Identifier{app}).Sanitize() {
			return nil
		}
		if _, err := conn.Exec(ctx, "ALTER SYSTEM RESET synchronous_standby_names"); err != nil {
			return err
		}
		_, err := conn.Exec(ctx, "SELECT pg_reload_conf()")
		return err
	})
}

// Promote turns a standby into a primary (pg_promote, waiting for it to
// finish) and fails t if it does not.
func (s *Server) Promote(t testing.TB) {
	t.Helper()
	if err := s.promote(); err != nil {
		t.Fatalf("pgtest: promote the standby on port %d: %v\nlog:\n%s", s.port, err, s.LogTail())
	}
}

func (s *Server) promote() error {
	return s.withConn("postgres", func(ctx context.Context, conn *pgx.Conn) error {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return errors.New("pg_promote returned false")
		}
		return nil
	})
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
