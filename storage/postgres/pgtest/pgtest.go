// Package pgtest gives tests a PostgreSQL database of their own: a fresh
// schema on the server named by BILLINGD_TEST_POSTGRES, dropped when the test
// ends. .ci/postgres.sh starts a throwaway server and prints that variable.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the variable holding the test server's DSN (a postgres:// URL).
const EnvDSN = "BILLINGD_TEST_POSTGRES"

// DSN returns a DSN whose search_path is a new, empty schema, dropped (with
// everything in it) when t ends. Without BILLINGD_TEST_POSTGRES the test is
// skipped, saying so: it never passes silently.
func DSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvDSN)
	if base == "" {
		t.Skipf("needs PostgreSQL: set %s to a DSN (eval \"$(.ci/postgres.sh start)\" starts one on loopback)", EnvDSN)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s must be a postgres:// URL", EnvDSN)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "billingd_test_" + hex.EncodeToString(b)
	exec(t, base, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { exec(t, base, "DROP SCHEMA "+schema+" CASCADE") })
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func exec(t testing.TB, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", EnvDSN, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
