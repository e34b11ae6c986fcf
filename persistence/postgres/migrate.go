package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Schema migrations: migrations/NNNN_name.sql, numbered from 1 without
// gaps, each applied once, in order, in one transaction with its record in
// tandem_schema_version. A migration, once released, is never edited: a
// change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchemaTooNew: the database's schema was migrated by a newer tandem
// than this one; this binary refuses to use it.
var ErrSchemaTooNew = errors.New("postgres: database schema is newer than this binary")

// migrateLockKey is the first key of the advisory lock that serialises
// migrations (the second is the schema's name hashed): nodes starting at
// once migrate one after the other, and the later ones find nothing to do.
const migrateLockKey = 0x74616e64 // "tand"

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("postgres: migration file %s is not named NNNN_name.sql", base)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: strings.TrimSuffix(base, ".sql"), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("postgres: migrations are not numbered 1..n: %s is number %d", m.name, i+1)
		}
	}
	return out, nil
}

// SchemaVersion is the schema version this binary migrates databases to.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate brings the schema (in the connection's current schema, the
// first of its search_path) to the latest version and returns the
// versions before and after. It holds a transaction-scoped advisory lock
// while it reads and applies, so concurrent Opens migrate once.
func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) (from, to int, err error) {
	ms, err := migrations()
	if err != nil {
		return 0, 0, err
	}
	latest := len(ms)
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return 0, 0, fmt.Errorf("begin migration: %w", err)
	}
	defer rollback(tx, log)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))", int32(migrateLockKey)); err != nil {
		return 0, 0, fmt.Errorf("take the migration lock: %w", err)
	}
	// Created only if missing: a role without the CREATE privilege can
	// open a database that is already at the latest version.
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
		WHERE schemaname = current_schema() AND tablename = 'tandem_schema_version')`).Scan(&exists); err != nil {
		return 0, 0, fmt.Errorf("look for tandem_schema_version: %w", err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, `CREATE TABLE tandem_schema_version (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return 0, 0, fmt.Errorf("create tandem_schema_version: %w", err)
		}
	}
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM tandem_schema_version").Scan(&from); err != nil {
		return 0, 0, fmt.Errorf("read the schema version: %w", err)
	}
	if from > latest {
		return from, from, fmt.Errorf("%w: the database is at schema version %d, this binary knows versions up to %d; run a tandem release that knows version %d",
			ErrSchemaTooNew, from, latest, from)
	}
	for _, m := range ms[from:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return from, from, fmt.Errorf("apply migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO tandem_schema_version (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return from, from, fmt.Errorf("record migration %s: %w", m.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return from, from, fmt.Errorf("commit migrations %d..%d: %w", from+1, latest, err)
	}
	return from, latest, nil
}
