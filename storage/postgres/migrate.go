package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The schema is a sequence of migrations, migrations/NNNN_name.sql, applied
// in version order; schema_migrations records which ones a database has, by
// version and name. Never edit a released migration: add the next one.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// oldSchemaHelp is what Open's error tells the operator to do with a schema
// made by other migrations.
const oldSchemaHelp = "a development build before billingd v0.1.0 made this schema: " +
	"let that build settle its open records, then give billingd a new database or schema " +
	"(billingd v0.1.0 and later keep the schemas they make readable)"

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migrations: version %d where %d belongs", m.version, i+1)
		}
	}
	return out, nil
}

// migrate brings the schema up to date in one transaction, under a
// transaction-scoped advisory lock named after the schema: replicas starting
// together queue on the lock, the first applies what is missing and the
// others find it done. A failed migration rolls back whole, and so does a
// refusal: a schema newer than this binary's, or one whose recorded
// migrations are not this binary's.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	all, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx,
			`SELECT pg_advisory_xact_lock(hashtextextended('billingd.schema_migrations.' || current_schema(), 0))`); err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT version, name FROM schema_migrations ORDER BY version`)
		if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		applied, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (migration, error) {
			var m migration
			err := r.Scan(&m.version, &m.name)
			return m, err
		})
		if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		current := 0
		for _, a := range applied {
			if a.version >= 1 && a.version <= len(all) && a.name != all[a.version-1].name {
				return fmt.Errorf("%w: migration %d is %q in the database, %q here: %s",
					ErrSchemaUnknown, a.version, a.name, all[a.version-1].name, oldSchemaHelp)
			}
			current = max(current, a.version)
		}
		if current > len(all) {
			return fmt.Errorf("%w: version %d, this binary knows up to %d", ErrSchemaTooNew, current, len(all))
		}
		for _, m := range all[current:] {
			// No arguments: pgx sends it as a simple query, so one file may
			// hold several statements.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("record migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}
