// Package dbtest provides fresh, real databases for tests: a new PostgreSQL
// or MySQL database per test, dropped when it ends.
//
// Tests that need a server skip, with a reason, when its DSN is not set in
// the environment, so `go test ./...` passes anywhere. With
// CELLAR_TEST_STRICT=1 (as CI sets it) such a skip fails the test instead.
package dbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// Environment variables naming the test servers.
const (
	PostgresEnv = "CELLAR_TEST_POSTGRES_DSN" // e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
	MySQLEnv    = "CELLAR_TEST_MYSQL_DSN"    // e.g. root@tcp(127.0.0.1:3306)/
	StrictEnv   = "CELLAR_TEST_STRICT"
)

// Need skips tb, or fails it under CELLAR_TEST_STRICT, unless env is set.
// It returns the variable's value.
func Need(tb testing.TB, env string) string {
	tb.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	if os.Getenv(StrictEnv) != "" {
		tb.Fatalf("%s is not set, and %s forbids skipping this test", env, StrictEnv)
	}
	tb.Skipf("%s is not set; set it to run this test against a real server", env)
	return ""
}

func name() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "cellar_t_" + hex.EncodeToString(b)
}

// Postgres creates a new database on the server named by
// CELLAR_TEST_POSTGRES_DSN and returns a DSN for it.
func Postgres(tb testing.TB) string {
	tb.Helper()
	base := Need(tb, PostgresEnv)
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("parse %s: %v", PostgresEnv, err)
	}
	db := create(tb, "pgx", base, "DROP DATABASE IF EXISTS %s WITH (FORCE)")
	u.Path = "/" + db
	return u.String()
}

// MySQL creates a new database on the server named by CELLAR_TEST_MYSQL_DSN
// and returns a DSN for it.
func MySQL(tb testing.TB) string {
	tb.Helper()
	base := Need(tb, MySQLEnv)
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		tb.Fatalf("parse %s: %v", MySQLEnv, err)
	}
	cfg.DBName = ""
	cfg.DBName = create(tb, "mysql", cfg.FormatDSN(), "DROP DATABASE IF EXISTS %s")
	return cfg.FormatDSN()
}

// create makes a database with a fresh name through adminDSN, drops it
// with dropFormat when tb ends, and returns its name.
func create(tb testing.TB, driver, adminDSN, dropFormat string) string {
	tb.Helper()
	admin, err := sql.Open(driver, adminDSN)
	if err != nil {
		tb.Fatal(err)
	}
	db := name()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+db); err != nil {
		admin.Close()
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, fmt.Sprintf(dropFormat, db)); err != nil {
			tb.Logf("drop test database %s: %v", db, err)
		}
	})
	return db
}
