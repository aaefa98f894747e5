package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// TestDefaultIsolation: a database whose default isolation is repeatable
// read (a per-database or per-role setting an operator may have) does not
// change how the node writes: concurrent puts into one shard all succeed,
// as under the default read committed.
func TestDefaultIsolation(t *testing.T) {
	const shards = 16
	dsn := dbtest.Postgres(t)
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec("DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = ''repeatable read''', current_database()); END$$"); err != nil {
		t.Fatal(err)
	}
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{Options: sqlstore.Options{Name: "pg", ShardCount: shards, Create: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 160)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				row := ""
				for j := 0; ; j++ {
					if row = fmt.Sprintf("w%d-%d-%d", w, i, j); cellar.ShardOf(row, shards) == 3 {
						break
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, _, err := s.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: 1}, Body: []byte(`{}`)})
				cancel()
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n == 0 {
			t.Errorf("put into one shard under a repeatable-read default: %v", err)
		}
		n++
	}
	if n > 0 {
		t.Errorf("%d of 160 puts failed", n)
	}
}
