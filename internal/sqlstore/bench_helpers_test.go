package sqlstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// eachBackend runs f, as a sub-benchmark per backend, on a new node of
// shards logical shards on SQLite, PostgreSQL and MySQL.
func eachBackend(b *testing.B, shards int, f func(b *testing.B, s *sqlstore.Store)) {
	opts := func(name string) sqlstore.Options {
		return sqlstore.Options{Name: name, ShardCount: shards, Create: true}
	}
	backends := []struct {
		name string
		open func(b *testing.B) (*sqlstore.Store, error)
	}{
		{"sqlite", func(b *testing.B) (*sqlstore.Store, error) {
			return sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "n.db"), sqlite.Options{Options: opts("lite")})
		}},
		{"postgres", func(b *testing.B) (*sqlstore.Store, error) {
			return postgres.Open(context.Background(), dbtest.Postgres(b), postgres.Options{Options: opts("pg")})
		}},
		{"mysql", func(b *testing.B) (*sqlstore.Store, error) {
			return mysql.Open(context.Background(), dbtest.MySQL(b), mysql.Options{Options: opts("my")})
		}},
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s, err := be.open(b)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			f(b, s)
		})
	}
}
