package mysql_test

import (
	"context"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, shards int) cellar.Store {
		s, err := mysql.Open(context.Background(), dbtest.MySQL(tb), mysql.Options{
			Options: sqlstore.Options{Name: "my", ShardCount: shards, Create: true},
		})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		return s
	})
}

func openMySQL(tb testing.TB, shards int) *sqlstore.Store {
	tb.Helper()
	s, err := mysql.Open(context.Background(), dbtest.MySQL(tb), mysql.Options{
		Options: sqlstore.Options{Name: "my", ShardCount: shards, Create: true},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestTimelines(t *testing.T) {
	storetest.RunTimelines(t, func(tb testing.TB, shards int) cellar.TimelineStore { return openMySQL(tb, shards) })
}

func TestCounters(t *testing.T) {
	storetest.RunCounters(t, func(tb testing.TB, shards int) cellar.CounterNode { return openMySQL(tb, shards) })
}

func TestIndexes(t *testing.T) {
	storetest.RunIndexes(t, func(tb testing.TB, shards int) cellar.IndexStore { return openMySQL(tb, shards) })
}
