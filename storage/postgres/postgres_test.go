package postgres_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/postgres"
	"github.com/billingd/billingd/storage/postgres/pgtest"
	"github.com/billingd/billingd/storage/storagetest"
)

// leaseTTL is short so that the suite's expiry test waits little.
const leaseTTL = 2 * time.Second

func openAt(t *testing.T, dsn string, opts ...postgres.Option) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, dsn, append([]postgres.Option{postgres.WithLeaseTTL(leaseTTL)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, postgres.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// TestConformance runs the record-store conformance suite on PostgreSQL,
// replica tests included: every handle is a replica with its own leases.
func TestConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, storagetest.Backend{
		New: func(t *testing.T) func(t *testing.T) storagetest.Store {
			dsn := pgtest.DSN(t)
			return func(t *testing.T) storagetest.Store { return openAt(t, dsn) }
		},
		Replicas: true,
		LeaseTTL: leaseTTL,
	})
}

// Replicas starting together on an empty database migrate it once: the
// advisory lock queues them, and every one opens.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(context.Background(), dsn)
			if err != nil {
				errs <- err
				return
			}
			errs <- s.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	// Each migration once, in order.
	versions := query[int](t, dsn, `SELECT version FROM schema_migrations ORDER BY version`)
	want := []int{1} // every migration, once, in order
	if !slices.Equal(versions, want) {
		t.Errorf("schema_migrations = %v, want %v", versions, want)
	}
}

// A database a newer billingd migrated is refused, not misread.
func TestSchemaTooNew(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	s := openAt(t, dsn)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	query[int](t, dsn, `INSERT INTO schema_migrations (version, name) VALUES (99, 'future') RETURNING version`)
	if _, err := postgres.Open(context.Background(), dsn); !errors.Is(err, postgres.ErrSchemaTooNew) {
		t.Errorf("Open = %v, want ErrSchemaTooNew", err)
	}
}

// A database whose schema_migrations lists other migrations under this
// binary's versions (a development build's before v0.1.0) is refused with
// an error that says what to do, and left as it was.
func TestSchemaFromOtherMigrations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		applied []string // schema_migrations names, versions 1, 2, ...
	}{
		{"first migration only", []string{"records"}},
		{"more migrations than this binary has", []string{"records", "followed_states", "tombstones"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.DSN(t)
			execSQL(t, dsn, `CREATE TABLE schema_migrations (
				version    integer PRIMARY KEY,
				name       text NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now());
				CREATE TABLE records (caller text, request_id text, data bytea);
				INSERT INTO records VALUES ('acme', 'r1', '\x01')`)
			for i, name := range tt.applied {
				query[int](t, dsn, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2) RETURNING version`, i+1, name)
			}
			s, err := postgres.Open(context.Background(), dsn)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, postgres.ErrSchemaUnknown) {
				t.Fatalf("Open = %v, want ErrSchemaUnknown", err)
			}
			for _, says := range []string{"development build before billingd v0.1.0", "settle its open records", "new database or schema"} {
				if !strings.Contains(err.Error(), says) {
					t.Errorf("Open = %v, want an error that says %q", err, says)
				}
			}
			if got := query[string](t, dsn, `SELECT name FROM schema_migrations ORDER BY version`); !slices.Equal(got, tt.applied) {
				t.Errorf("schema_migrations after the refusal = %v, want %v", got, tt.applied)
			}
			if got := query[int](t, dsn, `SELECT count(*)::int FROM pg_tables WHERE schemaname = current_schema() AND tablename IN ('events', 'tombstones')`); got[0] != 0 {
				t.Errorf("the refused Open created %d tables", got[0])
			}
			if got := query[int](t, dsn, `SELECT count(*)::int FROM records`); got[0] != 1 {
				t.Errorf("records after the refusal: %d rows, want 1", got[0])
			}
		})
	}
}

// A DSN that cannot connect fails Open without leaking its password.
func TestOpenFailsWithoutPassword(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := postgres.Open(ctx, "postgres://billingd:s3cr3t-pw@127.0.0.1:1/nodb?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("Open of a closed port succeeded")
	}
	if got := err.Error(); strings.Contains(got, "s3cr3t-pw") {
		t.Errorf("error leaks the password: %s", got)
	}
}

func execSQL(t *testing.T, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

func query[T any](t *testing.T, dsn, sql string, args ...any) []T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[T])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A claim whose insert waits on a sweep deleting its record (the sweep's
// transaction still open) sees that sweep's tombstone once it commits,
// although the tombstone was not there when the claim began: it is refused,
// and nothing is left written.
func TestClaimWaitingOnSweepSeesItsTombstone(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	s := openAt(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	rec := service.Record{Caller: "acme", RequestID: "late", Method: service.MethodCharge, Fingerprint: []byte("fp"),
		State: service.StatePending, Attempts: 1, Created: t0, Updated: t0}
	if _, created, err := s.Claim(ctx, rec); err != nil || !created {
		t.Fatalf("Claim = %v, %v", created, err)
	}
	final := rec
	final.State, final.Result = service.StateSucceeded, service.Result{ObjectID: "pi_late"}
	if err := s.Put(ctx, final); err != nil {
		t.Fatal(err)
	}

	// The sweep, by hand: its transaction holds the deleted row.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	hash := sha256.Sum256([]byte("acme\x00late"))
	tomb := service.TombstoneOf(&final, t0.Add(time.Hour))
	if _, err := tx.Exec(ctx, `DELETE FROM records WHERE caller = 'acme' AND request_id = 'late'`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tombstones (name_hash, state, swept_ns, fingerprint, object_id)
		VALUES ($1, 2, $2, $3, 'pi_late')`, hash[:], tomb.Swept.UnixNano(), tomb.Fingerprint[:]); err != nil {
		t.Fatal(err)
	}

	type result struct {
		created bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		fresh := rec
		fresh.Created, fresh.Updated = t0.Add(2*time.Hour), t0.Add(2*time.Hour)
		_, created, err := s.Claim(ctx, fresh)
		done <- result{created, err}
	}()
	// Wait until the claim waits for the sweep's lock.
	for {
		n := query[int](t, dsn, `SELECT count(*)::int FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%billingd_claim%'`)
		if n[0] > 0 {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("Claim returned before the sweep committed: created %v, %v", r.created, r.err)
		case <-ctx.Done():
			t.Fatal("the claim never waited for the sweep")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	var expired *service.ExpiredError
	if r.created || !errors.As(r.err, &expired) {
		t.Fatalf("Claim = created %v, %v; want ExpiredError", r.created, r.err)
	}
	if !reflect.DeepEqual(expired.Tombstone, tomb) {
		t.Errorf("tombstone = %+v, want %+v", expired.Tombstone, tomb)
	}
	if _, found, err := s.Get(ctx, "acme", "late"); err != nil || found {
		t.Errorf("Get after the refused claim: found %v, %v", found, err)
	}
}
