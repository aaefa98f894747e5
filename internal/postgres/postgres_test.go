package postgres_test

import (
	"context"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, shards int) cellar.Store {
		s, err := postgres.Open(context.Background(), dbtest.Postgres(tb), postgres.Options{
			Options: sqlstore.Options{Name: "pg", ShardCount: shards, Create: true},
		})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		return s
	})
}

func openPG(tb testing.TB, shards int) *sqlstore.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), dbtest.Postgres(tb), postgres.Options{
		Options: sqlstore.Options{Name: "pg", ShardCount: shards, Create: true},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestTimelines(t *testing.T) {
	storetest.RunTimelines(t, func(tb testing.TB, shards int) cellar.TimelineStore { return openPG(tb, shards) })
}

func TestCounters(t *testing.T) {
	storetest.RunCounters(t, func(tb testing.TB, shards int) cellar.CounterNode { return openPG(tb, shards) })
}

func TestIndexes(t *testing.T) {
	storetest.RunIndexes(t, func(tb testing.TB, shards int) cellar.IndexStore { return openPG(tb, shards) })
}
